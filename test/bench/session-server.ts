/**
 * The service half of the SecureSession benchmark (app.ts), in its own process: a TCP
 * listener on 127.0.0.1 whose every connection is a SecureSession.server() verified from a
 * keytab holding one key (argv[2] = JSON keytab entry with the key as a number array).
 *
 * Each received message is checked: the first 4 bytes hold its sequence number (uint32 BE)
 * and every message has the length of the session's first one. When a session closes
 * cleanly its counts are kept for { cmd: 'result' } (IPC through load.ts serveIpc, which
 * also answers { cmd: 'stats' }); { cmd: 'exit' } ends the process.
 */
import net from 'node:net'
import { pathToFileURL } from 'node:url'
import { Keytab } from '../../src/krb/keytab.js'
import { ReplayCache } from '../../src/krb/replay-cache.js'
import { SecureSession } from '../../src/service/session.js'
import { ServiceVerifier } from '../../src/service/verify-ap-req.js'
import { serveIpc } from './load.js'

/** What argv[2] holds. */
export interface SessionServerSpec {
  realm: string
  name: string[]
  kvno: number
  key: number[]
  createdAt: number
}

/** Counts of one finished session. */
export interface SessionResult {
  msgs: number
  bytes: number
  /** Messages out of sequence or of another length. */
  bad: number
  /** The session's error, if it did not close cleanly. */
  error?: string
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as SessionServerSpec
  const keytab = new Keytab([{ realm: spec.realm, name: spec.name, kvno: spec.kvno, key: new Uint8Array(spec.key), createdAt: spec.createdAt }])
  // An in-memory keytab and no replay file: a plain replay cache (a bench, not about restarts).
  const verifier = new ServiceVerifier({
    keytab,
    principal: `${spec.name.join('/')}@${spec.realm}`,
    replayCache: new ReplayCache({ maxClockSkewMs: 300_000 }),
  })
  const results: SessionResult[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    const r: SessionResult = { msgs: 0, bytes: 0, bad: 0 }
    let size = -1
    SecureSession.server(socket, { verifier }).then(
      (session) => {
        session.on('message', (data) => {
          if (size < 0) size = data.length
          const seq = data.length >= 4 ? ((data[0]! << 24) | (data[1]! << 16) | (data[2]! << 8) | data[3]!) >>> 0 : -1
          if (data.length !== size || seq !== r.msgs) r.bad++
          r.msgs++
          r.bytes += data.length
        })
        session.on('error', (err) => {
          r.error = err.message
        })
        session.closed.then(
          () => results.push(r),
          (err: Error) => results.push({ ...r, error: err.message }),
        )
      },
      (err: Error) => results.push({ ...r, error: `handshake: ${err.message}` }),
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  serveIpc(
    {
      result: () => ({ result: results.shift() ?? null }),
    },
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  )
  process.send?.({ ready: true, port: (server.address() as net.AddressInfo).port })
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.send?.({ error: err instanceof Error ? `${err.message}\n${err.stack}` : String(err) })
    process.exit(1)
  })
}
