/** AP exchange, service side: verify an AP_REQ from the keytab alone (no KDC call), answer with an AP_REP. */
import { ErrorCode } from '../../proto/error-codes.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { Limits } from '../../proto/limits.js'
import {
  ApAuthenticator,
  type ApAuthenticator as ApAuthenticatorT,
  type ApRep,
  ApReq,
  EncApRepPart,
  EncTicketPart,
  type EncTicketPart as EncTicketPartT,
} from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { SchemaError, validate } from '../../proto/validate.js'
import { constantTimeEqual, randomKey, randomUint32, sha256 } from '../crypto/index.js'
import { formatPrincipal, parsePrincipal } from '../db/names.js'
import type { PrincipalId } from '../db/types.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { openPart, principalString, sameName, sealPart } from '../krb/parts.js'
import { ReplayCache, type ReplayCacheLogger } from '../krb/replay-cache.js'
import type { Keytab } from '../krb/keytab.js'

/** Options of a ServiceVerifier. */
export interface ServiceVerifierOptions {
  /** The service's keys. */
  keytab: Keytab
  /**
   * Accept only tickets for this service (`name/instance@REALM`; without `@REALM`, the realm
   * of the keytab's entries, which must then all be in one realm). @default any principal in the keytab
   */
  principal?: string
  /**
   * Replay cache; share one between verifiers of the same service. Given, it is used as
   * is (replayCacheFile is ignored). @default a new ReplayCache over replayCacheFile
   */
  replayCache?: ReplayCache
  /**
   * Replay file, so that an AP_REQ accepted before a restart is refused after it
   * (docs/security.md): authenticators accepted while dated ahead of the service clock
   * are written to it (0600, synced) before they are accepted. `false`: no
   * file; the verifier then refuses every authenticator dated within maxClockSkewMs after
   * its start (KRB_AP_ERR_SKEW, status REPLAY_COLD), since one of them may have been
   * accepted by the previous process. @default `<keytab file>.rcache` when the keytab was
   * read from a file (readKeytab), else none
   */
  replayCacheFile?: string | false
  /** Where problems with the replay file are reported. @default process.emitWarning */
  logger?: ReplayCacheLogger
  /** Largest clock difference accepted between client and service, ms. @default 300000 */
  maxClockSkewMs?: number
  /** Clock, ms since epoch. @default Date.now */
  now?: () => number
}

/** Options of one verification. */
export interface VerifyOptions {
  /** Expected channel binding: the authenticator must carry exactly these bytes. */
  cksum?: Uint8Array
}

/** An authenticated AP_REQ. Holds secrets (keys): do not log it. */
export interface VerifiedAp {
  /** The client, `name@REALM`. */
  client: string
  crealm: string
  cname: string[]
  /** The service the ticket is for, `name@REALM`. */
  service: string
  /** Key version of the service key that sealed the ticket. */
  kvno: number
  /** Ticket flags (TicketFlag). */
  flags: number
  authtime: number
  starttime: number
  endtime: number
  renewTill?: number
  /** The ticket session key (secret). */
  sessionKey: Uint8Array
  /** The client's subkey (secret), when it sent one. */
  subkey?: Uint8Array
  /** The client's initial sequence number, when it sent one. */
  seq?: number
  /** The channel binding the client sent, if any. */
  cksum?: Uint8Array
  /** Authenticator time, ms since epoch, and microseconds within it. */
  ctime: number
  cusec: number
  /** The reply to send when the client asked for mutual authentication. */
  apRep?: ApRep
  /** The service subkey (secret) sent in apRep. */
  serviceSubkey?: Uint8Array
  /** The service's initial sequence number sent in apRep. */
  serviceSeq?: number
}

/** Defaults of ServiceVerifierOptions. */
export const DEFAULT_SERVICE_VERIFIER_OPTIONS = {
  maxClockSkewMs: Limits.MAX_CLOCK_SKEW_MS,
} as const

function refuse(code: number, status: string, message: string, cause?: unknown): never {
  throw new KrbProtocolError(code, status, cause === undefined ? { message } : { message, cause })
}

/** Verifies AP_REQs for the services whose keys are in a keytab. */
export class ServiceVerifier {
  readonly maxClockSkewMs: number
  readonly replayCache: ReplayCache
  private readonly keytab: Keytab
  private readonly principal: PrincipalId | undefined
  private readonly now: () => number

  constructor(opts: ServiceVerifierOptions) {
    if (!opts || typeof opts !== 'object' || !opts.keytab) throw new TypeError('ServiceVerifier needs { keytab }')
    const skew = opts.maxClockSkewMs ?? DEFAULT_SERVICE_VERIFIER_OPTIONS.maxClockSkewMs
    if (!Number.isInteger(skew) || skew < 0) throw new RangeError('maxClockSkewMs must be a non-negative integer')
    this.maxClockSkewMs = skew
    this.keytab = opts.keytab
    this.now = opts.now ?? Date.now
    this.principal = opts.principal === undefined ? undefined : this.resolvePrincipal(opts.principal)
    if (opts.replayCache) this.replayCache = opts.replayCache
    else {
      const file = opts.replayCacheFile ?? (this.keytab.file !== undefined ? `${this.keytab.file}.rcache` : false)
      if (file !== false && (typeof file !== 'string' || file === '')) throw new TypeError('replayCacheFile must be a path or false')
      const logger = opts.logger ? { logger: opts.logger } : {}
      this.replayCache = new ReplayCache(
        file === false
          ? // Nothing persisted: whatever a previous process accepted is dated before start + skew.
            { maxClockSkewMs: skew, now: this.now, aheadMarginMs: skew, ...logger }
          : { maxClockSkewMs: skew, now: this.now, file, ...logger },
      )
      this.ownsReplayCache = true
    }
  }

  private ownsReplayCache = false

  /** Release the replay file of the verifier's own replay cache (not of one passed in). */
  close(): void {
    if (this.ownsReplayCache) this.replayCache.close()
  }

  private resolvePrincipal(name: string): PrincipalId {
    if (name.includes('@')) return parsePrincipal(name)
    const realms = new Set(this.keytab.entries.map((e) => e.realm))
    if (realms.size !== 1)
      throw new TesseraError(
        TesseraErrorCode.TESSERA_CONFIG,
        `service principal "${name}" has no realm and the keytab holds ${realms.size === 0 ? 'no keys' : 'several realms'}; write it as ${name}@REALM`,
      )
    return parsePrincipal(name, [...realms][0]!)
  }

  /**
   * Verify an AP_REQ (RFC 4120 §3.2.3) with no KDC call. Throws KrbProtocolError:
   * NOT_US (35) for a ticket for another service, BADKEYVER (44) for a key version the
   * keytab lacks, BAD_INTEGRITY (31) when the ticket or authenticator does not open,
   * TKT_EXPIRED (32), TKT_NYV (33), BADMATCH (36), SKEW (37), REPEAT (34),
   * MODIFIED (41) for a channel-binding mismatch, SVC_UNAVAILABLE (29) when the replay cache is full.
   */
  verify(req: ApReq, opts: VerifyOptions = {}): VerifiedAp {
    try {
      validate(ApReq, req)
    } catch (err) {
      if (err instanceof SchemaError) refuse(ErrorCode.TSR_ERR_MALFORMED, 'MALFORMED', `malformed AP_REQ: ${err.message}`, err)
      throw err
    }
    const { ticket } = req
    const service = principalString(ticket.sname, ticket.realm)
    if (this.principal && (ticket.realm !== this.principal.realm || !sameName(ticket.sname, this.principal.components)))
      refuse(ErrorCode.KRB_AP_ERR_NOT_US, 'NOT_US', `the ticket is for ${service}, not for this service (${formatPrincipal(this.principal)})`)
    const sid: PrincipalId = { realm: ticket.realm, components: ticket.sname }
    const entry = this.keytab.find(sid, ticket.kvno)
    if (!entry) {
      const held = this.keytab.kvnos(sid)
      if (held.length === 0) refuse(ErrorCode.KRB_AP_ERR_NOT_US, 'NOT_US', `the ticket is for ${service}, whose key is not in this keytab`)
      refuse(
        ErrorCode.KRB_AP_ERR_BADKEYVER,
        'BADKEYVER',
        `the ticket for ${service} is sealed with key version ${ticket.kvno}, but the keytab holds versions ${held.join(', ')}; refresh the keytab`,
      )
    }
    let enc: EncTicketPartT
    try {
      enc = openPart(entry.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, ticket.enc)
    } catch (err) {
      if (err instanceof KrbProtocolError && err.code === ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
        refuse(err.code, 'BAD_INTEGRITY', `the ticket for ${service} (kvno ${ticket.kvno}) does not open with the keytab key: tampered, or the keytab is stale`, err)
      throw err
    } finally {
      entry.key.fill(0)
    }
    try {
      return this.check(req, enc, service, opts)
    } catch (err) {
      enc.key.fill(0)
      throw err
    }
  }

  private check(req: ApReq, enc: EncTicketPartT, service: string, opts: VerifyOptions): VerifiedAp {
    const now = this.now()
    const skew = this.maxClockSkewMs
    // RFC 4120 §3.2.3: not yet valid if starttime is later than now by more than the skew,
    // expired if now is later than endtime by more than the skew.
    if (enc.starttime > now + skew)
      refuse(ErrorCode.KRB_AP_ERR_TKT_NYV, 'TKT_NYV', `the ticket is not valid until ${new Date(enc.starttime).toISOString()}`)
    if (now > enc.endtime + skew)
      refuse(ErrorCode.KRB_AP_ERR_TKT_EXPIRED, 'TKT_EXPIRED', `the ticket expired at ${new Date(enc.endtime).toISOString()}; get a new one`)
    let auth: ApAuthenticatorT
    try {
      auth = openPart(enc.key, KeyUsage.AP_REQ_AUTH, ApAuthenticator, req.auth)
    } catch (err) {
      if (err instanceof KrbProtocolError && err.code === ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
        refuse(err.code, 'BAD_INTEGRITY', 'the authenticator does not open with the ticket session key (tampered or spliced request)', err)
      throw err
    }
    const client = principalString(enc.cname, enc.crealm)
    if (auth.crealm !== enc.crealm || !sameName(auth.cname, enc.cname))
      refuse(
        ErrorCode.KRB_AP_ERR_BADMATCH,
        'BADMATCH',
        `the authenticator names ${principalString(auth.cname, auth.crealm)} but the ticket was issued to ${client}`,
      )
    // RFC 4120 §3.2.3: KRB_AP_ERR_SKEW if |now - ctime| > maxClockSkewMs
    const diff = now - auth.ctime
    if (Math.abs(diff) > skew)
      refuse(
        ErrorCode.KRB_AP_ERR_SKEW,
        'SKEW',
        `clock skew too great: the client's clock is ${Math.round(Math.abs(diff) / 1000)} s ${diff > 0 ? 'behind' : 'ahead of'} the service's (limit ${Math.round(skew / 1000)} s)`,
      )
    if (opts.cksum !== undefined && (auth.cksum === undefined || !constantTimeEqual(auth.cksum, opts.cksum)))
      refuse(ErrorCode.KRB_AP_ERR_MODIFIED, 'BAD_BINDINGS', 'the channel binding in the authenticator does not match this channel')
    // Checked last, so a request refused for another reason does not take a cache entry.
    // The id is a hash of the sealed authenticator: only the session-key holder can make another.
    const id = Buffer.from(sha256(req.auth).subarray(0, 16)).toString('latin1')
    const verdict = this.replayCache.check(id, auth.ctime, principalString(enc.cname, enc.crealm))
    if (verdict === 'replay') refuse(ErrorCode.KRB_AP_ERR_REPEAT, 'REPEAT', 'the request is a replay of an authenticator already accepted')
    if (verdict === 'cold')
      refuse(
        ErrorCode.KRB_AP_ERR_SKEW,
        'REPLAY_COLD',
        this.replayCache.coldBefore > this.replayCache.startedAt
          ? `this service keeps no replay file, so until ${new Date(this.replayCache.coldBefore).toISOString()} it cannot tell an authenticator from one accepted before it started; retry then`
          : 'the authenticator predates the service start; retry with a fresh one',
      )
    if (verdict === 'full') refuse(ErrorCode.KDC_ERR_SVC_UNAVAILABLE, 'REPLAY_FULL', 'the service is busy; retry later')

    const out: VerifiedAp = {
      client,
      crealm: enc.crealm,
      cname: [...enc.cname],
      service,
      kvno: req.ticket.kvno,
      flags: enc.flags,
      authtime: enc.authtime,
      starttime: enc.starttime,
      endtime: enc.endtime,
      sessionKey: new Uint8Array(enc.key),
      ctime: auth.ctime,
      cusec: auth.cusec,
    }
    enc.key.fill(0)
    if (enc.renewTill !== undefined) out.renewTill = enc.renewTill
    // Decoded binaries are views into the message buffer: keep copies.
    if (auth.subkey !== undefined) out.subkey = new Uint8Array(auth.subkey)
    if (auth.seq !== undefined) out.seq = auth.seq
    if (auth.cksum !== undefined) out.cksum = new Uint8Array(auth.cksum)
    if (req.mutual) {
      const serviceSubkey = randomKey()
      const serviceSeq = randomUint32()
      out.serviceSubkey = serviceSubkey
      out.serviceSeq = serviceSeq
      out.apRep = {
        v: PROTOCOL_VERSION,
        t: MsgType.AP_REP,
        enc: sealPart(out.sessionKey, KeyUsage.AP_REP_ENCPART, EncApRepPart, {
          ctime: auth.ctime,
          cusec: auth.cusec,
          subkey: serviceSubkey,
          seq: serviceSeq,
        }),
      }
    }
    return out
  }
}
