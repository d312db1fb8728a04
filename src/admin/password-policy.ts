/** Password policy: quality, history, minimum and maximum life, with MIT kadm5's messages (kadm_err.et). */
import { constantTimeEqual, passwordToKey, wipe } from '../crypto/index.js'
import { characterClasses } from '../db/names.js'
import { DEFAULT_POLICY } from '../db/policy.js'
import type { KeyVersion, Policy, PrincipalId, PrincipalRecord } from '../db/types.js'
import { PasswordPolicyError } from '../errors.js'

/** MIT's texts (KADM5_PASS_Q_TOOSHORT, KADM5_PASS_Q_CLASS, KADM5_PASS_REUSE, KADM5_PASS_TOOSOON), and ours for the name check. */
export const PASSWORD_MESSAGES = {
  TOO_SHORT: 'Password is too short',
  TOO_FEW_CLASSES: 'Password does not contain enough character classes',
  CONTAINS_NAME: 'Password contains the principal name',
  REUSE: 'Cannot reuse password',
  TOO_SOON: "Current password's minimum life has not expired",
} as const

/** The policy a principal is bound by: its named policy, or {@link DEFAULT_POLICY}. */
export function effectivePolicy(p: Readonly<Policy> | undefined): Readonly<Policy> {
  return p ?? DEFAULT_POLICY
}

/**
 * Quality rules (MIT passwd_check): at least `minLength` characters (code points after NFC),
 * at least `minClasses` of lower case, upper case, digits, other; and not containing the
 * principal's first component (case-insensitive) when that has 3 characters or more.
 * Throws PasswordPolicyError with the rule's message; the message never holds the password.
 */
export function checkPasswordQuality(password: string, policy: Readonly<Policy> | undefined, id: PrincipalId): void {
  const p = effectivePolicy(policy)
  const pw = password.normalize('NFC')
  if ([...pw].length < p.minLength)
    throw new PasswordPolicyError('TOO_SHORT', `${PASSWORD_MESSAGES.TOO_SHORT} (policy ${p.name}: at least ${p.minLength} characters)`)
  if (characterClasses(pw) < p.minClasses)
    throw new PasswordPolicyError(
      'TOO_FEW_CLASSES',
      `${PASSWORD_MESSAGES.TOO_FEW_CLASSES} (policy ${p.name}: at least ${p.minClasses} of lower case, upper case, digits, other)`,
    )
  const first = id.components[0]?.normalize('NFC').toLowerCase()
  if (first !== undefined && [...first].length >= 3 && pw.toLowerCase().includes(first))
    throw new PasswordPolicyError('CONTAINS_NAME', PASSWORD_MESSAGES.CONTAINS_NAME)
}

/** True for a key derived from a password (it has KDF parameters and a salt). */
function isPasswordKey(k: KeyVersion): k is KeyVersion & Required<Pick<KeyVersion, 'kdf' | 'salt'>> {
  return k.kdf !== undefined && k.salt !== undefined
}

/**
 * The password keys the history check compares against, newest first: the current key (if it
 * is a password key), then older versions still in `keys` and `passwordHistory`, at most
 * `max(1, history)` of them (MIT: the current password is always refused, pw_history_num
 * counts it).
 */
export function historyCandidates(rec: Readonly<PrincipalRecord>, policy: Readonly<Policy> | undefined): KeyVersion[] {
  const n = Math.max(1, effectivePolicy(policy).history ?? 0)
  const current = rec.keys[rec.keys.length - 1]
  const older = [...rec.keys.slice(0, -1), ...(rec.passwordHistory ?? [])].filter(isPasswordKey).sort((a, b) => b.createdAt - a.createdAt)
  const all = current !== undefined && isPasswordKey(current) ? [current, ...older] : older
  return all.slice(0, n)
}

/**
 * Throws PasswordPolicyError('REUSE') if `password` gives one of the keys of
 * {@link historyCandidates} under that key's own salt and KDF parameters (one KDF run per
 * distinct salt and parameter set).
 */
export async function checkPasswordReuse(password: string, rec: Readonly<PrincipalRecord>, policy: Readonly<Policy> | undefined): Promise<void> {
  const derived = new Map<string, Uint8Array>()
  try {
    for (const k of historyCandidates(rec, policy)) {
      if (!isPasswordKey(k)) continue
      const id = `${k.salt}\u0000${k.kdf.alg}:${k.kdf.N}:${k.kdf.r}:${k.kdf.p}`
      let mine = derived.get(id)
      if (mine === undefined) {
        mine = await passwordToKey(password, k.salt, k.kdf)
        derived.set(id, mine)
      }
      if (constantTimeEqual(mine, k.key)) throw new PasswordPolicyError('REUSE', PASSWORD_MESSAGES.REUSE)
    }
  } finally {
    wipe(...derived.values())
  }
}

/**
 * MIT check_min_life, for a principal changing its own password or key: refused while the
 * current key is younger than the policy's `minPasswordLifeMs`, unless the password has
 * already expired (then a change is what is wanted).
 */
export function checkMinLife(rec: Readonly<PrincipalRecord>, policy: Readonly<Policy> | undefined, now: number): void {
  const min = effectivePolicy(policy).minPasswordLifeMs ?? 0
  if (min <= 0) return
  if (rec.passwordExpiresAt !== undefined && rec.passwordExpiresAt <= now) return
  const last = rec.keys[rec.keys.length - 1]?.createdAt
  if (last !== undefined && now - last < min) {
    const until = new Date(last + min).toISOString()
    throw new PasswordPolicyError('TOO_SOON', `${PASSWORD_MESSAGES.TOO_SOON} (a change is possible from ${until})`)
  }
}

/** The password expiry a change at `now` gives (policy `maxPasswordLifeMs`), or undefined: it does not expire. */
export function passwordExpiry(policy: Readonly<Policy> | undefined, now: number): number | undefined {
  const max = effectivePolicy(policy).maxPasswordLifeMs
  return max > 0 ? now + max : undefined
}

/**
 * The password history after a change away from `rec`'s current key: that key (if a
 * password key) and the earlier history, newest last, trimmed to the `history - 1` that the
 * next check needs beside the then-current key. Undefined when nothing is to be kept.
 */
export function nextPasswordHistory(rec: Readonly<PrincipalRecord>, policy: Readonly<Policy> | undefined): KeyVersion[] | undefined {
  const keep = Math.max(0, (effectivePolicy(policy).history ?? 0) - 1)
  if (keep === 0) return undefined
  const current = rec.keys[rec.keys.length - 1]
  const list = [...(rec.passwordHistory ?? [])]
  if (current !== undefined && isPasswordKey(current)) list.push(current)
  const out = list.slice(-keep).map((k) => {
    const c: KeyVersion = { kvno: k.kvno, key: new Uint8Array(k.key), createdAt: k.createdAt }
    if (k.kdf !== undefined) c.kdf = { ...k.kdf }
    if (k.salt !== undefined) c.salt = k.salt
    return c
  })
  return out.length > 0 ? out : undefined
}
