// Peer links: TCP (optionally mutual TLS) between tqlite nodes, on the same address that
// serves dqlite clients. See README.md in this folder for the wire format and the bounds.
export type { ClientConnectionHandler, InboundStats, TcpTransportOptions, TransportService, TransportStats } from "./PeerTransport.ts"
export { layerTcp, makeTcp, Transport } from "./PeerTransport.ts"
export type { LinkStats, PeerLink, PeerLinkOptions } from "./PeerLink.ts"
export { reconnectSchedule } from "./PeerLink.ts"
export type { PeerLimits } from "./limits.ts"
export { defaultPeerLimits, peerLimits, validatePeerLimits } from "./limits.ts"
export type { PeerTlsOptions } from "./sockets.ts"
export type { FirstWord, Hello, LocalIdentity } from "./handshake.ts"
export { classifyFirstWord, dqliteLegacyProtocolVersion, dqliteProtocolVersion, peerMagicWord, peerProtocolVersion } from "./handshake.ts"
export type { PeerFrame } from "./framing.ts"
export * from "./errors.ts"
