/**
 * A service's own keys and the event stream (issue 12): `fetchkeys` (a service authenticated
 * as itself fetches its current, next and still-valid versions, without any admin) and
 * `watch` (a long poll on the realm's event log, each event filtered by what the watcher may
 * inquire about).
 */

import type { LoggedEvent } from '../db/event-log.js'
import { activationOf, type KeyState, keyStateAt, sealingKeyAt } from '../db/key-states.js'
import { formatName, formatPrincipal, parsePrincipal, samePrincipal } from '../db/names.js'
import { globMatch } from '../db/principal-db.js'
import { NotAuthorizedError, TesseraError, TesseraErrorCode } from '../errors.js'
import type { KeytabEntry } from '../krb/keytab.js'
import {
  type Actor,
  type AdminContext,
  actorName,
  authorize,
  checkSessionKey,
  entryOf,
  getOrFail,
  isProtectedPrincipal,
  type KeyEvent,
  nameOf,
  onlyFields,
  protectedError,
  runAdmin,
  validation,
} from './operations.js'

/** Longest a watch may wait for an event, ms. */
export const MAX_WATCH_WAIT_MS = 30_000
/** Most events one watch reply holds. @default */
export const MAX_WATCH_EVENTS = 500
/** Events of one reply stop once their JSON reaches this many bytes (a reply is at most 59960 bytes). */
const WATCH_REPLY_BUDGET = 40_000

/** Arguments of {@link fetchKeys}. */
export interface FetchKeysArgs {
  /** The principal asking (a service fetches its own keys only). */
  name: string
}

/** One version `fetchkeys` returns, without key bytes (those are in `keys`, same order). */
export interface FetchedVersion {
  kvno: number
  state: KeyState
  activatesAt: number
  retiresAt?: number
}

/** What `fetchkeys` answers. */
export interface FetchKeysResult {
  name: string
  /** The version the KDC seals with now. */
  kvno: number
  /** The next (staged), current and previous (not retired) versions, oldest first. */
  keys: KeytabEntry[]
  versions: FetchedVersion[]
}

/**
 * fetchkeys: a service's own current key, its next (staged) one and the older versions not
 * yet retired, for its keytab. Self only (an administrator uses ktadd), by the self-service
 * rule, unless the first ACL line matching the principal denies `E`; refused for a disabled
 * or expired principal (the admin listener already refuses a deleted one), for password
 * principals (a user derives its key from its password) and for krbtgt/kadmin.
 */
export async function fetchKeys(ctx: AdminContext, actor: Actor, args: FetchKeysArgs): Promise<FetchKeysResult> {
  return runAdmin(ctx, actor, 'fetchkeys', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name'])
    const id = nameOf(ctx, args.name)
    if (actor.kind === 'principal' && !samePrincipal(actor.principal, id))
      throw new NotAuthorizedError(['e'], `fetchkeys serves a principal's own keys only (${formatPrincipal(actor.principal)} asked for ${formatPrincipal(id)}); an administrator uses ktadd`)
    authorize(ctx, actor, 'fetchkeys', id)
    if (isProtectedPrincipal(ctx, id)) throw protectedError(`the keys of ${formatPrincipal(id)} cannot be fetched`)
    const rec = await getOrFail(ctx, id)
    const now = ctx.now()
    if (rec.attributes.disabled === true || (rec.expiresAt !== undefined && rec.expiresAt <= now))
      throw new NotAuthorizedError([], `${formatPrincipal(id)} is disabled or expired: it cannot fetch its keys`)
    checkSessionKey(actor, rec, now)
    const current = sealingKeyAt(rec.keys, now) ?? rec.keys[rec.keys.length - 1]!
    if (current.kdf !== undefined)
      throw validation(`${formatPrincipal(id)} has a password key: fetchkeys serves services (random keys); a user's key comes from its password`)
    const versions: FetchedVersion[] = []
    const keys: KeytabEntry[] = []
    rec.keys.forEach((k, i) => {
      if (k.retiresAt !== undefined && k.retiresAt <= now) return
      const v: FetchedVersion = { kvno: k.kvno, state: keyStateAt(rec.keys, i, now), activatesAt: activationOf(k) }
      if (k.retiresAt !== undefined) v.retiresAt = k.retiresAt
      versions.push(v)
      keys.push(entryOf(id, k))
    })
    const kvnos = versions.map((v) => v.kvno)
    await ctx.audit.record({ ...base, kvno: current.kvno, kvnos, details: { self: true } })
    await ctx.publish([{ type: 'extracted', principal: formatPrincipal(id), kvno: current.kvno, kvnos, time: now, actor: actorName(actor) }])
    return { name: formatPrincipal(id), kvno: current.kvno, keys, versions }
  })
}

/** Arguments of {@link watchEvents}. */
export interface WatchArgs {
  /** Events after this sequence number. @default the newest (only events from now on) */
  after?: number
  /** Only events on principals matching this glob (with `@`: against `name@REALM`). */
  glob?: string
  /** Wait at most this long for an event, ms (≤ 30000). @default 0: answer at once */
  waitMs?: number
  /** At most this many events. @default 500 */
  limit?: number
}

/** What `watch` answers. */
export interface WatchResult {
  /** The events visible to the watcher, oldest first. */
  events: LoggedEvent<KeyEvent>[]
  /** Ask next with `after: last`: every event up to it was looked at (those not shown are not the watcher's). */
  last: number
  /** The oldest sequence number the KDC still keeps. */
  first: number
  /** True when events after `after` are gone (past the retention): some were missed. */
  gap?: true
}

/**
 * watch: a long poll on the realm's event log. Answers as soon as there is a visible event
 * after `after`, or when `waitMs` passed (then with no events). A principal sees the events
 * on itself always, and through a kadmin/admin ticket those on principals it may inquire
 * about (`i`). A successful poll is not audited (the events it returns are audited where
 * they happened; a follower polls all day); a refused one is.
 */
export async function watchEvents(ctx: AdminContext, actor: Actor, args: WatchArgs = {}, signal?: AbortSignal): Promise<WatchResult> {
  return runAdmin(ctx, actor, 'watch', undefined, async () => {
    onlyFields(args, ['after', 'glob', 'waitMs', 'limit'])
    const uint = (what: string, v: unknown) => {
      if (v !== undefined && (!Number.isSafeInteger(v) || (v as number) < 0)) throw validation(`${what} must be a non-negative integer`)
    }
    uint('after', args.after)
    uint('waitMs', args.waitMs)
    uint('limit', args.limit)
    if ((args.waitMs ?? 0) > MAX_WATCH_WAIT_MS) throw validation(`waitMs must be at most ${MAX_WATCH_WAIT_MS}`)
    if (args.limit !== undefined && (args.limit < 1 || args.limit > MAX_WATCH_EVENTS)) throw validation(`limit must be in [1, ${MAX_WATCH_EVENTS}]`)
    if (args.glob !== undefined && (typeof args.glob !== 'string' || args.glob.length > 1024)) throw validation('glob must be a string')
    authorize(ctx, actor, 'watch')
    const log = ctx.events
    if (log === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, 'this KDC keeps no event log')
    const limit = args.limit ?? MAX_WATCH_EVENTS
    const visible = visibility(ctx, actor, args.glob)
    const after = args.after ?? log.last
    const deadline = performance.now() + (args.waitMs ?? 0)
    const gap = log.last > after && after + 1 < log.first
    let scanned = after
    const out: LoggedEvent<KeyEvent>[] = []
    let bytes = 0
    for (;;) {
      const batch = await log.read(scanned, 512)
      if (batch.length === 0 && scanned < log.last) scanned = Math.min(log.last, Math.max(scanned, log.first - 1) + 512)
      for (const e of batch) {
        if (visible(e)) {
          const size = JSON.stringify(e).length
          if (out.length > 0 && bytes + size > WATCH_REPLY_BUDGET) break
          out.push(e)
          bytes += size
        }
        scanned = e.seq
        if (out.length >= limit) break
      }
      if (out.length > 0 || (out.length >= limit)) break
      if (scanned < log.last) continue
      const left = deadline - performance.now()
      if (left <= 0 || !(await log.wait(scanned, left, signal))) break
    }
    const r: WatchResult = { events: out, last: scanned, first: log.first }
    if (gap) r.gap = true
    return r
  })
}

/** Whether `actor` may see an event (and it matches `glob`). Decisions are cached for the request. */
function visibility(ctx: AdminContext, actor: Actor, glob: string | undefined): (e: KeyEvent) => boolean {
  const seen = new Map<string, boolean>()
  const acl = ctx.acl
  const may = (name: string): boolean => {
    let v = seen.get(name)
    if (v !== undefined) return v
    let id: ReturnType<typeof parsePrincipal>
    try {
      id = parsePrincipal(name, ctx.realm)
    } catch {
      return false
    }
    if (glob !== undefined && !globMatch(glob, glob.includes('@') ? formatPrincipal(id) : formatName(id.components))) v = false
    else if (actor.kind === 'local' || samePrincipal(actor.principal, id)) v = true
    else v = actor.via === 'admin' && acl.check(actor.principal, 'i', id).allowed
    seen.set(name, v)
    return v
  }
  return (e) => may(e.principal) || (e.newName !== undefined && may(e.newName))
}
