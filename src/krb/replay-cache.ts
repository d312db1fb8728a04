/**
 * Replay cache for authenticators (RFC 4120 §3.2.3, MIT replay.c). Entries live only
 * until their authenticator would fail the skew check anyway (ctime + skew), held in
 * time buckets so expiry drops whole buckets. Bounded: when full it refuses to
 * remember (the caller answers "busy") rather than evicting, since evicting would
 * reopen a replay window. Restart-safe with `startedAt`: an authenticator whose
 * ctime predates this cache's start may have been seen by a previous process, so it
 * is refused as "cold"; clients retry with a fresh authenticator.
 */

/** Options of a ReplayCache. */
export interface ReplayCacheOptions {
  /** Clock skew window, ms: an entry is kept until ctime + maxClockSkewMs. */
  maxClockSkewMs: number
  /** Most entries held. @default 2000000 */
  maxEntries?: number
  /** Clock. @default Date.now */
  now?: () => number
  /**
   * Once the cache is half full, one client may hold at most this share of it; past that
   * its requests get 'full' while other clients are still served. @default 0.125
   */
  maxClientShare?: number
  /** Bucket width, ms. @default 10000 */
  bucketMs?: number
  /** Monotonic clock, ms (detects a wall clock stepped back since the start). @default performance.now */
  monoMs?: () => number
}

/** A wall clock behind the monotonic one by more than this since the start was stepped back. */
const STEP_BACK_MS = 1000

/** Result of checking an authenticator. */
export type ReplayVerdict = 'fresh' | 'replay' | 'cold' | 'full'

interface Bucket {
  ids: Set<string>
  /** Entries per client in this bucket (dropped with it). */
  perClient: Map<string, number>
}

/** A bounded, time-bucketed replay cache. An instance is passed in, never a singleton. */
export class ReplayCache {
  readonly startedAt: number
  private readonly buckets = new Map<number, Bucket>()
  private readonly perClient = new Map<string, number>()
  private size = 0
  private readonly maxEntries: number
  private readonly bucketMs: number
  private readonly now: () => number
  private lastSweep = 0
  private readonly monoMs: () => number
  private readonly startMono: number
  /** Authenticators dated before this are 'cold': startedAt, moved back by a wall clock step back. */
  private coldBefore: number

  constructor(private readonly opts: ReplayCacheOptions) {
    this.now = opts.now ?? Date.now
    this.maxEntries = opts.maxEntries ?? 2_000_000
    this.bucketMs = opts.bucketMs ?? 10_000
    this.startedAt = this.now()
    this.monoMs = opts.monoMs ?? (() => performance.now())
    this.startMono = this.monoMs()
    this.coldBefore = this.startedAt
  }

  /**
   * Whether `ctime` predates this cache. If the wall clock was stepped back since the start
   * (NTP correcting a clock that ran fast), the start is moved back with it, measured on the
   * monotonic clock: otherwise every honest authenticator would be 'cold' until the wall
   * clock caught up with the old start. The price, stated in docs/security.md: an
   * authenticator a previous process accepted within the step before this start is no
   * longer known to be cold.
   */
  private isCold(ctime: number, now: number): boolean {
    if (ctime >= this.coldBefore) return false
    const back = this.startedAt + (this.monoMs() - this.startMono) - now
    if (back > STEP_BACK_MS) this.coldBefore = Math.min(this.coldBefore, this.startedAt - back)
    return ctime < this.coldBefore
  }

  /** Entries held now. */
  get entries(): number {
    return this.size
  }

  /** Most entries this cache holds. */
  get capacity(): number {
    return this.maxEntries
  }

  /**
   * Check and remember the authenticator identified by `id` (e.g. a hash of its
   * ciphertext) with client time `ctime`. Call only after the skew check passed.
   */
  check(id: string, ctime: number, client = ''): ReplayVerdict {
    // `client` (e.g. "alice@REALM") enables the fair share; '' is nobody's and unlimited.
    const now = this.now()
    if (this.isCold(ctime, now)) return 'cold'
    if (now - this.lastSweep >= this.bucketMs) this.sweep(now)
    const expires = ctime + this.opts.maxClockSkewMs
    const bucketId = Math.floor(expires / this.bucketMs)
    // An id can only sit in the bucket of its own expiry: ctime is inside the sealed authenticator.
    let bucket = this.buckets.get(bucketId)
    if (bucket?.ids.has(id)) return 'replay'
    if (this.size >= this.maxEntries) {
      this.sweep(now)
      if (this.size >= this.maxEntries) return 'full'
    }
    // Fair share: one (authenticated) client flooding requests cannot fill the cache for all.
    const held = this.perClient.get(client) ?? 0
    if (client !== '' && this.size * 2 >= this.maxEntries && held >= this.maxEntries * (this.opts.maxClientShare ?? 0.125)) return 'full'
    if (!bucket) {
      bucket = { ids: new Set(), perClient: new Map() }
      this.buckets.set(bucketId, bucket)
    }
    bucket.ids.add(id)
    bucket.perClient.set(client, (bucket.perClient.get(client) ?? 0) + 1)
    this.perClient.set(client, held + 1)
    this.size++
    return 'fresh'
  }

  /** Drop buckets whose every entry has expired. */
  sweep(now: number = this.now()): void {
    this.lastSweep = now
    const current = Math.floor(now / this.bucketMs)
    for (const [id, bucket] of this.buckets) {
      if (id < current) {
        this.size -= bucket.ids.size
        for (const [client, n] of bucket.perClient) {
          const left = (this.perClient.get(client) ?? n) - n
          if (left > 0) this.perClient.set(client, left)
          else this.perClient.delete(client)
        }
        this.buckets.delete(id)
      }
    }
  }
}
