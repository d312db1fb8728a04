/**
 * Admin exchange, KDC side (PROTOCOL.md §8.5, MIT kadmind): an ADMIN_REQ carries a ticket
 * for kadmin/admin or kadmin/changepw that came from an AS exchange (INITIAL) and an
 * authenticator sealed with its session key holding the operation; the reply is sealed
 * with the same session key. Authentication is checked here, like the TGS checks a TGT;
 * what the operation may do is decided by the executor (src/admin: ACL, self-service,
 * password policy, audit).
 */
import { ErrorCode } from '../../proto/error-codes.js'
import { TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { AdminBody, type AdminRep, type AdminReq, AdminResult, EncTicketPart } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { SEAL_OVERHEAD, sha256 } from '../crypto/index.js'
import type { PrincipalId } from '../db/types.js'
import { KrbProtocolError } from '../errors.js'
import { openPart, principalString, sameName, sealPart } from '../krb/parts.js'
import { decode, encode } from '../wire/codec.js'
import type { ConnectionContext } from '../wire/server.js'
import { type KdcContext, keyByKvno } from './context.js'

/** Who makes an admin request, as authenticated by its ticket. */
export interface AdminActor {
  /** `name@REALM`. */
  principal: string
  id: PrincipalId
  /** The ticket is for kadmin/changepw: only the actor's own password may change. */
  changepwOnly: boolean
  /** Peer address (for the audit log). */
  peer: string
  /** When the login that got the ticket happened (the key it used was the one current then), ms since epoch. */
  authtime: number
}

/** A refusal of the operation itself (answered inside the sealed AdminResult, not as a KRB_ERROR). */
export class AdminOpError extends Error {
  override readonly name = 'AdminOpError'
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message)
  }
}

/** Runs one authenticated operation; throws AdminOpError (or a TesseraError, mapped by the caller's codes) to refuse. */
export type AdminExecutor = (actor: AdminActor, op: string, args: Record<string, unknown>) => Promise<unknown>

/** Maps anything an executor throws to the (code, text) of a refusal; undefined = an internal error. */
export type AdminErrorMapper = (err: unknown) => { code: number; text: string } | undefined

const KADMIN = 'kadmin'

/** Largest AdminResult, encoded: sealed, it must fit ADMIN_REP.enc (60000 bytes, PROTOCOL.md §7.1). */
export const MAX_ADMIN_RESULT_BYTES = 60000 - SEAL_OVERHEAD

/**
 * Why a result cannot travel in one ADMIN_REP (too many bytes, or beyond the decoder's limits
 * of §10: nesting, entries per container), or undefined when it can. The operation has run;
 * only its answer is refused, so a client asks again for less (audit `limit`, listprincs `glob`).
 */
function unfitResult(r: AdminResult): string | undefined {
  const bytes = encode(r)
  if (bytes.length > MAX_ADMIN_RESULT_BYTES)
    return `the result is too large for one reply (${bytes.length} bytes, at most ${MAX_ADMIN_RESULT_BYTES}): ask for less (audit: limit or since; listprincs: a glob)`
  try {
    decode(bytes)
  } catch (err) {
    return `the result is too large for one reply (${(err as Error).message}): ask for less (audit: limit or since; listprincs: a glob)`
  }
  return undefined
}

function refuse(code: number, status: string, message: string): never {
  throw new KrbProtocolError(code, status, { message })
}

/** The ADMIN_REQ handler of the admin listener. */
export function makeAdminHandler(ctx: KdcContext, exec: AdminExecutor, mapError: AdminErrorMapper) {
  return async (req: AdminReq, conn: ConnectionContext): Promise<AdminRep> => {
    const realm = ctx.realm.realm
    const now = ctx.now()
    const skew = ctx.config.maxClockSkewMs
    const sname = req.ticket.sname
    if (req.ticket.realm !== realm) refuse(ErrorCode.KDC_ERR_WRONG_REALM, 'WRONG_REALM', `this KDC serves realm ${realm}`)
    if (!(sname.length === 2 && sname[0] === KADMIN && (sname[1] === 'admin' || sname[1] === 'changepw')))
      refuse(ErrorCode.KRB_AP_ERR_NOT_US, 'NOT_US', 'the admin service takes tickets for kadmin/admin or kadmin/changepw only')
    const owner = await ctx.db.get({ realm, components: sname })
    if (!owner) refuse(ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN, 'S_PRINCIPAL_UNKNOWN', 'the ticket names an unknown service')
    const key = keyByKvno(owner, req.ticket.kvno, now)
    if (!key)
      refuse(ErrorCode.KRB_AP_ERR_BADKEYVER, 'BADKEYVER', `the ticket is sealed with key version ${req.ticket.kvno}, which is retired or unknown; log in again`)
    const ticket = openPart(key.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, req.ticket.enc)
    const body = openPart(ticket.key, KeyUsage.ADMIN_REQ_BODY, AdminBody, req.auth)
    const clientName = principalString(ticket.cname, ticket.crealm)
    const log = (outcome: 'ok' | 'fail', reason?: string) =>
      ctx.log.security.log({ event: 'admin', client: clientName, service: principalString(sname, realm), peer: conn.peer, outcome, reason })
    try {
      if (!(ticket.flags & TicketFlag.INITIAL))
        refuse(ErrorCode.KDC_ERR_POLICY, 'NOT_INITIAL', 'administration needs a ticket from a login with the password (kauth login or kadmin -p), not from a TGT')
      if (body.crealm !== ticket.crealm || !sameName(body.cname, ticket.cname))
        refuse(ErrorCode.KRB_AP_ERR_BADMATCH, 'BADMATCH', 'authenticator client does not match the ticket')
      if (Math.abs(now - body.ctime) > skew) refuse(ErrorCode.KRB_AP_ERR_SKEW, 'SKEW', 'clock skew too great')
      if (ticket.starttime > now + skew) refuse(ErrorCode.KRB_AP_ERR_TKT_NYV, 'TKT_NYV', 'ticket not yet valid')
      if (ticket.endtime <= now) refuse(ErrorCode.KRB_AP_ERR_TKT_EXPIRED, 'TKT_EXPIRED', 'admin ticket expired; log in again')
      if (ticket.crealm !== realm) refuse(ErrorCode.KDC_ERR_POLICY, 'FOREIGN_CLIENT', 'only principals of this realm may administer it')
      const digest = sha256(req.auth)
      const verdict = ctx.replay.check(Buffer.from(digest.buffer, digest.byteOffset, 16).toString('latin1'), body.ctime, clientName)
      if (verdict === 'replay') refuse(ErrorCode.KRB_AP_ERR_REPEAT, 'REPEAT', 'request is a replay')
      if (verdict === 'cold') refuse(ErrorCode.KRB_AP_ERR_SKEW, 'REPLAY_COLD', 'authenticator predates the KDC start; retry with a fresh one')
      if (verdict === 'full') refuse(ErrorCode.KDC_ERR_SVC_UNAVAILABLE, 'REPLAY_FULL', 'KDC busy; retry later')
      const client = await ctx.db.get({ realm, components: ticket.cname })
      if (!client) refuse(ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CLIENT_DELETED', 'client principal no longer exists')
      if (client.attributes.disabled) refuse(ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CLIENT_DISABLED', 'account disabled')
      // As the TGS does: an admin session opened by a login before a revocation (an emergency
      // rotation, another administrator's key change) ends with it; its key may be known.
      if (client.revokedAt !== undefined && ticket.authtime <= client.revokedAt)
        refuse(ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CREDENTIALS_REVOKED', 'credentials revoked: log in again')
      if (client.expiresAt !== undefined && client.expiresAt <= now) refuse(ErrorCode.KDC_ERR_NAME_EXP, 'CLIENT_EXPIRED', 'account expired')
    } catch (err) {
      if (err instanceof KrbProtocolError) log('fail', err.status)
      throw err
    }
    const actor: AdminActor = {
      principal: clientName,
      id: { realm, components: [...ticket.cname] },
      changepwOnly: sname[1] === 'changepw',
      peer: conn.peer,
      authtime: ticket.authtime,
    }
    let result: AdminResult
    try {
      const value = await exec(actor, body.op, body.args as Record<string, unknown>)
      result = { ok: true, ctime: body.ctime, cusec: body.cusec }
      if (value !== undefined) result.result = value
      const unfit = unfitResult(result)
      if (unfit !== undefined) result = { ok: false, ctime: body.ctime, cusec: body.cusec, code: ErrorCode.ADM_ERR_BAD_REQUEST, text: unfit }
    } catch (err) {
      const mapped = mapError(err)
      if (!mapped) throw err
      result = { ok: false, ctime: body.ctime, cusec: body.cusec, code: mapped.code, text: mapped.text.slice(0, 512) }
    }
    return { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REP, enc: sealPart(ticket.key, KeyUsage.ADMIN_REP_BODY, AdminResult, result) }
  }
}
