/** Ticket lifetime and renewal rules shared by AS and TGS (RFC 4120 §3.1.3, MIT kdc_util.c kdc_get_ticket_endtime). */
import { ErrorCode } from '../../proto/error-codes.js'
import { KdcOption } from '../../proto/flags.js'
import type { PrincipalRecord } from '../db/types.js'
import { KrbProtocolError } from '../errors.js'
import type { KdcContext } from './context.js'

/** Inputs of computeTimes. */
export interface TimesRequest {
  now: number
  /** Requested end; 0 = the default life. */
  till: number
  /** Requested renew-till, if any. */
  rtill: number | undefined
  options: number
  /** Principals whose limits apply (client, service). */
  principals: PrincipalRecord[]
  /** Upper bound from the ticket presented (TGS: the TGT's endtime). */
  capEnd?: number
  /** Upper bound on renew-till from the ticket presented. */
  capRenewTill?: number
  /** False when the presented ticket is not renewable (TGS). */
  renewableAllowed?: boolean
}

/**
 * Ticket times: end = min(request, every principal's max life, realm max, cap); renew-till likewise.
 * Throws KrbProtocolError(KDC_ERR_NEVER_VALID) when the requested end is not in the future.
 */
export function computeTimes(ctx: KdcContext, r: TimesRequest): { endtime: number; renewTill: number | undefined } {
  const c = ctx.config
  // A till already past asks for a ticket that is never valid: refuse it (MIT: KDC_ERR_NEVER_VALID)
  // rather than issue one that expires at once.
  if (r.till !== 0 && r.till <= r.now)
    throw new KrbProtocolError(ErrorCode.KDC_ERR_NEVER_VALID, 'NEVER_VALID', {
      message: 'the requested end time (till) is not in the future; send till = 0 for the default life',
    })
  const wanted = r.till === 0 ? r.now + c.defaultTicketLifeMs : r.till
  let end = Math.min(wanted, r.now + c.maxTicketLifeMs)
  for (const p of r.principals) end = Math.min(end, r.now + p.maxLife)
  if (r.capEnd !== undefined) end = Math.min(end, r.capEnd)
  let renewTill: number | undefined
  const allowed = r.renewableAllowed !== false && r.principals.every((p) => p.attributes.allowRenewable !== false)
  let rtill = r.options & KdcOption.RENEWABLE ? (r.rtill ?? 0) : undefined
  // RENEWABLE-OK: if the wanted end could not be granted, give a renewable ticket up to it instead.
  if (rtill === undefined && r.options & KdcOption.RENEWABLE_OK && wanted > end) rtill = wanted
  if (allowed && rtill !== undefined) {
    let rt = Math.min(rtill === 0 ? r.now + c.maxRenewableLifeMs : rtill, r.now + c.maxRenewableLifeMs)
    for (const p of r.principals) rt = Math.min(rt, r.now + p.maxRenewableLife)
    if (r.capRenewTill !== undefined) rt = Math.min(rt, r.capRenewTill)
    if (rt > r.now) {
      // A ticket never outlives its renew-till.
      end = Math.min(end, rt)
      renewTill = rt
    }
  }
  if (end <= r.now) end = r.now + 1
  return { endtime: end, renewTill }
}
