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

/** True when `err` is a TesseraError with the given code. */
export function isTesseraError(err: unknown, code?: TesseraErrorCode): err is TesseraError {
  return err instanceof TesseraError && (code === undefined || err.code === code)
}
