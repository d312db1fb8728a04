/**
 * The admin service on the KDC's admin listener: opens the realm's ACL (reloaded when the
 * file changes) and audit log, and runs each authenticated ADMIN_REQ (src/kdc/admin-req.ts)
 * through the operation layer. The operations, their `args` and `result` shapes are those
 * of src/admin/operations.ts, by MIT kadmin's names (PROTOCOL.md §8.5).
 */
import os from 'node:os'
import path from 'node:path'
import { ErrorCode } from '../../proto/error-codes.js'
import { DEFAULT_KDF_PARAMS, hkdf, wipe } from '../crypto/index.js'
import { EventLog } from '../db/event-log.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import type { AdminActor, AdminErrorMapper, AdminExecutor } from '../kdc/admin-req.js'
import type { AdminServiceFactory } from '../kdc/kdc.js'
import { Acl, AclFile, defaultAcl } from './acl.js'
import { AUDIT_FILE, type AuditEvent, AuditLog } from './audit.js'
import { ACL_FILE } from './dump.js'
import {
  type Actor,
  AdminContext,
  actorName,
  auditText,
  addPolicy,
  addPrincipal,
  changeKey,
  checkAcl,
  deletePolicy,
  deletePrincipal,
  extractKeys,
  getPolicy,
  getPrincipal,
  type KeyEvent,
  listPolicies,
  listPrincipals,
  modifyPolicy,
  modifyPrincipal,
  readAudit,
  renamePrincipal,
} from './operations.js'
import { RemoteDumps } from './remote-dump.js'
import { activateIdentity, getIdentity, retireIdentity, rotateIdentity } from './identity.js'
import { purgeKeys, RotationScheduler, type RotationSchedulerOptions, rotateKey } from './rotation.js'
import { fetchKeys, watchEvents } from './self-keys.js'
import { WebhookOutbox, type WebhookOutboxOptions } from './webhooks.js'
import { MasterKeyControl, type MasterKeyControlOptions } from './master-control.js'

/** Options of {@link adminService}. */
export interface AdminServiceOptions {
  /** Without a realm directory (in-memory KDC): the ACL text. @default the realm's admin gets everything */
  aclText?: string
  /** Without a realm directory: where the audit log goes. @default a new file in the OS temp directory */
  auditFile?: string
  /** Key events (issue 12's watch stream and webhooks subscribe here). */
  onEvent?: (e: KeyEvent) => void
  /** The key rotation scheduler (src/admin/rotation.ts); false: none runs. @default {} (pollMs 60000) */
  scheduler?: RotationSchedulerOptions | false
  /** Shortest rotation period a schedule may set, ms. @default 1 h */
  minRotateEveryMs?: number
  /** Given the scheduler once started (tests with an injected clock call its runDue()). */
  onScheduler?: (s: RotationScheduler) => void
  /** Retry delays of the webhooks (tests make them short). @default backoffMs 1000, maxBackoffMs 300000 */
  webhookBackoff?: Pick<WebhookOutboxOptions, 'backoffMs' | 'maxBackoffMs'>
  /** Given the webhook outbox once started (its counters: stats()). */
  onWebhooks?: (w: WebhookOutbox) => void
  /**
   * The realm directory's control socket, through which `kdc master-key` steps run while the
   * KDC serves (src/admin/master-control.ts); false: none. @default {} (on with a realm directory)
   */
  masterKeyControl?: MasterKeyControlOptions | false
}

type Op = (ctx: AdminContext, actor: Actor, args: Record<string, unknown>) => Promise<unknown>

/** The operations served, by their kadmin names. */
function operations(dumps: RemoteDumps): Record<string, Op> {
  const a = <T>(x: Record<string, unknown>) => x as unknown as T
  return {
    addprinc: (c, w, x) => addPrincipal(c, w, a(x)),
    delprinc: (c, w, x) => deletePrincipal(c, w, a(x)),
    renprinc: (c, w, x) => renamePrincipal(c, w, a(x)),
    modprinc: (c, w, x) => modifyPrincipal(c, w, a(x)),
    getprinc: (c, w, x) => getPrincipal(c, w, a(x)),
    listprincs: (c, w, x) => listPrincipals(c, w, a(x)),
    cpw: (c, w, x) => changeKey(c, w, a(x)),
    ktadd: (c, w, x) => extractKeys(c, w, a(x)),
    addpol: (c, w, x) => addPolicy(c, w, a(x)),
    modpol: (c, w, x) => modifyPolicy(c, w, a(x)),
    delpol: (c, w, x) => deletePolicy(c, w, a(x)),
    getpol: (c, w, x) => getPolicy(c, w, a(x)),
    listpols: (c, w) => listPolicies(c, w),
    aclcheck: (c, w, x) => checkAcl(c, w, a(x)),
    audit: (c, w, x) => readAudit(c, w, a(x)),
    rotate: (c, w, x) => rotateKey(c, w, a(x)),
    purgekeys: (c, w, x) => purgeKeys(c, w, a(x)),
    dump: (c, w, x) => dumps.handle(c, w, a(x)),
    fetchkeys: (c, w, x) => fetchKeys(c, w, a(x)),
    watch: (c, w, x) => watchEvents(c, w, a(x)),
    // KDC identity keys (src/admin/identity.ts).
    'rotate-identity': (c, w, x) => rotateIdentity(c, w, a(x)),
    'activate-identity': (c, w, x) => activateIdentity(c, w, a(x)),
    'retire-identity': (c, w, x) => retireIdentity(c, w, a(x)),
    'get-identity': (c, w) => getIdentity(c, w),
  }
}

/** The type of an argument on the wire (PROTOCOL.md §8.5). `?` marks the ones that may also be nil. */
export type AdminArgType = 'str' | 'str?' | 'bool' | 'uint' | 'uint?' | 'map'

/** One argument of an operation: its wire type and whether it must be present. */
export interface AdminArgSpec {
  type: AdminArgType
  required?: true
}

const NAME: AdminArgSpec = { type: 'str', required: true }
const POLICY_ARGS: Readonly<Record<string, AdminArgSpec>> = {
  name: NAME,
  minLength: { type: 'uint' },
  minClasses: { type: 'uint' },
  history: { type: 'uint' },
  minPasswordLifeMs: { type: 'uint' },
  maxPasswordLifeMs: { type: 'uint' },
  maxFailures: { type: 'uint' },
  failureCountIntervalMs: { type: 'uint' },
  lockoutDurationMs: { type: 'uint' },
}

/**
 * The arguments of every operation, by name, as PROTOCOL.md §8.5 specifies them: checked
 * here before the operation runs (a wrong type is 109, never a crash), then the operation
 * checks values (ranges, names, one of password/randkey) and refuses a field it does not take
 * (109, or 113 for a field the KDC keeps).
 */
export const ADMIN_ARGS: Readonly<Record<string, Readonly<Record<string, AdminArgSpec>>>> = {
  addprinc: {
    name: NAME,
    password: { type: 'str' },
    randkey: { type: 'bool' },
    policy: { type: 'str' },
    maxLife: { type: 'uint' },
    maxRenewableLife: { type: 'uint' },
    expiresAt: { type: 'uint?' },
    passwordExpiresAt: { type: 'uint?' },
    attributes: { type: 'map' },
  },
  delprinc: { name: NAME },
  renprinc: { name: NAME, newName: NAME },
  modprinc: {
    name: NAME,
    attributes: { type: 'map' },
    policy: { type: 'str?' },
    maxLife: { type: 'uint' },
    maxRenewableLife: { type: 'uint' },
    expiresAt: { type: 'uint?' },
    passwordExpiresAt: { type: 'uint?' },
    unlock: { type: 'bool' },
    rotateEvery: { type: 'uint?' },
    stageAhead: { type: 'uint' },
    grace: { type: 'uint?' },
  },
  getprinc: { name: NAME },
  listprincs: { glob: { type: 'str' } },
  cpw: { name: NAME, password: { type: 'str' }, randkey: { type: 'bool' }, keepold: { type: 'bool' } },
  ktadd: { name: NAME, randkey: { type: 'bool' }, keepold: { type: 'bool' } },
  addpol: POLICY_ARGS,
  modpol: POLICY_ARGS,
  delpol: { name: NAME },
  getpol: { name: NAME },
  listpols: {},
  aclcheck: { actor: NAME, op: NAME, target: { type: 'str' }, newTarget: { type: 'str' }, randkey: { type: 'bool' } },
  audit: { since: { type: 'uint' }, limit: { type: 'uint' }, verify: { type: 'bool' }, after: { type: 'uint' } },
  rotate: { name: NAME, grace: { type: 'uint' }, stageAhead: { type: 'uint' }, emergency: { type: 'bool' } },
  purgekeys: { name: NAME, keepkvno: { type: 'uint' }, allOld: { type: 'bool' }, force: { type: 'bool' } },
  dump: { session: { type: 'str' }, offset: { type: 'uint' } },
  fetchkeys: { name: NAME },
  watch: { after: { type: 'uint' }, glob: { type: 'str' }, waitMs: { type: 'uint' }, limit: { type: 'uint' } },
  // KDC identity keys (src/admin/identity.ts).
  'rotate-identity': { which: { type: 'str' }, stageAhead: { type: 'uint' } },
  'activate-identity': { force: { type: 'bool' } },
  'retire-identity': {},
  'get-identity': {},
}

function hasType(v: unknown, t: AdminArgType): boolean {
  if (v === null) return t.endsWith('?')
  switch (t) {
    case 'str':
    case 'str?':
      return typeof v === 'string'
    case 'bool':
      return typeof v === 'boolean'
    case 'uint':
    case 'uint?':
      return Number.isSafeInteger(v) && (v as number) >= 0
    case 'map':
      return typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array)
  }
}

const TYPE_WORDS: Record<AdminArgType, string> = {
  str: 'a string',
  'str?': 'a string or nil',
  bool: 'true or false',
  uint: 'a non-negative integer',
  'uint?': 'a non-negative integer or nil',
  map: 'a map',
}

/** Refuse (TESSERA_VALIDATION) arguments of the wrong type or missing; fields not in `spec` are left to the operation. */
export function checkAdminArgs(op: string, args: Record<string, unknown>): void {
  const spec = ADMIN_ARGS[op]!
  for (const [k, s] of Object.entries(spec)) {
    const v = Object.hasOwn(args, k) ? args[k] : undefined
    if (v === undefined) {
      if (s.required) throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `${op} needs the argument ${k} (${TYPE_WORDS[s.type]})`)
      continue
    }
    if (!hasType(v, s.type)) throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `${op}: ${k} must be ${TYPE_WORDS[s.type]}`)
  }
  if (op === 'listpols') for (const k of Object.keys(args)) throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `unknown field ${JSON.stringify(k)}`)
}

/** The wire form of a result: plain MessagePack (no undefined, no functions; a Set, such as an ACL rule's letters, as an array). */
export function wireValue(v: unknown): unknown {
  if (v === undefined || v === null || typeof v !== 'object' || v instanceof Uint8Array) return v
  if (Array.isArray(v)) return v.map(wireValue)
  if (v instanceof Set) return [...v].map(wireValue)
  const out: Record<string, unknown> = {}
  for (const [k, x] of Object.entries(v)) if (x !== undefined && typeof x !== 'function') out[k] = wireValue(x)
  return out
}

const CODES: Partial<Record<string, number>> = {
  [TesseraErrorCode.TESSERA_NOT_AUTHORIZED]: ErrorCode.TSR_ERR_NOT_AUTHORIZED,
  [TesseraErrorCode.TESSERA_NOT_FOUND]: ErrorCode.ADM_ERR_NOT_FOUND,
  [TesseraErrorCode.TESSERA_EXISTS]: ErrorCode.ADM_ERR_EXISTS,
  [TesseraErrorCode.TESSERA_PASSWORD_POLICY]: ErrorCode.ADM_ERR_PASSWORD_POLICY,
  [TesseraErrorCode.TESSERA_PROTECTED]: ErrorCode.ADM_ERR_PROTECTED,
  [TesseraErrorCode.TESSERA_VALIDATION]: ErrorCode.ADM_ERR_BAD_REQUEST,
  [TesseraErrorCode.TESSERA_BAD_NAME]: ErrorCode.ADM_ERR_BAD_REQUEST,
  [TesseraErrorCode.TESSERA_ACL]: ErrorCode.ADM_ERR_BAD_REQUEST,
  [TesseraErrorCode.TESSERA_AUDIT]: ErrorCode.KDC_ERR_SVC_UNAVAILABLE,
}

/** (code, text) of a refusal; undefined for a bug (answered as an internal error, logged). */
export const mapAdminError: AdminErrorMapper = (err) => {
  if (err instanceof TesseraError) {
    let code = CODES[err.code]
    if (code === ErrorCode.ADM_ERR_EXISTS && /still used/.test(err.message)) code = ErrorCode.ADM_ERR_IN_USE
    if (code !== undefined) return { code, text: err.message }
    return undefined
  }
  // Arguments of the wrong type reach the operations as programmer errors.
  if (err instanceof TypeError || err instanceof RangeError) return { code: ErrorCode.ADM_ERR_BAD_REQUEST, text: `bad arguments: ${err.message}` }
  return undefined
}

/** The admin service, for StartKdcOptions.admin (the daemon and startKdc use it by default). */
export function adminService(o: AdminServiceOptions = {}): AdminServiceFactory {
  return async ({ context, dir }) => {
    const realm = context.realm.realm
    const admin = { realm, components: ['admin'] }
    const acl: AclFile | Acl =
      dir !== undefined
        ? AclFile.open(path.join(dir, ACL_FILE), {
            realm,
            log: { error: (m: string) => context.log.ops.error(m), info: (m: string) => context.log.ops.info(m) },
          })
        : Acl.parse(o.aclText ?? defaultAcl(admin), { realm })
    // The current audit epoch's key (src/db; a master-key use moves the open log to the next one).
    const key = context.db.derivedKey('tessera audit v1')
    const file = dir !== undefined ? path.join(dir, AUDIT_FILE) : (o.auditFile ?? path.join(os.tmpdir(), `tessera-audit-${process.pid}-${hkdfTag(key)}.log`))
    let audit: AuditLog
    let events: EventLog<KeyEvent>
    try {
      audit = await AuditLog.open({ file, db: context.db, key, now: context.now, log: { error: (m: string) => context.log.ops.error(m) } })
      try {
        events = await EventLog.open<KeyEvent>({ db: context.db, ...context.config.events, now: context.now })
      } catch (err) {
        await audit.close()
        throw err
      }
    } catch (err) {
      if (acl instanceof AclFile) acl.close()
      wipe(key)
      throw err
    }
    // The AS's lockouts go through the same log (a batch of their own: PrincipalDb.attemptPreauth group-commits the counters).
    context.events = {
      publish: (e) => {
        events.append([e as KeyEvent]).catch((err: unknown) => context.log.ops.error(`event log: cannot write a ${e.type} event: ${(err as Error).message}`))
      },
    }
    const ctxOpts: ConstructorParameters<typeof AdminContext>[0] = {
      db: context.db,
      realm,
      acl,
      audit,
      kdf: context.config.kdf ?? DEFAULT_KDF_PARAMS,
      maxLife: context.config.principalMaxLifeMs,
      maxRenewableLife: context.config.principalMaxRenewableLifeMs,
      maxTicketLife: context.config.maxTicketLifeMs,
      now: context.now,
      events,
    }
    if (o.onEvent) ctxOpts.onEvent = o.onEvent
    if (o.minRotateEveryMs !== undefined) ctxOpts.minRotateEveryMs = o.minRotateEveryMs
    const ctx = new AdminContext(ctxOpts)
    let scheduler: RotationScheduler | undefined
    if (o.scheduler !== false) {
      scheduler = new RotationScheduler(ctx, { onError: (m) => context.log.ops.error(m), ...o.scheduler })
      scheduler.start()
      o.onScheduler?.(scheduler)
    }
    let webhooks: WebhookOutbox | undefined
    if (context.config.webhooks !== undefined && context.config.webhooks.length > 0) {
      webhooks = new WebhookOutbox({
        log: events,
        db: context.db,
        hooks: context.config.webhooks,
        realm,
        signingKey: () => context.realm.signingKey,
        logger: { warn: (m) => context.log.ops.warn(m), error: (m) => context.log.ops.error(m) },
        ...o.webhookBackoff,
      })
      await webhooks.start()
      context.webhooks = webhooks
      o.onWebhooks?.(webhooks)
    }
    const control =
      dir !== undefined && o.masterKeyControl !== false
        ? await MasterKeyControl.start({
            dir,
            db: context.db,
            audit,
            log: { info: (m, meta) => context.log.ops.info(m, meta), error: (m, meta) => context.log.ops.error(m, meta) },
            ...(o.masterKeyControl ? { options: o.masterKeyControl } : {}),
          })
        : undefined
    const dumps = new RemoteDumps(dir)
    const ops = operations(dumps)
    const exec: AdminExecutor = async (who: AdminActor, op: string, args: Record<string, unknown>) => {
      const actor: Actor = { kind: 'principal', principal: who.id, via: who.changepwOnly ? 'changepw' : 'admin', initial: true, peer: who.peer, authtime: who.authtime }
      const run = Object.hasOwn(ops, op) ? ops[op] : undefined
      try {
        if (!run) throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `unknown admin operation ${JSON.stringify(op)} (one of: ${Object.keys(ops).join(', ')})`)
        checkAdminArgs(op, args)
      } catch (err) {
        // Refused before the operation: audited here (the operation audits its own refusals).
        const ev: AuditEvent = {
          actor: actorName(actor),
          op: auditText(op),
          outcome: 'error',
          code: TesseraErrorCode.TESSERA_VALIDATION,
          reason: auditText((err as Error).message),
          peer: who.peer,
        }
        if (typeof args.name === 'string') ev.target = auditText(args.name)
        await audit.record(ev)
        throw err
      }
      return wireValue(await run!(ctx, actor, args))
    }
    return {
      exec,
      mapError: mapAdminError,
      stop() {
        // Long polls answer now (with what they have), so that the listeners drain at once.
        events.close()
        control?.stop()
      },
      async close() {
        await control?.close()
        await dumps.close()
        events.close()
        await webhooks?.close()
        delete context.webhooks
        delete context.events
        await scheduler?.close()
        if (acl instanceof AclFile) acl.close()
        await audit.close()
        wipe(key)
      },
    }
  }
}

/** A short tag for a temp audit file name (not secret: a hash of the audit key would do, this is a derived label). */
function hkdfTag(key: Uint8Array): string {
  return Buffer.from(hkdf(key, new Uint8Array(0), 'tessera audit file tag', 6)).toString('hex')
}
