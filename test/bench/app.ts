/**
 * App-side benchmark: what a service embedding Tessera pays.
 *
 *   tessera ap-verify mutual=0 ops_per_s=... ns_per_op=... checked=... bg_cpu_util=...
 *   tessera ap-build mutual=0 ns_per_op=...        the client's buildApReq, for reference
 *   tessera session msg_bytes=1024 mb_per_s=... msgs_per_s=... server_cpu_ms_per_mb=... errors=0 ...
 *
 * ap-verify: ServiceVerifier.verify() in this process (it is CPU-bound and synchronous) on
 * AP_REQs built beforehand from real service tickets: an in-memory KDC (startKdc) issues,
 * through KdcClient, tickets for HTTP/app.bench to 16 clients; each AP_REQ has its own
 * authenticator, so the replay cache accepts every one. mutual=1 also seals the AP_REP. The
 * fastest of 5 samples (common.ts timeSync). Afterwards one result in 64 is checked (client
 * name; for mutual=1 the AP_REP verifies with the client's verifyApRep) and one AP_REQ is
 * replayed, which must be refused.
 *
 * session: SecureSession throughput over loopback TCP between two processes: the service end
 * (SecureSession.server with a ServiceVerifier) in a child process (session-server.ts), the
 * client end here. One session per case after a warm-up session: the client sends
 * messages of msg_bytes (awaiting each send(), which resolves once the socket has taken the
 * message: backpressure, no unbounded buffering) for BENCH_SECONDS, then close(), which
 * resolves once the service has read everything and answered the close. The service checks
 * every message (sequence number and length); MB = 10^6 bytes of payload. 64 KiB is above the
 * cap (a frame body is at most 65,536 bytes including 25 bytes of session overhead), so the
 * large case sends maxMessageBytes = 65,511 bytes.
 */
import net from 'node:net'
import { pathToFileURL } from 'node:url'
import { Limits } from '../../proto/limits.js'
import { buildApReq, type PendingApReq, verifyApRep } from '../../src/client/ap.js'
import { type Credentials, KdcClient } from '../../src/client/kdc-client.js'
import { randomBytes } from '../../src/crypto/index.js'
import { KrbProtocolError } from '../../src/errors.js'
import { startKdc } from '../../src/kdc/kdc.js'
import { Keytab } from '../../src/krb/keytab.js'
import { ReplayCache } from '../../src/krb/replay-cache.js'
import { SESSION_OVERHEAD, SecureSession } from '../../src/service/session.js'
import { ServiceVerifier, type VerifiedAp } from '../../src/service/verify-ap-req.js'
import {
  type BenchOptions,
  cpuMsSince,
  MachineLoad,
  machineNote,
  note,
  nowMs,
  optionsFromEnv,
  report,
  sourceNote,
  timeSync,
  waitQuiet,
  wanted,
} from './common.js'
import { ChildServer, HOST } from './load.js'
import type { SessionResult, SessionServerSpec } from './session-server.js'

const SERVICE = 'HTTP/app.bench'
const CLIENTS = 16
/** AP_REQs built per ap-verify case: each is verified once (6 x maxIters of timeSync). */
const POOL = 30_000
/** Session message sizes: 1 KiB and the largest a session accepts (64 KiB minus overhead). */
export const SESSION_SIZES = [1024, Limits.MAX_FRAME_BYTES - SESSION_OVERHEAD] as const

interface Realm {
  realm: string
  keytab: Keytab
  spec: SessionServerSpec
  creds: Credentials[]
}

/** An in-memory KDC, a service principal and its keytab, and one service ticket per client. */
async function setUpRealm(): Promise<Realm> {
  const kdc = await startKdc({ config: { kdf: { N: 1024 } }, log: false })
  try {
    const svc = await kdc.addPrincipal(SERVICE)
    const keys = []
    for (let i = 0; i < CLIENTS; i++) keys.push(await kdc.addPrincipal(`bench/user${i}`))
    const client = new KdcClient(kdc.realmFile)
    const creds: Credentials[] = []
    try {
      for (let i = 0; i < CLIENTS; i++) {
        const tgt = await client.loginWithKey(`bench/user${i}`, { key: keys[i]!.key, kvno: keys[i]!.kvno })
        creds.push(await client.getServiceTicket(tgt, SERVICE))
      }
    } finally {
      client.close()
    }
    const name = SERVICE.split('/')
    const spec: SessionServerSpec = { realm: kdc.realm, name, kvno: svc.kvno, key: Array.from(svc.key), createdAt: svc.createdAt }
    const keytab = new Keytab([{ realm: kdc.realm, name, kvno: svc.kvno, key: svc.key, createdAt: svc.createdAt }])
    return { realm: kdc.realm, keytab, spec, creds }
  } finally {
    await kdc.close()
  }
}

function runApVerify(opts: BenchOptions, r: Realm): void {
  const sampleMs = Math.min(60, Math.max(10, opts.seconds * 20))
  for (const mutual of [0, 1]) {
    if (!wanted(opts, { kind: 'ap-verify', mutual })) continue
    // The replay cache is the verifier's: made before the AP_REQs, so none predates it.
    // An in-memory keytab and no replay file: a plain replay cache (a bench, not about restarts).
    const verifier = new ServiceVerifier({
      keytab: r.keytab,
      principal: `${SERVICE}@${r.realm}`,
      replayCache: new ReplayCache({ maxClockSkewMs: 300_000 }),
    })
    const pool: PendingApReq[] = new Array(POOL)
    for (let i = 0; i < POOL; i++) pool[i] = buildApReq(r.creds[i % CLIENTS]!, { mutual: mutual === 1 })
    const kept: [number, VerifiedAp][] = []
    let used = 0
    const t = timeSync(
      (i) => {
        const v = verifier.verify(pool[i]!.req)
        if (i % 64 === 0) kept.push([i, v])
        used = i + 1
        return v
      },
      { sampleMs, maxIters: Math.floor(POOL / 6) },
    )
    // What was measured must have been right.
    for (const [i, v] of kept) {
      const c = r.creds[i % CLIENTS]!
      if (v.client !== `${c.cname.join('/')}@${c.crealm}`) throw new Error(`ap-verify: AP_REQ ${i} verified as ${v.client}`)
      if (mutual === 1) {
        if (!v.apRep) throw new Error('ap-verify: mutual requested but no AP_REP')
        verifyApRep(v.apRep, pool[i]!)
      } else if (v.apRep) throw new Error('ap-verify: AP_REP without mutual')
    }
    let replayRefused = false
    try {
      verifier.verify(pool[0]!.req)
    } catch (err) {
      replayRefused = err instanceof KrbProtocolError && err.status === 'REPEAT'
    }
    if (!replayRefused) throw new Error('ap-verify: a replayed AP_REQ was not refused')
    report('ap-verify', {
      mutual,
      ops_per_s: Math.round(1e9 / t.nsPerOp),
      ns_per_op: t.nsPerOp,
      iters: used,
      checked: kept.length,
      replay_cache_entries: used,
      bg_cpu_util: t.bg,
    })
    const b = timeSync(() => buildApReq(r.creds[0]!, { mutual: mutual === 1 }), { sampleMs })
    report('ap-build', { mutual, ns_per_op: b.nsPerOp, ops_per_s: Math.round(1e9 / b.nsPerOp), bg_cpu_util: b.bg })
  }
}

/** Connect and set up a session as the client. */
async function openSession(port: number, creds: Credentials): Promise<SecureSession> {
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host: HOST, port, noDelay: true })
    s.once('error', reject)
    s.once('connect', () => {
      s.off('error', reject)
      resolve(s)
    })
  })
  return SecureSession.client(socket, { creds })
}

/** Send messages of `size` for up to `ms`, then close; returns what was sent and the time until the close was confirmed. */
async function pump(session: SecureSession, size: number, ms: number): Promise<{ msgs: number; wallMs: number }> {
  const buf = randomBytes(size)
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
  const t0 = nowMs()
  const deadline = t0 + ms
  let msgs = 0
  while (nowMs() < deadline) {
    // send() copies the payload before it resolves, so one buffer serves every message.
    view.setUint32(0, msgs)
    await session.send(buf)
    msgs++
  }
  await session.close()
  return { msgs, wallMs: nowMs() - t0 }
}

async function sessionResult(server: ChildServer<unknown>): Promise<SessionResult> {
  for (let k = 0; k < 100; k++) {
    const m = await server.call({ cmd: 'result' })
    if (m.result) return m.result as SessionResult
    await new Promise((res) => setTimeout(res, 20))
  }
  throw new Error('session server reported no result')
}

async function runSession(opts: BenchOptions, r: Realm): Promise<void> {
  const sizes = SESSION_SIZES.filter((msg_bytes) => wanted(opts, { kind: 'session', msg_bytes }))
  if (sizes.length === 0) return
  const server = await ChildServer.start<{ ready: true; port: number }>('session-server', [JSON.stringify(r.spec)])
  try {
    const port = server.ready.port
    let k = 0
    for (const size of sizes) {
      await waitQuiet(`session msg_bytes=${size}`)
      // Warm-up session (JIT on both ends), not measured.
      await pump(await openSession(port, r.creds[k++ % CLIENTS]!), size, Math.min(500, opts.seconds * 250))
      await sessionResult(server)
      const session = await openSession(port, r.creds[k++ % CLIENTS]!)
      const before = await server.stats()
      const load = new MachineLoad()
      const cpu0 = process.cpuUsage()
      const sent = await pump(session, size, opts.seconds * 1000)
      const clientCpuMs = cpuMsSince(cpu0)
      const busy = load.coresBusy()
      const after = await server.stats()
      const got = await sessionResult(server)
      const serverCpuMs = (after.cpuUs - before.cpuUs) / 1000
      const mbytes = (got.msgs * size) / 1e6
      const bg = busy - (serverCpuMs + clientCpuMs) / sent.wallMs
      const errors = got.bad + Math.abs(sent.msgs - got.msgs) + (got.error ? 1 : 0)
      report('session', {
        msg_bytes: size,
        mb_per_s: (mbytes / sent.wallMs) * 1000,
        msgs_per_s: Math.round((got.msgs / sent.wallMs) * 1000),
        server_cpu_ms_per_mb: serverCpuMs / Math.max(mbytes, 1e-9),
        client_cpu_ms_per_mb: clientCpuMs / Math.max(mbytes, 1e-9),
        server_cpu_util: serverCpuMs / sent.wallMs,
        msgs: got.msgs,
        wall_s: sent.wallMs / 1000,
        errors,
        bg_cpu_util: Number.isNaN(bg) ? 'na' : Math.max(0, bg),
      })
      if (got.error) note(`session msg_bytes=${size}: service-side error: ${got.error}`)
    }
  } finally {
    await server.stop()
  }
}

/** Run the app benchmark: AP verification, then SecureSession throughput. */
export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  sourceNote()
  note(`app: ${CLIENTS} clients with tickets for ${SERVICE} from an in-memory KDC; session service end in a child process`)
  const r = await setUpRealm()
  runApVerify(opts, r)
  await runSession(opts, r)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await run(optionsFromEnv(process.argv.slice(2)))
}
