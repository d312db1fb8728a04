/** Records of the principal database. Key bytes here are plaintext (in memory only); at rest they are sealed under the master key. */
import type { KdfParams } from '../crypto/index.js'

/** A principal name: realm + components ("HTTP/www.example.com@EXAMPLE.COM" -> ["HTTP","www.example.com"]). */
export interface PrincipalId {
  realm: string
  components: string[]
}

/** Principal attributes (flags). Absent = false. */
export interface PrincipalAttributes {
  /** No tickets at all for or to this principal. */
  disabled?: boolean
  /** AS requests without successful pre-auth are refused. Default true for new principals. */
  requiresPreauth?: boolean
  /** Tickets may be issued forwardable. Default true. */
  allowForwardable?: boolean
  /** Tickets may be issued renewable. Default true. */
  allowRenewable?: boolean
  /** May be the server of a service ticket (false for users created with `--no-service`). Default true. */
  allowService?: boolean
  /** The TGS may issue JWTs for this service (PROTOCOL.md §15). Default false. */
  allowJwt?: boolean
  /** The `aud` of its JWTs (a URL), instead of its principal name. */
  jwtAudience?: string
}

/** One version of a principal's long-term key. */
export interface KeyVersion {
  kvno: number
  /** 32-byte key, plaintext in memory. */
  key: Uint8Array
  /** Present for password-derived keys. */
  kdf?: KdfParams
  /** Salt used with kdf (realm + principal by default). */
  salt?: string
  createdAt: number
  /**
   * A staged (next) version: the KDC seals nothing with it before this time, and seals with it
   * from this time on (decided by the clock at each seal, no write needed). Absent: active
   * since createdAt. Activation times never decrease with the kvno.
   */
  activatesAt?: number
  /**
   * Upper bound on the end time of any ticket sealed with this version: set when a successor
   * is added, as the successor's activation + {@link sealLifeMs}. Absent while no successor exists.
   */
  sealedUntil?: number
  /**
   * The longest life a ticket sealed with this version can have: the principal's maxLife when
   * the version was made, raised (never lowered) by a modprinc that raises maxLife while the
   * version may still seal. Absent on versions written before rotation existed.
   */
  sealLifeMs?: number
  /** After this time the version no longer opens tickets (grace period end). Absent = current or no limit. */
  retiresAt?: number
}

/** An automatic rotation schedule (modprinc rotateEvery / stageAhead / grace), run by the KDC's scheduler. */
export interface RotationSchedule {
  /** A new key becomes current this long after the current one did, ms. */
  everyMs: number
  /** The next key is created (and may be fetched) this long before it becomes current, ms. */
  stageAheadMs: number
  /** The previous key retires this long after its successor became current, ms. Absent: once its last ticket can have expired. */
  graceMs?: number
}

/** A principal as the KDC and admin see it. */
export interface PrincipalRecord {
  realm: string
  components: string[]
  attributes: PrincipalAttributes
  /** The principal itself expires at this time (ms). */
  expiresAt?: number
  /** Password expires at this time (ms). */
  passwordExpiresAt?: number
  /** Longest ticket life for this principal, ms. */
  maxLife: number
  /** Longest renewable life, ms. */
  maxRenewableLife: number
  /** Name of the policy applied, if any. */
  policy?: string
  /** Key versions, newest (current) last. */
  keys: KeyVersion[]
  createdAt: number
  createdBy: string
  modifiedAt: number
  modifiedBy: string
  lastSuccess?: number
  /** Failed pre-auth attempts counted in the current window. */
  failureCount: number
  /** Start of the current failure-counting window. */
  failureWindowStart?: number
  lastFailure?: number
  lockedUntil?: number
  /**
   * Keys of earlier passwords, kept only for the password-history check of the policy (MIT's
   * old_keys): never valid for a ticket, sealed at rest like `keys`, never returned by an
   * admin request. Newest last.
   */
  passwordHistory?: KeyVersion[]
  /** Automatic key rotation (src/admin/rotation.ts). */
  rotation?: RotationSchedule
  /** The kvno whose activation the scheduler last recorded (audit and event); the KDC seals by time, not by this. */
  activatedKvno?: number
  /**
   * Sessions revoked (ms since epoch): the TGS refuses every ticket of this client whose
   * authtime is not later (a login in the same millisecond may have used the old key; KDC_ERR_CLIENT_REVOKED, "credentials revoked: log in again"). Set by
   * the key changes that retire every older key at once because it may be known (an emergency
   * rotation, an administrator's cpw or ktadd -randkey without keepold:
   * src/admin/key-lifecycle.ts revokeSessions); never lowered, kept by purgekeys. Absent on
   * records never revoked (and on those written before it existed).
   */
  revokedAt?: number
}

/** A password and lockout policy. */
export interface Policy {
  name: string
  /** Minimum password length. */
  minLength: number
  /** Minimum number of character classes (lower, upper, digit, other). */
  minClasses: number
  /** Failures before lockout; 0 disables lockout. */
  maxFailures: number
  /** Window in which failures are counted, ms. */
  failureCountIntervalMs: number
  /** How long a lockout lasts, ms; 0 = until an admin unlocks. */
  lockoutDurationMs: number
  /** Password lifetime, ms; 0 = never expires. */
  maxPasswordLifeMs: number
  /**
   * MIT pw_history_num: a new password must differ from the current one and from the
   * `history - 1` before it. Absent or 0 = no history kept (the current password is still refused).
   */
  history?: number
  /** MIT pw_min_life: a principal may change its own password only this long after the last change, ms. Absent = 0. */
  minPasswordLifeMs?: number
}

/** Realm-wide data: KDC identity keys (plaintext in memory, sealed at rest). */
export interface RealmRecord {
  realm: string
  createdAt: number
  /** KDC X25519 transport key pair (secret 32 bytes, public 32 bytes). */
  transportKey: { secretKey: Uint8Array; publicKey: Uint8Array }
  /** KDC Ed25519 signing key pair (secret = 32-byte seed). */
  signingKey: { secretKey: Uint8Array; publicKey: Uint8Array }
  /**
   * A staged identity rotation (src/admin/identity.ts): the next key pairs, published in
   * realm.json as soon as they exist, answered to on request at once, and the KDC's default
   * from `nextActivatesAt` on (decided by the clock; `activate-identity` makes them current).
   */
  nextTransportKey?: { secretKey: Uint8Array; publicKey: Uint8Array }
  nextSigningKey?: { secretKey: Uint8Array; publicKey: Uint8Array }
  /** When the next keys become the default, ms since epoch (set with either next key). */
  nextActivatesAt?: number
  /** After activation: the keys current before, still answered to (old realm.json) until `retire-identity`. */
  previousTransportKey?: { secretKey: Uint8Array; publicKey: Uint8Array }
  previousSigningKey?: { secretKey: Uint8Array; publicKey: Uint8Array }
}

/** Outcome of recording a failed pre-auth attempt. */
export interface FailureOutcome {
  failureCount: number
  /** Set when this failure (or an earlier one) locked the principal. */
  lockedUntil?: number
  /** True when this very failure caused the lockout. */
  lockedNow: boolean
}

/** The lockout counters of a principal (the fields of PrincipalRecord the KDC keeps for itself). */
export interface LockoutState {
  failureCount: number
  failureWindowStart?: number
  lastFailure?: number
  lockedUntil?: number
  lastSuccess?: number
}

/** What the password check inside PrincipalDb.attemptPreauth found. */
export type PreauthCheck = { ok: true } | { ok: false; reason: string }

/** Outcome of PrincipalDb.attemptPreauth. */
export type AttemptOutcome =
  /** Locked: the password was not tried. */
  | { outcome: 'locked'; lockedUntil: number }
  | { outcome: 'ok' }
  | { outcome: 'failed'; reason: string; failureCount: number; lockedNow: boolean; lockedUntil?: number }
