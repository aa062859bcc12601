// Test certificates made with openssl: a CA and one leaf certificate it signed, shared by every
// node of a cluster (as dqlite deployments do).
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { PeerTlsOptions } from "../src/net/peers/sockets.ts"

/** Mutual-TLS material named `name` (its CN); the files are made in a temporary directory and
 * removed again, only the PEM bytes are kept. */
export function makeCertificates(name: string): PeerTlsOptions {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tqlite-certs-${name}-`))
  try {
    const file = (suffix: string) => path.join(dir, suffix)
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    execFileSync("openssl", ["req", "-x509", ...ec, "-keyout", file("ca.key"), "-out", file("ca.crt"), "-days", "2", "-subj", `/CN=${name}-ca`], { stdio: "ignore" })
    execFileSync("openssl", ["req", ...ec, "-keyout", file("node.key"), "-out", file("node.csr"), "-subj", `/CN=${name}-node`], { stdio: "ignore" })
    execFileSync("openssl", ["x509", "-req", "-in", file("node.csr"), "-CA", file("ca.crt"), "-CAkey", file("ca.key"), "-CAcreateserial", "-out", file("node.crt"), "-days", "2"], { stdio: "ignore" })
    return { cert: fs.readFileSync(file("node.crt")), key: fs.readFileSync(file("node.key")), ca: fs.readFileSync(file("ca.crt")) }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}
