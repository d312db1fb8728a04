/**
 * Prometheus metrics of one KDC. The hot path only adds to plain numbers held in slots it
 * resolved once (a request is two increments and a bucket search); prom-client turns them into
 * the text exposition on scrape, through each metric's collect() (docs/decisions/0009).
 * Labels are bounded sets (listener, message type, error code name, reason): never a
 * principal name, a peer address or anything else a client chooses.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import { ErrorCode, errorCodeName } from '../../proto/error-codes.js'
import { MsgType } from '../../proto/msg-types.js'
import type { ServerCounters } from '../wire/server.js'
import { tesseraVersion } from './version.js'

/** Every metric name starts with this. */
export const METRIC_PREFIX = 'tessera_'

/** Upper bounds of the handling-latency histogram buckets, seconds. */
export const LATENCY_BUCKETS_S: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
]

/** How often the key-age census reads every principal record, ms. @default 15 min */
export const DEFAULT_KEY_CENSUS_INTERVAL_MS = 15 * 60_000

/** What the metrics read on scrape; the KDC provides it (src/kdc/kdc.ts). */
export interface KdcMetricsSources {
  /** The protocol listeners by name. */
  listeners(): Iterable<readonly [string, { readonly counters: ServerCounters; readonly connectionCount: number }]>
  replay: { readonly entries: number; readonly capacity: number }
  db: {
    readonly principalCount: number | undefined
    cacheStats(): { hits: number; misses: number; entries: number; capacity: number }
    keyCensus(): Promise<{ services: number; oldestServiceKeyCreatedAt: number | undefined }>
    readonly isOpen: boolean
  }
  /** Creation time of krbtgt's current key, ms since epoch (undefined if not at hand). */
  krbtgtKeyCreatedAt(): Promise<number | undefined>
  /** The time service's radius and its served clock minus the host clock, µs. */
  time(): { radiusUs: number; offsetUs: number }
  /** Time until the transport resumption ticket key is replaced, ms; undefined without resumption. */
  resumptionMsToNextRotation(): number | undefined
  /** Each configured webhook's counters, in configuration order; undefined without webhooks. */
  webhooks?(): readonly { delivered: number; failures: number; dropped: number; queued: number }[] | undefined
  /** Wall clock, ms since epoch. */
  now(): number
}

/** Options of KdcMetrics. */
export interface KdcMetricsOptions {
  /** Period of the key-age census (a scan of every record), ms. @default 900000 */
  keyCensusIntervalMs?: number
  /** Include prom-client's process metrics (process_*, nodejs_*). @default true */
  processMetrics?: boolean
}

/** A count the hot path adds to. */
interface Slot {
  n: number
}

const MSG_TYPE_NAMES = new Map<number, string>(Object.entries(MsgType).map(([k, v]) => [v, k]))
const msgTypeName = (t: number): string => MSG_TYPE_NAMES.get(t) ?? `UNKNOWN_${t}`

/** The bounds of a latency histogram and its counts, one more than bounds for +Inf (not cumulative). */
class HistogramSlot {
  readonly counts: Float64Array
  sum = 0
  count = 0
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe(seconds: number): void {
    const b = this.bounds
    let i = 0
    while (i < b.length && seconds > b[i]!) i++
    this.counts[i]!++
    this.sum += seconds
    this.count++
  }
}

/** Counts the requests of one listener; dispatch.ts holds one per listener. */
export class RequestRecorder {
  /** Requests of the listener's own type answered without error: the common case, one slot. */
  private readonly servedOk: Slot = { n: 0 }
  /** Every other (type, outcome) pair, keyed type * 1024 + code (0 = answered). */
  readonly slots = new Map<number, Slot>()
  readonly latency = new HistogramSlot(LATENCY_BUCKETS_S)
  /** Logins refused because the account is locked. */
  lockedRefusals = 0

  constructor(
    readonly listener: string,
    private readonly served: number,
  ) {
    this.slots.set(served * 1024, this.servedOk)
  }

  /** A request of type `t` answered with a reply after `seconds` in the handler. */
  answered(t: number, seconds: number): void {
    if (t === this.served) this.servedOk.n++
    else this.slot(t, 0).n++
    this.latency.observe(seconds)
  }

  /** A request of type `t` answered with KRB_ERROR `code` after `seconds` in the handler. */
  refused(t: number, code: number, seconds: number): void {
    this.slot(t, code).n++
    this.latency.observe(seconds)
  }

  private slot(t: number, code: number): Slot {
    const key = t * 1024 + code
    let s = this.slots.get(key)
    if (s === undefined) {
      s = { n: 0 }
      this.slots.set(key, s)
    }
    return s
  }

  /** Total of the slots answered with `code`, whatever the type. */
  countOf(code: number): number {
    let n = 0
    for (const [key, s] of this.slots) if (key % 1024 === code) n += s.n
    return n
  }
}

/** prom-client's histogram, fed from HistogramSlots on scrape instead of observe(). */
class SlotHistogram extends Histogram<'exchange'> {
  constructor(
    private readonly metricName: string,
    private readonly helpText: string,
    private readonly source: () => Iterable<readonly [string, HistogramSlot]>,
  ) {
    super({ name: metricName, help: helpText, labelNames: ['exchange'], buckets: [...LATENCY_BUCKETS_S], registers: [] })
  }

  /**
   * What prom-client's registry reads for the text exposition (and get() for JSON): the
   * cumulative buckets, _sum and _count of each exchange, from the slots.
   */
  async getForPromString(): Promise<{ name: string; help: string; type: string; values: object[]; aggregator: string }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = []
    const bucket = `${this.metricName}_bucket`
    for (const [exchange, h] of this.source()) {
      let acc = 0
      h.bounds.forEach((le, i) => {
        acc += h.counts[i]!
        values.push({ labels: { exchange, le }, value: acc, metricName: bucket })
      })
      values.push({ labels: { exchange, le: '+Inf' }, value: h.count, metricName: bucket })
      values.push({ labels: { exchange }, value: h.sum, metricName: `${this.metricName}_sum` })
      values.push({ labels: { exchange }, value: h.count, metricName: `${this.metricName}_count` })
    }
    return { name: this.metricName, help: this.helpText, type: 'histogram', values, aggregator: 'sum' }
  }
}

/** A gauge without labels whose value is read on scrape; an unknown value (undefined) is no sample at all. */
class ReadGauge extends Gauge {
  constructor(
    name: string,
    help: string,
    private readonly read: () => number | undefined | Promise<number | undefined>,
  ) {
    super({ name, help, registers: [] })
  }

  override async get(): Promise<Awaited<ReturnType<Gauge['get']>>> {
    const base = await super.get()
    const v = await this.read()
    return { ...base, values: v === undefined ? [] : [{ labels: {}, value: v }] }
  }
}

let processRegistry: Registry | undefined

/** prom-client's process metrics, registered once per process (they describe the process, not a KDC). */
function processMetricsRegistry(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry()
    // The event-loop delay sampler is a timer of its own: every 20 ms rather than prom-client's 10 ms
    // (a p99 of loop delay at 20 ms resolution still shows a stall; half the wakeups on an idle KDC).
    collectDefaultMetrics({ register: processRegistry, eventLoopMonitoringPrecision: 20 })
  }
  return processRegistry
}

// Admin operations and outcomes come from the admin service: bounded by shape and number.
const ADMIN_OP = /^[a-z][a-z0-9_-]{0,39}$/
const ADMIN_OUTCOME = /^[A-Za-z][A-Za-z0-9_]{0,63}$/
const MAX_ADMIN_SERIES = 256

/**
 * The metrics of one running KDC. Protocol listeners record through {@link recorder}; the
 * admin service reports each operation through {@link adminOp}; the rest is read from
 * `sources` on scrape.
 */
export class KdcMetrics {
  /** Everything exposed on /metrics (this KDC's metrics and the process metrics). */
  readonly registry: Registry
  private readonly own = new Registry()
  private readonly recorders = new Map<string, RequestRecorder>()
  private readonly adminOps = new Map<string, { op: string; outcome: string; slot: Slot }>()
  private lockouts = 0
  private census: { services: number; oldestServiceKeyCreatedAt: number | undefined } | undefined
  private censusTimer: NodeJS.Timeout | undefined
  private censusRunning: Promise<void> | undefined

  constructor(
    private readonly sources: KdcMetricsSources,
    private readonly opts: KdcMetricsOptions = {},
  ) {
    this.define()
    this.registry = opts.processMetrics === false ? this.own : Registry.merge([processMetricsRegistry(), this.own])
  }

  /** The recorder of one listener, created on first use; `served` is the message type it serves. */
  recorder(listener: string, served: number): RequestRecorder {
    let r = this.recorders.get(listener)
    if (!r) {
      r = new RequestRecorder(listener, served)
      this.recorders.set(listener, r)
    }
    return r
  }

  /** A principal was just locked out (too many pre-auth failures). */
  lockout(): void {
    this.lockouts++
  }

  /**
   * The hook of the admin service: one call per admin operation, `op` its name
   * ("add-principal", "rotate-keys", ...), `outcome` "ok" or the error code name. Values
   * outside a bounded shape, and series beyond 256, are counted as "other".
   */
  adminOp(op: string, outcome: string): void {
    const o = ADMIN_OP.test(op) ? op : 'other'
    const r = ADMIN_OUTCOME.test(outcome) ? outcome : 'other'
    let key = `${o}\u0000${r}`
    let e = this.adminOps.get(key)
    if (!e && this.adminOps.size >= MAX_ADMIN_SERIES) {
      key = 'other\u0000other'
      e = this.adminOps.get(key)
    }
    if (!e) {
      e = key === 'other\u0000other' ? { op: 'other', outcome: 'other', slot: { n: 0 } } : { op: o, outcome: r, slot: { n: 0 } }
      this.adminOps.set(key, e)
    }
    e.slot.n++
  }

  /** Start the periodic key-age census (the first one now). */
  start(): void {
    void this.runCensus()
    const every = this.opts.keyCensusIntervalMs ?? DEFAULT_KEY_CENSUS_INTERVAL_MS
    this.censusTimer = setInterval(() => void this.runCensus(), every)
    this.censusTimer.unref()
  }

  /** Stop the census timer and wait for a census still running. */
  async close(): Promise<void> {
    if (this.censusTimer) clearInterval(this.censusTimer)
    this.censusTimer = undefined
    await this.censusRunning
  }

  /** The exposition text of every metric. */
  metrics(): Promise<string> {
    return this.registry.metrics()
  }

  /** Content-Type of {@link metrics}. */
  get contentType(): string {
    return this.registry.contentType
  }

  private runCensus(): Promise<void> {
    if (this.censusRunning || !this.sources.db.isOpen) return this.censusRunning ?? Promise.resolve()
    this.censusRunning = this.sources.db
      .keyCensus()
      .then(
        (c) => {
          this.census = c
        },
        () => {
          // The database closed under the scan: the next census (if any) tries again.
        },
      )
      .finally(() => {
        this.censusRunning = undefined
      })
    return this.censusRunning
  }

  private define(): void {
    const reg = [this.own]
    const m = this
    const s = this.sources
    const sumListeners = (f: (c: ServerCounters) => number) => {
      const out: [string, number][] = []
      for (const [name, l] of s.listeners()) out.push([name, f(l.counters)])
      return out
    }
    new Gauge({
      name: `${METRIC_PREFIX}build_info`,
      help: 'Tessera version of this KDC (value 1).',
      labelNames: ['version'],
      registers: reg,
      collect() {
        this.set({ version: tesseraVersion() }, 1)
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}requests_total`,
      help: 'Requests answered, by listener, message type and outcome (OK or the error code name).',
      labelNames: ['listener', 'type', 'outcome'],
      registers: reg,
      collect() {
        this.reset()
        for (const r of m.recorders.values())
          for (const [key, slot] of r.slots) {
            const code = key % 1024
            this.inc({ listener: r.listener, type: msgTypeName((key - code) / 1024), outcome: code === 0 ? 'OK' : errorCodeName(code) }, slot.n)
          }
      },
    })
    this.own.registerMetric(
      new SlotHistogram(
        `${METRIC_PREFIX}request_duration_seconds`,
        'Time a request spends in its handler (after decoding, before sealing the reply), by exchange.',
        () => [...m.recorders.values()].map((r) => [r.listener, r.latency] as const),
      ),
    )
    new Counter({
      name: `${METRIC_PREFIX}preauth_failures_total`,
      help: 'AS requests refused with KDC_ERR_PREAUTH_FAILED (wrong password or unknown principal).',
      registers: reg,
      collect() {
        this.reset()
        this.inc(m.recorders.get('as')?.countOf(ErrorCode.KDC_ERR_PREAUTH_FAILED) ?? 0)
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}lockouts_total`,
      help: 'Principals locked out by too many pre-authentication failures.',
      registers: reg,
      collect() {
        this.reset()
        this.inc(m.lockouts)
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}locked_refusals_total`,
      help: 'AS requests refused because the principal is locked out.',
      registers: reg,
      collect() {
        this.reset()
        this.inc(m.recorders.get('as')?.lockedRefusals ?? 0)
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}replays_total`,
      help: 'Requests refused as replays (KRB_AP_ERR_REPEAT), by listener.',
      labelNames: ['listener'],
      registers: reg,
      collect() {
        this.reset()
        for (const r of m.recorders.values()) this.inc({ listener: r.listener }, r.countOf(ErrorCode.KRB_AP_ERR_REPEAT))
      },
    })
    new Gauge({
      name: `${METRIC_PREFIX}connections_open`,
      help: 'Open connections, by listener.',
      labelNames: ['listener'],
      registers: reg,
      collect() {
        this.reset()
        for (const [name, l] of s.listeners()) this.set({ listener: name }, l.connectionCount)
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}connections_accepted_total`,
      help: 'Connections accepted, by listener.',
      labelNames: ['listener'],
      registers: reg,
      collect() {
        this.reset()
        for (const [name, n] of sumListeners((c) => c.accepted)) this.inc({ listener: name }, n)
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}connections_refused_total`,
      help: 'Connections refused at accept, by listener and reason (busy: maxConnections; peer_limit: maxConnectionsPerPeer; shutting_down).',
      labelNames: ['listener', 'reason'],
      registers: reg,
      collect() {
        this.reset()
        for (const [name, l] of s.listeners()) {
          this.inc({ listener: name, reason: 'busy' }, l.counters.refusedBusy)
          this.inc({ listener: name, reason: 'peer_limit' }, l.counters.refusedPeerLimit)
          this.inc({ listener: name, reason: 'shutting_down' }, l.counters.refusedShuttingDown)
        }
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}handshakes_total`,
      help: 'Transport handshakes completed, by listener and kind (full: X25519; resumed: a resumption ticket).',
      labelNames: ['listener', 'kind'],
      registers: reg,
      collect() {
        this.reset()
        for (const [name, l] of s.listeners()) {
          this.inc({ listener: name, kind: 'full' }, l.counters.fullHandshakes)
          this.inc({ listener: name, kind: 'resumed' }, l.counters.resumedHandshakes)
        }
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}resumptions_refused_total`,
      help: 'Resumption attempts refused (the client then does a full handshake), by listener and reason.',
      labelNames: ['listener', 'reason'],
      registers: reg,
      collect() {
        this.reset()
        for (const [name, l] of s.listeners())
          for (const [reason, n] of Object.entries(l.counters.resumptionRefused))
            this.inc({ listener: name, reason: reason.replaceAll('-', '_') }, n)
      },
    })
    new Gauge({
      name: `${METRIC_PREFIX}replay_cache_entries`,
      help: 'Entries in the TGS replay cache.',
      registers: reg,
      collect() {
        this.set(s.replay.entries)
      },
    })
    new Gauge({
      name: `${METRIC_PREFIX}replay_cache_fill_ratio`,
      help: 'TGS replay cache entries / replayCacheMaxEntries (at 1 new TGS requests are refused).',
      registers: reg,
      collect() {
        this.set(s.replay.entries / s.replay.capacity)
      },
    })
    new Gauge({
      name: `${METRIC_PREFIX}time_radius_seconds`,
      help: 'Uncertainty radius the time service signs now.',
      registers: reg,
      collect() {
        this.set(s.time().radiusUs / 1e6)
      },
    })
    new Gauge({
      name: `${METRIC_PREFIX}time_offset_seconds`,
      help: 'Served clock minus host clock (non-zero while a backward host step is slewed).',
      registers: reg,
      collect() {
        this.set(s.time().offsetUs / 1e6)
      },
    })
    this.own.registerMetric(
      new ReadGauge(`${METRIC_PREFIX}principals`, 'Principals in the database (kept in memory, not counted on scrape; absent until the count at start is done).', () => (s.db.isOpen ? s.db.principalCount : undefined)),
    )
    new Counter({
      name: `${METRIC_PREFIX}principal_cache_lookups_total`,
      help: 'Principal lookups, by result (hit: served from the cache; miss: read from the database).',
      labelNames: ['result'],
      registers: reg,
      collect() {
        this.reset()
        const c = s.db.cacheStats()
        this.inc({ result: 'hit' }, c.hits)
        this.inc({ result: 'miss' }, c.misses)
      },
    })
    new Gauge({
      name: `${METRIC_PREFIX}principal_cache_hit_ratio`,
      help: 'Share of principal lookups served from the cache since start.',
      registers: reg,
      collect() {
        const c = s.db.cacheStats()
        this.set(c.hits + c.misses === 0 ? 1 : c.hits / (c.hits + c.misses))
      },
    })
    new Gauge({
      name: `${METRIC_PREFIX}principal_cache_entries`,
      help: 'Principals (and known-absent names) held in the cache.',
      registers: reg,
      collect() {
        this.set(s.db.cacheStats().entries)
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}admin_operations_total`,
      help: 'Admin operations, by operation and outcome (ok or the error code name).',
      labelNames: ['op', 'outcome'],
      registers: reg,
      collect() {
        this.reset()
        for (const e of m.adminOps.values()) this.inc({ op: e.op, outcome: e.outcome }, e.slot.n)
      },
    })
    // Webhooks by their position in the configuration ("0", "1", …): a bounded label, and no URL
    // (which may carry a token) on /metrics.
    const hooks = () => s.webhooks?.() ?? []
    new Counter({
      name: `${METRIC_PREFIX}webhook_events_total`,
      help: 'Events a webhook has finished with, by webhook (its index in the config) and result (delivered: a 2xx answer; dropped: given up after maxAttempts, or gone from the event log first).',
      labelNames: ['webhook', 'result'],
      registers: reg,
      collect() {
        this.reset()
        for (const [i, h] of hooks().entries()) {
          this.inc({ webhook: String(i), result: 'delivered' }, h.delivered)
          this.inc({ webhook: String(i), result: 'dropped' }, h.dropped)
        }
      },
    })
    new Counter({
      name: `${METRIC_PREFIX}webhook_failed_attempts_total`,
      help: 'Webhook POSTs that failed (network error, timeout, non-2xx answer) and will be retried or dropped, by webhook.',
      labelNames: ['webhook'],
      registers: reg,
      collect() {
        this.reset()
        for (const [i, h] of hooks().entries()) this.inc({ webhook: String(i) }, h.failures)
      },
    })
    new Gauge({
      name: `${METRIC_PREFIX}webhook_queued_events`,
      help: 'Events waiting in the durable outbox of a webhook (in the event log after its cursor), by webhook.',
      labelNames: ['webhook'],
      registers: reg,
      collect() {
        this.reset()
        for (const [i, h] of hooks().entries()) this.set({ webhook: String(i) }, h.queued)
      },
    })
    this.own.registerMetric(
      new ReadGauge(`${METRIC_PREFIX}krbtgt_key_age_seconds`, "Age of krbtgt's current key.", async () => {
        const at = await s.krbtgtKeyCreatedAt()
        return at === undefined ? undefined : Math.max(0, (s.now() - at) / 1000)
      }),
    )
    this.own.registerMetric(
      new ReadGauge(`${METRIC_PREFIX}service_key_oldest_age_seconds`, 'Age of the oldest current service key (random-key principals but krbtgt), from a census of the records taken every 15 minutes.', () => {
        const at = m.census?.oldestServiceKeyCreatedAt
        return at === undefined ? undefined : Math.max(0, (s.now() - at) / 1000)
      }),
    )
    this.own.registerMetric(
      new ReadGauge(`${METRIC_PREFIX}resumption_key_next_rotation_seconds`, 'Time until the transport resumption ticket key is next replaced (its scheduled rotation).', () => {
        const ms = s.resumptionMsToNextRotation()
        return ms === undefined ? undefined : ms / 1000
      }),
    )
  }
}
