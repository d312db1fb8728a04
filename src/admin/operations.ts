/**
 * The admin operations (MIT kadm5 server stubs): one function per kadmin command, shared by the
 * admin listener and `kadmin --local`. Each reads like a short story: refuse first (ACL and
 * self-service rules, before any lookup, so a refusal says nothing about existence), then the
 * protection rules, then the policy checks, then one atomic write carrying the audit anchor,
 * then the result (only the keys just made). Every request, refused or failed too, leaves one
 * audit record.
 */
import { isNeverClient } from '../kdc/context.js'
import { DEFAULT_KDF_PARAMS, defaultSalt, type KdfParams, passwordToKey, randomKey } from '../crypto/index.js'
import { KeyedMutex } from '../db/mutex.js'
import { formatName, formatPrincipal, parsePrincipal, samePrincipal } from '../db/names.js'
import { activationOf, type KeyState, keyStateAt, sealingKeyAt } from '../db/key-states.js'
import { checkPolicy, checkPolicyName, DEFAULT_POLICY } from '../db/policy.js'
import type { EventLog, LoggedEvent } from '../db/event-log.js'
import type { PrincipalDb, WriteOptions } from '../db/principal-db.js'
import type { KeyVersion, Policy, PrincipalAttributes, PrincipalId, PrincipalRecord, RotationSchedule } from '../db/types.js'
import { NotAuthorizedError, TesseraError, TesseraErrorCode } from '../errors.js'
import type { KeytabEntry } from '../krb/keytab.js'
import {
  ACL_LETTERS,
  type Acl,
  type AclExplanation,
  type AclFile,
  type AclRestrictions,
  type AdminOpName,
  applyRestrictions,
  explain,
  type PrincipalChanges,
  selfService,
} from './acl.js'
import type { AuditEvent, AuditLog, AuditRecord, AuditVerification } from './audit.js'
import { readAuditLog, verifyAuditLog } from './audit.js'
import { addKeyVersion, raiseSealLife, revokeSessions } from './key-lifecycle.js'
import { checkMinLife, checkPasswordQuality, checkPasswordReuse, nextPasswordHistory, passwordExpiry } from './password-policy.js'

/** A principal changing its own keys keeps at most this many key versions, the new one included (MIT MAX_SELF_KEEPOLD). */
export const MAX_SELF_KEEPOLD = 5

/** Who asks. */
export type Actor =
  | {
      kind: 'principal'
      principal: PrincipalId
      /** The service the ticket was for: `kadmin/changepw` serves only a principal's own password. */
      via: 'admin' | 'changepw'
      /** The ticket came from an AS exchange (INITIAL flag); self key changes require it (MIT check_self_keychange). */
      initial: boolean
      /** Network peer, for the audit log. */
      peer?: string
      /** When the login behind the ticket happened, ms since epoch (see {@link checkSessionKey}). */
      authtime?: number
    }
  /** `kadmin --local`: the Unix user running it on the KDC host (no ACL applies, as MIT's kadmin.local). */
  | { kind: 'local'; user: string }

/** The types of {@link KeyEvent} (docs/operations.md has the table). */
export const KEY_EVENT_TYPES = [
  'created',
  'changed',
  'extracted',
  'deleted',
  'renamed',
  'unlocked',
  'rotated',
  'staged',
  'activated',
  'purged',
  'lockout',
  // The KDC identity keys (src/admin/identity.ts); `principal` is krbtgt/REALM, `which` says which keys.
  'identity-staged',
  'identity-activated',
  'identity-retired',
] as const

/**
 * A key event: written to the realm's event log (src/db/event-log.ts) in the batch of the
 * change it reports, then published (the watch stream, webhooks and `onEvent` hear it).
 * `extracted` also when a service fetched its own keys (actor: itself); `lockout`: the AS locked a principal out.
 */
export interface KeyEvent {
  type: (typeof KEY_EVENT_TYPES)[number]
  principal: string
  newName?: string
  /** The version made, activated or (rotated) now current. */
  kvno?: number
  /** purged: every version removed. */
  kvnos?: number[]
  /** staged: when the version becomes current. */
  activatesAt?: number
  /** rotated: the older versions were retired at once (emergency rotation). */
  emergency?: boolean
  /** identity-*: transport, signing or both. */
  which?: string
  time: number
  actor: string
}

/** Options of {@link AdminContext}. */
export interface AdminContextOptions {
  db: PrincipalDb
  /** The realm administered: every name must be in it. */
  realm: string
  /** The ACL: a reloading {@link AclFile} (the daemon) or a fixed {@link Acl}. */
  acl: AclFile | Acl
  audit: AuditLog
  /** KDF parameters of new password keys. @default DEFAULT_KDF_PARAMS */
  kdf?: KdfParams
  /** maxLife of a new principal when none is asked for, ms. */
  maxLife: number
  /** maxRenewableLife of a new principal when none is asked for, ms. */
  maxRenewableLife: number
  /** @default Date.now */
  now?: () => number
  /** Shortest rotation period a schedule may set, ms (tests lower it). @default MIN_ROTATE_EVERY_MS (1 h) */
  minRotateEveryMs?: number
  /** Called once per key event, after the change landed. Must not throw. */
  onEvent?: (e: KeyEvent) => void
  /** The realm's event log: each event is written in the batch of its change. Absent: events are only passed to onEvent. */
  events?: EventLog<KeyEvent>
  /**
   * The realm's cap on ticket life (KdcConfig.maxTicketLifeMs), ms: bounds the tickets sealed
   * by key versions written before versions recorded their own bound. @default 24 h
   */
  maxTicketLife?: number
}

/** What every admin operation runs against. */
export class AdminContext {
  readonly db: PrincipalDb
  readonly realm: string
  readonly audit: AuditLog
  readonly kdf: KdfParams
  readonly maxLife: number
  readonly maxRenewableLife: number
  readonly now: () => number
  readonly #acl: AclFile | Acl
  readonly #onEvent: ((e: KeyEvent) => void) | undefined
  /** The realm's event log, when the context has one. */
  readonly events: EventLog<KeyEvent> | undefined
  /** Serializes check-then-write sections per policy name (addpol against addpol). */
  readonly policyLocks = new KeyedMutex()
  /** Serializes every change that could remove a full administrator (the last-admin rule's check and its write). */
  readonly adminLock = new KeyedMutex()
  readonly maxTicketLife: number
  /** Shortest rotateEvery a schedule may set, ms. */
  readonly minRotateEveryMs: number
  /** Told after every write that may change a principal's keys or rotation schedule (the rotation scheduler listens). */
  keysChanged: ((id: PrincipalId) => void) | undefined

  constructor(o: AdminContextOptions) {
    this.db = o.db
    this.realm = o.realm
    this.audit = o.audit
    this.kdf = { ...(o.kdf ?? DEFAULT_KDF_PARAMS) }
    this.maxLife = o.maxLife
    this.maxRenewableLife = o.maxRenewableLife
    this.now = o.now ?? Date.now
    this.#acl = o.acl
    this.#onEvent = o.onEvent
    this.events = o.events
    // With a log, onEvent hears what landed in it (with its seq), in sequence order.
    if (o.events !== undefined && o.onEvent !== undefined) {
      const fn = o.onEvent
      o.events.subscribe((e: LoggedEvent<KeyEvent>) => fn(e))
    }
    this.maxTicketLife = o.maxTicketLife ?? 24 * 3600_000
    this.minRotateEveryMs = o.minRotateEveryMs ?? MIN_ROTATE_EVERY_MS
  }

  /** Tell the rotation scheduler that `id`'s keys or schedule may have changed. */
  noteKeys(id: PrincipalId): void {
    try {
      this.keysChanged?.(id)
    } catch {
      // The scheduler's failure is its own.
    }
  }

  /** The ACL in force now. */
  get acl(): Acl {
    const a = this.#acl
    return 'current' in a ? a.current() : a
  }

  /** The ACL file, when the context reads one. */
  get aclFile(): string | undefined {
    const a = this.#acl
    return 'current' in a ? a.file : undefined
  }

  /**
   * Write options for a change: the audit record `audit` and the key events `events()` (both
   * may be functions called once the change is decided) ride in the change's own batch, so
   * that after a crash the change, its audit anchor and its events agree.
   */
  commit(audit: AuditEvent | (() => AuditEvent), events?: () => KeyEvent[]): WriteOptions {
    const a = this.audit.commit(audit)
    if (events === undefined) return a
    if (this.events !== undefined) return this.events.commit(events, a)
    // No log: the events are passed on once the write landed.
    return {
      commit: (write) =>
        a.commit!(async (extra) => {
          const evs = events()
          await write(extra)
          for (const e of evs) this.emit(e)
        }),
    }
  }

  /**
   * Publish events that come with no change of their own (ktadd reading keys, a service
   * fetching its keys): one batch of their own in the log. Never fails the request: a
   * failure to write them is reported through `onError`.
   */
  async publish(events: KeyEvent[], onError?: (err: unknown) => void): Promise<void> {
    if (this.events === undefined) {
      for (const e of events) this.emit(e)
      return
    }
    try {
      await this.events.append(events)
    } catch (err) {
      onError?.(err)
    }
  }

  /** Pass one event to onEvent only (no log). */
  emit(e: KeyEvent): void {
    try {
      this.#onEvent?.(e)
    } catch {
      // A subscriber's failure is its own.
    }
  }
}

/** The actor as written in the audit log and in `createdBy`/`modifiedBy`. */
export function actorName(a: Actor): string {
  return a.kind === 'local' ? `local:${a.user}` : formatPrincipal(a.principal)
}

// ---- arguments and results ----

/** Arguments of {@link addPrincipal} (kadmin addprinc). */
export interface AddPrincipalArgs {
  name: string
  /** Exactly one of password and randkey. */
  password?: string
  randkey?: boolean
  policy?: string
  /** ms */
  maxLife?: number
  /** ms */
  maxRenewableLife?: number
  /** ms since epoch; null: never. */
  expiresAt?: number | null
  /** ms since epoch; null: never (else the policy's maxlife decides). */
  passwordExpiresAt?: number | null
  attributes?: Partial<PrincipalAttributes>
}

/** Arguments of {@link modifyPrincipal} (kadmin modprinc). Only what is given changes. */
export interface ModifyPrincipalArgs {
  name: string
  attributes?: Partial<PrincipalAttributes>
  /** A policy name, or null to clear it. */
  policy?: string | null
  maxLife?: number
  maxRenewableLife?: number
  expiresAt?: number | null
  passwordExpiresAt?: number | null
  /** Clear a lockout and the failure counters. */
  unlock?: boolean
  /** Rotate the key automatically this often, ms (random-key principals); null clears the schedule. Needs `c` too. */
  rotateEvery?: number | null
  /** With rotateEvery: stage the next key this long before it becomes current, ms. @default 0 (or the value already set) */
  stageAhead?: number
  /** With rotateEvery: retire the previous key this long after its successor became current, ms; null: once its tickets can all have expired. */
  grace?: number | null
}

/** Arguments of {@link changeKey} (kadmin cpw, kauth passwd). */
export interface ChangeKeyArgs {
  name: string
  /** Exactly one of password and randkey. */
  password?: string
  randkey?: boolean
  /** Keep the old key versions (self: at most {@link MAX_SELF_KEEPOLD} versions in all). */
  keepold?: boolean
}

/** What a key operation gives back: the new kvno and only the keys it just made (random keys; never old ones, MIT CVE-2014-5351). */
export interface KeyResult {
  name: string
  kvno: number
  keys: KeytabEntry[]
}

/** One key version as getprinc shows it: no key bytes. */
export interface KeyVersionView {
  kvno: number
  kind: 'password' | 'random'
  kdf?: KdfParams
  /** next (staged: published, not yet sealing), current (sealing), previous (still opens tickets), retired. */
  state: KeyState
  createdAt: number
  /** When it became (or becomes) current. */
  activatesAt: number
  /** No ticket sealed with it ends later (set once a successor exists). */
  sealedUntil?: number
  /** When it stops (or stopped) opening tickets. */
  retiresAt?: number
}

/** A principal as getprinc shows it (MIT kadm5_principal_ent without keys). */
export interface PrincipalView {
  name: string
  realm: string
  components: string[]
  /** The current key version (the one tickets are sealed with now). */
  kvno: number
  /** The automatic rotation schedule, ms, and when the next key is due to become current. */
  rotation?: { rotateEvery: number; stageAhead: number; grace?: number; nextRotationAt?: number }
  /** Every version, oldest first, with its times. */
  keys: KeyVersionView[]
  /** The attributes in force (absent stored values shown with the KDC's default). */
  attributes: Required<Omit<PrincipalAttributes, 'jwtAudience'>> & Pick<PrincipalAttributes, 'jwtAudience'>
  policy?: string
  expiresAt?: number
  passwordExpiresAt?: number
  lastPasswordChange?: number
  /** Sessions revoked: the TGS refuses the tickets of logins before this time (an emergency rotation, an administrator's key change). */
  revokedAt?: number
  maxLife: number
  maxRenewableLife: number
  createdAt: number
  createdBy: string
  modifiedAt: number
  modifiedBy: string
  lockout: { failureCount: number; lastFailure?: number; lockedUntil?: number; locked: boolean; lastSuccess?: number }
}

/** Fields of a policy an addpol/modpol may give (MIT's: minlength, minclasses, history, minlife, maxlife, maxfailure, failurecountinterval, lockoutduration). */
export interface PolicyArgs {
  name: string
  minLength?: number
  minClasses?: number
  history?: number
  minPasswordLifeMs?: number
  maxPasswordLifeMs?: number
  maxFailures?: number
  failureCountIntervalMs?: number
  lockoutDurationMs?: number
}

/** Arguments of {@link extractKeys} (kadmin ktadd). */
export interface ExtractArgs {
  name: string
  /** Change the key first (needs `c` too); then only the new key comes back. */
  randkey?: boolean
  /** With randkey: keep the old versions in the database. */
  keepold?: boolean
}

// ---- the shared steps ----

/** A TESSERA_VALIDATION error (also for src/admin/rotation.ts). */
export function validation(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, message)
}

/** A TESSERA_PROTECTED error. */
export function protectedError(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_PROTECTED, message)
}

/** Fields the KDC keeps for itself: no request may set them. */
const KDC_FIELDS = [
  'failureCount',
  'failureWindowStart',
  'lastFailure',
  'lockedUntil',
  'lastSuccess',
  'createdAt',
  'createdBy',
  'modifiedAt',
  'modifiedBy',
  'keys',
  'passwordHistory',
  'kvno',
  'key',
  'realm',
  'components',
]

/** Refuse any argument not in `allowed`: TESSERA_PROTECTED for a field the KDC keeps, TESSERA_VALIDATION for an unknown one. */
export function onlyFields(args: object, allowed: readonly string[]): void {
  if (args === null || typeof args !== 'object') throw validation('the request arguments must be an object')
  for (const [k, v] of Object.entries(args)) {
    if (v === undefined || allowed.includes(k)) continue
    if (KDC_FIELDS.includes(k)) throw protectedError(`${k} is kept by the KDC and cannot be set by a request`)
    throw validation(`unknown field ${JSON.stringify(k)}`)
  }
}

const ATTRIBUTES: readonly (keyof PrincipalAttributes)[] = ['disabled', 'requiresPreauth', 'allowForwardable', 'allowRenewable', 'allowService', 'allowJwt', 'jwtAudience']

function checkAttributes(a: Partial<PrincipalAttributes> | undefined): void {
  if (a === undefined) return
  if (a === null || typeof a !== 'object') throw validation('attributes must be an object')
  for (const [k, v] of Object.entries(a)) {
    if (!ATTRIBUTES.includes(k as keyof PrincipalAttributes)) throw validation(`unknown attribute ${JSON.stringify(k)}`)
    // jwtAudience: the `aud` of the service's JWTs (PROTOCOL.md §15.1), a URL.
    if (k === 'jwtAudience') {
      if (typeof v !== 'string' || v.length === 0 || v.length > 1024 || !URL.canParse(v)) throw validation('attribute jwtAudience must be a URL')
    } else if (typeof v !== 'boolean') throw validation(`attribute ${k} must be true or false`)
  }
}

function checkDuration(what: string, v: number | undefined): void {
  if (v !== undefined && (!Number.isSafeInteger(v) || v <= 0)) throw validation(`${what} must be a positive number of milliseconds`)
}

function checkTime(what: string, v: number | null | undefined): void {
  if (v !== undefined && v !== null && (!Number.isSafeInteger(v) || v < 0)) throw validation(`${what} must be a time in ms since the epoch, or null`)
}

/** `text` as a principal of the context's realm. */
export function nameOf(ctx: AdminContext, text: unknown): PrincipalId {
  if (typeof text !== 'string') throw validation('a principal name is required')
  const id = parsePrincipal(text, ctx.realm)
  if (id.realm !== ctx.realm)
    throw new TesseraError(TesseraErrorCode.TESSERA_BAD_NAME, `${formatPrincipal(id)} is not in realm ${ctx.realm}`)
  return id
}

/** krbtgt/REALM and kadmin/*: the realm does not work without them. */
export function isProtectedPrincipal(ctx: AdminContext, id: PrincipalId): boolean {
  const [first, second] = id.components
  if (id.components.length !== 2) return false
  return (first === 'krbtgt' && second === ctx.realm) || (first === 'kadmin' && (second === 'admin' || second === 'changepw'))
}

/** Names only the KDC creates (`krbtgt/*`, `kadmin/*`, which the AS also refuses as clients): refused to addprinc and as a rename target. */
function isReservedName(id: PrincipalId): boolean {
  return isNeverClient(id.components)
}

function isEnabled(rec: Readonly<PrincipalRecord>, now: number): boolean {
  return rec.attributes.disabled !== true && (rec.expiresAt === undefined || rec.expiresAt > now)
}

/**
 * Refuse to remove the last enabled principal holding full admin rights (every letter of `x`
 * on all targets): deleting, disabling or renaming `id` when no other such principal exists.
 */
async function keepLastAdmin(ctx: AdminContext, id: PrincipalId, what: string): Promise<void> {
  const acl = ctx.acl
  if (!acl.isFullAdmin(id)) return
  const now = ctx.now()
  for (const other of await ctx.db.list({ realm: ctx.realm })) {
    if (samePrincipal(other, id) || !acl.isFullAdmin(other)) continue
    const rec = await ctx.db.get(other)
    if (rec !== undefined && isEnabled(rec, now)) return
  }
  throw protectedError(`cannot ${what} ${formatPrincipal(id)}: it is the last principal with full admin rights`)
}

function missingText(op: AdminOpName, e: AclExplanation, target: string | undefined): string {
  const d = e.decisions.find((x) => !x.allowed)!
  const on = target === undefined ? '' : ` on ${target}`
  return `${op} requires the '${d.letter}' (${ACL_LETTERS[d.letter]}) permission${on}: ${d.reason}`
}

/**
 * Refuse unless `actor` may run `op` on `target`: the local user always may; through
 * kadmin/changepw only the self-service operations; otherwise the self-service rules or the
 * ACL. Returns the restrictions of the line that allowed an add or modify.
 */
export function authorize(
  ctx: AdminContext,
  actor: Actor,
  op: AdminOpName,
  target?: PrincipalId,
  o: Parameters<typeof explain>[4] = {},
): AclRestrictions | undefined {
  if (actor.kind === 'local') return undefined
  const self = selfService(op, actor.principal, target, o)
  const t = target === undefined ? undefined : formatPrincipal(target)
  if (actor.via === 'changepw' && self === undefined)
    throw new NotAuthorizedError([], `${op}${t === undefined ? '' : ` on ${t}`} is refused: the kadmin/changepw service serves only a principal's own password`)
  const e = explain(ctx.acl, actor.principal, op, target, o)
  if (!e.allowed) throw new NotAuthorizedError(e.decisions.filter((d) => !d.allowed).map((d) => d.letter), missingText(op, e, t))
  if (e.selfService !== undefined) return undefined
  return e.decisions.find((d) => d.letter === 'a' || d.letter === 'm')?.restrictions
}

/**
 * A caller-chosen string as the audit log may hold it: before validation it can be anything,
 * so control characters become U+FFFD and it is cut to 512 characters (a record must stay a
 * line verify can read, whatever an unprivileged caller sends).
 */
export function auditText(text: string): string {
  const clean = text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, '\ufffd')
  return clean.length > 512 ? `${clean.slice(0, 509)}...` : clean
}

/** The base of the audit record of a request. */
function eventBase(actor: Actor, op: string, target?: string): AuditEvent {
  const e: AuditEvent = { actor: actorName(actor), op, outcome: 'ok' }
  if (target !== undefined) e.target = auditText(target)
  if (actor.kind === 'principal' && actor.peer !== undefined) e.peer = actor.peer
  return e
}

/**
 * Run one request: `fn` records its own success (through ctx.audit.commit or .record); a
 * refusal or failure is recorded here, with its reason, and rethrown. Exported (with
 * {@link authorize}) for operations defined elsewhere (dump, and issue 12's rotation).
 */
export async function runAdmin<T>(ctx: AdminContext, actor: Actor, op: AdminOpName, target: string | undefined, fn: (base: AuditEvent) => Promise<T>): Promise<T> {
  const base = eventBase(actor, op, target)
  try {
    return await fn(base)
  } catch (err) {
    const denied = err instanceof NotAuthorizedError
    const ev: AuditEvent = { ...base, outcome: denied ? 'denied' : 'error' }
    if (err instanceof TesseraError) {
      ev.code = err.code
      ev.reason = auditText(err.message)
    } else ev.reason = 'internal error'
    // An audit failure itself is not recorded again (the log is what failed).
    if (!(err instanceof TesseraError && err.code === TesseraErrorCode.TESSERA_AUDIT)) await ctx.audit.record(ev)
    throw err
  }
}

/**
 * A principal acting on its own keys (fetchkeys, a self cpw) must hold a session opened with a
 * key that is still alive: the version current at its login (`authtime`) is not retired (an
 * emergency rotation retires every older version at once), and is not gone (purged, or
 * replaced by a cpw without keepold) unless the principal itself made the last change (a
 * service changing its key twice in one session). Else a thief who logged in with a stolen
 * keytab before the rotation could fetch the fresh key, or set one of his own, for as long as
 * his kadmin ticket lives. NotAuthorizedError: log in again with the current key.
 */
export function checkSessionKey(actor: Actor, rec: Readonly<PrincipalRecord>, now: number): void {
  if (actor.kind !== 'principal' || actor.authtime === undefined || !samePrincipal(actor.principal, rec)) return
  let used: Readonly<KeyVersion> | undefined
  for (let i = rec.keys.length - 1; i >= 0 && used === undefined; i--) if (activationOf(rec.keys[i]!) <= actor.authtime) used = rec.keys[i]
  const retired = used?.retiresAt !== undefined && used.retiresAt <= now
  const replaced = used === undefined && rec.modifiedBy !== actorName(actor)
  if (retired || replaced)
    throw new NotAuthorizedError(
      [],
      `this session of ${formatPrincipal(rec)} was opened with a key that has been retired or replaced since (an emergency rotation or a key change): log in again with the current key`,
    )
}

/** The record of `id`, or TESSERA_NOT_FOUND. */
export async function getOrFail(ctx: AdminContext, id: PrincipalId): Promise<Readonly<PrincipalRecord>> {
  const rec = await ctx.db.get(id)
  if (rec === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `principal ${formatPrincipal(id)} does not exist`)
  return rec
}

async function policyOf(ctx: AdminContext, name: string | undefined): Promise<Readonly<Policy> | undefined> {
  if (name === undefined) return undefined
  return ctx.db.getPolicy(name)
}

function keyOnly(xor: { password?: string; randkey?: boolean }): void {
  const hasPw = xor.password !== undefined
  if (hasPw && typeof xor.password !== 'string') throw validation('password must be a string')
  if (hasPw === (xor.randkey === true)) throw validation('give exactly one of password and randkey')
}

async function makeKey(ctx: AdminContext, id: PrincipalId, kvno: number, password: string | undefined, now: number): Promise<KeyVersion> {
  if (password !== undefined) {
    const salt = defaultSalt(id.realm, formatName(id.components))
    return { kvno, key: await passwordToKey(password, salt, ctx.kdf), kdf: { ...ctx.kdf }, salt, createdAt: now }
  }
  return { kvno, key: randomKey(), createdAt: now }
}

/** A keytab entry (a copy of the key) of version `k` of `id`. */
export function entryOf(id: PrincipalId, k: KeyVersion): KeytabEntry {
  const e: KeytabEntry = { realm: id.realm, name: [...id.components], kvno: k.kvno, key: new Uint8Array(k.key), createdAt: k.createdAt }
  if (k.kdf !== undefined) e.kdf = { ...k.kdf }
  if (k.salt !== undefined) e.salt = k.salt
  return e
}

function applyChanges(rec: PrincipalRecord, ch: PrincipalChanges): void {
  if (ch.attributes !== undefined) rec.attributes = { ...rec.attributes, ...ch.attributes }
  if (ch.policy === null) delete rec.policy
  else if (ch.policy !== undefined) rec.policy = ch.policy
  if (ch.expiresAt === null) delete rec.expiresAt
  else if (ch.expiresAt !== undefined) rec.expiresAt = ch.expiresAt
  if (ch.passwordExpiresAt === null) delete rec.passwordExpiresAt
  else if (ch.passwordExpiresAt !== undefined) rec.passwordExpiresAt = ch.passwordExpiresAt
  if (ch.maxLife !== undefined) rec.maxLife = ch.maxLife
  if (ch.maxRenewableLife !== undefined) rec.maxRenewableLife = ch.maxRenewableLife
}

function changesOf(a: AddPrincipalArgs | ModifyPrincipalArgs): PrincipalChanges {
  const ch: PrincipalChanges = {}
  if (a.attributes !== undefined) ch.attributes = { ...a.attributes }
  if (a.policy !== undefined) ch.policy = a.policy
  if (a.expiresAt !== undefined) ch.expiresAt = a.expiresAt
  if (a.passwordExpiresAt !== undefined) ch.passwordExpiresAt = a.passwordExpiresAt
  if (a.maxLife !== undefined) ch.maxLife = a.maxLife
  if (a.maxRenewableLife !== undefined) ch.maxRenewableLife = a.maxRenewableLife
  return ch
}

/** The audit details of a change: which fields, never their secrets. */
function detailsOf(ch: PrincipalChanges): Record<string, string | number | boolean | null> {
  const d: Record<string, string | number | boolean | null> = {}
  for (const [k, v] of Object.entries(ch.attributes ?? {})) d[k] = v
  if (ch.policy !== undefined) d.policy = ch.policy
  if (ch.expiresAt !== undefined) d.expiresAt = ch.expiresAt
  if (ch.passwordExpiresAt !== undefined) d.passwordExpiresAt = ch.passwordExpiresAt
  if (ch.maxLife !== undefined) d.maxLife = ch.maxLife
  if (ch.maxRenewableLife !== undefined) d.maxRenewableLife = ch.maxRenewableLife
  return d
}

/** Types and ranges of modprinc's schedule arguments. */
/** The shortest rotation period a schedule may have by default, ms: every rotation keeps a key version until its tickets expire. */
export const MIN_ROTATE_EVERY_MS = 60 * 60_000

function formatMinutes(ms: number): string {
  return ms >= 60_000 ? `${Math.round(ms / 60_000)} minutes` : `${ms} ms`
}

function checkSchedule(a: ModifyPrincipalArgs, min: number): void {
  if (a.rotateEvery !== undefined && a.rotateEvery !== null) {
    checkDuration('rotateEvery', a.rotateEvery)
    if (a.rotateEvery < min)
      throw validation(`rotateEvery must be at least ${formatMinutes(min)} (each rotation keeps a key version until its tickets can expire)`)
  }
  if (a.stageAhead !== undefined && (!Number.isSafeInteger(a.stageAhead) || a.stageAhead < 0))
    throw validation('stageAhead must be a non-negative number of milliseconds')
  if (a.grace !== undefined && a.grace !== null && (!Number.isSafeInteger(a.grace) || a.grace < 0))
    throw validation('grace must be a non-negative number of milliseconds, or null')
}

/** Set or clear `r.rotation` from modprinc's arguments (mutates `r`). */
function applySchedule(r: PrincipalRecord, a: ModifyPrincipalArgs): void {
  if (a.rotateEvery === null) {
    if (a.stageAhead !== undefined || a.grace !== undefined) throw validation('rotateEvery null clears the schedule: give no stageAhead or grace with it')
    delete r.rotation
    return
  }
  const old = r.rotation
  const everyMs = a.rotateEvery ?? old?.everyMs
  if (everyMs === undefined) throw validation(`${formatPrincipal(r)} has no rotation schedule: give rotateEvery`)
  if (r.keys.some((k) => k.kdf !== undefined))
    throw validation(`${formatPrincipal(r)} has a password key: only random-key principals (services, krbtgt) rotate automatically`)
  const next: RotationSchedule = { everyMs, stageAheadMs: a.stageAhead ?? old?.stageAheadMs ?? 0 }
  const grace = a.grace === undefined ? old?.graceMs : (a.grace ?? undefined)
  if (grace !== undefined) next.graceMs = grace
  if (next.stageAheadMs >= next.everyMs) throw validation('stageAhead must be shorter than rotateEvery')
  r.rotation = next
}

/** Refuse changes that would disable a protected principal. */
function guardDisable(ctx: AdminContext, id: PrincipalId, ch: PrincipalChanges): void {
  if (!isProtectedPrincipal(ctx, id)) return
  if (ch.attributes?.disabled === true) throw protectedError(`${formatPrincipal(id)} cannot be disabled: the realm needs it`)
  if (ch.expiresAt !== undefined && ch.expiresAt !== null)
    throw protectedError(`${formatPrincipal(id)} cannot be given an expiry: the realm needs it`)
}

/** The record without key bytes (getprinc). */
export function principalView(rec: Readonly<PrincipalRecord>, lockout: Partial<PrincipalView['lockout']> | undefined, now: number): PrincipalView {
  const current = sealingKeyAt(rec.keys, now) ?? rec.keys[rec.keys.length - 1]
  const a = rec.attributes
  const v: PrincipalView = {
    name: formatPrincipal(rec),
    realm: rec.realm,
    components: [...rec.components],
    kvno: current?.kvno ?? 0,
    keys: rec.keys.map((k, i) => {
      const kv: KeyVersionView = {
        kvno: k.kvno,
        kind: k.kdf === undefined ? 'random' : 'password',
        state: keyStateAt(rec.keys, i, now),
        createdAt: k.createdAt,
        activatesAt: activationOf(k),
      }
      if (k.kdf !== undefined) kv.kdf = { ...k.kdf }
      if (k.sealedUntil !== undefined) kv.sealedUntil = k.sealedUntil
      if (k.retiresAt !== undefined) kv.retiresAt = k.retiresAt
      return kv
    }),
    attributes: {
      disabled: a.disabled === true,
      requiresPreauth: a.requiresPreauth !== false,
      allowForwardable: a.allowForwardable !== false,
      allowRenewable: a.allowRenewable !== false,
      // Unset: random-key principals accept tickets, password ones do not (kdc/context.ts acceptsTickets).
      allowService: a.allowService ?? (current !== undefined && current.kdf === undefined),
      allowJwt: a.allowJwt === true,
      ...(a.jwtAudience !== undefined ? { jwtAudience: a.jwtAudience } : {}),
    },
    maxLife: rec.maxLife,
    maxRenewableLife: rec.maxRenewableLife,
    createdAt: rec.createdAt,
    createdBy: rec.createdBy,
    modifiedAt: rec.modifiedAt,
    modifiedBy: rec.modifiedBy,
    lockout: { failureCount: lockout?.failureCount ?? rec.failureCount, locked: false },
  }
  if (rec.rotation !== undefined) {
    const r = rec.rotation
    v.rotation = { rotateEvery: r.everyMs, stageAhead: r.stageAheadMs }
    if (r.graceMs !== undefined) v.rotation.grace = r.graceMs
    const next = rec.keys.find((k) => k.activatesAt !== undefined && k.activatesAt > now)
    const at = next !== undefined ? activationOf(next) : current !== undefined ? activationOf(current) + r.everyMs : undefined
    if (at !== undefined) v.rotation.nextRotationAt = at
  }
  if (rec.policy !== undefined) v.policy = rec.policy
  if (rec.expiresAt !== undefined) v.expiresAt = rec.expiresAt
  if (rec.passwordExpiresAt !== undefined) v.passwordExpiresAt = rec.passwordExpiresAt
  if (current?.kdf !== undefined) v.lastPasswordChange = current.createdAt
  if (rec.revokedAt !== undefined) v.revokedAt = rec.revokedAt
  const lo = { ...rec, ...lockout }
  if (lo.lastFailure !== undefined) v.lockout.lastFailure = lo.lastFailure
  if (lo.lockedUntil !== undefined && lo.lockedUntil > now) {
    v.lockout.lockedUntil = lo.lockedUntil
    v.lockout.locked = true
  }
  if (lo.lastSuccess !== undefined) v.lockout.lastSuccess = lo.lastSuccess
  return v
}

// ---- principals ----

/** addprinc (MIT kadm5_create_principal). Needs `a` on the name; the line's restrictions are imposed. */
export async function addPrincipal(ctx: AdminContext, actor: Actor, args: AddPrincipalArgs): Promise<KeyResult> {
  return runAdmin(ctx, actor, 'addprinc', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name', 'password', 'randkey', 'policy', 'maxLife', 'maxRenewableLife', 'expiresAt', 'passwordExpiresAt', 'attributes'])
    const id = nameOf(ctx, args.name)
    const rs = authorize(ctx, actor, 'addprinc', id)
    if (isReservedName(id)) throw protectedError(`${formatPrincipal(id)}: krbtgt/* and kadmin/* names are the KDC's own; they cannot be added`)
    keyOnly(args)
    checkAttributes(args.attributes)
    checkDuration('maxLife', args.maxLife)
    checkDuration('maxRenewableLife', args.maxRenewableLife)
    checkTime('expiresAt', args.expiresAt)
    checkTime('passwordExpiresAt', args.passwordExpiresAt)
    if (args.policy !== undefined) checkPolicyName(args.policy)
    const now = ctx.now()
    const ch = applyRestrictions(rs, changesOf(args), now)
    const policyName = ch.policy ?? undefined
    const policy = await policyOf(ctx, policyName)
    if (policyName !== undefined && policy === undefined)
      throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `policy ${JSON.stringify(policyName)} does not exist`)
    if (args.password !== undefined) checkPasswordQuality(args.password, policy, id)
    const key = await makeKey(ctx, id, 1, args.password, now)
    const by = actorName(actor)
    const rec: PrincipalRecord = {
      realm: id.realm,
      components: id.components,
      attributes: { requiresPreauth: true },
      maxLife: ctx.maxLife,
      maxRenewableLife: ctx.maxRenewableLife,
      keys: [key],
      createdAt: now,
      createdBy: by,
      modifiedAt: now,
      modifiedBy: by,
      failureCount: 0,
    }
    applyChanges(rec, { ...ch, policy: policyName ?? null })
    // The bound on the life of the tickets this version seals (raised by modprinc, src/admin/key-lifecycle.ts).
    key.sealLifeMs = rec.maxLife
    if (args.password !== undefined && ch.passwordExpiresAt === undefined) {
      const exp = passwordExpiry(policy, now)
      if (exp !== undefined) rec.passwordExpiresAt = exp
    }
    await ctx.db.create(
      rec,
      ctx.commit({ ...base, kvno: 1, details: { ...detailsOf(ch), key: args.randkey ? 'random' : 'password' } }, () => [
        { type: 'created', principal: formatPrincipal(id), kvno: 1, time: now, actor: by },
      ]),
    )
    return { name: formatPrincipal(id), kvno: 1, keys: args.randkey ? [entryOf(id, key)] : [] }
  })
}

/** delprinc. Needs `d`; krbtgt/REALM, kadmin/* and the last full admin cannot be deleted. */
export async function deletePrincipal(ctx: AdminContext, actor: Actor, args: { name: string }): Promise<void> {
  return runAdmin(ctx, actor, 'delprinc', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name'])
    const id = nameOf(ctx, args.name)
    authorize(ctx, actor, 'delprinc', id)
    if (isProtectedPrincipal(ctx, id)) throw protectedError(`${formatPrincipal(id)} cannot be deleted: the realm needs it`)
    await getOrFail(ctx, id)
    await ctx.adminLock.run('last-admin', async () => {
      await keepLastAdmin(ctx, id, 'delete')
      await ctx.db.delete(id, ctx.commit(base, () => [{ type: 'deleted', principal: formatPrincipal(id), time: ctx.now(), actor: actorName(actor) }]))
    })
    ctx.noteKeys(id)
  })
}

/** renprinc. Needs `d` on the old name and `a` on the new one without restrictions (MIT acl_renprinc); one atomic batch. */
export async function renamePrincipal(ctx: AdminContext, actor: Actor, args: { name: string; newName: string }): Promise<void> {
  return runAdmin(ctx, actor, 'renprinc', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name', 'newName'])
    const id = nameOf(ctx, args.name)
    const to = nameOf(ctx, args.newName)
    base.newTarget = formatPrincipal(to)
    authorize(ctx, actor, 'renprinc', id, { newTarget: to })
    for (const p of [id, to])
      if (isProtectedPrincipal(ctx, p)) throw protectedError(`${formatPrincipal(p)} cannot be renamed: the realm needs that name`)
    if (isReservedName(to)) throw protectedError(`${formatPrincipal(to)}: krbtgt/* and kadmin/* names are the KDC's own`)
    await getOrFail(ctx, id)
    await ctx.adminLock.run('last-admin', async () => {
      await keepLastAdmin(ctx, id, 'rename')
      await ctx.db.rename(
        id,
        to,
        actorName(actor),
        ctx.commit(base, () => [{ type: 'renamed', principal: formatPrincipal(id), newName: formatPrincipal(to), time: ctx.now(), actor: actorName(actor) }]),
      )
    })
    ctx.noteKeys(id)
    ctx.noteKeys(to)
  })
}

/** modprinc (incl. unlock, disable/enable). Needs `m`; the line's restrictions are imposed. */
export async function modifyPrincipal(ctx: AdminContext, actor: Actor, args: ModifyPrincipalArgs): Promise<PrincipalView> {
  return runAdmin(ctx, actor, 'modprinc', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name', 'attributes', 'policy', 'maxLife', 'maxRenewableLife', 'expiresAt', 'passwordExpiresAt', 'unlock', 'rotateEvery', 'stageAhead', 'grace'])
    const id = nameOf(ctx, args.name)
    const rotating = args.rotateEvery !== undefined || args.stageAhead !== undefined || args.grace !== undefined
    const rs = authorize(ctx, actor, 'modprinc', id, { rotation: rotating })
    checkSchedule(args, ctx.minRotateEveryMs)
    checkAttributes(args.attributes)
    checkDuration('maxLife', args.maxLife)
    checkDuration('maxRenewableLife', args.maxRenewableLife)
    checkTime('expiresAt', args.expiresAt)
    checkTime('passwordExpiresAt', args.passwordExpiresAt)
    if (args.policy !== undefined && args.policy !== null) checkPolicyName(args.policy)
    if (args.unlock !== undefined && typeof args.unlock !== 'boolean') throw validation('unlock must be true or false')
    const now = ctx.now()
    const ch = applyRestrictions(rs, changesOf(args), now)
    guardDisable(ctx, id, ch)
    await getOrFail(ctx, id)
    // An expiry, however far ahead, would disable it when it comes: the last full admin takes none.
    const disabling = ch.attributes?.disabled === true || (ch.expiresAt !== undefined && ch.expiresAt !== null)
    const newPolicy = ch.policy === undefined ? undefined : ch.policy === null ? null : await policyOf(ctx, ch.policy)
    if (ch.policy !== undefined && ch.policy !== null && newPolicy === undefined)
      throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `policy ${JSON.stringify(ch.policy)} does not exist`)
    const details = detailsOf(ch)
    if (args.unlock === true) details.unlock = true
    if (args.rotateEvery !== undefined) details.rotateEvery = args.rotateEvery
    if (args.stageAhead !== undefined) details.stageAhead = args.stageAhead
    if (args.grace !== undefined) details.grace = args.grace
    const write = () =>
      ctx.db.update(
      id,
      (r) => {
        const policyChanged = ch.policy !== undefined && (ch.policy ?? undefined) !== r.policy
        if (rotating) applySchedule(r, args)
        if (ch.maxLife !== undefined && ch.maxLife > r.maxLife) raiseSealLife(r, ch.maxLife, now)
        applyChanges(r, ch)
        // MIT modprinc: a new policy recomputes the password expiry from the last change.
        if (policyChanged && ch.passwordExpiresAt === undefined) {
          const last = r.keys[r.keys.length - 1]
          const max = newPolicy ? newPolicy.maxPasswordLifeMs : 0
          if (last?.kdf !== undefined && max > 0) r.passwordExpiresAt = last.createdAt + max
          else delete r.passwordExpiresAt
        }
        if (args.unlock === true) {
          delete r.lockedUntil
          delete r.failureWindowStart
          r.failureCount = 0
        }
      },
      actorName(actor),
      ctx.commit({ ...base, details }, () =>
        args.unlock === true ? [{ type: 'unlocked', principal: formatPrincipal(id), time: now, actor: actorName(actor) }] : [],
      ),
    )
    const rec = disabling
      ? await ctx.adminLock.run('last-admin', async () => {
          await keepLastAdmin(ctx, id, 'disable')
          return write()
        })
      : await write()
    if (rotating) ctx.noteKeys(id)
    return principalView(rec, undefined, now)
  })
}

/**
 * cpw (MIT kadm5_chpass_principal / randkey_principal). Needs `c`, or is the principal's own
 * (then: an initial ticket, the policy's minlife, at most MAX_SELF_KEEPOLD versions kept).
 * A password must pass the policy's quality and history rules, whoever changes it.
 */
export async function changeKey(ctx: AdminContext, actor: Actor, args: ChangeKeyArgs): Promise<KeyResult> {
  return runAdmin(ctx, actor, 'cpw', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name', 'password', 'randkey', 'keepold'])
    const id = nameOf(ctx, args.name)
    authorize(ctx, actor, 'cpw', id)
    keyOnly(args)
    const self = actor.kind === 'principal' && samePrincipal(actor.principal, id)
    if (self && !actor.initial)
      throw new NotAuthorizedError([], 'changing your own key requires an initial ticket (log in with your password again)')
    const r0 = await getOrFail(ctx, id)
    const policy0 = await policyOf(ctx, r0.policy)
    if (args.password !== undefined) checkPasswordQuality(args.password, policy0, id)
    let made: KeyVersion | undefined
    const now = ctx.now()
    await ctx.db.update(
      id,
      async (r) => {
        const policy = await policyOf(ctx, r.policy)
        if (self) checkSessionKey(actor, r, now)
        if (self) checkMinLife(r, policy, now)
        if (args.password !== undefined) await checkPasswordReuse(args.password, r, policy)
        const kvno = Math.max(0, ...r.keys.map((k) => k.kvno)) + 1
        made = await makeKey(ctx, id, kvno, args.password, now)
        const history = nextPasswordHistory(r, policy)
        // -keepold is a rotation whose old versions stay until purgekeys (MIT), each with the bound of the tickets it sealed.
        const o: Parameters<typeof addKeyVersion>[2] = { now, keepold: args.keepold === true, retire: 'never', fallbackLifeMs: ctx.maxTicketLife }
        if (self) o.keepLast = MAX_SELF_KEEPOLD
        addKeyVersion(r, made, o)
        // An administrator replacing every key at once (a password or key that may be known): its sessions end too.
        if (!self && args.keepold !== true) revokeSessions(r, ctx.now())
        if (history === undefined) delete r.passwordHistory
        else r.passwordHistory = history
        const exp = passwordExpiry(policy, now)
        if (exp === undefined) delete r.passwordExpiresAt
        else r.passwordExpiresAt = exp
        // MIT: a key change unlocks the principal on this KDC.
        delete r.lockedUntil
        delete r.failureWindowStart
        r.failureCount = 0
      },
      actorName(actor),
      ctx.commit(
        () => ({ ...base, kvno: made!.kvno, details: { key: args.randkey ? 'random' : 'password', keepold: args.keepold === true } }),
        () => [{ type: 'changed', principal: formatPrincipal(id), kvno: made!.kvno, time: now, actor: actorName(actor) }],
      ),
    )
    const k = made!
    ctx.noteKeys(id)
    return { name: formatPrincipal(id), kvno: k.kvno, keys: args.randkey ? [entryOf(id, k)] : [] }
  })
}

/** getprinc. Needs `i`, or is the principal's own. */
export async function getPrincipal(ctx: AdminContext, actor: Actor, args: { name: string }): Promise<PrincipalView> {
  return runAdmin(ctx, actor, 'getprinc', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name'])
    const id = nameOf(ctx, args.name)
    authorize(ctx, actor, 'getprinc', id)
    const rec = await getOrFail(ctx, id)
    const lockout = await ctx.db.lockoutState(id)
    const view = principalView(rec, lockout, ctx.now())
    await ctx.audit.record(base)
    return view
  })
}

/** listprincs [GLOB]. Needs `l`. Names sorted. */
export async function listPrincipals(ctx: AdminContext, actor: Actor, args: { glob?: string } = {}): Promise<string[]> {
  return runAdmin(ctx, actor, 'listprincs', undefined, async (base) => {
    onlyFields(args, ['glob'])
    if (args.glob !== undefined && (typeof args.glob !== 'string' || args.glob.length > 1024)) throw validation('glob must be a string')
    authorize(ctx, actor, 'listprincs')
    const ids = await ctx.db.list(args.glob === undefined ? { realm: ctx.realm } : { realm: ctx.realm, glob: args.glob })
    const names = ids.map(formatPrincipal).sort()
    await ctx.audit.record({ ...base, details: args.glob === undefined ? { count: names.length } : { glob: args.glob, count: names.length } })
    return names
  })
}

/**
 * ktadd: the current key, the next (staged) one and the older versions still valid (not retired), for a keytab.
 * Needs `e` (and `c` with randkey, which then changes the key and returns only the new one).
 * Never changes the key unless randkey is asked (MIT's ktadd randomises by default).
 * krbtgt/REALM and kadmin/* keys cannot be extracted (MIT's lockdown_keys on them).
 */
export async function extractKeys(ctx: AdminContext, actor: Actor, args: ExtractArgs): Promise<KeyResult> {
  return runAdmin(ctx, actor, 'ktadd', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name', 'randkey', 'keepold'])
    const id = nameOf(ctx, args.name)
    authorize(ctx, actor, 'ktadd', id, { randkey: args.randkey === true })
    if (isProtectedPrincipal(ctx, id)) throw protectedError(`the keys of ${formatPrincipal(id)} cannot be extracted`)
    const now = ctx.now()
    if (args.randkey === true) {
      await getOrFail(ctx, id)
      const self = actor.kind === 'principal' && samePrincipal(actor.principal, id)
      let made: KeyVersion | undefined
      await ctx.db.update(
        id,
        (r) => {
          const kvno = Math.max(0, ...r.keys.map((k) => k.kvno)) + 1
          made = { kvno, key: randomKey(), createdAt: now }
          addKeyVersion(r, made, { now, keepold: args.keepold === true, retire: 'never', fallbackLifeMs: ctx.maxTicketLife })
          // As cpw -randkey: every older key is gone, and the sessions opened with them end.
          if (!self && args.keepold !== true) revokeSessions(r, ctx.now())
        },
        actorName(actor),
        ctx.commit(
          () => ({ ...base, kvno: made!.kvno, kvnos: [made!.kvno], details: { randkey: true, keepold: args.keepold === true } }),
          () => [
            { type: 'changed', principal: formatPrincipal(id), kvno: made!.kvno, time: now, actor: actorName(actor) },
            { type: 'extracted', principal: formatPrincipal(id), kvno: made!.kvno, time: now, actor: actorName(actor) },
          ],
        ),
      )
      ctx.noteKeys(id)
      return { name: formatPrincipal(id), kvno: made!.kvno, keys: [entryOf(id, made!)] }
    }
    const rec = await getOrFail(ctx, id)
    // The next (staged) version too: a service holds it before the KDC seals with it.
    const valid = rec.keys.filter((k) => k.retiresAt === undefined || k.retiresAt > now)
    const current = sealingKeyAt(rec.keys, now) ?? rec.keys[rec.keys.length - 1]!
    await ctx.audit.record({ ...base, kvno: current.kvno, kvnos: valid.map((k) => k.kvno) })
    await ctx.publish([{ type: 'extracted', principal: formatPrincipal(id), kvno: current.kvno, time: now, actor: actorName(actor) }])
    return { name: formatPrincipal(id), kvno: current.kvno, keys: valid.map((k) => entryOf(id, k)) }
  })
}

// ---- policies ----

const POLICY_FIELDS = [
  'name',
  'minLength',
  'minClasses',
  'history',
  'minPasswordLifeMs',
  'maxPasswordLifeMs',
  'maxFailures',
  'failureCountIntervalMs',
  'lockoutDurationMs',
] as const

function policyDetails(a: PolicyArgs): Record<string, number> {
  const d: Record<string, number> = {}
  for (const f of POLICY_FIELDS) if (f !== 'name' && a[f] !== undefined) d[f] = a[f]
  return d
}

function mergePolicy(base: Readonly<Policy>, a: PolicyArgs): Policy {
  const p: Policy = { ...base, name: a.name }
  for (const f of POLICY_FIELDS) if (f !== 'name' && a[f] !== undefined) p[f] = a[f]
  return p
}

/** addpol. Needs `p`. Unset fields come from DEFAULT_POLICY. */
export async function addPolicy(ctx: AdminContext, actor: Actor, args: PolicyArgs): Promise<Policy> {
  return runAdmin(ctx, actor, 'addpol', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, POLICY_FIELDS)
    authorize(ctx, actor, 'addpol')
    checkPolicyName(args.name)
    const p = mergePolicy(DEFAULT_POLICY, args)
    checkPolicy(p)
    return ctx.policyLocks.run(args.name, async () => {
      if ((await ctx.db.getPolicy(args.name)) !== undefined)
        throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `policy ${JSON.stringify(args.name)} already exists`)
      await ctx.db.putPolicy(p, ctx.audit.commit({ ...base, details: policyDetails(args) }))
      return p
    })
  })
}

/** modpol. Needs `p`. Only the fields given change. */
export async function modifyPolicy(ctx: AdminContext, actor: Actor, args: PolicyArgs): Promise<Policy> {
  return runAdmin(ctx, actor, 'modpol', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, POLICY_FIELDS)
    authorize(ctx, actor, 'modpol')
    checkPolicyName(args.name)
    return ctx.policyLocks.run(args.name, async () => {
      const old = await ctx.db.getPolicy(args.name)
      if (old === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `policy ${JSON.stringify(args.name)} does not exist`)
      const p = mergePolicy(old, args)
      checkPolicy(p)
      await ctx.db.putPolicy(p, ctx.audit.commit({ ...base, details: policyDetails(args) }))
      return p
    })
  })
}

/** delpol. Needs `p`. Refused (TESSERA_EXISTS) while a principal uses the policy. */
export async function deletePolicy(ctx: AdminContext, actor: Actor, args: { name: string }): Promise<void> {
  return runAdmin(ctx, actor, 'delpol', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name'])
    authorize(ctx, actor, 'delpol')
    checkPolicyName(args.name)
    await ctx.policyLocks.run(args.name, () => ctx.db.deletePolicy(args.name, ctx.audit.commit(base)))
  })
}

/** getpol. Needs `i`, or is the actor's own policy (MIT self_getpol). */
export async function getPolicy(ctx: AdminContext, actor: Actor, args: { name: string }): Promise<Policy> {
  return runAdmin(ctx, actor, 'getpol', typeof args?.name === 'string' ? args.name : undefined, async (base) => {
    onlyFields(args, ['name'])
    checkPolicyName(args.name)
    const own = actor.kind === 'principal' ? (await ctx.db.get(actor.principal))?.policy : undefined
    authorize(ctx, actor, 'getpol', undefined, own === undefined ? { policy: args.name } : { policy: args.name, actorPolicy: own })
    const p = await ctx.db.getPolicy(args.name)
    if (p === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `policy ${JSON.stringify(args.name)} does not exist`)
    await ctx.audit.record(base)
    return { ...p }
  })
}

/** listpols. Needs `l`. */
export async function listPolicies(ctx: AdminContext, actor: Actor): Promise<string[]> {
  return runAdmin(ctx, actor, 'listpols', undefined, async (base) => {
    authorize(ctx, actor, 'listpols')
    const names = (await ctx.db.listPolicies()).map((p) => p.name)
    await ctx.audit.record({ ...base, details: { count: names.length } })
    return names
  })
}

// ---- ACL and audit ----

/** Arguments of {@link checkAcl} (kadmin acl check ACTOR OPERATION TARGET). */
export interface AclCheckArgs {
  actor: string
  op: AdminOpName
  target?: string
  newTarget?: string
  randkey?: boolean
}

/** acl check: which line decides `op` for `actor` on `target`, and why. Needs `i`. */
export async function checkAcl(ctx: AdminContext, actor: Actor, args: AclCheckArgs): Promise<AclExplanation> {
  return runAdmin(ctx, actor, 'aclcheck', typeof args?.actor === 'string' ? args.actor : undefined, async (base) => {
    onlyFields(args, ['actor', 'op', 'target', 'newTarget', 'randkey'])
    authorize(ctx, actor, 'aclcheck')
    const who = parsePrincipal(String(args.actor), ctx.realm)
    if (!Object.hasOwn(OP_NAMES, args.op)) throw validation(`unknown operation ${JSON.stringify(args.op)} (one of: ${Object.keys(OP_NAMES).join(', ')})`)
    const target = args.target === undefined ? undefined : parsePrincipal(args.target, ctx.realm)
    const o: Parameters<typeof explain>[4] = {}
    if (args.newTarget !== undefined) o.newTarget = parsePrincipal(args.newTarget, ctx.realm)
    if (args.randkey !== undefined) o.randkey = args.randkey
    const e = explain(ctx.acl, who, args.op, target, o)
    await ctx.audit.record({ ...base, details: { op: args.op, subject: formatPrincipal(who), allowed: e.allowed } })
    return e
  })
}

const OP_NAMES: Record<AdminOpName, true> = {
  addprinc: true,
  delprinc: true,
  renprinc: true,
  modprinc: true,
  cpw: true,
  getprinc: true,
  listprincs: true,
  ktadd: true,
  addpol: true,
  modpol: true,
  delpol: true,
  getpol: true,
  listpols: true,
  audit: true,
  dump: true,
  aclcheck: true,
  rotate: true,
  purgekeys: true,
  fetchkeys: true,
  watch: true,
}

/** Arguments of {@link readAudit} (kadmin audit). */
export interface ReadAuditArgs {
  since?: number
  limit?: number
  /** Only records whose seq is above this, oldest first (with limit: the next page). */
  after?: number
  verify?: boolean
}

/** audit [--since T] [--verify]: the records, and with verify the verification against the database anchor. Needs `u`. */
export async function readAudit(
  ctx: AdminContext,
  actor: Actor,
  args: ReadAuditArgs,
): Promise<{ records: AuditRecord[]; verification?: AuditVerification }> {
  return runAdmin(ctx, actor, 'audit', undefined, async (base) => {
    onlyFields(args, ['since', 'limit', 'verify', 'after'])
    authorize(ctx, actor, 'audit')
    const o: { since?: number; limit?: number; after?: number } = {}
    if (args.since !== undefined) o.since = args.since
    if (args.limit !== undefined) o.limit = args.limit
    if (args.after !== undefined) o.after = args.after
    // The anchor is read before the file so that records appended meanwhile count as beyond it only if the file is read first.
    const anchor = args.verify === true ? await ctx.audit.anchor() : undefined
    // Every audit epoch's key, from the database (a master-key use may have started a new one since the log was opened).
    let verification: AuditVerification | undefined
    if (args.verify === true) {
      const keys = ctx.db.auditEpochKeys()
      try {
        verification = await verifyAuditLog(ctx.audit.file, anchor, keys)
      } finally {
        for (const k of keys) k.fill(0)
      }
    }
    const records = await readAuditLog(ctx.audit.file, o)
    await ctx.audit.record({ ...base, details: args.verify === true ? { verify: true, ok: verification!.ok } : { count: records.length } })
    return verification === undefined ? { records } : { records, verification }
  })
}
