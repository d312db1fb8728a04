/**
 * KDC benchmark: AS and TGS exchanges against startKdc() (in-memory realm) in another
 * process (kdc-server.ts), the load generator here speaking the protocol directly through
 * connectChannel, so that the figures are the KDC's and not KdcClient's.
 *
 *   tessera as  conn=new c=16 reqs_per_s=... p50_ms=... p99_ms=... server_cpu_ms_per_req=... errors=0 ... bg_cpu_util=...
 *   tessera tgs conn=reused c=16 ...
 *   tessera kdc-setup principals=100000 setup_s=... creates_per_s=... rss_mb=...
 *   tessera tgs-scale principals=100000 conn=reused c=16 reqs_per_s=... rss_mb=... cold_frac=...
 *
 * as:  a pre-authenticated AS_REQ (PA_ENC_TIMESTAMP sealed fresh per request with the
 *      client's key, as a keytab client does; one round trip), 100 clients round-robin.
 * tgs: a TGS_REQ for one of 200 services round-robin, with a fresh authenticator per request
 *      (sealed with the TGT session key); the 100 TGTs come from AS exchanges made at setup.
 * conn=new: a new TCP connection and transport handshake per request, closed after the reply
 * (what MIT's libkrb5 does for TGS). conn=reused: c persistent connections, one outstanding
 * request each (closed loop; what KdcClient does).
 *
 * Every reply must be the expected message type (a KRB_ERROR counts as an error); one reply
 * in SAMPLE is verified in full: its enc part opens with the client key (AS) or the TGT
 * session key (TGS) and carries our nonce and service; for TGS the service ticket opens with
 * the service key and holds the same session key and client. `verified=` says how many.
 *
 * tgs-metrics: the cost of metrics on the hot path. Two KDC processes, one with its HTTP ops
 * listener and metrics on (scraped over HTTP once a second while measured, as Prometheus
 * would), one without; TGS at conn=reused c=16, the two measured alternately (BENCH_METRICS_REPS
 * rounds, default 3) in the same run, then one summary line with the medians and their
 * difference: `tessera tgs-metrics-summary which=all|quiet off_reqs_per_s=... on_reqs_per_s=...
 * diff_pct=... off_cpu_ms_per_req=... on_cpu_ms_per_req=... cpu_diff_pct=...` (which=quiet:
 * only the rounds where both halves had less than 0.25 cores of others' load; KDC CPU per
 * request is the steadier figure on a busy machine). The order of the two alternates by
 * round. BENCH_METRICS_AA=1 runs the control: both KDCs without metrics (lines say aa=1).
 *
 * tgs-scale: a KDC started (`kdc start`, on disk) on a realm directory bulk-loaded with
 * 100,000 and then 1,000,000 principals (BENCH_KDC_PRINCIPALS; runScale says how); TGS
 * requests at conn=reused c=16 for services drawn uniformly from all of them (spread=all:
 * most lookups miss the principal cache; cold_frac is the share of requests for a service
 * not asked for before) and from 1000 of them (spread=hot: all cached); RSS of the KDC process.
 *
 *   tessera kdc-rss principals=1000000 rss_mb=... bytes_per_principal=...
 *   tessera tgs-scale-summary principals=1000000 hot_reqs_per_s=... spread_reqs_per_s=... ratio=... cold_frac=...
 */
import http from 'node:http'
import { pathToFileURL } from 'node:url'
import { KdcOption, PaType } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import {
  type AsReq,
  EncKdcRepPart,
  EncTicketPart,
  PaEncTs,
  TgsAuthenticator,
  type TgsReq,
  type Ticket,
} from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { constantTimeEqual, randomUint32 } from '../../src/crypto/index.js'
import { openPart, sameName, sealPart } from '../../src/krb/parts.js'
import { connectChannel } from '../../src/wire/client.js'
import { type BenchOptions, machineNote, note, optionsFromEnv, report, sourceNote, wanted } from './common.js'
import { bulkLoadRealm } from './bulk-load.js'
import { type KdcServerReady, type KdcServerSpec, names } from './kdc-server.js'
import { ChildServer, type Exchange, exchangeClient, expectType, HOST, measureCase, Sampler, type Target } from './load.js'

/** Concurrency levels measured. */
export const CONCURRENCY = [1, 16, 256] as const
/** Connection modes measured. */
export const CONN_MODES = ['new', 'resumed', 'reused', 'shared'] as const
/** Principals of the base KDC. */
const BASE: KdcServerSpec = { clients: 100, services: 200, scale: 0 }

/** A client principal with its long-term key. */
interface ClientPrincipal {
  components: string[]
  key: Uint8Array
}

/** A TGT as the load generator holds it. */
interface Tgt {
  cname: string[]
  ticket: Ticket
  sessionKey: Uint8Array
}

/** Pre-authenticated AS exchanges for krbtgt, clients round-robin. */
function asExchanges(realm: string, clients: readonly ClientPrincipal[], sampler: Sampler): (w: number) => Exchange {
  const sname = ['krbtgt', realm]
  let seq = 0
  const nonceBase = randomUint32()
  return () => {
    const i = seq++
    const cl = clients[i % clients.length]!
    const nonce = (nonceBase + i) >>> 0
    const now = Date.now()
    const req: AsReq = {
      v: PROTOCOL_VERSION,
      t: MsgType.AS_REQ,
      cname: cl.components,
      realm,
      sname,
      till: 0,
      nonce,
      options: 0,
      padata: [{ type: PaType.PA_ENC_TIMESTAMP, value: sealPart(cl.key, KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, PaEncTs, { ts: now, us: 0 }) }],
    }
    return {
      req,
      check(rep) {
        expectType(rep, MsgType.AS_REP, 'AS_REQ')
        if (rep.t !== MsgType.AS_REP || !sampler.take()) return
        const part = openPart(cl.key, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, rep.enc)
        if (part.nonce !== nonce) throw new Error('AS_REP: nonce does not match')
        if (!sameName(part.sname, sname) || !sameName(rep.ticket.sname, sname)) throw new Error('AS_REP: not a TGT')
        if (!sameName(rep.cname, cl.components)) throw new Error('AS_REP: for another client')
        sampler.verified++
      },
    }
  }
}

/** A TGS target: its name, and its key when the load generator can open its tickets. */
interface ServiceRef {
  components: string[]
  key?: Uint8Array
}

/** TGS exchanges with a fresh authenticator each; TGTs round-robin, services from `pick`. */
function tgsExchanges(realm: string, tgts: readonly Tgt[], pick: (i: number) => ServiceRef, sampler: Sampler): (w: number) => Exchange {
  let seq = 0
  const nonceBase = randomUint32()
  return () => {
    const i = seq++
    const tgt = tgts[i % tgts.length]!
    const svc = pick(i)
    const nonce = (nonceBase + i) >>> 0
    const now = Date.now()
    const req: TgsReq = {
      v: PROTOCOL_VERSION,
      t: MsgType.TGS_REQ,
      ticket: tgt.ticket,
      auth: sealPart(tgt.sessionKey, KeyUsage.TGS_REQ_AUTH, TgsAuthenticator, {
        crealm: realm,
        cname: tgt.cname,
        ctime: now,
        cusec: 0,
        sname: svc.components,
        till: 0,
        nonce,
        options: 0,
      }),
    }
    return {
      req,
      check(rep) {
        expectType(rep, MsgType.TGS_REP, 'TGS_REQ')
        if (rep.t !== MsgType.TGS_REP || !sampler.take()) return
        const part = openPart(tgt.sessionKey, KeyUsage.TGS_REP_ENCPART_SESSKEY, EncKdcRepPart, rep.enc)
        if (part.nonce !== nonce) throw new Error('TGS_REP: nonce does not match')
        if (!sameName(part.sname, svc.components) || !sameName(rep.ticket.sname, svc.components))
          throw new Error('TGS_REP: for another service')
        if (svc.key) {
          const tk = openPart(svc.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, rep.ticket.enc)
          if (!constantTimeEqual(tk.key, part.key)) throw new Error('TGS_REP: ticket and reply hold different session keys')
          if (!sameName(tk.cname, tgt.cname)) throw new Error('TGS_REP: ticket for another client')
        }
        sampler.verified++
      },
    }
  }
}

/** One AS exchange per client on one connection, every reply verified: the TGTs of the TGS cases. */
async function acquireTgts(target: Target, realm: string, clients: readonly ClientPrincipal[]): Promise<Tgt[]> {
  const ch = await connectChannel({ host: HOST, port: target.port, serverKey: target.serverKey })
  try {
    const tgts: Tgt[] = []
    for (const cl of clients) {
      const nonce = randomUint32()
      const sname = ['krbtgt', realm]
      const rep = await ch.request({
        v: PROTOCOL_VERSION,
        t: MsgType.AS_REQ,
        cname: cl.components,
        realm,
        sname,
        till: 0,
        nonce,
        options: KdcOption.FORWARDABLE,
        padata: [
          { type: PaType.PA_ENC_TIMESTAMP, value: sealPart(cl.key, KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, PaEncTs, { ts: Date.now(), us: 0 }) },
        ],
      })
      expectType(rep, MsgType.AS_REP, 'AS_REQ (setup)')
      if (rep.t !== MsgType.AS_REP) throw new Error('unreachable')
      const part = openPart(cl.key, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, rep.enc)
      if (part.nonce !== nonce) throw new Error('AS_REP (setup): nonce does not match')
      tgts.push({ cname: cl.components, ticket: rep.ticket, sessionKey: new Uint8Array(part.key) })
    }
    return tgts
  } finally {
    ch.close()
  }
}

const split = (name: string) => name.split('/')
const mb = (bytes: number) => bytes / (1024 * 1024)

type Kind = 'as' | 'tgs'

/** The base cases: AS and TGS, conn new/reused, c = 1, 16, 256. */
async function runBase(opts: BenchOptions): Promise<void> {
  const cases = (['as', 'tgs'] as const).flatMap((kind) =>
    CONN_MODES.flatMap((conn) => CONCURRENCY.map((c) => ({ kind, conn, c }))),
  ).filter((x) => wanted(opts, x))
  if (cases.length === 0) return
  const server = await ChildServer.start<KdcServerReady>('kdc-server', [JSON.stringify(BASE)])
  try {
    const k = server.ready
    note(
      `kdc: in-memory realm ${k.realm}, ${k.principals} principals (${k.clients.length} clients, ${k.services.length} services) made in ${(k.setupMs / 1000).toFixed(2)} s; KDC rss ${mb(k.rss).toFixed(0)} MiB`,
    )
    const clients: ClientPrincipal[] = k.clients.map((c) => ({ components: split(c.name), key: new Uint8Array(c.key) }))
    const services: ServiceRef[] = k.services.map((s) => ({ components: split(s.name), key: new Uint8Array(s.key) }))
    const asTarget: Target = { port: k.ports.as, serverKey: new Uint8Array(k.transportKey) }
    const tgsTarget: Target = { port: k.ports.tgs, serverKey: asTarget.serverKey }
    const tgts = await acquireTgts(asTarget, k.realm, clients)
    const reps = Math.max(1, Math.floor(Number(process.env.BENCH_REPS ?? 1)) || 1)
    for (const { kind, conn, c } of cases)
      for (let rep = 1; rep <= reps; rep++) {
        const sampler = new Sampler()
        const next =
          kind === 'as'
            ? asExchanges(k.realm, clients, sampler)
            : tgsExchanges(k.realm, tgts, (i) => services[i % services.length]!, sampler)
        const client = exchangeClient(kind === 'as' ? asTarget : tgsTarget, conn, next)
        const res = await measureCase({
          what: `${kind} conn=${conn} c=${c}`,
          client,
          server,
          conn,
          c,
          opts,
          beforeMeasure: () => sampler.reset(),
        })
        report(kind satisfies Kind, {
          ...res.fields,
          verified: sampler.verified,
          server_rss_mb: mb(res.after.rss ?? 0),
          ...(client.counters?.() ?? {}),
          ...(reps > 1 ? { rep } : {}),
        })
        if (res.r.firstError) note(`${kind} conn=${conn} c=${c}: first error: ${res.r.firstError}`)
        if (res.r.completed > 0 && sampler.verified === 0) note(`${kind} conn=${conn} c=${c}: no reply was verified in full`)
      }
  } finally {
    await server.stop()
  }
}

/** GET /metrics on 127.0.0.1:port; resolves with the body length (0 on failure). */
function scrapeOnce(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get({ host: HOST, port, path: '/metrics', agent: false }, (res) => {
      let n = 0
      res.on('data', (d: Buffer) => {
        n += d.length
      })
      res.on('end', () => resolve(res.statusCode === 200 ? n : 0))
    })
    req.on('error', () => resolve(0))
  })
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Others' load (cores) under which a metrics round counts as quiet. */
const QUIET = 0.25

/** Metrics on vs off: TGS conn=reused c=16 against two KDCs, measured alternately. */
async function runMetrics(opts: BenchOptions): Promise<void> {
  const conn = 'reused'
  const c = 16
  const modes = (['off', 'on'] as const).filter((metrics) => wanted(opts, { kind: 'tgs-metrics', conn, c, metrics }))
  if (modes.length === 0) return
  const rounds = Math.max(1, Math.floor(Number(process.env.BENCH_METRICS_REPS ?? 3)) || 1)
  // BENCH_METRICS_AA=1: the control. Both KDCs without metrics, so the on/off difference is
  // the noise floor of the comparison on this machine; every line says aa=1.
  const aa = process.env.BENCH_METRICS_AA === '1'
  const tag = aa ? { aa: 1 } : {}
  const servers = {
    off: await ChildServer.start<KdcServerReady>('kdc-server', [JSON.stringify({ ...BASE, metrics: false })]),
    on: await ChildServer.start<KdcServerReady>('kdc-server', [JSON.stringify({ ...BASE, metrics: !aa })]),
  }
  const rates: Record<'on' | 'off', number[]> = { on: [], off: [] }
  const cpu: Record<'on' | 'off', number[]> = { on: [], off: [] }
  const bg: Record<'on' | 'off', number[]> = { on: [], off: [] }
  try {
    const setups = {} as Record<'on' | 'off', { k: KdcServerReady; tgts: Tgt[]; services: ServiceRef[]; target: Target }>
    for (const m of ['off', 'on'] as const) {
      const k = servers[m].ready
      const clients: ClientPrincipal[] = k.clients.map((x) => ({ components: split(x.name), key: new Uint8Array(x.key) }))
      const services: ServiceRef[] = k.services.map((x) => ({ components: split(x.name), key: new Uint8Array(x.key) }))
      const serverKey = new Uint8Array(k.transportKey)
      const tgts = await acquireTgts({ port: k.ports.as, serverKey }, k.realm, clients)
      setups[m] = { k, tgts, services, target: { port: k.ports.tgs, serverKey } }
    }
    note(`tgs-metrics: ${rounds} rounds of ${modes.join(', ')}; metrics=on is scraped over HTTP every second while measured`)
    for (let round = 1; round <= rounds; round++)
      // The order alternates from round to round, so that neither mode always goes first.
      for (const m of round % 2 === 1 ? modes : [...modes].reverse()) {
        const { k, tgts, services, target } = setups[m]
        const sampler = new Sampler()
        const client = exchangeClient(target, conn, tgsExchanges(k.realm, tgts, (i) => services[i % services.length]!, sampler))
        let scrapes = 0
        let scrapeBytes = 0
        const timer =
          m === 'on' && k.httpPort !== undefined
            ? setInterval(() => {
                void scrapeOnce(k.httpPort!).then((n) => {
                  scrapes++
                  scrapeBytes = n
                })
              }, 1000)
            : undefined
        let res: Awaited<ReturnType<typeof measureCase>>
        try {
          res = await measureCase({ what: `tgs-metrics metrics=${m}`, client, server: servers[m], conn, c, opts, beforeMeasure: () => sampler.reset() })
        } finally {
          if (timer) clearInterval(timer)
        }
        rates[m].push(Number(res.fields.reqs_per_s))
        cpu[m].push(Number(res.fields.server_cpu_ms_per_req))
        bg[m].push(Number(res.fields.bg_cpu_util))
        report('tgs-metrics', {
          metrics: m,
          ...tag,
          round,
          ...res.fields,
          verified: sampler.verified,
          ...(m === 'on' ? { scrapes, scrape_bytes: scrapeBytes } : {}),
        })
        if (res.r.firstError) note(`tgs-metrics metrics=${m}: first error: ${res.r.firstError}`)
      }
    if (rates.on.length > 0 && rates.off.length > 0) {
      // Rounds where the rest of the machine stayed quiet (both halves of the round below
      // QUIET cores of others' load) say the most; all rounds are summarised too.
      const quiet = rates.on.map((_, i) => i).filter((i) => bg.on[i]! < QUIET && bg.off[i]! < QUIET)
      const summary = (idx: number[]) => {
        const pick = (xs: number[]) => median(idx.map((i) => xs[i]!))
        const off = pick(rates.off)
        const on = pick(rates.on)
        const offCpu = pick(cpu.off)
        const onCpu = pick(cpu.on)
        return {
          off_reqs_per_s: Math.round(off),
          on_reqs_per_s: Math.round(on),
          diff_pct: Number((((on - off) / off) * 100).toFixed(2)),
          off_cpu_ms_per_req: offCpu,
          on_cpu_ms_per_req: onCpu,
          cpu_diff_pct: Number((((onCpu - offCpu) / offCpu) * 100).toFixed(2)),
        }
      }
      report('tgs-metrics-summary', { ...tag, conn, c, rounds, which: 'all', ...summary(rates.on.map((_, i) => i)) })
      if (quiet.length > 0) report('tgs-metrics-summary', { ...tag, conn, c, rounds: quiet.length, which: 'quiet', ...summary(quiet) })
    }
  } finally {
    await servers.off.stop()
    await servers.on.stop()
  }
}

/** Services of the scale case's all-cached half (the first ones of the scale names). */
const HOT_SERVICES = 1000

/**
 * The scale case, for each count of BENCH_KDC_PRINCIPALS (comma-separated, default
 * 100000,1000000): a realm directory bulk-loaded with that many principals (bulk-load.ts),
 * `kdc start` on it in a child process (metrics on, so the key census runs as in production),
 * then TGS at conn=reused c=16 for services drawn uniformly from all of them right after the
 * start (spread=all: most lookups miss the principal cache, the first ones all do), then for
 * HOT_SERVICES of them (spread=hot: all cached after the warm-up). RSS of the KDC process
 * at ready and after the load; bytes_per_principal is RSS after the load over the principals.
 */
async function runScale(opts: BenchOptions): Promise<void> {
  const counts = (process.env.BENCH_KDC_PRINCIPALS ?? '100000,1000000')
    .split(',')
    .map((x) => Math.floor(Number(x)))
    .filter((n) => n > 0)
  const conn = 'reused'
  const c = 16
  for (const count of counts) {
    if (!wanted(opts, { kind: 'tgs-scale', conn, c, principals: count })) continue
    const realm = await bulkLoadRealm([
      { count: 16, name: names.client, keep: true },
      { count, name: names.scale },
    ])
    let server: ChildServer<KdcServerReady> | undefined
    try {
      server = await ChildServer.start<KdcServerReady>('kdc-server', [JSON.stringify({ clients: 0, services: 0, scale: count, metrics: true, dir: realm.dir })])
      const k = server.ready
      const created = count + realm.kept.length
      report('kdc-setup', {
        principals: count,
        db_principals: k.principals,
        setup_s: (realm.initMs + realm.loadMs) / 1000,
        creates_per_s: Math.round((created / realm.loadMs) * 1000),
        ready_s: (k.readyMs ?? 0) / 1000,
        census_s: (k.censusMs ?? 0) / 1000,
        rss_mb: mb(k.rss),
        heap_mb: mb(k.heapUsed),
      })
      const clients: ClientPrincipal[] = realm.kept.map((x) => ({ components: split(x.name), key: x.key }))
      const target: Target = { port: k.ports.as, serverKey: new Uint8Array(k.transportKey) }
      const tgts = await acquireTgts(target, k.realm, clients)
      const rates: Record<string, number> = {}
      let coldFrac = 0
      for (const spread of ['all', 'hot'] as const) {
        const range = spread === 'all' ? count : Math.min(HOT_SERVICES, count)
        const touched = new Uint8Array(range)
        let cold = 0
        let asked = 0
        const pick = (): ServiceRef => {
          const i = Math.floor(Math.random() * range)
          asked++
          if (touched[i] === 0) {
            touched[i] = 1
            cold++
          }
          return { components: split(names.scale(i)) }
        }
        const sampler = new Sampler()
        const client = exchangeClient({ port: k.ports.tgs, serverKey: target.serverKey }, conn, tgsExchanges(k.realm, tgts, pick, sampler))
        const res = await measureCase({
          what: `tgs-scale principals=${count} spread=${spread}`,
          client,
          server,
          conn,
          c,
          opts,
          beforeMeasure: () => {
            sampler.reset()
            cold = 0
            asked = 0
          },
        })
        const frac = asked > 0 ? cold / asked : 0
        if (spread === 'all') coldFrac = frac
        rates[spread] = Number(res.fields.reqs_per_s)
        report('tgs-scale', { principals: count, spread, ...res.fields, verified: sampler.verified, cold_frac: frac, rss_mb: mb(res.after.rss ?? 0) })
        if (res.r.firstError) note(`tgs-scale ${spread}: first error: ${res.r.firstError}`)
      }
      const after = await server.stats()
      const db = (await server.call({ cmd: 'db' })) as { entries?: number; hits?: number; misses?: number; bytes?: number }
      report('kdc-rss', {
        principals: count,
        rss_mb_ready: mb(k.rss),
        rss_mb: mb(after.rss ?? 0),
        heap_mb: mb(after.heapUsed ?? 0),
        bytes_per_principal: Math.round((after.rss ?? 0) / count),
        cache_entries: db.entries ?? 0,
        ...(db.bytes !== undefined ? { cache_mb: mb(db.bytes) } : {}),
      })
      report('tgs-scale-summary', {
        principals: count,
        hot_reqs_per_s: rates.hot ?? 0,
        spread_reqs_per_s: rates.all ?? 0,
        ratio: (rates.all ?? 0) / (rates.hot || 1),
        cold_frac: coldFrac,
      })
    } finally {
      await server?.stop()
      await realm.remove()
    }
  }
}

/** Run the KDC benchmark: the base cases, then the scale case. */
export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  sourceNote()
  note(
    `kdc: startKdc in memory in a child process; load generator here (connectChannel); per case up to ${opts.n} requests or ${opts.seconds} s; 1 reply in ${Sampler.EVERY} verified in full`,
  )
  await runBase(opts)
  await runMetrics(opts)
  await runScale(opts)
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await run(optionsFromEnv(process.argv.slice(2)))
}
