/**
 * KDC identity-key rotation (issue 12; PROTOCOL.md §3.7): `rotate-identity` stages next
 * X25519 transport and/or Ed25519 signing key pairs (published in realm.json at once, the
 * KDC's default from their activation time), `activate-identity` makes them current and keeps
 * the old ones as previous keys, still answered to, and `retire-identity` forgets those.
 * Each step is one write of the realm record carrying its audit anchor; the running KDC
 * re-reads the record (PrincipalDb.onRealmChange) and its listeners use the new keys at the
 * next handshake. Only the public halves ever leave the KDC.
 */
import { ed25519KeyPair, x25519KeyPair } from '../crypto/index.js'
import type { RealmRecord } from '../db/types.js'
import { NotAuthorizedError, TesseraError, TesseraErrorCode } from '../errors.js'
import type { AuditEvent } from './audit.js'
import { type Actor, type AdminContext, actorName, onlyFields, validation } from './operations.js'

/** Which identity keys a rotation replaces. */
export type IdentityKind = 'transport' | 'signing' | 'both'

/** Arguments of {@link rotateIdentity}. */
export interface RotateIdentityArgs {
  /** @default "both" */
  which?: IdentityKind
  /** The next keys become the KDC's default this long after now, ms; clients fetch realm.json meanwhile. @default 0 */
  stageAhead?: number
}

/** Arguments of {@link activateIdentity}. */
export interface ActivateIdentityArgs {
  /** Activate before the staged activation time (the KDC switches its default at once). */
  force?: boolean
}

/** The identity keys after a step: public halves (hex), as realm.json shows them. */
export interface IdentityView {
  transportKey: string
  signingKey: string
  nextTransportKey?: string
  nextSigningKey?: string
  /** When the next keys become the default, ms since epoch. */
  nextActivatesAt?: number
  /** Old keys still answered to (a client holding the realm.json from before) until retire-identity. */
  previousTransportKey?: string
  previousSigningKey?: string
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

/** The public view of a realm record's identity keys. */
export function identityView(r: RealmRecord): IdentityView {
  const v: IdentityView = { transportKey: hex(r.transportKey.publicKey), signingKey: hex(r.signingKey.publicKey) }
  if (r.nextTransportKey) v.nextTransportKey = hex(r.nextTransportKey.publicKey)
  if (r.nextSigningKey) v.nextSigningKey = hex(r.nextSigningKey.publicKey)
  if (r.nextActivatesAt !== undefined) v.nextActivatesAt = r.nextActivatesAt
  if (r.previousTransportKey) v.previousTransportKey = hex(r.previousTransportKey.publicKey)
  if (r.previousSigningKey) v.previousSigningKey = hex(r.previousSigningKey.publicKey)
  return v
}

function inUse(message: string): TesseraError {
  // "still used": mapped to ADM_ERR_IN_USE by the admin listener.
  return new TesseraError(TesseraErrorCode.TESSERA_EXISTS, message)
}

/**
 * The realm's identity is the realm itself: only a full administrator (every letter on every
 * principal, the last-admin rule's definition) or kadmin --local may rotate it.
 */
function authorizeIdentity(ctx: AdminContext, actor: Actor, op: string): void {
  if (actor.kind === 'local') return
  if (actor.via !== 'admin' || !ctx.acl.isFullAdmin(actor.principal))
    throw new NotAuthorizedError(['*'], `${actorName(actor)} may not ${op}: changing the KDC identity keys needs every permission on every principal`)
}

async function runIdentity<T>(ctx: AdminContext, actor: Actor, op: string, fn: (base: AuditEvent) => Promise<T>): Promise<T> {
  const base: AuditEvent = { actor: actorName(actor), op, target: `kdc-identity@${ctx.realm}`, outcome: 'ok' }
  if (actor.kind === 'principal' && actor.peer !== undefined) base.peer = actor.peer
  try {
    return await fn(base)
  } catch (err) {
    const ev: AuditEvent = { ...base, outcome: err instanceof NotAuthorizedError ? 'denied' : 'error' }
    if (err instanceof TesseraError) {
      ev.code = err.code
      ev.reason = err.message
    } else ev.reason = 'internal error'
    if (!(err instanceof TesseraError && err.code === TesseraErrorCode.TESSERA_AUDIT)) await ctx.audit.record(ev)
    throw err
  }
}

/** rotate-identity: stage next identity key pairs, published now, the KDC's default from now + stageAhead. */
export async function rotateIdentity(ctx: AdminContext, actor: Actor, args: RotateIdentityArgs = {}): Promise<IdentityView> {
  return runIdentity(ctx, actor, 'rotate-identity', async (base) => {
    onlyFields(args, ['which', 'stageAhead'])
    authorizeIdentity(ctx, actor, 'rotate-identity')
    const which = args.which ?? 'both'
    if (which !== 'transport' && which !== 'signing' && which !== 'both') throw validation('which must be transport, signing or both')
    const stageAhead = args.stageAhead ?? 0
    if (!Number.isSafeInteger(stageAhead) || stageAhead < 0) throw validation('stageAhead must be a non-negative number of milliseconds')
    const now = ctx.now()
    const r = await ctx.db.updateRealm(
      (cur) => {
        if (cur.nextTransportKey || cur.nextSigningKey)
          throw inUse(`the identity keys are still used by a staged rotation (activation ${new Date(cur.nextActivatesAt ?? now).toISOString()}): activate-identity first`)
        if (cur.previousTransportKey || cur.previousSigningKey)
          throw inUse('the keys of the last identity rotation are still used as previous keys: retire-identity first')
        const next: RealmRecord = { ...cur, nextActivatesAt: now + stageAhead }
        if (which !== 'signing') next.nextTransportKey = x25519KeyPair()
        if (which !== 'transport') next.nextSigningKey = ed25519KeyPair()
        return next
      },
      ctx.commit({ ...base, details: { which, stageAhead, activatesAt: now + stageAhead } }, () => [
        { type: 'identity-staged', principal: tgs(ctx), which, activatesAt: now + stageAhead, time: now, actor: actorName(actor) },
      ]),
    )
    return identityView(r)
  })
}

/** The principal identity-key events name (watchers with `i` on it see them). */
function tgs(ctx: AdminContext): string {
  return `krbtgt/${ctx.realm}@${ctx.realm}`
}

/** activate-identity: the staged keys become current; the old ones stay answered to as previous keys. */
export async function activateIdentity(ctx: AdminContext, actor: Actor, args: ActivateIdentityArgs = {}): Promise<IdentityView> {
  return runIdentity(ctx, actor, 'activate-identity', async (base) => {
    onlyFields(args, ['force'])
    authorizeIdentity(ctx, actor, 'activate-identity')
    if (args.force !== undefined && typeof args.force !== 'boolean') throw validation('force must be true or false')
    const now = ctx.now()
    const r = await ctx.db.updateRealm(
      (cur) => {
        if (!cur.nextTransportKey && !cur.nextSigningKey) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, 'no identity rotation is staged')
        if (cur.nextActivatesAt !== undefined && now < cur.nextActivatesAt && args.force !== true)
          throw inUse(`the current identity keys are still used until the staged ones activate at ${new Date(cur.nextActivatesAt).toISOString()}: wait, or activate with force`)
        const { nextTransportKey, nextSigningKey, nextActivatesAt: _t, ...rest } = cur
        const next: RealmRecord = { ...rest }
        if (nextTransportKey) {
          next.previousTransportKey = cur.transportKey
          next.transportKey = nextTransportKey
        }
        if (nextSigningKey) {
          next.previousSigningKey = cur.signingKey
          next.signingKey = nextSigningKey
        }
        return next
      },
      ctx.commit({ ...base, details: { force: args.force === true } }, () => [
        { type: 'identity-activated', principal: tgs(ctx), time: now, actor: actorName(actor) },
      ]),
    )
    return identityView(r)
  })
}

/** retire-identity: forget the previous identity keys; realm files from before the rotation stop working. */
export async function retireIdentity(ctx: AdminContext, actor: Actor, args: Record<string, never> = {}): Promise<IdentityView> {
  return runIdentity(ctx, actor, 'retire-identity', async (base) => {
    onlyFields(args, [])
    authorizeIdentity(ctx, actor, 'retire-identity')
    const r = await ctx.db.updateRealm(
      (c) => {
        if (!c.previousTransportKey && !c.previousSigningKey) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, 'no previous identity keys to retire')
        const { previousTransportKey: _p, previousSigningKey: _q, ...rest } = c
        return { ...rest }
      },
      ctx.commit(base, () => [{ type: 'identity-retired', principal: tgs(ctx), time: ctx.now(), actor: actorName(actor) }]),
    )
    return identityView(r)
  })
}

/** Read the identity keys (public halves) without changing anything: needs the same permission. */
export async function getIdentity(ctx: AdminContext, actor: Actor): Promise<IdentityView> {
  authorizeIdentity(ctx, actor, 'read the identity rotation state')
  const r = await ctx.db.getRealm()
  if (r === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, 'this database holds no realm')
  return identityView(r)
}
