/** Authenticated time sync: several signed exchanges with the time listener, NTP four-timestamp method. */
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message, TimeRep } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { constantTimeEqual, identityKeyId, randomBytes, randomUint32, verify } from '../crypto/index.js'
import { signingKeyAt } from '../krb/realm-file.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { timeSignatureInput } from '../krb/time-sig.js'
import type { KdcClient } from './kdc-client.js'
import { krbErrorFromReply } from './errors.js'

/** Result of a time sync. All values in milliseconds (fractional). */
export interface TimeSample {
  /** Server time minus local time: add it to the local clock. */
  offsetMs: number
  /** Round-trip delay excluding the server's processing time. */
  delayMs: number
  /** |true offset - offsetMs| <= boundMs (delay/2 + server radius). */
  boundMs: number
  /** Server transmit time of the chosen sample, ms since epoch. */
  serverTimeMs: number
  /** Every signature verified against the realm's signing key. */
  verified: true
  /** Exchanges made. */
  samples: number
  /** The time service's own uncertainty radius in the chosen sample, ms. */
  radiusMs: number
  /**
   * Where the offset comes from: `time`, the signed time service; `exchange`, the clock the
   * AS/TGS judge by (a KRB_ERROR's server time), used when the time service's radius exceeds
   * half the realm's skew: it is then slewing after a step back of the KDC host clock and
   * its time is not the one logins are judged by (PROTOCOL.md §8.4).
   */
  source: 'time' | 'exchange'
}

/** Options of syncTime. */
export interface SyncTimeOptions {
  /** Exchanges; the lowest-delay one is kept. @default 4 */
  samples?: number
  /** Apply the offset to the client (client.clockOffsetMs). @default true */
  apply?: boolean
  signal?: AbortSignal
  /** Monotonic clock in ms, used to time each exchange. @default performance.now */
  monoMs?: () => number
  /**
   * Read the exchanges' clock when the time service's radius exceeds half the skew (see
   * TimeSample.source). false: report the time service's figures whatever its radius. @default true
   */
  exchangeFallback?: boolean
}

/** Check one TIME_REP against our nonce and the realm key; throws TESSERA_TIME on anything wrong. */
export function checkTimeRep(rep: Message, nonce: Uint8Array, signingKey: Uint8Array): TimeRep {
  if (rep.t !== MsgType.TIME_REP) throw new TesseraError(TesseraErrorCode.TESSERA_TIME, `unexpected reply type ${rep.t} from the time service`)
  if (!constantTimeEqual(rep.nonce, nonce)) throw new TesseraError(TesseraErrorCode.TESSERA_TIME, 'time answer carries another nonce (replayed answer?)')
  if (!verify(timeSignatureInput(rep.nonce, rep.recv, rep.xmit, rep.radius), rep.sig, signingKey))
    throw new TesseraError(TesseraErrorCode.TESSERA_TIME, 'time answer signature does not verify against the realm signing key')
  if (rep.xmit < rep.recv) throw new TesseraError(TesseraErrorCode.TESSERA_TIME, 'time answer is impossible: transmitted before received')
  return rep
}

/**
 * Measure the offset between this machine and the KDC. t1/t4 are local (wall clock at
 * t1, plus monotonic elapsed time for t4), t2/t3 the server's signed receive/transmit times:
 * offset = ((t2 - t1) + (t3 - t4)) / 2, delay = (t4 - t1) - (t3 - t2).
 */
export async function syncTime(client: KdcClient, opts: SyncTimeOptions = {}): Promise<TimeSample> {
  const n = opts.samples ?? 4
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new RangeError('samples must be an integer in [1, 64]')
  const mono = opts.monoMs ?? (() => performance.now())
  const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(15000)]) : AbortSignal.timeout(15000)
  const localWall = () => client.now() - client.clockOffsetMs
  let best: { offset: number; delay: number; radius: number; server: number } | undefined
  for (let i = 0; i < n; i++) {
    const nonce = randomBytes(32)
    // The signing key the realm file names for now; `k` asks the KDC to sign with it (PROTOCOL.md §8.4).
    const signingKey = signingKeyAt(client.realm, client.now())
    const k = identityKeyId(signingKey)
    const m1 = mono()
    const t1 = localWall()
    const rep = await client.send('time', (): Message => ({ v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce, k }), signal)
    const t4 = t1 + (mono() - m1)
    if (rep.t === MsgType.KRB_ERROR) {
      // 29 TIME_UNCERTAIN: the served clock is too far from the host's to sign a bound (a
      // large host clock step back): the exchanges' clock is still there to read.
      if (rep.code === ErrorCode.KDC_ERR_SVC_UNAVAILABLE && (opts.exchangeFallback ?? true)) {
        const ex = await exchangeClock(client, mono, localWall, signal)
        const sample: TimeSample = {
          offsetMs: ex.offset,
          delayMs: ex.delay,
          boundMs: ex.delay / 2 + 1,
          serverTimeMs: ex.server,
          verified: true,
          samples: i + 1,
          radiusMs: Number.POSITIVE_INFINITY,
          source: 'exchange',
        }
        if (opts.apply ?? true) client.clockOffsetMs = sample.offsetMs
        return sample
      }
      throw krbErrorFromReply(rep, t4)
    }
    const r = checkTimeRep(rep, nonce, signingKey)
    const t2 = r.recv / 1000
    const t3 = r.xmit / 1000
    const delay = t4 - t1 - (t3 - t2)
    if (delay < -1) throw new TesseraError(TesseraErrorCode.TESSERA_TIME, 'time answer is impossible: negative round trip')
    const offset = (t2 - t1 + (t3 - t4)) / 2
    if (!best || delay < best.delay) best = { offset, delay: Math.max(0, delay), radius: r.radius / 1000, server: t3 }
  }
  const b = best!
  const sample: TimeSample = {
    offsetMs: b.offset,
    delayMs: b.delay,
    boundMs: b.delay / 2 + b.radius,
    serverTimeMs: b.server,
    verified: true,
    samples: n,
    radiusMs: b.radius,
    source: 'time',
  }
  if ((opts.exchangeFallback ?? true) && b.radius > client.realm.maxClockSkewMs / 2) {
    const ex = await exchangeClock(client, mono, localWall, signal)
    sample.offsetMs = ex.offset
    sample.delayMs = ex.delay
    sample.boundMs = ex.delay / 2 + 1
    sample.serverTimeMs = ex.server
    sample.source = 'exchange'
  }
  if (opts.apply ?? true) client.clockOffsetMs = sample.offsetMs
  return sample
}

/**
 * Read the clock the exchanges judge by: an AS_REQ naming krbtgt/REALM as the client, which
 * every KDC refuses before any lookup (12 KDC_ERR_POLICY, §8.1) with a KRB_ERROR whose
 * `stime` is that clock; the transport authenticates it.
 */
async function exchangeClock(client: KdcClient, mono: () => number, localWall: () => number, signal: AbortSignal) {
  const realm = client.realm.realm
  const m1 = mono()
  const t1 = localWall()
  const rep = await client.send(
    'as',
    (): Message => ({
      v: PROTOCOL_VERSION,
      t: MsgType.AS_REQ,
      cname: ['krbtgt', realm],
      realm,
      sname: ['krbtgt', realm],
      till: 0,
      nonce: randomUint32(),
      options: 0,
      padata: [],
    }),
    signal,
  )
  const t4 = t1 + (mono() - m1)
  if (rep.t !== MsgType.KRB_ERROR) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, `unexpected reply type ${rep.t} to the clock probe`)
  // stime has millisecond resolution: the server read it somewhere between t1 and t4.
  return { offset: rep.stime - (t1 + t4) / 2, delay: t4 - t1, server: rep.stime }
}
