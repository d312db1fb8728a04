/**
 * The realm's event log: every key event (and lockout) gets the next sequence number and is
 * stored in the database's `admin` sublevel, kept for a retention, readable from any number.
 * The one publisher of issue 12: the watch stream (long polls on the admin listener) and the
 * webhook outbox read it; in-process subscribers hear each event once it landed.
 *
 * A change and its events are written in one atomic batch ({@link EventLog.commit}): after a
 * crash either both are there or neither is, so a reader sees each event of a change that
 * landed exactly once, in commit order, with no gaps. Events that come with no change of
 * their own (a lockout decided by the AS's group commit, a key read by ktadd) are written in
 * a batch of their own right after ({@link EventLog.append}): a crash between the two loses
 * that event (at most once).
 */
import { TesseraError, TesseraErrorCode } from '../errors.js'
import type { AdminMetaPut, PrincipalDb, WriteOptions } from './principal-db.js'

/** What every event carries. */
export interface RealmEvent {
  type: string
  /** `name@REALM` the event is about. */
  principal: string
  /** ms since the epoch. */
  time: number
}

/** An event as stored: with its sequence number (1, 2, 3, … with no gaps). */
export type LoggedEvent<E extends RealmEvent = RealmEvent> = E & { seq: number }

/** Options of {@link EventLog.open}. */
export interface EventLogOptions {
  db: PrincipalDb
  /** Events older than this are removed (at the next write), ms. @default 604800000 (7 days) */
  retentionMs?: number
  /** At most this many events are kept; the oldest go first. @default 100000 */
  maxEvents?: number
  /** @default Date.now */
  now?: () => number
}

/** Defaults of {@link EventLogOptions}. */
export const DEFAULT_EVENT_LOG_OPTIONS = { retentionMs: 7 * 24 * 3600_000, maxEvents: 100_000 } as const

// Records of the admin sublevel: the head { first, last } and one record per event, by a
// zero-padded number so that the store's order is the sequence order.
const HEAD_KEY = 'events/head'
const eventKey = (seq: number): string => `events/${String(seq).padStart(16, '0')}`
// Old events removed by one write at most: no write carries a large batch of deletions.
const PRUNE_PER_WRITE = 256
// Recent events kept decoded in memory (the live watchers read these).
const CACHE_EVENTS = 4096

interface Staged<E extends RealmEvent> {
  events: LoggedEvent<E>[]
  first: number
  firstTime: number | undefined
  ops: AdminMetaPut[]
}

/** The durable, sequenced event log of a realm. */
export class EventLog<E extends RealmEvent = RealmEvent> {
  readonly retentionMs: number
  readonly maxEvents: number
  readonly #db: PrincipalDb
  readonly #now: () => number
  /** Oldest sequence number kept; first > last when the log is empty. */
  #first: number
  #last: number
  /**
   * The newest event readers see: events are numbered as their batch lands, and shown once
   * the write that carried them has returned (the database then no longer serves the record
   * from before the change), in sequence order.
   */
  #visible: number
  /** Events landed and not yet shown: their batch's write is still returning. */
  readonly #landed = new Map<number, { staged: Staged<E>; done: boolean }>()
  /** Time of event #first, when known. */
  #firstTime: number | undefined
  readonly #cache = new Map<number, LoggedEvent<E>>()
  #tail: Promise<unknown> = Promise.resolve()
  readonly #waiters = new Set<() => void>()
  readonly #subscribers = new Set<(e: LoggedEvent<E>) => void>()
  #closed = false

  private constructor(o: EventLogOptions, first: number, last: number) {
    this.#db = o.db
    this.#now = o.now ?? Date.now
    this.retentionMs = o.retentionMs ?? DEFAULT_EVENT_LOG_OPTIONS.retentionMs
    this.maxEvents = o.maxEvents ?? DEFAULT_EVENT_LOG_OPTIONS.maxEvents
    if (!Number.isSafeInteger(this.retentionMs) || this.retentionMs < 1) throw new RangeError('retentionMs must be a positive integer')
    if (!Number.isSafeInteger(this.maxEvents) || this.maxEvents < 1) throw new RangeError('maxEvents must be a positive integer')
    this.#first = first
    this.#last = last
    this.#visible = last
  }

  /** Open the log of `o.db` (reading its head) and remove what is past the retention. */
  static async open<E extends RealmEvent = RealmEvent>(o: EventLogOptions): Promise<EventLog<E>> {
    const raw = await o.db.getAdminMeta(HEAD_KEY)
    let first = 1
    let last = 0
    if (raw !== undefined) {
      const head = JSON.parse(Buffer.from(raw).toString('utf8')) as { first?: unknown; last?: unknown }
      if (!Number.isSafeInteger(head.first) || !Number.isSafeInteger(head.last))
        throw new TesseraError(TesseraErrorCode.TESSERA_DB, 'principal database: the event log head is corrupt')
      first = head.first as number
      last = head.last as number
    }
    const log = new EventLog<E>(o, first, last)
    await log.prune()
    return log
  }

  /** The newest sequence number shown (0 before the first event). */
  get last(): number {
    return this.#visible
  }

  /** The oldest sequence number still kept (last + 1 when the log is empty). */
  get first(): number {
    return this.#first
  }

  /**
   * Write options for a change whose events are `events()` (called once the change is
   * decided, inside the write): the events and the new head ride in the change's own batch,
   * through `inner` (say the audit log's commit) when given. Subscribers and waiters hear
   * the events once the batch landed.
   */
  commit(events: () => E[], inner?: WriteOptions): WriteOptions {
    return {
      commit: (write) => {
        let landed: Staged<E> | undefined
        const withEvents = (extra: AdminMetaPut[]) =>
          this.#serial(async () => {
            const evs = events()
            if (evs.length === 0) return write(extra)
            const staged = await this.#stage(evs)
            await write([...extra, ...staged.ops])
            this.#land(staged)
            landed = staged
          })
        const run = inner?.commit !== undefined ? inner.commit(withEvents) : withEvents([])
        // Shown once the caller's write has returned (PrincipalDb drops its cached record then), also when what came after the batch failed.
        return run.finally(() => {
          if (landed !== undefined) {
            const s = landed
            setImmediate(() => this.#show(s))
          }
        })
      },
    }
  }

  /** Write events that come with no change of their own, as one batch. Resolves with them as stored. */
  append(events: E[]): Promise<LoggedEvent<E>[]> {
    return this.#serial(async () => {
      if (events.length === 0) return []
      const staged = await this.#stage(events)
      await this.#db.putAdminMeta(staged.ops)
      this.#land(staged)
      this.#show(staged)
      return staged.events
    })
  }

  /** Remove the events past the retention or beyond maxEvents now (writes also do it as they go). */
  prune(): Promise<void> {
    return this.#serial(async () => {
      for (;;) {
        const staged = await this.#stage([])
        if (staged.first === this.#first) return
        await this.#db.putAdminMeta(staged.ops)
        this.#land(staged)
        this.#show(staged)
      }
    })
  }

  /** Up to `limit` events after `after`, oldest first (fewer when some are past the retention). */
  async read(after: number, limit: number): Promise<LoggedEvent<E>[]> {
    const from = Math.max(after + 1, this.#first)
    const to = Math.min(this.#visible, after + limit)
    const out: LoggedEvent<E>[] = []
    for (let seq = from; seq <= to; seq++) {
      const e = await this.#get(seq)
      if (e !== undefined) out.push(e)
    }
    return out
  }

  /**
   * Resolve true as soon as there is an event after `after`, false when `ms` passed, the
   * signal aborted or the log closed first.
   */
  wait(after: number, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (this.#visible > after) return Promise.resolve(true)
    if (this.#closed || ms <= 0 || signal?.aborted) return Promise.resolve(false)
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer)
        this.#waiters.delete(wake)
        signal?.removeEventListener('abort', done)
        resolve(this.#visible > after)
      }
      const wake = () => {
        if (this.#visible > after || this.#closed) done()
      }
      const timer = setTimeout(done, ms)
      this.#waiters.add(wake)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  /** Hear every event once it landed, in sequence order. `fn` must not throw. Returns the unsubscribe. */
  subscribe(fn: (e: LoggedEvent<E>) => void): () => void {
    this.#subscribers.add(fn)
    return () => this.#subscribers.delete(fn)
  }

  /** End every wait (the KDC is stopping). Writes still work until the database closes. */
  close(): void {
    this.#closed = true
    for (const w of [...this.#waiters]) w()
  }

  get closed(): boolean {
    return this.#closed
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn)
    this.#tail = run.catch(() => {})
    return run
  }

  async #get(seq: number): Promise<LoggedEvent<E> | undefined> {
    const hit = this.#cache.get(seq)
    if (hit !== undefined) return hit
    const raw = await this.#db.getAdminMeta(eventKey(seq))
    return raw === undefined ? undefined : (JSON.parse(Buffer.from(raw).toString('utf8')) as LoggedEvent<E>)
  }

  /** The records of `events` (numbered from last + 1), the deletions due, and the new head. */
  async #stage(events: E[]): Promise<Staged<E>> {
    const ops: AdminMetaPut[] = []
    const logged = events.map((e, i) => ({ ...e, seq: this.#last + 1 + i }) as LoggedEvent<E>)
    for (const e of logged) ops.push({ key: eventKey(e.seq), value: Buffer.from(JSON.stringify(e), 'utf8') })
    const newLast = this.#last + logged.length
    const horizon = this.#now() - this.retentionMs
    let first = this.#first
    let firstTime = this.#firstTime
    let removed = 0
    while (removed < PRUNE_PER_WRITE && first <= this.#last) {
      if (firstTime === undefined) firstTime = (await this.#get(first))?.time ?? Number.NEGATIVE_INFINITY
      if (newLast - first + 1 <= this.maxEvents && firstTime >= horizon) break
      ops.push({ key: eventKey(first), value: new Uint8Array(0), del: true })
      first++
      removed++
      firstTime = undefined
    }
    if (first > this.#last) firstTime = logged[0]?.time
    if (logged.length > 0 || first !== this.#first)
      ops.push({ key: HEAD_KEY, value: Buffer.from(JSON.stringify({ first, last: newLast }), 'utf8') })
    return { events: logged, first, firstTime, ops }
  }

  #land(s: Staged<E>): void {
    for (let seq = this.#first; seq < s.first; seq++) this.#cache.delete(seq)
    this.#first = s.first
    this.#firstTime = s.firstTime
    for (const e of s.events) {
      this.#cache.set(e.seq, e)
      this.#last = e.seq
    }
    for (const seq of this.#cache.keys()) {
      if (seq > this.#last - CACHE_EVENTS) break
      this.#cache.delete(seq)
    }
    const first = s.events[0]
    if (first !== undefined) this.#landed.set(first.seq, { staged: s, done: false })
  }

  /** Show the events of `s` once every event before them is shown: subscribers and waiters hear them, in sequence order. */
  #show(s: Staged<E>): void {
    const first = s.events[0]
    if (first === undefined) return
    const entry = this.#landed.get(first.seq)
    if (entry === undefined) return
    entry.done = true
    for (;;) {
      const next = this.#landed.get(this.#visible + 1)
      if (next === undefined || !next.done) break
      this.#landed.delete(this.#visible + 1)
      for (const e of next.staged.events) {
        this.#visible = e.seq
        for (const fn of this.#subscribers) {
          try {
            fn(e)
          } catch {
            // A subscriber's failure is its own.
          }
        }
      }
    }
    for (const w of [...this.#waiters]) w()
  }
}
