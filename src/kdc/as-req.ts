/** AS exchange: gatherAsReq -> checkAsReq -> issueAsRep (RFC 4120 §3.1, MIT do_as_req.c). */
import { ErrorCode } from '../../proto/error-codes.js'
import { KdcOption, PaType, TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { type AsRep, type AsReq, EncKdcRepPart, EncTicketPart, PaEncTs } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { DEFAULT_KDF_PARAMS, defaultSalt, randomKey, tryOpen } from '../crypto/index.js'
import { formatName, isValidPrincipalId } from '../db/names.js'
import type { AttemptOutcome, PrincipalRecord } from '../db/types.js'
import { KrbProtocolError } from '../errors.js'
import { principalString, readPart, sealPart } from '../krb/parts.js'
import type { ConnectionContext } from '../wire/server.js'
import { acceptsTickets, currentKey, isNeverClient, type KdcContext, notATargetText } from './context.js'
import { computeTimes } from './policy.js'

interface AsGathered {
  req: AsReq
  client: PrincipalRecord | undefined
  service: PrincipalRecord | undefined
  clientName: string
  serviceName: string
}

const DUMMY_KEY = randomKey()

function fail(code: number, status: string, message: string): never {
  throw new KrbProtocolError(code, status, { message })
}

/**
 * Look up both principals: in this turn when the request carries pre-auth (a login) and the
 * database answers in the same turn (cached, or read synchronously); the PREAUTH_REQUIRED
 * round keeps one asynchronous path for every name.
 */
function gatherAsReq(ctx: KdcContext, req: AsReq): AsGathered | Promise<AsGathered> {
  const realm = ctx.realm.realm
  const clientName = principalString(req.cname, req.realm)
  const serviceName = principalString(req.sname, realm)
  if (req.realm !== realm) fail(ErrorCode.KDC_ERR_WRONG_REALM, 'WRONG_REALM', `this KDC serves realm ${realm}`)
  // A client name no principal can have is an unknown principal, looked up nowhere.
  if (!isValidPrincipalId({ realm, components: req.cname })) {
    if (req.padata.length === 0) fail(ErrorCode.KDC_ERR_C_PRINCIPAL_UNKNOWN, 'BAD_NAME', 'not a valid principal name')
    return { req, client: undefined, service: undefined, clientName, serviceName }
  }
  if (isNeverClient(req.cname))
    fail(ErrorCode.KDC_ERR_POLICY, 'NOT_A_CLIENT', `${formatName(req.cname)} is a service of the KDC and cannot log in`)
  if (!isValidPrincipalId({ realm, components: req.sname }))
    fail(ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN, 'BAD_NAME', 'not a valid service name')
  const cid = { realm, components: req.cname }
  const sid = { realm, components: req.sname }
  const login = req.padata.length > 0
  const client = login ? ctx.db.getNow(cid) : ctx.db.get(cid)
  const service = login ? ctx.db.getNow(sid) : ctx.db.get(sid)
  if (client instanceof Promise || service instanceof Promise)
    return Promise.all([client, service]).then(([c, s]) => ({ req, client: c, service: s, clientName, serviceName }))
  return { req, client, service, clientName, serviceName }
}

/**
 * The pre-auth hint for a principal, identical in shape for unknown principals. No kvno:
 * it would tell a principal whose password changed from one that does not exist.
 */
async function preauthHint(ctx: KdcContext, req: AsReq, client: PrincipalRecord | undefined) {
  const configKdf = ctx.config.kdf ?? DEFAULT_KDF_PARAMS
  const key = client ? currentKey(client, ctx.now()) : undefined
  return {
    salt: key?.salt ?? defaultSalt(req.realm, req.cname.join('/')),
    // Unknown names: one of the parameter sets in use, chosen per name (PrincipalDb.kdfHint).
    kdf: key ? (key.kdf ?? { ...configKdf }) : await ctx.db.kdfHint({ realm: req.realm, components: req.cname }, configKdf),
  }
}

/**
 * Verify pre-authentication. Deny by default: only one PA-ENC-TIMESTAMP that opens
 * under the client's current key and is within the skew marks the request
 * pre-authenticated. Returns true when pre-authenticated, false when the request
 * carried no pre-auth and the principal does not require it.
 *
 * The password is tried inside the database's lockout decision (PrincipalDb.attemptPreauth):
 * however many guesses arrive at once, at most the policy's maxFailures are ever tried, and
 * none once the principal is locked. Unknown principal and wrong password look the same: the
 * same work (a key opening, the same group-committed synced write), the same answer, no
 * sooner than preauthFailureFloorMs after the request arrived.
 */
function checkPreauth(ctx: KdcContext, g: AsGathered, conn: ConnectionContext, arrived: number): boolean | Promise<boolean> {
  const { req, client } = g
  const requires = client ? client.attributes.requiresPreauth !== false : true
  if (req.padata.length === 0) {
    if (!requires) return false
    return preauthHint(ctx, req, client).then((hint) => {
      const err = new KrbProtocolError(ErrorCode.KDC_ERR_PREAUTH_REQUIRED, 'PREAUTH_REQUIRED', {
        message: 'pre-authentication required',
      })
      err.edata = hint
      throw err
    })
  }
  const types = req.padata.map((p) => p.type)
  const wellFormed =
    types.length === 1 && types[0] === PaType.PA_ENC_TIMESTAMP && req.padata[0]!.value.length > 0
  const value = req.padata[0]?.value ?? new Uint8Array(0)
  if (!client) {
    tryOpen(DUMMY_KEY, KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, value)
    return ctx.db.decoyFailure().then(() => refusePreauth(ctx, g, conn, arrived, 'unknown client principal'))
  }
  let ts: { ts: number; us: number } | undefined
  const policy = client.policy ? ctx.db.peekPolicy(client.policy) : undefined
  const out = ctx.db.attemptPreauthNow({ realm: client.realm, components: client.components }, ctx.now(), policy, (rec) => {
    const key = currentKey(rec, ctx.now()).key
    const plain = tryOpen(key, KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, value)
    if (!wellFormed) return { ok: false, reason: 'pre-auth data missing, duplicated or of an unsupported type' }
    if (plain === null) return { ok: false, reason: 'wrong key (bad password)' }
    try {
      ts = readPart(PaEncTs, plain)
    } catch {
      return { ok: false, reason: 'malformed encrypted timestamp' }
    }
    return { ok: true }
  }, client)
  const decided = (o: AttemptOutcome): boolean | Promise<boolean> => {
    if (o.outcome === 'locked') refuseLocked(ctx, g, conn)
    if (o.outcome === 'failed') {
      if (o.lockedNow) {
        ctx.log.security.log({ event: 'lockout', client: g.clientName, peer: conn.peer, outcome: 'info', reason: 'too many failures' })
        ctx.events?.publish({ type: 'lockout', principal: g.clientName, time: ctx.now(), actor: 'kdc:as' })
      }
      return refusePreauth(ctx, g, conn, arrived, o.reason)
    }
    // RFC 4120 §5.2.7.2: the timestamp must be within the skew.
    if (Math.abs(ctx.now() - ts!.ts) > ctx.config.maxClockSkewMs) {
      ctx.log.security.log({ event: 'as', client: g.clientName, peer: conn.peer, outcome: 'fail', reason: 'clock skew' })
      fail(ErrorCode.KRB_AP_ERR_SKEW, 'SKEW', 'clock skew too great')
    }
    return true
  }
  return out instanceof Promise ? out.then(decided) : decided(out)
}

/**
 * A failed pre-authentication, answered no sooner than preauthFailureFloorMs after the
 * request arrived, whatever failed: unknown name, wrong password, malformed data.
 */
async function refusePreauth(ctx: KdcContext, g: AsGathered, conn: ConnectionContext, arrived: number, reason: string): Promise<never> {
  ctx.log.security.log({ event: 'as', client: g.clientName, service: g.serviceName, peer: conn.peer, outcome: 'fail', reason })
  const wait = ctx.config.preauthFailureFloorMs - (ctx.now() - arrived)
  if (wait > 0) await new Promise((r) => setTimeout(r, wait))
  fail(ErrorCode.KDC_ERR_PREAUTH_FAILED, 'PREAUTH_FAILED', 'pre-authentication failed: wrong password or unknown principal')
}

function refuseAs(ctx: KdcContext, g: AsGathered, conn: ConnectionContext, code: number, status: string, message: string, reason: string): never {
  ctx.log.security.log({ event: 'as', client: g.clientName, service: g.serviceName, peer: conn.peer, outcome: 'fail', reason })
  fail(code, status, message)
}

function refuseLocked(ctx: KdcContext, g: AsGathered, conn: ConnectionContext): never {
  refuseAs(ctx, g, conn, ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CLIENT_LOCKED', 'account locked after too many failed logins; try later or ask an administrator', 'locked out')
}

/** Client status that refuses a login whatever the password (checked before pre-auth). */
function checkClientStatus(ctx: KdcContext, g: AsGathered, conn: ConnectionContext): void {
  const { client } = g
  if (!client) return
  const now = ctx.now()
  // The in-memory counters decide: a lock decided moments ago is not in the cached record until written.
  const lockedUntil = ctx.db.lockedUntilNow(client)
  if (lockedUntil !== undefined && lockedUntil > now) refuseLocked(ctx, g, conn)
  if (client.attributes.disabled) refuseAs(ctx, g, conn, ErrorCode.KDC_ERR_CLIENT_REVOKED, 'CLIENT_DISABLED', 'account disabled', 'client disabled')
  if (client.expiresAt !== undefined && client.expiresAt <= now)
    refuseAs(ctx, g, conn, ErrorCode.KDC_ERR_NAME_EXP, 'CLIENT_EXPIRED', 'account expired', 'client expired')
}

/** Checks after pre-auth: password expiry and the service. */
function checkPrincipals(ctx: KdcContext, g: AsGathered, conn: ConnectionContext): void {
  const now = ctx.now()
  const { client, service } = g
  function refuse(code: number, status: string, message: string, reason: string): never {
    refuseAs(ctx, g, conn, code, status, message, reason)
  }
  if (!client) refuse(ErrorCode.KDC_ERR_PREAUTH_FAILED, 'PREAUTH_FAILED', 'pre-authentication failed: wrong password or unknown principal', 'unknown client principal')
  if (client.passwordExpiresAt !== undefined && client.passwordExpiresAt <= now && !isChangepw(g))
    refuse(ErrorCode.KDC_ERR_KEY_EXPIRED, 'KEY_EXPIRED', 'password expired; change it with kauth passwd', 'password expired')
  if (!service) refuse(ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN, 'S_PRINCIPAL_UNKNOWN', `unknown service ${g.serviceName}`, 'unknown service')
  if (!acceptsTickets(service!))
    refuse(ErrorCode.KDC_ERR_POLICY, 'SERVICE_NOT_ALLOWED', notATargetText(service!, g.serviceName), 'service does not accept tickets')
  if (service!.expiresAt !== undefined && service!.expiresAt <= now)
    refuse(ErrorCode.KDC_ERR_SERVICE_EXP, 'SERVICE_EXPIRED', `${g.serviceName} has expired`, 'service expired')
}

function isChangepw(g: AsGathered): boolean {
  return g.req.sname.length === 2 && g.req.sname[0] === 'kadmin' && g.req.sname[1] === 'changepw'
}

/** Issue the TGT (or initial service ticket) and the reply sealed with the client's key. */
function issueAsRep(ctx: KdcContext, g: AsGathered, preauthenticated: boolean): AsRep {
  const { req } = g
  const client = g.client!
  const service = g.service!
  const now = ctx.now()
  const times = computeTimes(ctx, {
    now,
    till: req.till,
    rtill: req.rtill,
    options: req.options,
    principals: [client, service],
  })
  let flags = TicketFlag.INITIAL
  if (preauthenticated) flags |= TicketFlag.PRE_AUTHENT
  if (req.options & KdcOption.FORWARDABLE && client.attributes.allowForwardable !== false && service.attributes.allowForwardable !== false)
    flags |= TicketFlag.FORWARDABLE
  if (times.renewTill !== undefined) flags |= TicketFlag.RENEWABLE
  const sessionKey = randomKey()
  const serviceKey = currentKey(service, now)
  const clientKey = currentKey(client, now)
  const encTicket = sealPart(serviceKey.key, KeyUsage.KDC_REP_TICKET, EncTicketPart, {
    flags,
    key: sessionKey,
    crealm: req.realm,
    cname: req.cname,
    authtime: now,
    starttime: now,
    endtime: times.endtime,
    renewTill: times.renewTill,
  })
  const enc = sealPart(clientKey.key, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, {
    key: sessionKey,
    nonce: req.nonce,
    flags,
    authtime: now,
    starttime: now,
    endtime: times.endtime,
    renewTill: times.renewTill,
    srealm: ctx.realm.realm,
    sname: req.sname,
    keyExpiration: client.passwordExpiresAt,
  })
  sessionKey.fill(0)
  const rep: AsRep = {
    v: PROTOCOL_VERSION,
    t: MsgType.AS_REP,
    crealm: req.realm,
    cname: req.cname,
    kvno: clientKey.kvno,
    ticket: { realm: ctx.realm.realm, sname: req.sname, kvno: serviceKey.kvno, enc: encTicket },
    enc,
  }
  // Like PA-ETYPE-INFO2: a client that sent no pre-auth still learns how to derive its key.
  if (clientKey.salt !== undefined) rep.salt = clientKey.salt
  if (clientKey.kdf !== undefined) rep.kdf = { ...clientKey.kdf }
  return rep
}

/**
 * Handle one AS_REQ. Throws KrbProtocolError for every refusal. The reply comes in the same
 * turn when both principals are cached and the login changes no lockout counter.
 */
export function processAsReq(ctx: KdcContext, req: AsReq, conn: ConnectionContext): AsRep | Promise<AsRep> {
  const arrived = ctx.now()
  const g = gatherAsReq(ctx, req)
  return g instanceof Promise ? g.then((gathered) => answerAsReq(ctx, gathered, conn, arrived)) : answerAsReq(ctx, g, conn, arrived)
}

function answerAsReq(ctx: KdcContext, g: AsGathered, conn: ConnectionContext, arrived: number): AsRep | Promise<AsRep> {
  // A locked, disabled or expired account is refused before its password is tried (as MIT
  // does): otherwise guessing would go on, uncounted, during a lockout, and the one answer
  // that differs would confirm the right password.
  checkClientStatus(ctx, g, conn)
  const pre = checkPreauth(ctx, g, conn, arrived)
  return pre instanceof Promise ? pre.then((p) => issueAfterPreauth(ctx, g, conn, p)) : issueAfterPreauth(ctx, g, conn, pre)
}

function issueAfterPreauth(ctx: KdcContext, g: AsGathered, conn: ConnectionContext, preauthenticated: boolean): AsRep {
  checkPrincipals(ctx, g, conn)
  const rep = issueAsRep(ctx, g, preauthenticated)
  ctx.log.security.log({
    event: 'as',
    client: g.clientName,
    service: g.serviceName,
    peer: conn.peer,
    outcome: 'ok',
    reason: preauthenticated ? 'pre-authenticated' : 'no pre-auth required',
  })
  return rep
}
