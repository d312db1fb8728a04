/**
 * The server half of the transport benchmark, run in its own process (forked by
 * transport.ts) so that its CPU time is measured alone.
 *
 *   argv[2] = "secure": a SecureServer answering TIME_REQ with a fixed TIME_REP
 *   argv[2] = "raw":    a plain net server echoing each length-prefixed frame (the floor)
 *   argv[2] = "tls":    the same echo over TLS 1.3 (node:tls, self-signed Ed25519 certificate
 *                       made with the openssl CLI), for comparison with our handshake (0003)
 *
 * IPC: it sends { ready, port, serverKey } once listening, answers { cmd: 'stats' }
 * with its CPU time and open connections, and exits on { cmd: 'exit' }.
 * Env BENCH_BACKEND picks the NaCl backend (default: the library's choice).
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import tls from 'node:tls'
import type { Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { backend, useBackend, x25519KeyPair } from '../../src/crypto/index.js'
import { TicketIssuer } from '../../src/wire/resumption.js'
import { SecureServer } from '../../src/wire/server.js'

/** Messages from the load generator. */
export type ServerCommand = { cmd: 'stats' } | { cmd: 'exit' }
/** Messages to the load generator. */
export type ServerReport =
  | { ready: true; port: number; serverKey: number[]; backend: string; cert?: string }
  | { stats: true; cpuUs: number; sysUs: number; connections: number }

const kind = process.argv[2]
if (kind !== 'secure' && kind !== 'raw' && kind !== 'tls') throw new TypeError('usage: transport-server.ts secure|raw|tls')
const wantBackend = process.env.BENCH_BACKEND
if (wantBackend) useBackend(wantBackend as Parameters<typeof useBackend>[0])

/** The fixed reply: a TIME_REP as the time listener will send it (signature bytes are a constant here). */
const TIME_REP: Message = {
  v: PROTOCOL_VERSION,
  t: MsgType.TIME_REP,
  nonce: new Uint8Array(32).fill(7),
  recv: 1_760_000_000_000_000,
  xmit: 1_760_000_000_000_050,
  radius: 1000,
  sig: new Uint8Array(64).fill(9),
}

function send(m: ServerReport): void {
  process.send?.(m)
}

let connections = () => 0
let close: () => Promise<void>
let port: number
let serverKey: Uint8Array = new Uint8Array(32)
let cert: string | undefined

/** Echo every complete length-prefixed frame back on the same socket. */
function echoFrames(s: net.Socket): void {
  s.on('error', () => {})
  let buf: Buffer = Buffer.alloc(0)
  s.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0)
      if (buf.length < 4 + len) break
      s.write(buf.subarray(0, 4 + len))
      buf = buf.subarray(4 + len)
    }
  })
}

/** A throw-away self-signed Ed25519 certificate and key (PEM), made with the openssl CLI. */
function selfSigned(): { key: string; cert: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-tls-'))
  try {
    const k = path.join(dir, 'key.pem')
    const c = path.join(dir, 'cert.pem')
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ed25519', '-nodes', '-keyout', k, '-out', c, '-days', '1', '-subj', '/CN=tessera-bench'], {
      stdio: 'ignore',
    })
    return { key: readFileSync(k, 'utf8'), cert: readFileSync(c, 'utf8') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

if (kind === 'secure') {
  const staticKey = x25519KeyPair()
  serverKey = staticKey.publicKey
  const resumption = new TicketIssuer()
  const server = new SecureServer({ staticKey, name: 'bench', host: '127.0.0.1', port: 0, resumption }, (msg) => {
    if (msg.t !== MsgType.TIME_REQ) throw new TypeError(`unexpected message type ${msg.t}`)
    return TIME_REP
  })
  port = (await server.listen()).port
  connections = () => server.connectionCount
  close = () => server.close()
} else {
  // raw: the floor, the least a Node TCP server can do per request (parse a length prefix,
  // write the frame back). tls: the same behind a TLS 1.3 handshake.
  const open = new Set<net.Socket>()
  const onSocket = (s: net.Socket) => {
    open.add(s)
    s.on('close', () => open.delete(s))
    s.setNoDelay(true)
    echoFrames(s)
  }
  let server: net.Server
  if (kind === 'tls') {
    const pair = selfSigned()
    cert = pair.cert
    server = tls.createServer({ key: pair.key, cert: pair.cert, minVersion: 'TLSv1.3' }, onSocket)
    server.on('tlsClientError', () => {})
  } else server = net.createServer({ noDelay: true }, onSocket)
  server.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  port = (server.address() as net.AddressInfo).port
  connections = () => open.size
  close = () =>
    new Promise<void>((resolve) => {
      for (const s of open) s.destroy()
      server.close(() => resolve())
    })
}

process.on('message', (m: ServerCommand) => {
  if (m.cmd === 'stats') {
    const u = process.cpuUsage()
    send({ stats: true, cpuUs: u.user + u.system, sysUs: u.system, connections: connections() })
  } else if (m.cmd === 'exit') {
    // A normal exit, so that --cpu-prof writes its profile.
    void close().finally(() => process.exit(0))
    setTimeout(() => process.exit(0), 3000).unref()
  }
})
process.on('disconnect', () => process.exit(0))

send({ ready: true, port, serverKey: Array.from(serverKey), backend: backend().name, ...(cert ? { cert } : {}) })
