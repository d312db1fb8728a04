/**
 * Wire error codes carried by KRB_ERROR (`code`). Kerberos names and numbers
 * (RFC 4120 §7.5.9) where the meaning matches; 100+ are Tessera's own
 * (transport and protocol-level). Codes are stable: never renumber.
 */
export const ErrorCode = {
  KDC_ERR_NONE: 0,
  KDC_ERR_NAME_EXP: 1,
  KDC_ERR_SERVICE_EXP: 2,
  KDC_ERR_BAD_PVNO: 3,
  KDC_ERR_C_PRINCIPAL_UNKNOWN: 6,
  KDC_ERR_S_PRINCIPAL_UNKNOWN: 7,
  KDC_ERR_PRINCIPAL_NOT_UNIQUE: 8,
  KDC_ERR_NULL_KEY: 9,
  KDC_ERR_CANNOT_POSTDATE: 10,
  KDC_ERR_NEVER_VALID: 11,
  KDC_ERR_POLICY: 12,
  KDC_ERR_BADOPTION: 13,
  KDC_ERR_ETYPE_NOSUPP: 14,
  KDC_ERR_CLIENT_REVOKED: 18,
  KDC_ERR_SERVICE_REVOKED: 19,
  KDC_ERR_TGT_REVOKED: 20,
  KDC_ERR_CLIENT_NOTYET: 21,
  KDC_ERR_KEY_EXPIRED: 23,
  KDC_ERR_PREAUTH_FAILED: 24,
  KDC_ERR_PREAUTH_REQUIRED: 25,
  KDC_ERR_SVC_UNAVAILABLE: 29,
  KRB_AP_ERR_BAD_INTEGRITY: 31,
  KRB_AP_ERR_TKT_EXPIRED: 32,
  KRB_AP_ERR_TKT_NYV: 33,
  KRB_AP_ERR_REPEAT: 34,
  KRB_AP_ERR_NOT_US: 35,
  KRB_AP_ERR_BADMATCH: 36,
  KRB_AP_ERR_SKEW: 37,
  KRB_AP_ERR_BADVERSION: 39,
  KRB_AP_ERR_MSG_TYPE: 40,
  KRB_AP_ERR_MODIFIED: 41,
  KRB_AP_ERR_BADKEYVER: 44,
  KRB_AP_ERR_NOKEY: 45,
  KRB_AP_ERR_MUT_FAIL: 46,
  KRB_ERR_GENERIC: 60,
  KRB_ERR_FIELD_TOOLONG: 61,
  /** The request names a realm this KDC does not serve (RFC 6806). */
  KDC_ERR_WRONG_REALM: 68,
  /** The message could not be decoded or does not match its schema. */
  TSR_ERR_MALFORMED: 100,
  /** The transport handshake failed (bad key share, bad confirmation, wrong order). */
  TSR_ERR_HANDSHAKE: 101,
  /** The peer sent nothing in time (handshake or idle timeout). */
  TSR_ERR_TIMEOUT: 102,
  /** Connection refused: too many connections (total or from this peer). */
  TSR_ERR_BUSY: 103,
  /** The listener does not implement this message type yet. */
  TSR_ERR_NOT_IMPLEMENTED: 104,
  /** The server is shutting down. */
  TSR_ERR_SHUTTING_DOWN: 105,
  /** A sealed transport frame failed to open (tampered, replayed or reordered). */
  TSR_ERR_TRANSPORT_INTEGRITY: 106,
  /** The peer is not allowed to perform this operation. */
  TSR_ERR_NOT_AUTHORIZED: 107,
  /** Resumption refused (unknown, expired or replayed ticket): do a full handshake. */
  TSR_ERR_RESUME: 108,
  /** Admin: unknown operation, or arguments that do not fit it (AdminResult.code only). */
  ADM_ERR_BAD_REQUEST: 109,
  /** Admin: the principal or policy does not exist (told only to a caller allowed to inquire). */
  ADM_ERR_NOT_FOUND: 110,
  /** Admin: the principal or policy already exists. */
  ADM_ERR_EXISTS: 111,
  /** Admin: the password policy refused the password (text: which rule). */
  ADM_ERR_PASSWORD_POLICY: 112,
  /** Admin: the principal is protected (krbtgt, kadmin/*, the last full administrator). */
  ADM_ERR_PROTECTED: 113,
  /** Admin: the policy is still used by principals. */
  ADM_ERR_IN_USE: 114,
} as const
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

const names = new Map<number, string>(Object.entries(ErrorCode).map(([k, v]) => [v, k]))

/** The name of a wire error code, or `UNKNOWN_<n>`. */
export function errorCodeName(code: number): string {
  return names.get(code) ?? `UNKNOWN_${code}`
}
