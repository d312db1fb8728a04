/**
 * Time service: signed, monotonic, microsecond time (Roughtime-style; PROTOCOL.md, time).
 *
 * The served clock is anchored to the host clock at start and advanced by the
 * monotonic clock (CLOCK_MONOTONIC follows NTP's frequency corrections but never
 * steps). Every answer compares it with the host clock:
 * - host stepped forward by more than stepThresholdUs: logged, served clock jumps forward to it;
 * - host stepped back by more than stepThresholdUs: logged, the served clock never goes back:
 *   it runs at (1 - slewRate) speed until the host catches up, and the radius includes
 *   the disagreement meanwhile.
 */
import { ErrorCode } from '../../proto/error-codes.js'
import type { TimeRep, TimeReq } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { sign } from '../crypto/index.js'
import { KrbProtocolError } from '../errors.js'
import { timeSignatureInput } from '../krb/time-sig.js'
import type { WireLogger } from '../wire/server.js'

/** Date.now() counts milliseconds. */
const HOST_RESOLUTION_US = 1000

/** Options of a ServedClock. */
export interface ServedClockOptions {
  /** Host wall clock in microseconds since epoch. @default Date.now() * 1000 */
  hostNowUs?: () => number
  /** Monotonic clock in nanoseconds. @default process.hrtime.bigint */
  monoNs?: () => bigint
  /** Uncertainty the operator claims for the host clock, µs. @default 1000 */
  baseRadiusUs?: number
  /** A host/served disagreement above this is a clock step, µs. @default 250000 */
  stepThresholdUs?: number
  /** Fraction by which the served clock slows while catching a host step back. @default 0.1 */
  slewRate?: number
  logger?: WireLogger
}

/** A clock that never goes backwards, follows the host clock's forward steps and slews through its backward steps. */
export class ServedClock {
  private readonly hostNowUs: () => number
  private readonly monoNs: () => bigint
  private readonly baseRadiusUs: number
  private readonly stepUs: number
  private readonly slew: number
  private anchorUs: number
  private anchorMono: bigint
  private rate = 1
  private last = 0
  private disagreementUs = 0

  constructor(private readonly opts: ServedClockOptions = {}) {
    this.hostNowUs = opts.hostNowUs ?? (() => Date.now() * 1000)
    this.monoNs = opts.monoNs ?? process.hrtime.bigint
    this.baseRadiusUs = opts.baseRadiusUs ?? 1000
    this.stepUs = opts.stepThresholdUs ?? 250_000
    this.slew = opts.slewRate ?? 0.1
    this.anchorUs = Math.floor(this.hostNowUs())
    this.anchorMono = this.monoNs()
  }

  private raw(mono: bigint): number {
    return this.anchorUs + Math.floor((Number(mono - this.anchorMono) / 1000) * this.rate)
  }

  /** Current served time (µs) and radius (µs). Strictly increasing across calls. */
  now(): { us: number; radiusUs: number } {
    const mono = this.monoNs()
    let served = this.raw(mono)
    const host = Math.floor(this.hostNowUs())
    const drift = host - served
    if (drift > this.stepUs) {
      this.opts.logger?.warn('host clock stepped forward', { stepMs: Math.round(drift / 1000) })
      this.reanchor(host, mono, 1)
      served = host
    } else if (drift < -this.stepUs && this.rate === 1) {
      this.opts.logger?.warn('host clock stepped back; served clock slews, never goes back', { stepMs: Math.round(-drift / 1000) })
      this.reanchor(served, mono, 1 - this.slew)
    } else if (this.rate !== 1 && drift >= 0) {
      this.opts.logger?.info('served clock caught up with the host clock')
      this.reanchor(served, mono, 1)
    }
    // Any lasting disagreement with the host (a step too small to follow, or one being
    // slewed) widens the radius, so the signed bound stays true. Differences within the
    // host clock's millisecond resolution are covered by the base radius.
    const apart = Math.abs(served - host)
    this.disagreementUs = apart > HOST_RESOLUTION_US ? apart : 0
    if (served <= this.last) served = this.last + 1
    this.last = served
    return { us: served, radiusUs: this.baseRadiusUs + this.disagreementUs }
  }

  private reanchor(us: number, mono: bigint, rate: number): void {
    this.anchorUs = us
    this.anchorMono = mono
    this.rate = rate
  }
}

/**
 * Answer one TIME_REQ: receive and transmit times, radius, Ed25519 signature. `signingSeed`
 * is the key, or picks it for the key id the request names (`k`, PROTOCOL.md §8.4): during an
 * identity rotation the KDC signs with the key the client's realm file names.
 */
export function processTimeReq(clock: ServedClock, signingSeed: Uint8Array | ((k: Uint8Array | undefined) => Uint8Array), req: TimeReq): TimeRep {
  if (req.nonce.length !== 32) throw new KrbProtocolError(ErrorCode.TSR_ERR_MALFORMED, 'MALFORMED', { message: 'nonce must be 32 bytes' })
  const recv = clock.now()
  const xmit = clock.now()
  const radius = Math.max(recv.radiusUs, xmit.radiusUs)
  // A radius that does not fit the signed field would sign a bound that is not true: refuse.
  if (radius > 0xffffffff)
    throw new KrbProtocolError(ErrorCode.KDC_ERR_SVC_UNAVAILABLE, 'TIME_UNCERTAIN', {
      message: 'the KDC clock is too uncertain right now (host clock stepped back); try later',
    })
  const seed = typeof signingSeed === 'function' ? signingSeed(req.k) : signingSeed
  const sig = sign(timeSignatureInput(req.nonce, recv.us, xmit.us, radius), seed)
  return { v: PROTOCOL_VERSION, t: MsgType.TIME_REP, nonce: req.nonce, recv: recv.us, xmit: xmit.us, radius, sig }
}
