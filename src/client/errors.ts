/** Turn a KRB_ERROR from the KDC or a service into an error a person understands: the cause and the next step. */
import { ErrorCode, errorCodeName } from '../../proto/error-codes.js'
import type { KrbError } from '../../proto/messages.js'
import { KrbProtocolError } from '../errors.js'
import { describeSkew } from '../krb/parts.js'

/** Who sent the KRB_ERROR and what the request was about. */
export interface KrbErrorContext {
  /** Who refused: the KDC or an application service (AP exchange). @default 'KDC' */
  peer?: 'KDC' | 'service'
  /** The client principal of a login, e.g. alice@EXAMPLE.COM. */
  client?: string
}

/**
 * A KrbProtocolError for a KRB_ERROR reply, with a message for people; `localNow` is the
 * time we used, `service` the service principal the request was about.
 */
export function krbErrorFromReply(m: KrbError, localNow: number, service?: string, ctx: KrbErrorContext = {}): KrbProtocolError {
  const fromService = ctx.peer === 'service'
  const who = fromService ? `the service ${service ?? ''}`.trimEnd() : 'the KDC'
  let message: string
  switch (m.code) {
    case ErrorCode.KRB_AP_ERR_SKEW:
      message = `${who} refused the request: clock skew too great: ${describeSkew(localNow, m.stime, fromService ? 'service' : 'KDC')}`
      break
    case ErrorCode.KDC_ERR_PREAUTH_FAILED:
      message = `login failed${ctx.client ? ` for ${ctx.client}` : ''}: wrong password or unknown principal`
      break
    case ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN:
      message = service ? `unknown service ${service}` : m.text
      break
    case ErrorCode.KRB_AP_ERR_TKT_EXPIRED:
      message = fromService ? `${who} refused the ticket: expired; get a new one (kauth ticket)` : `ticket expired: ${m.text}`
      break
    case ErrorCode.KRB_AP_ERR_BAD_INTEGRITY:
      message = fromService
        ? `${who} cannot open the ticket: its keytab key differs from the KDC's (a stale keytab), or the ticket was tampered with`
        : 'the cached ticket cannot be used: the KDC cannot open it (a damaged credential cache, or a ticket from another realm ' +
          'of the same name); run kauth login'
      break
    case ErrorCode.KRB_AP_ERR_NOT_US:
      message = `the service refused the ticket${service ? ` for ${service}` : ''}: its keytab has no key for ${service ?? 'that principal'} ` +
        '(connected to the wrong service, or its keytab lacks that key: export it again)'
      break
    case ErrorCode.KDC_ERR_BADOPTION:
      message = m.text && m.text !== 'BADOPTION' ? m.text : 'the KDC cannot honour the requested options (e.g. ticket not renewable)'
      break
    case ErrorCode.KRB_AP_ERR_REPEAT:
      message = `${who} rejected the request as a replay`
      break
    default:
      message = m.text || errorCodeName(m.code)
  }
  const err = new KrbProtocolError(m.code, errorCodeName(m.code), { message })
  err.serverTime = m.stime
  if (m.edata) err.edata = m.edata as Record<string, unknown>
  return err
}
