/**
 * Webhooks (issue 12): every event of the realm's event log is POSTed to each configured URL,
 * signed with the realm's Ed25519 key (PROTOCOL.md §8.5.7). The outbox is the event log
 * itself plus one durable cursor per webhook (the last sequence number delivered), so a KDC
 * restart resumes where delivery stopped: delivery is at least once (an event whose 2xx came
 * back just before a crash, before the cursor was written, is sent again), in sequence order,
 * retried with exponential backoff. Delivery runs beside the admin operations and never
 * blocks or fails them.
 */
import { createHash } from 'node:crypto'
import { sign, verify } from '../crypto/index.js'
import type { EventLog, LoggedEvent } from '../db/event-log.js'
import { formatName, parsePrincipal } from '../db/names.js'
import { globMatch, type PrincipalDb } from '../db/principal-db.js'
import type { WebhookConfig } from '../kdc/config.js'
import { signingKeyId } from '../krb/jwks.js'
import type { KeyEvent } from './operations.js'

/** The prefix signed before the body: the realm key also signs time replies and JWTs, so a webhook signature can never pass for one of them. */
export const WEBHOOK_SIGNATURE_CONTEXT = 'tessera-webhook-v1.'
/** Header carrying the signature: base64url (no padding) of Ed25519(WEBHOOK_SIGNATURE_CONTEXT || body). */
export const WEBHOOK_SIGNATURE_HEADER = 'tessera-signature'
/** Header naming the signing key: its RFC 7638 thumbprint, the `kid` of the realm's JWKS. */
export const WEBHOOK_KEY_ID_HEADER = 'tessera-key-id'

/** The JSON body of one POST. */
export interface WebhookBody {
  v: 1
  realm: string
  /** The event's sequence number (deduplicate on it: delivery is at least once). */
  seq: number
  event: LoggedEvent<KeyEvent>
}

/** Counters of one webhook (and of all: {@link WebhookOutbox.stats}). */
export interface WebhookStats {
  /** Events delivered (a 2xx answer). */
  delivered: number
  /** Attempts that failed (network error, timeout, non-2xx). */
  failures: number
  /** Events given up after maxAttempts, or removed from the log before they could be delivered. */
  dropped: number
  /** Sequence number of the last event delivered or given up. */
  cursor: number
  /** Events in the log not yet delivered or given up (the outbox depth). */
  queued: number
}

/** Options of {@link WebhookOutbox}. */
export interface WebhookOutboxOptions {
  log: EventLog<KeyEvent>
  db: PrincipalDb
  hooks: readonly WebhookConfig[]
  realm: string
  /** The realm's current signing key (read at every POST: a rotation takes effect at once). */
  signingKey: () => { secretKey: Uint8Array; publicKey: Uint8Array }
  logger: { warn(m: string): void; error(m: string): void }
  /** First retry delay, ms; doubled per failure. @default 1000 */
  backoffMs?: number
  /** Longest retry delay, ms. @default 300000 */
  maxBackoffMs?: number
}

const DEFAULT_TIMEOUT_MS = 10_000
const DEFAULT_MAX_ATTEMPTS = 12

/** The signature header value of `body` under `seed`. */
export function signWebhookBody(body: Uint8Array, seed: Uint8Array): string {
  const msg = Buffer.concat([Buffer.from(WEBHOOK_SIGNATURE_CONTEXT, 'utf8'), body])
  return Buffer.from(sign(msg, seed)).toString('base64url')
}

/**
 * Whether `signature` (the tessera-signature header) is the realm's signature of `body` (the
 * raw bytes received): what a receiver checks before it parses the body.
 */
export function verifyWebhookSignature(body: Uint8Array, signature: string, publicKey: Uint8Array): boolean {
  if (typeof signature !== 'string' || !/^[A-Za-z0-9_-]{86}$/.test(signature)) return false
  const msg = Buffer.concat([Buffer.from(WEBHOOK_SIGNATURE_CONTEXT, 'utf8'), body])
  return verify(msg, Buffer.from(signature, 'base64url'), publicKey)
}

/** `webhooks[i] (https://host:port)`: what logs say of a webhook, never its path, query or credentials. */
export function webhookLabel(url: string, index: number): string {
  let origin = '?'
  try {
    origin = new URL(url).origin
  } catch {
    // the configuration checked it is a URL
  }
  return `webhooks[${index}] (${origin})`
}

function cursorKey(url: string): string {
  return `webhooks/${createHash('sha256').update(url).digest('hex').slice(0, 32)}`
}

/** Delivers the event log to the configured webhooks. */
export class WebhookOutbox {
  readonly #workers: Worker[]
  #started = false

  constructor(o: WebhookOutboxOptions) {
    this.#workers = o.hooks.map((h, i) => new Worker(h, i, o))
  }

  /** Start delivering (reads each webhook's cursor; a new webhook starts with the events from now on). */
  async start(): Promise<void> {
    if (this.#started) return
    this.#started = true
    for (const w of this.#workers) await w.start()
  }

  /** Counters, per webhook URL and in all. */
  stats(): { total: WebhookStats; byUrl: Record<string, WebhookStats> } {
    const byUrl: Record<string, WebhookStats> = {}
    const total: WebhookStats = { delivered: 0, failures: 0, dropped: 0, cursor: 0, queued: 0 }
    for (const w of this.#workers) {
      const st = w.current()
      byUrl[w.hook.url] = st
      total.delivered += st.delivered
      total.failures += st.failures
      total.dropped += st.dropped
      total.queued += st.queued
    }
    return { total, byUrl }
  }

  /** Counters of each webhook in configuration order (the metrics: no URL leaves the KDC). */
  list(): WebhookStats[] {
    return this.#workers.map((w) => w.current())
  }

  /** Stop: no new attempt starts; resolves once the attempts running ended. */
  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.close()))
  }
}

class Worker {
  readonly stats: WebhookStats = { delivered: 0, failures: 0, dropped: 0, cursor: 0, queued: 0 }
  readonly #o: WebhookOutboxOptions
  readonly #key: string
  readonly #stop = new AbortController()
  #loop: Promise<void> | undefined
  #kid: { pub: string; kid: string } | undefined
  /** How the logs name this webhook: its index and origin; its path and query often hold the receiver's token. */
  readonly #label: string

  /** A copy of the counters, with the outbox depth as of now. */
  current(): WebhookStats {
    return { ...this.stats, queued: this.#o.log.closed ? 0 : Math.max(0, this.#o.log.last - this.stats.cursor) }
  }

  constructor(
    readonly hook: WebhookConfig,
    index: number,
    o: WebhookOutboxOptions,
  ) {
    this.#o = o
    this.#key = cursorKey(hook.url)
    this.#label = webhookLabel(hook.url, index)
  }

  async start(): Promise<void> {
    const raw = await this.#o.db.getAdminMeta(this.#key)
    if (raw !== undefined) this.stats.cursor = (JSON.parse(Buffer.from(raw).toString('utf8')) as { delivered: number }).delivered
    else {
      this.stats.cursor = this.#o.log.last
      await this.#save()
    }
    this.#loop = this.#run().catch((err: unknown) => this.#o.logger.error(`${this.#label}: delivery stopped: ${(err as Error).message}`))
  }

  async close(): Promise<void> {
    this.#stop.abort()
    await this.#loop
  }

  async #save(): Promise<void> {
    await this.#o.db.putAdminMeta([{ key: this.#key, value: Buffer.from(JSON.stringify({ delivered: this.stats.cursor }), 'utf8') }])
  }

  #wanted(e: LoggedEvent<KeyEvent>): boolean {
    const h = this.hook
    if (h.events !== undefined && !h.events.includes(e.type)) return false
    if (h.principals === undefined) return true
    try {
      const id = parsePrincipal(e.principal, this.#o.realm)
      return globMatch(h.principals, h.principals.includes('@') ? e.principal : formatName(id.components))
    } catch {
      return false
    }
  }

  async #run(): Promise<void> {
    const log = this.#o.log
    const signal = this.#stop.signal
    let unsaved = 0
    while (!signal.aborted) {
      if (this.stats.cursor + 1 < log.first) {
        const lost = log.first - 1 - this.stats.cursor
        this.stats.dropped += lost
        this.#o.logger.error(`${this.#label}: ${lost} events were removed from the event log before they could be delivered`)
        this.stats.cursor = log.first - 1
        await this.#save()
      }
      const [e] = await log.read(this.stats.cursor, 1)
      if (e === undefined) {
        if (unsaved > 0) {
          await this.#save()
          unsaved = 0
        }
        await log.wait(this.stats.cursor, 60_000, signal)
        if (log.closed) await sleep(1000, signal)
        continue
      }
      if (!this.#wanted(e)) {
        // Skipped events advance the cursor too, written with the next delivery or when idle.
        this.stats.cursor = e.seq
        unsaved++
        continue
      }
      if (await this.#deliver(e, signal)) {
        this.stats.delivered++
      } else if (signal.aborted) return
      else {
        this.stats.dropped++
        this.#o.logger.error(`${this.#label}: event ${e.seq} given up after ${this.hook.maxAttempts ?? DEFAULT_MAX_ATTEMPTS} attempts`)
      }
      this.stats.cursor = e.seq
      await this.#save()
      unsaved = 0
    }
  }

  /** POST one event until a 2xx, maxAttempts or stop. */
  async #deliver(e: LoggedEvent<KeyEvent>, signal: AbortSignal): Promise<boolean> {
    const body: WebhookBody = { v: 1, realm: this.#o.realm, seq: e.seq, event: e }
    const bytes = Buffer.from(JSON.stringify(body), 'utf8')
    const max = this.hook.maxAttempts ?? DEFAULT_MAX_ATTEMPTS
    const base = this.#o.backoffMs ?? 1000
    const cap = this.#o.maxBackoffMs ?? 300_000
    for (let attempt = 1; attempt <= max && !signal.aborted; attempt++) {
      let why: string
      try {
        const key = this.#o.signingKey()
        const res = await fetch(this.hook.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            [WEBHOOK_SIGNATURE_HEADER]: signWebhookBody(bytes, key.secretKey),
            [WEBHOOK_KEY_ID_HEADER]: await this.#keyId(key.publicKey),
          },
          body: bytes,
          redirect: 'manual',
          signal: AbortSignal.any([signal, AbortSignal.timeout(this.hook.timeoutMs ?? DEFAULT_TIMEOUT_MS)]),
        })
        await res.body?.cancel().catch(() => {})
        if (res.status >= 200 && res.status < 300) return true
        why = `HTTP ${res.status}`
      } catch (err) {
        if (signal.aborted) return false
        why = (err as Error).name === 'TimeoutError' ? 'timeout' : (err as Error).message.split(this.hook.url).join('<url>')
      }
      this.stats.failures++
      this.#o.logger.warn(`${this.#label}: event ${e.seq}, attempt ${attempt} of ${max} failed: ${why}`)
      if (attempt < max) await sleep(Math.min(cap, base * 2 ** (attempt - 1)), signal)
    }
    return false
  }

  async #keyId(pub: Uint8Array): Promise<string> {
    const hex = Buffer.from(pub).toString('hex')
    if (this.#kid?.pub !== hex) this.#kid = { pub: hex, kid: await signingKeyId(pub) }
    return this.#kid.kid
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const t = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}
