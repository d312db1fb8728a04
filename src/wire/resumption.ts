/**
 * Transport resumption (PROTOCOL.md §3.6): after one full handshake a client holds a
 * ticket and a resumption secret, and later connections to the same KDC skip X25519:
 * HS_RESUME (ticket, client random, ticket age, optional sealed early request) ->
 * HS_RESUMED (server random, key confirmation, next ticket).
 *
 * Server side (TicketIssuer): tickets are sealed under keys that live only in this
 * process's memory. A key is replaced by a timer exactly `lifetimeMs` after it was made
 * and wiped at the next replacement, so no key outlives 2 x `lifetimeMs` (plus however
 * late the event loop runs the timer); a ticket dies with the process and a resumed
 * connection's keys cannot be recovered from anything on disk. The ticket carries the issue time on this process's monotonic
 * clock; a resumption is accepted only if the client's stated ticket age puts its
 * sending within `windowMs` of now, and only once per client random (remembered for
 * at least twice that window), so a recorded HS_RESUME and its early request can never
 * be replayed. Every refusal is safe: the client falls back to a full handshake.
 *
 * Client side (ResumptionStore): tickets by server, in memory, bounded.
 */
import { performance } from 'node:perf_hooks'
import { backend, randomBytes, wipe } from '../crypto/index.js'

/** Options of a TicketIssuer. */
export interface TicketIssuerOptions {
  /** How long a ticket may be used, ms (also the ticket key rotation period). @default 600000 */
  lifetimeMs?: number
  /** Tolerated difference between the client's ticket age and the server's, ms. @default 5000 */
  windowMs?: number
  /** Most client randoms remembered per generation; beyond it resumption is refused. @default 200000 */
  maxRecent?: number
  /** Monotonic clock, ms (tests). @default performance.now */
  now?: () => number
  /**
   * Starts the key rotation timer: call `fn` after `delayMs`, return a cancel function
   * (tests). @default an unref'd setTimeout; with `now` given and no `setTimer`, no timer
   * runs and keys rotate only when a ticket is issued or redeemed.
   */
  setTimer?: (fn: () => void, delayMs: number) => () => void
}

// Node clamps a timer above 2^31-1 ms to 1 ms: a longer wait is done in several steps.
const MAX_TIMER_MS = 0x7fffffff

function defaultSetTimer(fn: () => void, delayMs: number): () => void {
  const t = setTimeout(fn, delayMs)
  t.unref()
  return () => clearTimeout(t)
}

/** Why a resumption was refused (for logs; the peer only learns TSR_ERR_RESUME). */
export type RefusalReason = 'bad-ticket' | 'expired' | 'age-mismatch' | 'replay' | 'busy'

interface TicketKey {
  id: Uint8Array
  key: Uint8Array
  created: number
}

const KID_BYTES = 4
const NONCE_BYTES = 24
const SKID_BYTES = 8
const PLAIN_BYTES = 32 + 8 + SKID_BYTES
/** Size of a ticket this issuer makes: kid(4) || nonce(24) || tag(16) || rms(32) || issued(8) || static key id(8). */
export const TICKET_BYTES = KID_BYTES + NONCE_BYTES + 16 + PLAIN_BYTES

function sameBytes(a: Uint8Array, b: Uint8Array, len: number): boolean {
  for (let i = 0; i < len; i++) if (a[i] !== b[i]) return false
  return true
}

/** Issues and redeems resumption tickets; share one among the listeners of a KDC. */
export class TicketIssuer {
  readonly lifetimeMs: number
  readonly windowMs: number
  readonly maxRecent: number
  private readonly now: () => number
  private current: TicketKey
  private previous: TicketKey | undefined
  private recent = new Set<string>()
  private older = new Set<string>()
  private generationStart: number
  private closed = false
  private readonly setTimer: ((fn: () => void, delayMs: number) => () => void) | undefined
  private cancelTimer: (() => void) | undefined

  constructor(opts: TicketIssuerOptions = {}) {
    this.lifetimeMs = opts.lifetimeMs ?? 600_000
    this.windowMs = opts.windowMs ?? 5000
    this.maxRecent = opts.maxRecent ?? 200_000
    for (const [k, v] of [
      ['lifetimeMs', this.lifetimeMs],
      ['windowMs', this.windowMs],
      ['maxRecent', this.maxRecent],
    ] as const)
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`${k} must be a positive integer`)
    if (this.lifetimeMs > 0xffffffff * 1000) throw new RangeError('lifetimeMs too large')
    this.now = opts.now ?? (() => performance.now())
    const t = this.now()
    this.current = this.newKey(t)
    this.generationStart = t
    this.setTimer = opts.setTimer ?? (opts.now ? undefined : defaultSetTimer)
    this.schedule()
  }

  /**
   * Arm the timer for the current key's replacement at created + lifetimeMs. It runs even
   * on an idle server, so no key (and no connection it could reveal) outlives 2 x lifetime.
   */
  private schedule(): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
    if (!this.setTimer || this.closed) return
    const delay = Math.max(0, this.current.created + this.lifetimeMs - this.now())
    this.cancelTimer = this.setTimer(() => this.onTimer(), Math.min(MAX_TIMER_MS, Math.ceil(delay)))
  }

  private onTimer(): void {
    this.cancelTimer = undefined
    if (this.closed) return
    const t = this.now()
    // A timer may run a little early on the monotonic clock: up to 1 ms counts as due. A
    // wait longer than a timer can hold is re-armed.
    if (this.current.created + this.lifetimeMs - t > 1) this.schedule()
    else this.rotate(t, true)
  }

  /** Ticket lifetime told to clients, whole seconds. */
  get lifetimeS(): number {
    return Math.max(1, Math.floor(this.lifetimeMs / 1000))
  }

  /** Time until the ticket key is next replaced, ms (metrics). */
  get msToNextRotation(): number {
    return Math.max(0, this.current.created + this.lifetimeMs - this.now())
  }

  /** Entries in the anti-replay memory (diagnostics). */
  get rememberedRandoms(): number {
    return this.recent.size + this.older.size
  }

  private newKey(t: number): TicketKey {
    return { id: randomBytes(KID_BYTES), key: randomBytes(32), created: t }
  }

  private rotate(t: number, due = false): void {
    const age = t - this.current.created
    if (due || age >= this.lifetimeMs) {
      if (this.previous) wipe(this.previous.key)
      // After a stall (a blocked event loop, a suspended host) the current key may itself be
      // 2 x lifetime old: it goes too, and with it every ticket it sealed (all expired by then).
      if (age >= 2 * this.lifetimeMs) {
        wipe(this.current.key)
        this.previous = undefined
      } else this.previous = this.current
      this.current = this.newKey(t)
      this.schedule()
    }
    // Two generations of 2 x windowMs each: a client random stays remembered for at
    // least 2 x windowMs, longer than any replay the age check would still accept.
    if (t - this.generationStart >= 2 * this.windowMs) {
      this.older = this.recent
      this.recent = new Set()
      this.generationStart = t
    }
  }

  /** True once close() has run: no more tickets are issued or accepted. */
  get isClosed(): boolean {
    return this.closed
  }

  /**
   * A ticket carrying `rms` (copied; the caller wipes its own) and `skid`, the id of the
   * server static key of the connection (8 bytes; zeros when absent), returned on redeem.
   * Throws once closed.
   */
  issue(rms: Uint8Array, skid?: Uint8Array): Uint8Array {
    if (this.closed) throw new Error('ticket issuer is closed')
    const t = this.now()
    this.rotate(t)
    const plain = new Uint8Array(PLAIN_BYTES)
    plain.set(rms, 0)
    new DataView(plain.buffer).setFloat64(32, Math.floor(t))
    if (skid !== undefined) plain.set(skid.subarray(0, SKID_BYTES), 40)
    const nonce = randomBytes(NONCE_BYTES)
    const box = backend().secretbox(plain, nonce, this.current.key)
    wipe(plain)
    const tk = new Uint8Array(TICKET_BYTES)
    tk.set(this.current.id, 0)
    tk.set(nonce, KID_BYTES)
    tk.set(box, KID_BYTES + NONCE_BYTES)
    return tk
  }

  /**
   * Redeem a ticket presented with client random `cr` and the client's ticket age.
   * Returns the resumption secret, or why it is refused. Accepting remembers `cr`.
   */
  redeem(tk: Uint8Array, cr: Uint8Array, ageMs: number): { rms: Uint8Array; renew: boolean; skid: Uint8Array } | { refused: RefusalReason } {
    if (this.closed || tk.length !== TICKET_BYTES) return { refused: 'bad-ticket' }
    const t = this.now()
    this.rotate(t)
    const key = [this.current, this.previous].find((k) => k && sameBytes(k.id, tk, KID_BYTES))
    if (!key) return { refused: 'bad-ticket' }
    const plain = backend().secretboxOpen(tk.subarray(KID_BYTES + NONCE_BYTES), tk.subarray(KID_BYTES, KID_BYTES + NONCE_BYTES), key.key)
    if (plain === null || plain.length !== PLAIN_BYTES) return { refused: 'bad-ticket' }
    const issued = new DataView(plain.buffer, plain.byteOffset).getFloat64(32)
    // A copy (the backend may return a Buffer, whose slice() is a view of pooled memory).
    const rms = Uint8Array.from(plain.subarray(0, 32))
    const skid = Uint8Array.from(plain.subarray(40, 40 + SKID_BYTES))
    wipe(plain)
    let refused: RefusalReason | undefined
    if (!(t - issued <= this.lifetimeMs)) refused = 'expired'
    else if (Math.abs(issued + ageMs - t) > this.windowMs) refused = 'age-mismatch'
    else {
      const id = Buffer.from(cr.buffer, cr.byteOffset, cr.length).toString('latin1')
      if (this.recent.has(id) || this.older.has(id)) refused = 'replay'
      else if (this.recent.size >= this.maxRecent) refused = 'busy'
      else this.recent.add(id)
    }
    if (refused) {
      wipe(rms)
      return { refused }
    }
    // A ticket past half its life (or sealed under the previous key) is replaced; a younger
    // one stays in use, which spares both sides sealing and opening a new one every time.
    return { rms, renew: t - issued > this.lifetimeMs / 2 || key !== this.current, skid }
  }

  /**
   * Replace both ticket keys now (the KDC's identity keys changed): every ticket issued before
   * is refused (TSR_ERR_RESUME) and its holder does a full handshake, with the keys of its realm file.
   */
  reset(): void {
    if (this.closed) return
    wipe(this.current.key, this.previous?.key)
    this.previous = undefined
    this.current = this.newKey(this.now())
    this.schedule()
  }

  /** Wipe the ticket keys; every ticket issued becomes useless. */
  close(): void {
    this.closed = true
    this.cancelTimer?.()
    this.cancelTimer = undefined
    wipe(this.current.key, this.previous?.key)
    this.recent.clear()
    this.older.clear()
  }
}

/** A ticket as kept outside the process (ResumptionStore.export / import). */
export interface StoredTicket {
  /** ResumptionStore.id of the server. */
  id: string
  tk: Uint8Array
  rms: Uint8Array
  /** When it was received, ms since the epoch (wall clock). */
  receivedAtMs: number
  lifetimeS: number
}

/** A ticket as a client holds it. */
export interface ClientTicket {
  tk: Uint8Array
  rms: Uint8Array
  /** performance.now() when received. */
  receivedAt: number
  lifetimeMs: number
}

/**
 * A client's resumption tickets, by server (host, port and transport key), in memory.
 * Holds at most `max` servers; the oldest is dropped first. Tickets are reusable until
 * they expire; each resumption replaces the ticket with the fresh one it returns.
 */
export class ResumptionStore {
  private readonly tickets = new Map<string, ClientTicket>()
  /** Connections resumed from a ticket of this store (diagnostics). */
  resumed = 0
  /** Resumptions the server refused, each followed by a full handshake (diagnostics). */
  refused = 0

  constructor(
    readonly max = 64,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The store key of a server. */
  static id(host: string, port: number, serverKey: Uint8Array): string {
    return `${host}|${port}|${Buffer.from(serverKey).toString('hex')}`
  }

  /** A ticket still valid for at least a second, or undefined. */
  get(id: string): ClientTicket | undefined {
    const t = this.tickets.get(id)
    if (!t) return undefined
    if (this.now() - t.receivedAt > t.lifetimeMs - 1000) {
      this.delete(id)
      return undefined
    }
    return t
  }

  /** Age of a ticket in whole ms, as HS_RESUME states it. */
  age(t: ClientTicket): number {
    return Math.min(0xffffffff, Math.max(0, Math.round(this.now() - t.receivedAt)))
  }

  set(id: string, tk: Uint8Array, rms: Uint8Array, lifetimeS: number): void {
    this.delete(id)
    if (this.tickets.size >= this.max) {
      const oldest = this.tickets.keys().next().value
      if (oldest !== undefined) this.delete(oldest)
    }
    this.tickets.set(id, { tk, rms, receivedAt: this.now(), lifetimeMs: lifetimeS * 1000 })
  }

  /**
   * The unexpired tickets with their receipt time on the wall clock, for a store that
   * outlives the process (kauth keeps them in the credential cache, 0600). The secrets
   * are copied: the caller must keep them as secret as session keys.
   */
  export(wallNow: number = Date.now()): StoredTicket[] {
    const out: StoredTicket[] = []
    for (const [id, t] of this.tickets) {
      if (this.now() - t.receivedAt > t.lifetimeMs - 1000) continue
      out.push({
        id,
        tk: Uint8Array.from(t.tk),
        rms: Uint8Array.from(t.rms),
        receivedAtMs: Math.round(wallNow - (this.now() - t.receivedAt)),
        lifetimeS: Math.round(t.lifetimeMs / 1000),
      })
    }
    return out
  }

  /**
   * Take tickets exported by another process. A ticket whose wall-clock age is negative
   * (the clock went back) or past its lifetime is skipped; a wrong age only costs a
   * refusal and a full handshake.
   */
  import(list: readonly StoredTicket[], wallNow: number = Date.now()): void {
    for (const e of list) {
      const ageMs = wallNow - e.receivedAtMs
      if (!(ageMs >= 0) || ageMs > e.lifetimeS * 1000 - 1000) continue
      if (this.tickets.size >= this.max && !this.tickets.has(e.id)) continue
      this.tickets.set(e.id, { tk: Uint8Array.from(e.tk), rms: Uint8Array.from(e.rms), receivedAt: this.now() - ageMs, lifetimeMs: e.lifetimeS * 1000 })
    }
  }

  /** Forget a server's ticket (refused, or the server changed). */
  delete(id: string): void {
    const t = this.tickets.get(id)
    if (!t) return
    this.tickets.delete(id)
    // Not wiped: a connection being resumed right now may still be using it.
  }

  /** Forget everything, wiping the resumption secrets. */
  clear(): void {
    for (const t of this.tickets.values()) wipe(t.rms)
    this.tickets.clear()
  }

  get size(): number {
    return this.tickets.size
  }
}
