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
import { NONCE_BYTES, randomKey, sha256 } from '../crypto/index.js'
import { principalKey } from '../db/names.js'
import type { PrincipalId, PrincipalRecord } from '../db/types.js'
import { KrbProtocolError } from '../errors.js'
import { openPart, principalString, sameName, sealPart } from '../krb/parts.js'
import type { ConnectionContext } from '../wire/server.js'
import { acceptsTickets, currentKey, isInitialOnly, type KdcContext, keyByKvno, notATargetText, type OpenedTicket, tgsName } from './context.js'
import { addServiceToken, checkJwtRequest } from './jwt.js'
import { activeSigningPair } from './realm.js'
import { computeTimes } from './policy.js'

interface TgsGathered {
  req: TgsReq
  ticket: Readonly<EncTicketPartT>
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
 * subkeys are then derived once. An entry is found by the ticket's nonce (random per seal)
 * and used only when it was opened with the exact key object the ticket is opened with now
 * (so of one principal, one kvno, one key) and its sealed bytes are the presented ones: any
 * other ticket is opened afresh. Hashing 24 bytes instead of the whole ticket keeps the
 * lookup cheap.
 */
function openTicket(ctx: KdcContext, req: TgsReq, key: Uint8Array): OpenedTicket {
  const enc = req.ticket.enc
  const serial = keySerial(key)
  const id = Buffer.from(enc.buffer, enc.byteOffset, Math.min(NONCE_BYTES, enc.length)).toString('latin1')
  const hit = ctx.tickets.get(id)
  if (hit !== undefined && hit.serial === serial && Buffer.compare(hit.sealed, enc) === 0) return hit
  const opened = openPart(key, KeyUsage.KDC_REP_TICKET, EncTicketPart, enc)
  // Own copy of the session key: the opened plaintext is a view into a shared buffer.
  const part = Object.freeze({ ...opened, key: new Uint8Array(opened.key) })
  const entry: OpenedTicket = {
    serial,
    sealed: new Uint8Array(enc),
    part,
    // Kept with the part, so that each request does not build (and hash) them again.
    clientName: principalString(part.cname, part.crealm),
    clientKey: principalKey({ realm: ctx.realm.realm, components: part.cname }),
  }
  ctx.tickets.set(id, entry)
  return entry
}

// krbtgt/REALM and its database key, for the realm served (one per process in practice).
let tgsRealm = ''
let tgsComponents: readonly string[] = []
let tgsKey = ''

function tgsNameOf(realm: string): readonly string[] {
  if (realm !== tgsRealm) {
    tgsComponents = Object.freeze(tgsName(realm))
    tgsKey = principalKey({ realm, components: tgsName(realm) })
    tgsRealm = realm
  }
  return tgsComponents
}

/** The cached record of `components` in `realm`, or undefined when it is not in the cache. */
function peekName(ctx: KdcContext, realm: string, components: string[]): PrincipalRecord | undefined {
  // The ticket-granting service is looked up for nearly every request: its key is kept.
  if (sameName(components, tgsNameOf(realm))) return ctx.db.peekByKey(tgsKey)
  return ctx.db.peek({ realm, components })
}

/**
 * Open the presented ticket and its authenticator, look up the principals. Synchronous when
 * the database cache holds every principal named (the hot path: no promise per request).
 */
function gatherTgsReq(ctx: KdcContext, req: TgsReq): TgsGathered | Promise<TgsGathered> {
  const realm = ctx.realm.realm
  const now = ctx.now()
  if (req.ticket.realm !== realm) refuse(ErrorCode.KDC_ERR_WRONG_REALM, 'WRONG_REALM', `this KDC serves realm ${realm}`)
  const owner = peekName(ctx, realm, req.ticket.sname)
  if (owner !== undefined) return gatherWithOwner(ctx, req, now, owner)
  const loaded = ctx.db.getNow({ realm, components: req.ticket.sname })
  return loaded instanceof Promise ? loaded.then((o) => gatherWithOwner(ctx, req, now, o)) : gatherWithOwner(ctx, req, now, loaded)
}

function gatherWithOwner(ctx: KdcContext, req: TgsReq, now: number, owner: PrincipalRecord | undefined): TgsGathered | Promise<TgsGathered> {
  const realm = ctx.realm.realm
  if (!owner) refuse(ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN, 'S_PRINCIPAL_UNKNOWN', 'the ticket names an unknown service')
  const key = keyByKvno(owner, req.ticket.kvno, now)
  if (!key)
    refuse(ErrorCode.KRB_AP_ERR_BADKEYVER, 'BADKEYVER', `the ticket is sealed with key version ${req.ticket.kvno}, which is retired or unknown; log in again`)
  const opened = openTicket(ctx, req, key.key)
  const ticket = opened.part
  const auth = openPart(ticket.key, KeyUsage.TGS_REQ_AUTH, TgsAuthenticator, req.auth)
  const renew = (auth.options & KdcOption.RENEW) !== 0
  const serviceComponents = renew ? req.ticket.sname : auth.sname
  const serviceIsOwner = sameName(serviceComponents, req.ticket.sname)
  const g: TgsGathered = {
    req,
    ticket,
    auth,
    renew,
    client: ctx.db.peekByKey(opened.clientKey),
    service: serviceIsOwner ? owner : peekName(ctx, realm, serviceComponents),
    clientName: opened.clientName,
    serviceName: principalString(serviceComponents, realm),
  }
  if (g.client !== undefined && g.service !== undefined) return g
  return loadPrincipals(ctx, g, { realm, components: ticket.cname }, { realm, components: serviceComponents })
}

/**
 * The principals the cache did not hold, from the database (undefined: no such principal): in
 * this turn when the database reads synchronously, else once the reads are done.
 */
function loadPrincipals(ctx: KdcContext, g: TgsGathered, clientId: PrincipalId, serviceId: PrincipalId): TgsGathered | Promise<TgsGathered> {
  const client = g.client ?? ctx.db.getNow(clientId)
  const service = g.service ?? ctx.db.getNow(serviceId)
  if (client instanceof Promise || service instanceof Promise)
    return Promise.all([client, service]).then(([c, s]) => {
      g.client = c
      g.service = s
      return g
    })
  g.client = client
  g.service = service
  return g
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
  } else if (!sameName(req.ticket.sname, tgsNameOf(ctx.realm.realm))) {
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
  // The login behind the ticket (a TGT, or a ticket to renew) predates a revocation (an
  // emergency rotation, an administrator's key change: src/admin/key-lifecycle.ts
  // revokeSessions): its key may be known to a thief, so the sessions it opened end here.
  if (client.revokedAt !== undefined && ticket.authtime <= client.revokedAt)
    refuse(ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CREDENTIALS_REVOKED', 'credentials revoked: log in again')
  // A lockout stops password guessing; it does not end sessions already authenticated
  // (as MIT's KDC): otherwise anyone could log a user out by guessing wrong three times.
  if (client.expiresAt !== undefined && client.expiresAt <= now) refuse(ErrorCode.KDC_ERR_NAME_EXP, 'CLIENT_EXPIRED', 'account expired')
  if (!service) refuse(ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN, 'S_PRINCIPAL_UNKNOWN', `unknown service ${g.serviceName}`)
  if (!acceptsTickets(service)) refuse(ErrorCode.KDC_ERR_POLICY, 'SERVICE_NOT_ALLOWED', notATargetText(service, g.serviceName))
  if (isInitialOnly(service.components))
    refuse(ErrorCode.KDC_ERR_POLICY, 'INITIAL_ONLY', `tickets for ${g.serviceName} come only from a login with the password (AS), not from a TGT`)
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
    // Also capped by the service's and the realm's max life now: the renewed ticket is sealed
    // with the current key, whose recorded sealLifeMs bounds the life of every ticket it seals
    // (purgekeys relies on it, src/db/key-states.ts).
    const life = ticket.endtime - ticket.starttime
    const end = Math.min(now + life, ticket.renewTill!, now + service.maxLife, now + ctx.config.maxTicketLifeMs)
    times = { endtime: Math.max(end, now + 1), renewTill: ticket.renewTill }
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
  const serviceKey = currentKey(service, now)
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

/**
 * Handle one TGS_REQ. Throws KrbProtocolError for every refusal, after logging it. The reply
 * comes synchronously when every principal named is in the database cache.
 */
export function processTgsReq(ctx: KdcContext, req: TgsReq, conn: ConnectionContext): TgsRep | Promise<TgsRep> {
  let gathered: TgsGathered | Promise<TgsGathered>
  try {
    gathered = gatherTgsReq(ctx, req)
  } catch (err) {
    logRefusal(ctx, req, conn, undefined, err)
    throw err
  }
  if (gathered instanceof Promise)
    return gathered.then(
      (g) => answerTgsReq(ctx, req, conn, g),
      (err: unknown) => {
        logRefusal(ctx, req, conn, undefined, err)
        throw err
      },
    )
  return answerTgsReq(ctx, req, conn, gathered)
}

/** Check and issue, once the request is gathered. */
function answerTgsReq(ctx: KdcContext, req: TgsReq, conn: ConnectionContext, g: TgsGathered): TgsRep | Promise<TgsRep> {
  try {
    // The replay id is a hash of the sealed authenticator: only the session-key holder can make another.
    const digest = sha256(req.auth)
    const authId = Buffer.from(digest.buffer, digest.byteOffset, 16).toString('latin1')
    checkTgsReq(ctx, g, authId)
    if (g.auth.jwtKey !== undefined) {
      checkJwtRequest(g.service!, g.renew, g.serviceName)
      return answerWithToken(ctx, conn, g, issueTgsRep(ctx, g), g.auth.jwtKey)
    }
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
    logRefusal(ctx, req, conn, g, err)
    throw err
  }
}

/** The JWT bridge (PROTOCOL.md §15): the issued reply plus a token bound to the client's key (src/kdc/jwt.ts). */
async function answerWithToken(ctx: KdcContext, conn: ConnectionContext, g: TgsGathered, rep: TgsRep, jwtKey: Uint8Array): Promise<TgsRep> {
  const withToken = await addServiceToken(
    // JWTs are signed by the active signing key (the next one from its activation on).
    { config: ctx.config, realm: { realm: ctx.realm.realm, signingKey: activeSigningPair(ctx.realm, ctx.now()) }, now: ctx.now(), replyKey: g.ticket.key, jwtKey, clientName: g.clientName, service: g.service!, serviceName: g.serviceName },
    rep,
  )
  ctx.log.security.log({ event: 'tgs', client: g.clientName, service: g.serviceName, peer: conn.peer, outcome: 'ok', jwt: true })
  return withToken
}

/** One security-log line for a refused request (KrbProtocolError); anything else is logged by dispatch. */
function logRefusal(ctx: KdcContext, req: TgsReq, conn: ConnectionContext, g: TgsGathered | undefined, err: unknown): void {
  if (!(err instanceof KrbProtocolError)) return
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
