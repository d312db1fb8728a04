/**
 * Time-service benchmark: signed TIME_REQ/TIME_REP against startKdc()'s time listener in
 * another process (kdc-server.ts), next to the two floors of the transport benchmark
 * measured in the same run with the same load pattern:
 *
 *   tessera time conn=reused c=16 reqs_per_s=... p50_ms=... p99_ms=... server_cpu_ms_per_req=... sig_verified=...
 *   tessera transport conn=reused c=16 ...   SecureServer answering a fixed TIME_REP (no clock, no signature)
 *   tessera raw conn=reused c=16 ...         plain TCP echo of a 200-byte frame (the loopback floor)
 *   tessera time-op op=sign ns_per_op=...    in-process costs: Ed25519 sign/verify of the signed input, processTimeReq
 *
 * Cases: conn=reused at c = 1, 16, 256 and conn=new at c=16; for each, time, transport and
 * raw run back to back so that they see the same machine. Every TIME_REP must be a
 * TIME_REP carrying our fresh 32-byte nonce; its signature (checkTimeRep: nonce, Ed25519
 * over the signed fields with the realm's public key, xmit >= recv) is verified for one
 * reply in 16 (BENCH_TIME_VERIFY=all: every reply, which adds ~50 µs of client CPU each).
 *
 * server_cpu_ms_per_req(time) - server_cpu_ms_per_req(transport) is what the time service
 * adds to the transport: the served clock, the signature, the larger reply.
 */
import { pathToFileURL } from 'node:url'
import type { TimeReq } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { checkTimeRep } from '../../src/client/time-sync.js'
import { backend, constantTimeEqual, ed25519KeyPair, randomBytes, sign, verify } from '../../src/crypto/index.js'
import { processTimeReq, ServedClock } from '../../src/kdc/time-req.js'
import { timeSignatureInput } from '../../src/krb/time-sig.js'
import { type BenchOptions, machineNote, note, optionsFromEnv, report, sourceNote, timeSync, wanted } from './common.js'
import type { KdcServerReady } from './kdc-server.js'
import { ChildServer, type Exchange, exchangeClient, expectType, type LoadClient, measureCase, Sampler, type StatsSource } from './load.js'
import { rawClient, ServerProcess, secureClient } from './transport.js'

/** The cases: connection mode and concurrency. */
export const TIME_CASES = [
  { conn: 'reused', c: 1 },
  { conn: 'reused', c: 16 },
  { conn: 'reused', c: 256 },
  { conn: 'new', c: 16 },
] as const

type Kind = 'time' | 'transport' | 'raw'

/** Fresh-nonce TIME_REQs; every reply's nonce checked, a sample's signature verified. */
function timeExchanges(signingKey: Uint8Array, sampler: Sampler): (w: number) => Exchange {
  return () => {
    const nonce = randomBytes(32)
    const req: TimeReq = { v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce }
    return {
      req,
      check(rep) {
        expectType(rep, MsgType.TIME_REP, 'TIME_REQ')
        if (rep.t !== MsgType.TIME_REP) return
        if (!constantTimeEqual(rep.nonce, nonce)) throw new Error('TIME_REP: another nonce')
        if (!sampler.take()) return
        checkTimeRep(rep, nonce, signingKey)
        sampler.verified++
      },
    }
  }
}

/** In-process costs of the time service's per-answer work. */
function runOps(opts: BenchOptions): void {
  const ops: [string, () => unknown][] = []
  const seed = ed25519KeyPair()
  const nonce = randomBytes(32)
  const input = timeSignatureInput(nonce, 1_760_000_000_000_000, 1_760_000_000_000_050, 1000)
  const sig = sign(input, seed.secretKey)
  const clock = new ServedClock()
  const req: TimeReq = { v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce }
  ops.push(['sign', () => sign(input, seed.secretKey)])
  ops.push(['verify', () => verify(input, sig, seed.publicKey)])
  ops.push(['signature_input', () => timeSignatureInput(nonce, 1_760_000_000_000_000, 1_760_000_000_000_050, 1000)])
  ops.push(['served_clock_now', () => clock.now()])
  ops.push(['process_time_req', () => processTimeReq(clock, seed.secretKey, req)])
  for (const [op, fn] of ops) {
    if (!wanted(opts, { kind: 'time-op', op })) continue
    const sampleMs = Math.max(20, Math.min(200, opts.seconds * 20))
    const r = timeSync(fn, { sampleMs })
    report('time-op', { backend: backend().name, op, ns_per_op: r.nsPerOp, ops_per_s: Math.round(1e9 / r.nsPerOp), iters: r.iters, bg_cpu_util: r.bg })
  }
}

/** Run the time benchmark: in-process costs, then time / transport / raw per case. */
export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  sourceNote()
  const verifyAll = process.env.BENCH_TIME_VERIFY === 'all'
  note(
    `time: startKdc's time listener in a child process; transport/raw floors in their own child processes; signature verified on ${verifyAll ? 'every reply' : `1 reply in ${Sampler.EVERY}`}; per case up to ${opts.n} requests or ${opts.seconds} s`,
  )
  runOps(opts)
  const kinds = (['time', 'transport', 'raw'] as const).filter((kind) => TIME_CASES.some((x) => wanted(opts, { kind, ...x })))
  if (kinds.length === 0) return
  const servers = new Map<Kind, { stats: StatsSource; stop(): Promise<void>; client(conn: 'new' | 'reused', s: Sampler): LoadClient }>()
  try {
    for (const kind of kinds) {
      if (kind === 'time') {
        const kdc = await ChildServer.start<KdcServerReady>('kdc-server', [JSON.stringify({ clients: 0, services: 0, scale: 0 })])
        const target = { port: kdc.ready.ports.time, serverKey: new Uint8Array(kdc.ready.transportKey) }
        const signingKey = new Uint8Array(kdc.ready.signingKey)
        servers.set(kind, {
          stats: kdc,
          stop: () => kdc.stop(),
          client: (conn, s) => exchangeClient(target, conn, timeExchanges(signingKey, s)),
        })
      } else {
        const p = await ServerProcess.start(kind === 'transport' ? 'secure' : 'raw')
        servers.set(kind, {
          stats: p,
          stop: () => p.stop(),
          client: (conn) => (kind === 'transport' ? secureClient(p.port, p.serverKey, conn) : rawClient(p.port, conn)),
        })
      }
    }
    const reps = Math.max(1, Math.floor(Number(process.env.BENCH_REPS ?? 1)) || 1)
    for (const { conn, c } of TIME_CASES)
      for (let rep = 1; rep <= reps; rep++)
        for (const kind of kinds) {
          if (!wanted(opts, { kind, conn, c })) continue
          const srv = servers.get(kind)!
          const sampler = new Sampler(verifyAll ? 1 : Sampler.EVERY)
          const res = await measureCase({
            what: `${kind} conn=${conn} c=${c}`,
            client: srv.client(conn, sampler),
            server: srv.stats,
            conn,
            c,
            opts,
            beforeMeasure: () => sampler.reset(),
          })
          const extra: Record<string, number> = kind === 'time' ? { sig_verified: sampler.verified } : {}
          report(kind, { ...res.fields, ...extra, ...(reps > 1 ? { rep } : {}) })
          if (res.r.firstError) note(`${kind} conn=${conn} c=${c}: first error: ${res.r.firstError}`)
        }
  } finally {
    for (const s of servers.values()) await s.stop()
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await run(optionsFromEnv(process.argv.slice(2)))
}
