/** TGS exchange: gatherTgsReq -> checkTgsReq -> issueTgsRep (RFC 4120 §3.3, MIT do_tgs_req.c). */
import { ErrorCode } from '../../proto/error-codes.js'
import { KdcOption, TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import {
  EncKdcRepPart,
  EncTicketPart,
  type EncTicketPart as EncTicketPartT,
  TgsAuthenticator,
  type TgsAuthenticator as TgsAuthenticatorT,
  type TgsRep,
  type TgsReq,
} from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { randomKey, sha256 } from '../crypto/index.js'
import type { PrincipalRecord } from '../db/types.js'
import { KrbProtocolError } from '../errors.js'
import { openPart, principalString, sameName, sealPart } from '../krb/parts.js'
import type { ConnectionContext } from '../wire/server.js'
import { currentKey, type KdcContext, keyByKvno, tgsName } from './context.js'
import { computeTimes } from './policy.js'

interface TgsGathered {
  req: TgsReq
  ticket: EncTicketPartT
  auth: TgsAuthenticatorT
  renew: boolean
  client: PrincipalRecord | undefined
  service: PrincipalRecord | undefined
  clientName: string
  serviceName: string
}

class TgsRefusal extends KrbProtocolError {}

function refuse(code: number, status: string, message: string): never {
  throw new TgsRefusal(code, status, { message })
}

// A serial number per key object: the database hands out a new key object whenever a
// principal's keys change (rotation, delete + re-create), so (serial, sealed bytes) names
// exactly one key and one ciphertext.
const keySerials = new WeakMap<Uint8Array, number>()
let nextKeySerial = 1

function keySerial(key: Uint8Array): number {
  let n = keySerials.get(key)
  if (n === undefined) {
    n = nextKeySerial++
    keySerials.set(key, n)
  }
  return n
}

/**
 * Open a presented ticket, through a cache of opened tickets: a client presents the same
 * TGT for every request, and a cached part keeps the same session-key object, whose usage
 * subkeys are then derived once. The cache key is the serial of the exact key object the
 * ticket is opened with (so of one principal, one kvno, one key) and the sealed bytes; the
 * serial is digits ending in ':', so no choice of sealed bytes can make two ids collide.
 */
function openTicket(ctx: KdcContext, req: TgsReq, key: Uint8Array): EncTicketPartT {
  const enc = req.ticket.enc
  const id = `${keySerial(key)}:${Buffer.from(enc.buffer, enc.byteOffset, enc.length).toString('latin1')}`
  let part = ctx.tickets.get(id)
  if (!part) {
    const opened = openPart(key, KeyUsage.KDC_REP_TICKET, EncTicketPart, enc)
    // Own copy of the session key: the opened plaintext is a view into a shared buffer.
    part = Object.freeze({ ...opened, key: new Uint8Array(opened.key) })
    ctx.tickets.set(id, part)
  }
  return part
}

/** Open the presented ticket and its authenticator, look up the principals. */
async function gatherTgsReq(ctx: KdcContext, req: TgsReq): Promise<TgsGathered> {
  const realm = ctx.realm.realm
  const now = ctx.now()
  if (req.ticket.realm !== realm) refuse(ErrorCode.KDC_ERR_WRONG_REALM, 'WRONG_REALM', `this KDC serves realm ${realm}`)
  const ownerId = { realm, components: req.ticket.sname }
  // Hot path: cached principals are read synchronously (no promise per lookup).
  const owner = ctx.db.peek(ownerId) ?? (await ctx.db.get(ownerId))
  if (!owner) refuse(ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN, 'S_PRINCIPAL_UNKNOWN', 'the ticket names an unknown service')
  const key = keyByKvno(owner, req.ticket.kvno, now)
  if (!key)
    refuse(ErrorCode.KRB_AP_ERR_BADKEYVER, 'BADKEYVER', `the ticket is sealed with key version ${req.ticket.kvno}, which is retired or unknown; log in again`)
  const ticket = openTicket(ctx, req, key.key)
  const auth = openPart(ticket.key, KeyUsage.TGS_REQ_AUTH, TgsAuthenticator, req.auth)
  const renew = (auth.options & KdcOption.RENEW) !== 0
  const serviceComponents = renew ? req.ticket.sname : auth.sname
  const clientId = { realm, components: ticket.cname }
  const serviceId = { realm, components: serviceComponents }
  const client = ctx.db.peek(clientId) ?? (await ctx.db.get(clientId))
  const service = sameName(serviceComponents, req.ticket.sname) ? owner : (ctx.db.peek(serviceId) ?? (await ctx.db.get(serviceId)))
  return {
    req,
    ticket,
    auth,
    renew,
    client,
    service,
    clientName: principalString(ticket.cname, ticket.crealm),
    serviceName: principalString(serviceComponents, realm),
  }
}

let lastReplayWarning = 0

/** Tell the operator, at most once a minute, when the replay cache nears its bound. */
function warnIfReplayCacheFull(ctx: KdcContext, now: number): void {
  if (ctx.replay.entries < ctx.replay.capacity * 0.8 || now - lastReplayWarning < 60_000) return
  lastReplayWarning = now
  ctx.log.ops.warn('TGS replay cache above 80% of replayCacheMaxEntries; raise it to at least peak TGS rate x 2 x maxClockSkew', {
    entries: ctx.replay.entries,
    capacity: ctx.replay.capacity,
  })
}

/** Every check of RFC 4120 §3.3.3 / §3.2.3 that applies, plus replay and principal status. */
function checkTgsReq(ctx: KdcContext, g: TgsGathered, authId: string): void {
  const now = ctx.now()
  const skew = ctx.config.maxClockSkewMs
  const { ticket, auth, req } = g
  if (auth.crealm !== ticket.crealm || !sameName(auth.cname, ticket.cname))
    refuse(ErrorCode.KRB_AP_ERR_BADMATCH, 'BADMATCH', 'authenticator client does not match the ticket')
  // RFC 4120 §3.2.3: KRB_AP_ERR_SKEW if |now - ctime| > skew
  if (Math.abs(now - auth.ctime) > skew) refuse(ErrorCode.KRB_AP_ERR_SKEW, 'SKEW', 'clock skew too great')
  if (ticket.starttime > now + skew) refuse(ErrorCode.KRB_AP_ERR_TKT_NYV, 'TKT_NYV', 'ticket not yet valid')
  if (ticket.endtime <= now) refuse(ErrorCode.KRB_AP_ERR_TKT_EXPIRED, 'TKT_EXPIRED', 'ticket expired; log in again')
  if (g.renew) {
    if (!(ticket.flags & TicketFlag.RENEWABLE) || ticket.renewTill === undefined)
      refuse(ErrorCode.KDC_ERR_BADOPTION, 'BADOPTION', 'ticket is not renewable')
    if (ticket.renewTill <= now) refuse(ErrorCode.KRB_AP_ERR_TKT_EXPIRED, 'TKT_EXPIRED', 'ticket is past its renew-till time')
  } else if (!sameName(req.ticket.sname, tgsName(ctx.realm.realm))) {
    refuse(ErrorCode.KDC_ERR_POLICY, 'NOT_TGT', 'the ticket presented is not a ticket-granting ticket')
  }
  const verdict = ctx.replay.check(authId, auth.ctime, g.clientName)
  warnIfReplayCacheFull(ctx, now)
  if (verdict === 'replay') refuse(ErrorCode.KRB_AP_ERR_REPEAT, 'REPEAT', 'request is a replay')
  if (verdict === 'cold')
    refuse(ErrorCode.KRB_AP_ERR_SKEW, 'REPLAY_COLD', 'authenticator predates the KDC start; retry with a fresh one')
  if (verdict === 'full') refuse(ErrorCode.KDC_ERR_SVC_UNAVAILABLE, 'REPLAY_FULL', 'KDC busy; retry later')
  const { client, service } = g
  if (!client) refuse(ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CLIENT_DELETED', 'client principal no longer exists')
  if (client.attributes.disabled) refuse(ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CLIENT_DISABLED', 'account disabled')
  if (client.lockedUntil !== undefined && client.lockedUntil > now)
    refuse(ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CLIENT_LOCKED', 'account locked')
  if (client.expiresAt !== undefined && client.expiresAt <= now) refuse(ErrorCode.KDC_ERR_NAME_EXP, 'CLIENT_EXPIRED', 'account expired')
  if (!service) refuse(ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN, 'S_PRINCIPAL_UNKNOWN', `unknown service ${g.serviceName}`)
  if (service.attributes.disabled || service.attributes.allowService === false)
    refuse(ErrorCode.KDC_ERR_POLICY, 'SERVICE_NOT_ALLOWED', `${g.serviceName} does not accept tickets`)
  if (service.expiresAt !== undefined && service.expiresAt <= now)
    refuse(ErrorCode.KDC_ERR_SERVICE_EXP, 'SERVICE_EXPIRED', `${g.serviceName} has expired`)
}

/** Issue the new ticket, sealed with the service's current key; the reply sealed with the presented ticket's session key. */
function issueTgsRep(ctx: KdcContext, g: TgsGathered): TgsRep {
  const { ticket, auth } = g
  const client = g.client!
  const service = g.service!
  const now = ctx.now()
  let flags = ticket.flags & TicketFlag.PRE_AUTHENT
  let times: { endtime: number; renewTill: number | undefined }
  if (g.renew) {
    // Renewal keeps the original life length, capped by renew-till (RFC 4120 §3.3.3.1).
    const life = ticket.endtime - ticket.starttime
    times = { endtime: Math.min(now + life, ticket.renewTill!), renewTill: ticket.renewTill }
    flags = ticket.flags & ~TicketFlag.INITIAL
  } else {
    times = computeTimes(ctx, {
      now,
      till: auth.till,
      rtill: auth.rtill,
      options: auth.options,
      principals: [client, service],
      capEnd: ticket.endtime,
      capRenewTill: ticket.renewTill ?? 0,
      renewableAllowed: (ticket.flags & TicketFlag.RENEWABLE) !== 0,
    })
    if (
      auth.options & KdcOption.FORWARDABLE &&
      ticket.flags & TicketFlag.FORWARDABLE &&
      client.attributes.allowForwardable !== false &&
      service.attributes.allowForwardable !== false
    )
      flags |= TicketFlag.FORWARDABLE
    if (times.renewTill !== undefined) flags |= TicketFlag.RENEWABLE
  }
  const sname = g.renew ? g.req.ticket.sname : auth.sname
  const serviceKey = currentKey(service)
  const sessionKey = randomKey()
  const encTicket = sealPart(serviceKey.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, {
    flags,
    key: sessionKey,
    crealm: ticket.crealm,
    cname: ticket.cname,
    authtime: ticket.authtime,
    starttime: now,
    endtime: times.endtime,
    renewTill: times.renewTill,
  })
  const enc = sealPart(ticket.key, KeyUsage.TGS_REP_ENCPART_SESSKEY, EncKdcRepPart, {
    key: sessionKey,
    nonce: auth.nonce,
    flags,
    authtime: ticket.authtime,
    starttime: now,
    endtime: times.endtime,
    renewTill: times.renewTill,
    srealm: ctx.realm.realm,
    sname,
  })
  sessionKey.fill(0)
  return {
    v: PROTOCOL_VERSION,
    t: MsgType.TGS_REP,
    crealm: ticket.crealm,
    cname: ticket.cname,
    ticket: { realm: ctx.realm.realm, sname, kvno: serviceKey.kvno, enc: encTicket },
    enc,
  }
}

/** Handle one TGS_REQ. Throws KrbProtocolError for every refusal, after logging it. */
export async function processTgsReq(ctx: KdcContext, req: TgsReq, conn: ConnectionContext): Promise<TgsRep> {
  let g: TgsGathered | undefined
  try {
    g = await gatherTgsReq(ctx, req)
    // The replay id is a hash of the sealed authenticator: only the session-key holder can make another.
    const authId = Buffer.from(sha256(req.auth).subarray(0, 16)).toString('latin1')
    checkTgsReq(ctx, g, authId)
    const rep = issueTgsRep(ctx, g)
    ctx.log.security.log({
      event: g.renew ? 'tgs-renew' : 'tgs',
      client: g.clientName,
      service: g.serviceName,
      peer: conn.peer,
      outcome: 'ok',
    })
    return rep
  } catch (err) {
    if (err instanceof KrbProtocolError) {
      const ev = err.code === ErrorCode.KRB_AP_ERR_REPEAT ? 'replay' : err.code === ErrorCode.KRB_AP_ERR_SKEW ? 'skew' : 'tgs'
      ctx.log.security.log({
        event: ev,
        client: g?.clientName,
        service: g?.serviceName ?? principalString(req.ticket.sname, req.ticket.realm),
        peer: conn.peer,
        outcome: 'fail',
        reason: err.status,
      })
    }
    throw err
  }
}
