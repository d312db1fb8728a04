/** Turn a KRB_ERROR from the KDC into an error a person understands. */
import { ErrorCode, errorCodeName } from '../../proto/error-codes.js'
import type { KrbError } from '../../proto/messages.js'
import { KrbProtocolError } from '../errors.js'
import { describeSkew } from '../krb/parts.js'

/** A KrbProtocolError for a KRB_ERROR reply, with a message for people; `localNow` is the time we used. */
export function krbErrorFromReply(m: KrbError, localNow: number, context?: string): KrbProtocolError {
  let message: string
  switch (m.code) {
    case ErrorCode.KRB_AP_ERR_SKEW:
      message = `clock skew too great: ${describeSkew(localNow, m.stime)}`
      break
    case ErrorCode.KDC_ERR_PREAUTH_FAILED:
      message = 'login failed: wrong password or unknown principal'
      break
    case ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN:
      message = context ? `unknown service ${context}` : m.text
      break
    case ErrorCode.KRB_AP_ERR_TKT_EXPIRED:
      message = `ticket expired: ${m.text}`
      break
    case ErrorCode.KDC_ERR_BADOPTION:
      message = m.text && m.text !== 'BADOPTION' ? m.text : 'the KDC cannot honour the requested options (e.g. ticket not renewable)'
      break
    case ErrorCode.KRB_AP_ERR_REPEAT:
      message = 'request rejected as a replay'
      break
    default:
      message = m.text || errorCodeName(m.code)
  }
  const err = new KrbProtocolError(m.code, errorCodeName(m.code), { message })
  err.serverTime = m.stime
  if (m.edata) err.edata = m.edata as Record<string, unknown>
  return err
}
