/** Every error class and local error code of Tessera, in one place. */
import { type ErrorCode, errorCodeName } from '../proto/error-codes.js'

export { ErrorCode } from '../proto/error-codes.js'

/** A Kerberos-level error the peer sees (a KRB_ERROR on the wire), or one received from the peer. */
export class KrbProtocolError extends Error {
  override readonly name = 'KrbProtocolError'
  /** Server time (ms since epoch) when the error came from a peer that sent it, e.g. for skew. */
  serverTime?: number
  /** Extra data sent along with the error (e.g. pre-auth hints). */
  edata?: Record<string, unknown>
  constructor(
    readonly code: ErrorCode | number,
    readonly status: string,
    opts?: ErrorOptions & { message?: string },
  ) {
    super(opts?.message ?? status, opts)
  }
  /** The RFC name of the code, e.g. `KRB_AP_ERR_SKEW`. */
  get codeName(): string {
    return errorCodeName(this.code)
  }
}

/** Local error codes. Never sent on the wire as-is. */
export const TesseraErrorCode = {
  TESSERA_FRAME_TOO_LARGE: 'TESSERA_FRAME_TOO_LARGE',
  TESSERA_DECODE: 'TESSERA_DECODE',
  TESSERA_VALIDATION: 'TESSERA_VALIDATION',
  TESSERA_TIMEOUT: 'TESSERA_TIMEOUT',
  TESSERA_NETWORK: 'TESSERA_NETWORK',
  TESSERA_HANDSHAKE: 'TESSERA_HANDSHAKE',
  TESSERA_CHANNEL_CLOSED: 'TESSERA_CHANNEL_CLOSED',
  TESSERA_INTEGRITY: 'TESSERA_INTEGRITY',
  TESSERA_ABORTED: 'TESSERA_ABORTED',
  TESSERA_CONFIG: 'TESSERA_CONFIG',
  TESSERA_DB_LOCKED: 'TESSERA_DB_LOCKED',
  TESSERA_DB: 'TESSERA_DB',
  TESSERA_NOT_FOUND: 'TESSERA_NOT_FOUND',
  TESSERA_EXISTS: 'TESSERA_EXISTS',
  TESSERA_BAD_NAME: 'TESSERA_BAD_NAME',
  TESSERA_REALM_EXISTS: 'TESSERA_REALM_EXISTS',
  TESSERA_NO_CREDENTIALS: 'TESSERA_NO_CREDENTIALS',
  TESSERA_BAD_REPLY: 'TESSERA_BAD_REPLY',
  TESSERA_KEYTAB: 'TESSERA_KEYTAB',
  TESSERA_CCACHE: 'TESSERA_CCACHE',
  TESSERA_SESSION: 'TESSERA_SESSION',
  TESSERA_TIME: 'TESSERA_TIME',
  TESSERA_KDF_LIMIT: 'TESSERA_KDF_LIMIT',
  TESSERA_NOT_AUTHORIZED: 'TESSERA_NOT_AUTHORIZED',
  TESSERA_PASSWORD_POLICY: 'TESSERA_PASSWORD_POLICY',
  TESSERA_PROTECTED: 'TESSERA_PROTECTED',
  TESSERA_ACL: 'TESSERA_ACL',
  TESSERA_AUDIT: 'TESSERA_AUDIT',
  TESSERA_TOKEN: 'TESSERA_TOKEN',
} as const
export type TesseraErrorCode = (typeof TesseraErrorCode)[keyof typeof TesseraErrorCode]

/** A local failure (decode, network, timeout, config...). */
export class TesseraError extends Error {
  override readonly name = 'TesseraError'
  constructor(
    readonly code: TesseraErrorCode,
    message: string,
    opts?: ErrorOptions,
  ) {
    super(message, opts)
  }
}

/** Why a password (change) was refused by the policy; MIT's kadm5 error names. */
export type PasswordPolicyReason = 'TOO_SHORT' | 'TOO_FEW_CLASSES' | 'CONTAINS_NAME' | 'REUSE' | 'TOO_SOON'

/** A password or password change refused by the principal's policy (TESSERA_PASSWORD_POLICY). Never carries the password. */
export class PasswordPolicyError extends TesseraError {
  constructor(
    readonly reason: PasswordPolicyReason,
    message: string,
  ) {
    super(TesseraErrorCode.TESSERA_PASSWORD_POLICY, message)
  }
}

/** An admin request refused by the ACL or the self-service rules (TESSERA_NOT_AUTHORIZED). */
export class NotAuthorizedError extends TesseraError {
  constructor(
    /** The ACL letters that were missing, e.g. `['c']`. */
    readonly missing: string[],
    message: string,
  ) {
    super(TesseraErrorCode.TESSERA_NOT_AUTHORIZED, message)
  }
}

/** The RFC 9449 §7.1 / RFC 6750 §3.1 error of a refused HTTP request; undefined: no credentials were sent at all. */
export type TokenErrorName = 'invalid_request' | 'invalid_token' | 'invalid_dpop_proof' | 'use_dpop_nonce' | undefined

/**
 * A JWT bridge request refused by the service (TESSERA_TOKEN): `reason` is stable (tests and
 * callers match on it), `status` and `wwwAuthenticate` are what to answer (RFC 9449 §7.1).
 */
export class TokenError extends TesseraError {
  constructor(
    readonly error: TokenErrorName,
    readonly reason: string,
    message: string,
    readonly status: 400 | 401 | 503 = error === 'invalid_request' ? 400 : 401,
    opts?: ErrorOptions & { nonce?: string },
  ) {
    super(TesseraErrorCode.TESSERA_TOKEN, message, opts)
    if (opts?.nonce !== undefined) this.nonce = opts.nonce
  }

  /** A fresh server nonce to send as DPoP-Nonce (with use_dpop_nonce). */
  readonly nonce?: string

  /** The WWW-Authenticate value: `DPoP error="…", error_description="…", algs="EdDSA Ed25519"`. */
  get wwwAuthenticate(): string {
    const algs = 'algs="EdDSA Ed25519"'
    if (this.error === undefined) return `DPoP ${algs}`
    // error_description: printable ASCII without '"' and '\\' (RFC 6750 §3).
    const text = this.message.replace(/[^\x20-\x7e]|["\\]/g, '')
    return `DPoP error="${this.error}", error_description="${text}", ${algs}`
  }
}

/** True when `err` is a TesseraError with the given code. */
export function isTesseraError(err: unknown, code?: TesseraErrorCode): err is TesseraError {
  return err instanceof TesseraError && (code === undefined || err.code === code)
}
