// CPU per append of the peer framing path, to compare builds (docs/performance.md, "Replication's CPU
// per entry"): the leader packs one append of SIZE bytes of command data for two followers as PeerLink
// does (`packFrame` where the build has it, else `pack`, then the link's framing), and each follower
// decodes its copy from 64 KiB reads (FrameDecoder, then `receive`). process.cpuUsage around each side.
//   node --import tsx bench/appendFraming.mjs WORKTREE SIZE APPENDS
// WORKTREE: a checkout whose src/net/peers/framing.ts is measured. Scratch tool: not run by the tests.
const [root, sizeText, iterText] = process.argv.slice(2)
const f = await import(`${root}/src/net/peers/framing.ts`)
const size = Number(sizeText), iterations = Number(iterText)
const data = new Uint8Array(size); for (let i = 0; i < size; i++) data[i] = (i * 31) & 0xff
let index = 100
const append = () => ({ _tag: "Message", message: { _tag: "AppendEntries", from: 1, to: 2, term: 3, prevIndex: index, prevTerm: 3, commit: index - 1,
  entries: [{ kind: "command", term: 3, index: ++index, data: data.slice() }] } })
const packers = [f.makePacker(), f.makePacker()]
const decoders = [new f.FrameDecoder(64 * 1024 * 1024), new f.FrameDecoder(64 * 1024 * 1024)]
const unpackers = [f.makeUnpacker(), f.makeUnpacker()]
const wire = (packer, frame) => {
  // PeerLink's flush: a frame of one small part is copied behind its prefix; else prefix + parts.
  const packed = packer.packFrame ? packer.packFrame(frame) : { parts: [packer.pack(frame)], byteLength: 0 }
  if (packed.parts.length === 1 && packed.parts[0].byteLength < 16 * 1024) return [f.encodeFrames([packed.parts[0]])]
  const byteLength = packed.parts.reduce((n, p) => n + p.byteLength, 0)
  const prefix = Buffer.allocUnsafe(4); prefix.writeUInt32LE(byteLength, 0)
  return [prefix, ...packed.parts]
}
let sendUs = 0, recvUs = 0, got = 0
for (let i = 0; i < iterations + 50; i++) {
  const frame = append() // the entry's data is made before the measure, as the writer makes it
  const t0 = process.cpuUsage()
  const out = packers.map((p) => wire(p, frame))
  const t1 = process.cpuUsage(t0)
  // The kernel copies the writev into one stream; reads come in 64 KiB chunks.
  const streams = out.map((parts) => Buffer.concat(parts))
  const t2 = process.cpuUsage()
  for (let k = 0; k < 2; k++) {
    const s = streams[k]
    for (let at = 0; at < s.byteLength; at += 65536) {
      decoders[k].push(s.subarray(at, at + 65536))
      while (true) { const n = decoders[k].next(); if (n._tag === "Left") throw n.left; if (n.right === null) break; const r = unpackers[k].receive(n.right); if (r._tag === "Left") throw r.left; if (r.right !== null) got++ }
    }
  }
  const t3 = process.cpuUsage(t2)
  if (i >= 50) { sendUs += t1.user + t1.system; recvUs += t3.user + t3.system }
}
console.log(JSON.stringify({ root: root.split("/").filter(Boolean).at(-1), size, iterations, leaderUsPerAppend2Followers: +(sendUs / iterations).toFixed(1), followerUsPerAppend: +(recvUs / iterations / 2).toFixed(1), delivered: got }))
