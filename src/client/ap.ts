/** AP exchange, client side: build an AP_REQ from a service ticket, check the service's AP_REP. */
import { ErrorCode } from '../../proto/error-codes.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { ApAuthenticator, type ApRep, type ApReq, EncApRepPart, type EncApRepPart as EncApRepPartT } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { randomKey, randomUint32 } from '../crypto/index.js'
import { KrbProtocolError } from '../errors.js'
import { type Loose, openPart, sealPart } from '../krb/parts.js'
import type { Credentials } from './kdc-client.js'

/** Options of buildApReq. */
export interface ApReqOptions {
  /** Ask the service to prove itself with an AP_REP (mutual authentication). @default false */
  mutual?: boolean
  /** Clock, ms since epoch; pass `() => kdcClient.now()` to use the synced time. @default Date.now */
  now?: () => number
  /** Put a fresh random subkey in the authenticator. @default false */
  subkey?: boolean
  /** Application channel binding (at most 64 bytes), checked by the service when it expects one. */
  cksum?: Uint8Array
}

/** An AP_REQ and what the client keeps to check the AP_REP. Holds secrets: do not log. */
export interface PendingApReq {
  req: ApReq
  /** The client subkey sent, when one was asked for (secret). */
  subkey?: Uint8Array
  /** Authenticator time, ms since epoch. */
  ctime: number
  /** Microseconds within ctime (0..999); (ctime, cusec) strictly increase within a process. */
  cusec: number
  /** Initial sequence number sent in the authenticator. */
  seq: number
  /** True when the AP_REQ asked for mutual authentication. */
  mutual: boolean
  /** The ticket's session key (secret), needed to open the AP_REP. */
  sessionKey: Uint8Array
}

/** What a verified AP_REP carries. */
export interface ApRepResult {
  /** The service's subkey (secret), when it sent one. */
  subkey?: Uint8Array
  /** The service's initial sequence number, when it sent one. */
  seq?: number
}

/**
 * Build an AP_REQ for the service of `creds`: the ticket plus an authenticator sealed with
 * the ticket session key (usage AP_REQ_AUTH) carrying the client name, the time, and
 * optionally a subkey, an initial sequence number and a channel binding.
 */
export function buildApReq(creds: Credentials, opts: ApReqOptions = {}): PendingApReq {
  if (opts.cksum !== undefined && opts.cksum.length > 64) throw new RangeError('cksum must be at most 64 bytes')
  const { ctime, cusec } = nextStamp((opts.now ?? Date.now)())
  const seq = randomUint32()
  const subkey = opts.subkey ? randomKey() : undefined
  const auth: Loose<ApAuthenticator> = {
    crealm: creds.crealm,
    cname: creds.cname,
    ctime,
    cusec,
    subkey,
    seq,
    cksum: opts.cksum,
  }
  const mutual = opts.mutual ?? false
  const req: ApReq = {
    v: PROTOCOL_VERSION,
    t: MsgType.AP_REQ,
    ticket: creds.ticket,
    auth: sealPart(creds.sessionKey, KeyUsage.AP_REQ_AUTH, ApAuthenticator, auth),
    mutual,
  }
  const out: PendingApReq = { req, ctime, cusec, seq, mutual, sessionKey: creds.sessionKey }
  if (subkey) out.subkey = subkey
  return out
}

/** The last authenticator time of this process, in whole microseconds since the epoch. */
let lastStampUs = Number.NEGATIVE_INFINITY
/** A clock stepped back by more than this is followed rather than outrun, µs. */
const MAX_STEP_BACK_US = 1_000_000

/**
 * The authenticator time (ctime ms, cusec µs) for a clock reading: strictly after the last
 * one this process made, so that two AP_REQs made with one ticket within one microsecond
 * still differ and neither accepts the other's AP_REP (which echoes ctime and cusec). Past
 * the clock by at most the number of AP_REQs made in the same microsecond; a clock stepped
 * back by more than a second is followed, not outrun.
 */
export function nextStamp(now: number): { ctime: number; cusec: number } {
  let us = Math.floor(now * 1000)
  if (us <= lastStampUs && lastStampUs - us < MAX_STEP_BACK_US) us = lastStampUs + 1
  lastStampUs = us
  const ctime = Math.floor(us / 1000)
  return { ctime, cusec: us - ctime * 1000 }
}

function mutFail(message: string, cause?: unknown): KrbProtocolError {
  return new KrbProtocolError(ErrorCode.KRB_AP_ERR_MUT_FAIL, 'MUT_FAIL', cause === undefined ? { message } : { message, cause })
}

/**
 * Check the service's AP_REP (RFC 4120 §3.2.5): it must open under the ticket session key
 * (usage AP_REP_ENCPART) and echo our authenticator's ctime and cusec, which only a holder
 * of the service key could learn. Throws KrbProtocolError KRB_AP_ERR_MUT_FAIL otherwise.
 */
export function verifyApRep(rep: ApRep, pending: PendingApReq): ApRepResult {
  if (rep?.t !== MsgType.AP_REP || !(rep.enc instanceof Uint8Array))
    throw mutFail('mutual authentication failed: the reply is not an AP_REP')
  let part: EncApRepPartT
  try {
    part = openPart(pending.sessionKey, KeyUsage.AP_REP_ENCPART, EncApRepPart, rep.enc)
  } catch (err) {
    throw mutFail('mutual authentication failed: the AP_REP does not open with the session key (forged or tampered reply)', err)
  }
  if (part.ctime !== pending.ctime || part.cusec !== pending.cusec)
    throw mutFail('mutual authentication failed: the AP_REP does not answer our authenticator (replayed reply?)')
  const out: ApRepResult = {}
  if (part.subkey !== undefined) out.subkey = new Uint8Array(part.subkey)
  if (part.seq !== undefined) out.seq = part.seq
  return out
}
