/** KdcClient: log in (AS), get service tickets and renew them (TGS), with failover and connection reuse. */
import { ErrorCode } from '../../proto/error-codes.js'
import { KdcOption, PaType } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import {
  type AsRep,
  type AsReq,
  EncJwtPart,
  EncKdcRepPart,
  type EncKdcRepPart as EncKdcRepPartT,
  type KdfParamsWire,
  type Message,
  PaEncTs,
  TgsAuthenticator,
  type TgsRep,
  type Ticket,
} from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { checkKdfParams, defaultSalt, passwordToKey, randomUint32, tryOpen } from '../crypto/index.js'
import { checkPrincipalId } from '../db/names.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { openPart, principalString, sameName, sealPart } from '../krb/parts.js'
import { type KdcAddress, type RealmFile, transportKeyAt } from '../krb/realm-file.js'
import { type ChannelOptions, type ClientChannel, connectChannel, openWithRequest } from '../wire/client.js'
import { ResumptionStore } from '../wire/resumption.js'
import type { CredentialCache } from './ccache.js'
import { krbErrorFromReply } from './errors.js'
import { getServiceToken, type ServiceToken, type ServiceTokenOptions } from './jwt.js'
import { syncTime } from './time-sync.js'

/** A ticket and what the client needs to use it. */
export interface Credentials {
  crealm: string
  cname: string[]
  srealm: string
  sname: string[]
  ticket: Ticket
  /** Session key shared with the service (secret). */
  sessionKey: Uint8Array
  flags: number
  authtime: number
  starttime: number
  endtime: number
  renewTill?: number
}

/** Options of a KdcClient. */
export interface KdcClientOptions {
  /** TCP connect timeout per KDC address, ms. @default 3000 */
  connectTimeoutMs?: number
  /** Overall timeout of one call (all retries and failovers), ms. @default 15000 */
  timeoutMs?: number
  /** Local clock. @default Date.now */
  now?: () => number
  /** Added to the local clock in every time we send (set by time sync). @default 0 */
  clockOffsetMs?: number
  /** On a skew error, adopt the KDC's time from the error and retry once. @default true */
  adjustClockOnSkew?: boolean
  /**
   * Transport resumption tickets (PROTOCOL.md §3.6): after a first connection to a KDC,
   * reconnections skip X25519. Pass a store to share tickets between clients, or false
   * to do a full handshake (with forward secrecy) on every connection.
   * @default a store of this client's own, cleared by close()
   */
  resumption?: ResumptionStore | false
  /**
   * Most memory a password login may spend on scrypt (128 x N x r bytes), whatever KDF
   * parameters the KDC names: over it the login fails with TESSERA_KDF_LIMIT before any
   * derivation. @default 268435456 (256 MiB)
   */
  maxKdfMemoryBytes?: number
}

/** Default of KdcClientOptions.maxKdfMemoryBytes: 256 MiB. */
export const DEFAULT_MAX_KDF_MEMORY_BYTES = 256 * 1024 * 1024

/** Options of login and ticket requests. */
export interface TicketOptions {
  /** Ticket life wanted, ms (capped by the KDC). @default the KDC's default */
  lifetimeMs?: number
  /** Ask for a renewable ticket with this renewable life, ms. */
  renewableLifeMs?: number
  forwardable?: boolean
  signal?: AbortSignal
}

/** Options of login. */
export interface LoginOptions extends TicketOptions {
  /** Service of the initial ticket. @default krbtgt/REALM */
  service?: string
}

/** A client key (e.g. from a keytab). */
export interface ClientKey {
  key: Uint8Array
  kvno?: number
}

type Listener = 'as' | 'tgs' | 'time' | 'admin'

const TRANSPORT_REFUSALS: ReadonlySet<number> = new Set([
  ErrorCode.TSR_ERR_TIMEOUT,
  ErrorCode.TSR_ERR_BUSY,
  ErrorCode.TSR_ERR_SHUTTING_DOWN,
])

const isoSeconds = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z')

/** How long a KDC address that failed to connect is tried after the others, ms. */
const DOWN_PENALTY_MS = 30_000

function splitPrincipal(name: string, realm: string): { realm: string; components: string[] } {
  const at = name.lastIndexOf('@')
  const r = at >= 0 ? name.slice(at + 1) : realm
  const n = at >= 0 ? name.slice(0, at) : name
  if (n.length === 0 || r.length === 0) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_NAME, `bad principal name "${name}"`)
  // Names cannot contain "@" (no escapes): 'a@b@c' is a typo, not user "a@b" of realm "c".
  if (n.includes('@')) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_NAME, `bad principal name "${name}": more than one "@"`)
  const id = { realm: r, components: n.split('/') }
  // The KDC's own rules (PROTOCOL.md §7.4), so that a look-alike name fails here, with the reason.
  checkPrincipalId(id)
  return id
}

function isConnectFailure(err: unknown): boolean {
  return (
    err instanceof TesseraError &&
    (err.code === TesseraErrorCode.TESSERA_NETWORK ||
      err.code === TesseraErrorCode.TESSERA_TIMEOUT ||
      err.code === TesseraErrorCode.TESSERA_CHANNEL_CLOSED ||
      err.code === TesseraErrorCode.TESSERA_HANDSHAKE)
  ) || (err instanceof KrbProtocolError && (err.code === ErrorCode.TSR_ERR_BUSY || err.code === ErrorCode.TSR_ERR_SHUTTING_DOWN))
}

function raceSignal<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      (e) => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}

/** Talks to a realm's KDCs. Reuses one connection per listener; fails over in realm-file order. */
export class KdcClient {
  private readonly channels = new Map<string, Promise<ClientChannel>>()
  private readonly opts: Required<Omit<KdcClientOptions, 'clockOffsetMs' | 'resumption'>>
  private readonly resumption: ResumptionStore | undefined
  private readonly ownsResumption: boolean
  /** Milliseconds added to the local clock (time sync / skew recovery). */
  clockOffsetMs: number
  private closed = false

  constructor(
    readonly realm: RealmFile,
    opts: KdcClientOptions = {},
  ) {
    this.opts = {
      connectTimeoutMs: opts.connectTimeoutMs ?? 3000,
      timeoutMs: opts.timeoutMs ?? 15000,
      now: opts.now ?? Date.now,
      adjustClockOnSkew: opts.adjustClockOnSkew ?? true,
      maxKdfMemoryBytes: opts.maxKdfMemoryBytes ?? DEFAULT_MAX_KDF_MEMORY_BYTES,
    }
    if (!Number.isSafeInteger(this.opts.maxKdfMemoryBytes) || this.opts.maxKdfMemoryBytes < 1)
      throw new RangeError('maxKdfMemoryBytes must be a positive integer')
    this.clockOffsetMs = opts.clockOffsetMs ?? 0
    this.ownsResumption = opts.resumption === undefined
    this.resumption = opts.resumption === false ? undefined : (opts.resumption ?? new ResumptionStore())
  }

  /** Overall timeout of one call, ms (KdcClientOptions.timeoutMs). */
  get timeoutMs(): number {
    return this.opts.timeoutMs
  }

  /** Corrected time: local clock + offset. */
  now(): number {
    return this.opts.now() + this.clockOffsetMs
  }

  /** Log in with a password: AS exchange with encrypted-timestamp pre-authentication. */
  async login(principal: string, password: string, opts: LoginOptions = {}): Promise<Credentials> {
    const id = splitPrincipal(principal, this.realm.realm)
    let derived: { salt: string; kdf: KdfParamsWire; key: Uint8Array } | undefined
    const keyFor = async (salt: string, kdf: KdfParamsWire) => {
      if (!derived || derived.salt !== salt || JSON.stringify(derived.kdf) !== JSON.stringify(kdf)) {
        checkKdfParams(kdf)
        // The parameters come from the KDC (or whoever answers for it): cap what we spend.
        const need = 128 * kdf.N * kdf.r
        if (need > this.opts.maxKdfMemoryBytes)
          throw new TesseraError(
            TesseraErrorCode.TESSERA_KDF_LIMIT,
            `the KDC asks for a password key derivation needing ${Math.ceil(need / 2 ** 20)} MiB of memory, over this client's limit of ${Math.floor(this.opts.maxKdfMemoryBytes / 2 ** 20)} MiB (maxKdfMemoryBytes)`,
          )
        derived = { salt, kdf, key: await passwordToKey(password, salt, kdf) }
      }
      return derived.key
    }
    try {
      return await this.asExchange(id, opts, keyFor)
    } finally {
      derived?.key.fill(0)
    }
  }

  /** Log in with a long-term key (keytab): one round trip, pre-authenticated. */
  loginWithKey(principal: string, key: ClientKey, opts: LoginOptions = {}): Promise<Credentials> {
    const id = splitPrincipal(principal, this.realm.realm)
    return this.asExchange(id, opts, async () => key.key, key.key)
  }

  private async asExchange(
    id: { realm: string; components: string[] },
    opts: LoginOptions,
    keyFor: (salt: string, kdf: KdfParamsWire) => Promise<Uint8Array>,
    knownKey?: Uint8Array,
  ): Promise<Credentials> {
    const sname = opts.service ? splitPrincipal(opts.service, this.realm.realm).components : ['krbtgt', this.realm.realm]
    const signal = this.callSignal(opts.signal)
    let key = knownKey
    let skewRetried = false
    for (let round = 0; round < 4; round++) {
      const nonce = randomUint32()
      const build = (): AsReq => {
        const now = Math.floor(this.now())
        const req: AsReq = {
          v: PROTOCOL_VERSION,
          t: MsgType.AS_REQ,
          cname: id.components,
          realm: id.realm,
          sname,
          till: opts.lifetimeMs ? now + opts.lifetimeMs : 0,
          nonce,
          options: this.kdcOptions(opts),
          padata: [],
        }
        if (opts.renewableLifeMs) req.rtill = now + opts.renewableLifeMs
        if (key) {
          const ts = sealPart(key, KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, PaEncTs, { ts: Math.floor(now), us: 0 })
          req.padata = [{ type: PaType.PA_ENC_TIMESTAMP, value: ts }]
        }
        return req
      }
      const reply = await this.send('as', build, signal)
      if (reply.t === MsgType.KRB_ERROR) {
        const err = krbErrorFromReply(reply, this.now(), opts.service, { client: principalString(id.components, id.realm) })
        if (reply.code === ErrorCode.KDC_ERR_PREAUTH_REQUIRED && !knownKey && reply.edata?.salt !== undefined && reply.edata.kdf) {
          key = await keyFor(reply.edata.salt, reply.edata.kdf)
          continue
        }
        if (reply.code === ErrorCode.KRB_AP_ERR_SKEW && this.opts.adjustClockOnSkew && !skewRetried) {
          skewRetried = true
          await this.resync(reply.stime, signal)
          continue
        }
        throw err
      }
      if (reply.t !== MsgType.AS_REP) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, `unexpected reply type ${reply.t} to AS_REQ`)
      if (!key) {
        // No pre-auth was required: derive the key from the salt/KDF the KDC sent.
        key = await keyFor(reply.salt ?? defaultSalt(id.realm, id.components.join('/')), reply.kdf ?? { alg: 'scrypt', N: 32768, r: 8, p: 1 })
      }
      return this.acceptKdcRep(reply, key, KeyUsage.AS_REP_ENCPART, nonce, sname, id.realm)
    }
    throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'the KDC kept asking for pre-authentication')
  }

  /** Check a KDC reply: it opens under our key, answers our nonce, for the service we asked. */
  private acceptKdcRep(reply: AsRep | TgsRep, key: Uint8Array, usage: number, nonce: number, sname: string[], srealm: string): Credentials {
    if (tryOpen(key, usage, reply.enc) === null)
      throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'the KDC reply does not open with our key (forged reply or wrong password)')
    let part: EncKdcRepPartT
    try {
      part = openPart(key, usage, EncKdcRepPart, reply.enc)
    } catch (err) {
      throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'malformed KDC reply', { cause: err })
    }
    // RFC 4120 §3.1.5: the nonce binds the reply to this request; a replayed reply fails here.
    if (part.nonce !== nonce) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'KDC reply nonce does not match the request (replayed reply?)')
    if (!sameName(part.sname, sname) || !sameName(reply.ticket.sname, sname))
      throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'KDC reply is for another service')
    // PROTOCOL.md §8.1, §8.2: the ticket is of the realm asked (sealed srealm and the ticket's own).
    if (part.srealm !== srealm || reply.ticket.realm !== srealm)
      throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, `KDC reply is for a ticket of another realm, not ${srealm}`)
    const creds: Credentials = {
      crealm: reply.crealm,
      cname: reply.cname,
      srealm: part.srealm,
      sname: part.sname,
      ticket: reply.ticket,
      sessionKey: new Uint8Array(part.key),
      flags: part.flags,
      authtime: part.authtime,
      starttime: part.starttime,
      endtime: part.endtime,
    }
    if (part.renewTill !== undefined) creds.renewTill = part.renewTill
    return creds
  }

  /** Get a service ticket with a TGT. */
  getServiceTicket(tgt: Credentials, service: string, opts: TicketOptions = {}): Promise<Credentials> {
    const sname = splitPrincipal(service, this.realm.realm).components
    return this.tgsExchange(tgt, sname, this.kdcOptions(opts), opts, service)
  }

  /**
   * A JWT for an HTTP service (PROTOCOL.md §15), bound to an Ed25519 key pair made for it
   * (or `opts.keyPair`), whose private key stays in this process unless `extractable`.
   */
  getServiceToken(tgt: Credentials, service: string, opts: ServiceTokenOptions = {}): Promise<ServiceToken> {
    return getServiceToken(this, tgt, service, opts)
  }

  /** The TGS exchange of getServiceToken: a service ticket and a token bound to the raw Ed25519 public key `jwtKey`. */
  async requestServiceToken(tgt: Credentials, service: string, jwtKey: Uint8Array, opts: TicketOptions = {}): Promise<{ creds: Credentials; token: string }> {
    const sname = splitPrincipal(service, this.realm.realm).components
    const r = await this.tgsExchange(tgt, sname, this.kdcOptions(opts), opts, service, jwtKey)
    const { token, ...creds } = r
    if (token === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'the KDC sent no token')
    return { creds, token }
  }

  /**
   * Run under a user's existing login (kauth login): a service ticket from the credential
   * cache if it holds a valid one, else one obtained with the cached TGT and stored there.
   * TESSERA_NO_CREDENTIALS when the cache holds no valid TGT for this realm.
   */
  async ticketFromCache(cache: CredentialCache, service: string, opts: TicketOptions = {}): Promise<Credentials> {
    const sname = splitPrincipal(service, this.realm.realm).components
    const now = this.now()
    const usable = (c: Credentials | undefined) => c !== undefined && c.endtime > now + 30_000 && c.starttime <= now + this.realm.maxClockSkewMs
    const cached = await cache.find(sname, this.realm.realm)
    if (usable(cached)) return cached!
    const tgt = await cache.find(['krbtgt', this.realm.realm], this.realm.realm)
    if (!usable(tgt)) {
      const old = (await cache.load({ expired: true }))?.entries.find((e) => sameName(e.sname, ['krbtgt', this.realm.realm]))
      const why = old ? `the ticket-granting ticket for ${this.realm.realm} in ${cache.file} ${old.endtime <= now ? 'expired' : 'expires'} at ${isoSeconds(old.endtime)}` : `no valid ticket-granting ticket for ${this.realm.realm} in ${cache.file}`
      throw new TesseraError(TesseraErrorCode.TESSERA_NO_CREDENTIALS, `${why}; run kauth login`)
    }
    const st = await this.getServiceTicket(tgt!, service, opts)
    await cache.store(st)
    return st
  }

  /** Renew a renewable ticket (TGT or service ticket) before it expires. */
  renew(creds: Credentials, opts: { signal?: AbortSignal } = {}): Promise<Credentials> {
    return this.tgsExchange(creds, creds.sname, KdcOption.RENEW, opts, principalString(creds.sname, creds.srealm))
  }

  private async tgsExchange(
    creds: Credentials,
    sname: string[],
    options: number,
    opts: TicketOptions,
    display: string,
    jwtKey?: Uint8Array,
  ): Promise<Credentials & { token?: string }> {
    const signal = this.callSignal(opts.signal)
    let skewRetried = false
    for (;;) {
      const nonce = randomUint32()
      const build = () => {
        const now = this.now()
        const ms = Math.floor(now)
        const auth: Parameters<typeof sealPart<typeof TgsAuthenticator>>[3] = {
          crealm: creds.crealm,
          cname: creds.cname,
          ctime: ms,
          cusec: Math.floor((now - ms) * 1000) % 1000,
          sname,
          till: opts.lifetimeMs ? ms + opts.lifetimeMs : 0,
          nonce,
          options,
        }
        if (opts.renewableLifeMs) auth.rtill = ms + opts.renewableLifeMs
        if (jwtKey !== undefined) auth.jwtKey = jwtKey
        return {
          v: PROTOCOL_VERSION,
          t: MsgType.TGS_REQ,
          ticket: creds.ticket,
          auth: sealPart(creds.sessionKey, KeyUsage.TGS_REQ_AUTH, TgsAuthenticator, auth),
        } as const
      }
      const reply = await this.send('tgs', build, signal)
      if (reply.t === MsgType.KRB_ERROR) {
        if (reply.code === ErrorCode.KRB_AP_ERR_SKEW && this.opts.adjustClockOnSkew && !skewRetried) {
          skewRetried = true
          await this.resync(reply.stime, signal)
          continue
        }
        throw krbErrorFromReply(reply, this.now(), display)
      }
      if (reply.t !== MsgType.TGS_REP) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, `unexpected reply type ${reply.t} to TGS_REQ`)
      const accepted = this.acceptKdcRep(reply, creds.sessionKey, KeyUsage.TGS_REP_ENCPART_SESSKEY, nonce, sname, creds.srealm)
      if (jwtKey === undefined || reply.jwt === undefined) return accepted
      return { ...accepted, token: openPart(creds.sessionKey, KeyUsage.TGS_REP_JWT, EncJwtPart, reply.jwt).token }
    }
  }

  /**
   * After a skew error: measure the offset with the signed time service, unless it disagrees
   * with the error's server time (the clock the exchanges judge by, authenticated by the
   * transport): then the error's time decides (PROTOCOL.md §8.4: after a KDC host clock step
   * back, the time service slews while the exchanges follow the host clock).
   */
  private async resync(serverTime: number, signal: AbortSignal): Promise<void> {
    const fromError = this.clockOffsetMs + (serverTime - this.now())
    try {
      const s = await syncTime(this, { samples: 2, signal, apply: false })
      this.clockOffsetMs = Math.abs(s.offsetMs - fromError) <= this.realm.maxClockSkewMs / 2 ? s.offsetMs : fromError
    } catch {
      this.clockOffsetMs = fromError
    }
  }

  private kdcOptions(o: TicketOptions): number {
    let f = 0
    if (o.forwardable) f |= KdcOption.FORWARDABLE
    if (o.renewableLifeMs) f |= KdcOption.RENEWABLE
    return f
  }

  private callSignal(user?: AbortSignal): AbortSignal {
    const t = AbortSignal.timeout(this.opts.timeoutMs)
    return user ? AbortSignal.any([user, t]) : t
  }

  /**
   * Send to the first KDC that answers, in realm-file order. `build` is called per
   * attempt so each carries a fresh timestamp/authenticator. A connect failure moves on to
   * the next KDC; a reused connection that turns out closed is reopened once.
   */
  async send(listener: Listener, build: () => Message, signal: AbortSignal): Promise<Message> {
    if (this.closed) throw new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'client is closed')
    let lastErr: unknown
    for (const kdc of this.kdcOrder(listener)) {
      for (let attempt = 0; attempt < 2; attempt++) {
        if (signal.aborted) throw this.abortError(signal, lastErr)
        // close() during a call: no new connection, no request sent again.
        if (this.closed) throw new TesseraError(TesseraErrorCode.TESSERA_CHANNEL_CLOSED, 'client is closed', { cause: lastErr })
        let ch: ClientChannel
        let early: Promise<Message> | undefined
        try {
          const opened = this.openFor(kdc, listener, build, signal)
          early = opened.reply
          ch = await raceSignal(opened.channel, signal)
        } catch (err) {
          lastErr = err
          if (signal.aborted) throw this.abortError(signal, err)
          // Anything said before the handshake completes is unauthenticated (a stale address
          // or an attacker can say it): never an answer, only a reason to try the next KDC.
          if (err instanceof TesseraError || err instanceof KrbProtocolError) {
            this.markDown(kdc, listener)
            break // next KDC
          }
          throw err
        }
        try {
          const reply = await (early ?? ch.request(build(), { signal, timeoutMs: this.opts.timeoutMs }))
          // A KDC that is busy, shutting down or timing us out did not handle the request:
          // treat it like a failed connection and move on to the next KDC.
          if (reply.t === MsgType.KRB_ERROR && TRANSPORT_REFUSALS.has(reply.code)) {
            ch.close()
            lastErr = krbErrorFromReply(reply, this.now())
            this.markDown(kdc, listener)
            break
          }
          return reply
        } catch (err) {
          lastErr = err
          if (signal.aborted) throw this.abortError(signal, err)
          if (err instanceof TesseraError && err.code === TesseraErrorCode.TESSERA_CHANNEL_CLOSED && attempt === 0) continue
          if (isConnectFailure(err)) break
          throw err
        }
      }
    }
    const detail = lastErr instanceof Error ? lastErr.message : 'no KDC configured'
    throw new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `cannot reach any KDC of ${this.realm.realm}: ${detail}`, {
      cause: lastErr,
    })
  }

  // KDCs that failed to connect recently are tried last, so one dead KDC does not cost
  // every call a connect timeout.
  private readonly down = new Map<string, number>()

  private kdcOrder(listener: Listener): KdcAddress[] {
    const now = performance.now()
    const up: KdcAddress[] = []
    const later: KdcAddress[] = []
    for (const k of this.realm.kdcs) {
      const until = this.down.get(`${k.host}:${k[listener]}`)
      if (until !== undefined && until > now) later.push(k)
      else up.push(k)
    }
    return up.concat(later)
  }

  private markDown(kdc: KdcAddress, listener: Listener): void {
    this.down.set(`${kdc.host}:${kdc[listener]}`, performance.now() + DOWN_PENALTY_MS)
  }

  private abortError(signal: AbortSignal, cause: unknown): TesseraError {
    const reason = signal.reason as { name?: string } | undefined
    if (reason?.name === 'TimeoutError')
      return new TesseraError(TesseraErrorCode.TESSERA_TIMEOUT, `no answer from the KDC within ${this.opts.timeoutMs} ms`, { cause })
    return new TesseraError(TesseraErrorCode.TESSERA_ABORTED, 'operation aborted', { cause })
  }

  /**
   * The channel for one request to `listener` of `kdc`. When there is no connection yet and
   * the store holds a resumption ticket for it, the new connection resumes and carries the
   * request in its first flight (PROTOCOL.md §3.6: one round trip after TCP connect, like
   * MIT over TCP); `reply` is then already on its way. Admin requests never travel as
   * early data.
   */
  private openFor(
    kdc: KdcAddress,
    listener: Listener,
    build: () => Message,
    signal: AbortSignal,
  ): { channel: Promise<ClientChannel>; reply?: Promise<Message> } {
    const port = kdc[listener]
    const id = `${kdc.host}:${port}`
    if (
      this.channels.has(id) ||
      listener === 'admin' ||
      !this.resumption?.get(ResumptionStore.id(kdc.host, port, transportKeyAt(this.realm, this.now())))
    )
      return { channel: this.channel(kdc, listener) }
    const { channel, reply } = openWithRequest(this.channelOptions(kdc, listener), build, { signal, timeoutMs: this.opts.timeoutMs })
    this.register(id, channel)
    return { channel, reply }
  }

  private channelOptions(kdc: KdcAddress, listener: Listener): ChannelOptions {
    return {
      host: kdc.host,
      port: kdc[listener],
      // During an identity-key rotation, the key the realm file names for now (PROTOCOL.md §3.7).
      serverKey: transportKeyAt(this.realm, this.now()),
      connectTimeoutMs: this.opts.connectTimeoutMs,
      handshakeTimeoutMs: this.opts.connectTimeoutMs,
      ...(this.resumption ? { resumption: this.resumption } : {}),
    }
  }

  /** Share a connection being opened with later callers; forget it once it closes or fails. */
  private register(id: string, p: Promise<ClientChannel>): void {
    if (this.closed) {
      // Opened while close() ran: it must not outlive the client.
      p.then((ch) => ch.close(), () => {})
      return
    }
    this.channels.set(id, p)
    p.then(
      (ch) =>
        ch.onClose(() => {
          if (this.channels.get(id) === p) this.channels.delete(id)
        }),
      () => {
        if (this.channels.get(id) === p) this.channels.delete(id)
      },
    )
  }

  // Shared by concurrent callers, so it is bounded by the connect timeout, not by one caller's signal.
  private channel(kdc: KdcAddress, listener: Listener): Promise<ClientChannel> {
    const id = `${kdc.host}:${kdc[listener]}`
    const existing = this.channels.get(id)
    if (existing) {
      return existing.then(
        (ch) => {
          if (!ch.closed) return ch
          if (this.channels.get(id) === existing) this.channels.delete(id)
          return this.channel(kdc, listener)
        },
        (err) => {
          if (this.channels.get(id) === existing) this.channels.delete(id)
          throw err
        },
      )
    }
    const p = connectChannel(this.channelOptions(kdc, listener))
    this.register(id, p)
    return p
  }

  /** Close every connection. */
  close(): void {
    this.closed = true
    for (const p of this.channels.values()) p.then((ch) => ch.close(), () => {})
    this.channels.clear()
    if (this.ownsResumption) this.resumption?.clear()
  }
}
