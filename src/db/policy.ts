/** Password and lockout policies: the default policy and the validation of stored policies. */
import { TesseraError, TesseraErrorCode } from '../errors.js'
import type { Policy } from './types.js'

/**
 * The policy applied when a principal names none:
 * - `minLength: 8`, `minClasses: 1`: a length floor, no composition rules (length matters more).
 * - `maxFailures: 0`: no lockout, as in MIT Kerberos. A lockout by default lets anyone who can
 *   guess a user name lock that user out; enable it per policy where the trade-off is wanted.
 * - `failureCountIntervalMs: 10 min`, `lockoutDurationMs: 10 min`: what a copy of this policy
 *   gets once `maxFailures` is raised above 0.
 * - `maxPasswordLifeMs: 0`: passwords do not expire.
 */
export const DEFAULT_POLICY: Readonly<Policy> = Object.freeze({
  name: 'default',
  minLength: 8,
  minClasses: 1,
  maxFailures: 0,
  failureCountIntervalMs: 10 * 60 * 1000,
  lockoutDurationMs: 10 * 60 * 1000,
  maxPasswordLifeMs: 0,
})

/** Most passwords a policy's history may remember (each costs a KDF run on every change). */
export const MAX_POLICY_HISTORY = 32

/** Longest policy name, UTF-8 bytes. */
export const MAX_POLICY_NAME_BYTES = 255

// C0 controls, DEL, C1 controls; lone surrogates cannot be stored as UTF-8 without loss.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/
const LONE_SURROGATE = /\p{Cs}/u

/** Throws TesseraError(TESSERA_BAD_NAME) unless `name` is an acceptable policy name. */
export function checkPolicyName(name: string): void {
  const bad = (why: string): never => {
    throw new TesseraError(TesseraErrorCode.TESSERA_BAD_NAME, `invalid policy name: ${why}`)
  }
  if (typeof name !== 'string' || name.length === 0) bad('empty')
  if (Buffer.byteLength(name, 'utf8') > MAX_POLICY_NAME_BYTES) bad(`longer than ${MAX_POLICY_NAME_BYTES} bytes`)
  if (CONTROL.test(name)) bad('contains a control character')
  if (LONE_SURROGATE.test(name)) bad('contains an unpaired surrogate')
  if (name.normalize('NFC') !== name) bad('not in Unicode NFC form')
}

const INT_FIELDS = [
  'minLength',
  'minClasses',
  'maxFailures',
  'failureCountIntervalMs',
  'lockoutDurationMs',
  'maxPasswordLifeMs',
] as const

/** Throws TesseraError (TESSERA_BAD_NAME for the name, TESSERA_VALIDATION for values) unless `p` is a valid policy. */
export function checkPolicy(p: Policy): void {
  checkPolicyName(p.name)
  for (const f of INT_FIELDS) {
    const v = p[f]
    if (!Number.isSafeInteger(v) || v < 0)
      throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `policy ${f} must be a non-negative integer`)
  }
  for (const f of ['history', 'minPasswordLifeMs'] as const) {
    const v = p[f]
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0))
      throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `policy ${f} must be a non-negative integer`)
  }
  if (p.history !== undefined && p.history > MAX_POLICY_HISTORY)
    throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `policy history must be at most ${MAX_POLICY_HISTORY}`)
  // MIT KADM5_BAD_MIN_PASS_LIFE
  if (p.minPasswordLifeMs !== undefined && p.maxPasswordLifeMs > 0 && p.minPasswordLifeMs > p.maxPasswordLifeMs)
    throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, 'Password minimum life is greater than password maximum life')
  if (p.minClasses > 4)
    throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, 'policy minClasses must be at most 4 (lower, upper, digit, other)')
}
