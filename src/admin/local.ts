/**
 * `kadmin --local`: the realm directory's database opened directly (the daemon stopped), with
 * the same operation functions as the admin listener, audited as the local Unix user. Also the
 * realm-directory side of `kadmin load` (stash, realm.json, listen.json around loadDump).
 */
import { type PurgeKeysArgs, type PurgeKeysResult, purgeKeys, type RotateArgs, type RotateResult, rotateKey } from './rotation.js'
import { constants as fsc } from 'node:fs'
import { access, open, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { DEFAULT_KDF_PARAMS, wipe } from '../crypto/index.js'
import { EventLog } from '../db/event-log.js'
import { encodeStash, type MasterKeyEntry, readStashKeys } from '../db/master-key.js'
import { PrincipalDb } from '../db/principal-db.js'
import type { Policy } from '../db/types.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { advertisedHost, DEFAULT_KDC_CONFIG, type KdcConfig } from '../kdc/config.js'
import { makeRealmFile, REALM_FILES, writeRealmFile } from '../kdc/realm.js'
import { loadRealmFile } from '../krb/realm-file.js'
import { AclFile, type AclExplanation } from './acl.js'
import { AUDIT_FILE, AuditLog } from './audit.js'
import {
  type ActivateIdentityArgs,
  activateIdentity,
  getIdentity,
  type IdentityView,
  type RotateIdentityArgs,
  retireIdentity,
  rotateIdentity,
} from './identity.js'
import { ACL_FILE, DB_DIR, dumpDatabase, loadDump } from './dump.js'
import {
  type AclCheckArgs,
  type Actor,
  type AddPrincipalArgs,
  AdminContext,
  addPolicy,
  addPrincipal,
  changeKey,
  checkAcl,
  deletePolicy,
  deletePrincipal,
  type ExtractArgs,
  extractKeys,
  getPolicy,
  getPrincipal,
  type KeyEvent,
  type KeyResult,
  listPolicies,
  listPrincipals,
  type ModifyPrincipalArgs,
  modifyPolicy,
  modifyPrincipal,
  type PolicyArgs,
  type PrincipalView,
  type ReadAuditArgs,
  readAudit,
  renamePrincipal,
} from './operations.js'

/** Options of {@link openLocalAdmin}. */
export interface LocalAdminOptions {
  /** The realm directory (kdc init's layout). */
  dir: string
  /** The local Unix user, for the audit log (`local:USER`). */
  user: string
  /** The KDC configuration (KDF of new password keys, lifetimes of new principals). @default DEFAULT_KDC_CONFIG */
  config?: KdcConfig
  /** Where ACL and audit problems are reported. */
  log?: { error(message: string): void }
}

/** Where realm.json says the daemon's admin listener is, for the "a kdc is running" message. */
async function daemonWhere(dir: string): Promise<string> {
  try {
    const rf = await loadRealmFile(path.join(dir, REALM_FILES.realmFile))
    const k = rf.kdcs[0]
    if (k !== undefined) return ` (realm ${rf.realm}, admin listener ${k.host}:${k.admin} per ${path.join(dir, REALM_FILES.realmFile)})`
  } catch {
    // No realm file: the message names the directory only.
  }
  return ''
}

/** The operations of a realm directory opened locally; method names and results as AdminClient's. */
export class LocalAdmin {
  readonly #actor: Actor

  private constructor(
    readonly ctx: AdminContext,
    readonly dir: string,
    actor: Actor,
    readonly auditKey: Uint8Array,
    private readonly closeAll: () => Promise<void>,
  ) {
    this.#actor = actor
  }

  /**
   * Open `dir` for local administration: its stash, database, ACL (for the last-admin rule and
   * dump) and audit log. TESSERA_DB_LOCKED, naming the running daemon, when a kdc holds it.
   */
  static async open(o: LocalAdminOptions): Promise<LocalAdmin> {
    const c = o.config ?? DEFAULT_KDC_CONFIG
    const masterKeys = await readStashKeys(path.join(o.dir, REALM_FILES.stash))
    let db: PrincipalDb | undefined
    let acl: AclFile | undefined
    let key: Uint8Array = new Uint8Array(0)
    try {
      try {
        db = await PrincipalDb.open({ location: path.join(o.dir, DB_DIR), masterKeys })
      } catch (err) {
        if (err instanceof TesseraError && err.code === TesseraErrorCode.TESSERA_DB_LOCKED)
          throw new TesseraError(
            TesseraErrorCode.TESSERA_DB_LOCKED,
            `a kdc is running on ${o.dir}${await daemonWhere(o.dir)} and holds its database: ` +
              'use kadmin without --local to go through its admin listener, or stop the daemon first',
            { cause: err },
          )
        throw err
      }
      key = db.derivedKey('tessera audit v1')
      const realm = (await db.getRealm())?.realm
      if (realm === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `${o.dir} holds no realm (no realm record in its database)`)
      acl = AclFile.open(path.join(o.dir, ACL_FILE), { realm, watch: false, ...(o.log ? { log: o.log } : {}) })
      const audit = await AuditLog.open({ file: path.join(o.dir, AUDIT_FILE), db, key, ...(o.log ? { log: o.log } : {}) })
      // Changes made with the daemon stopped reach watchers and webhooks once it runs again.
      const events = await EventLog.open<KeyEvent>({ db, ...c.events })
      const ctx = new AdminContext({
        events,
        db,
        realm,
        acl,
        audit,
        kdf: c.kdf ?? DEFAULT_KDF_PARAMS,
        maxLife: c.principalMaxLifeMs,
        maxRenewableLife: c.principalMaxRenewableLifeMs,
      })
      const d = db
      const a = acl
      return new LocalAdmin(ctx, o.dir, { kind: 'local', user: o.user }, key, async () => {
        a.close()
        await audit.close().catch(() => {})
        await d.close()
        wipe(key)
      })
    } catch (err) {
      acl?.close()
      await db?.close().catch(() => {})
      wipe(key)
      throw err
    } finally {
      for (const m of masterKeys) wipe(m.key)
    }
  }

  /** KDC identity-key rotation steps (src/admin/identity.ts), by admin operation name. */
  identity(op: 'rotate-identity' | 'activate-identity' | 'retire-identity' | 'get-identity', args: Record<string, unknown> = {}): Promise<IdentityView> {
    switch (op) {
      case 'rotate-identity':
        return rotateIdentity(this.ctx, this.#actor, args as RotateIdentityArgs)
      case 'activate-identity':
        return activateIdentity(this.ctx, this.#actor, args as ActivateIdentityArgs)
      case 'retire-identity':
        return retireIdentity(this.ctx, this.#actor, args as Record<string, never>)
      case 'get-identity':
        return getIdentity(this.ctx, this.#actor)
    }
  }

  /** The realm administered. */
  get realm(): string {
    return this.ctx.realm
  }

  /** Who the audit log names: `local:USER`. */
  get principal(): string {
    return this.#actor.kind === 'local' ? `local:${this.#actor.user}` : ''
  }

  addPrincipal(args: AddPrincipalArgs): Promise<KeyResult> {
    return addPrincipal(this.ctx, this.#actor, args)
  }
  deletePrincipal(name: string): Promise<void> {
    return deletePrincipal(this.ctx, this.#actor, { name })
  }
  renamePrincipal(name: string, newName: string): Promise<void> {
    return renamePrincipal(this.ctx, this.#actor, { name, newName })
  }
  modifyPrincipal(args: ModifyPrincipalArgs): Promise<PrincipalView> {
    return modifyPrincipal(this.ctx, this.#actor, args)
  }
  getPrincipal(name: string): Promise<PrincipalView> {
    return getPrincipal(this.ctx, this.#actor, { name })
  }
  listPrincipals(glob?: string): Promise<string[]> {
    return listPrincipals(this.ctx, this.#actor, glob === undefined ? {} : { glob })
  }
  changePassword(name: string, password: string, o: { keepold?: boolean } = {}): Promise<KeyResult> {
    return changeKey(this.ctx, this.#actor, { name, password, ...(o.keepold ? { keepold: true } : {}) })
  }
  randomizeKey(name: string, o: { keepold?: boolean } = {}): Promise<KeyResult> {
    return changeKey(this.ctx, this.#actor, { name, randkey: true, ...(o.keepold ? { keepold: true } : {}) })
  }
  extractKeys(name: string, o: Omit<ExtractArgs, 'name'> = {}): Promise<KeyResult> {
    return extractKeys(this.ctx, this.#actor, { name, ...o })
  }
  rotateKey(args: RotateArgs): Promise<RotateResult> {
    return rotateKey(this.ctx, this.#actor, args)
  }
  purgeKeys(args: PurgeKeysArgs): Promise<PurgeKeysResult> {
    return purgeKeys(this.ctx, this.#actor, args)
  }
  addPolicy(args: PolicyArgs): Promise<Policy> {
    return addPolicy(this.ctx, this.#actor, args)
  }
  modifyPolicy(args: PolicyArgs): Promise<Policy> {
    return modifyPolicy(this.ctx, this.#actor, args)
  }
  deletePolicy(name: string): Promise<void> {
    return deletePolicy(this.ctx, this.#actor, { name })
  }
  getPolicy(name: string): Promise<Policy> {
    return getPolicy(this.ctx, this.#actor, { name })
  }
  listPolicies(): Promise<string[]> {
    return listPolicies(this.ctx, this.#actor)
  }
  checkAcl(args: AclCheckArgs): Promise<AclExplanation> {
    return checkAcl(this.ctx, this.#actor, args)
  }
  readAudit(args: ReadAuditArgs = {}) {
    return readAudit(this.ctx, this.#actor, args)
  }

  /** dump FILE (0600, keys still sealed); `onProgress` every 1000 entries. */
  dump(file: string, onProgress?: (entries: number) => void): Promise<{ entries: number; sha256: string }> {
    return dumpDatabase(this.ctx, this.#actor, file, onProgress ? { onProgress } : {})
  }

  /** About how many entries a dump writes (principals, policies and a few realm records), for a progress bar. */
  async estimateEntries(): Promise<number> {
    const principals = (await this.ctx.db.list()).length
    const policies = (await this.ctx.db.listPolicies()).length
    return principals * 2 + policies + 8
  }

  async close(): Promise<void> {
    await this.closeAll()
  }
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p, fsc.F_OK)
    return true
  } catch {
    return false
  }
}

/** Write `keys` as a stash file (one kvno-1 key: the plain 32-byte form): created exclusively, mode 0600, synced. */
async function writeStash(file: string, keys: readonly MasterKeyEntry[]): Promise<void> {
  const bytes = encodeStash(keys)
  try {
    const fh = await open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600)
    try {
      await fh.chmod(0o600)
      await fh.writeFile(bytes)
      await fh.sync()
    } finally {
      await fh.close()
    }
  } finally {
    bytes.fill(0)
  }
}

/** Options of {@link loadRealmDir}. */
export interface LoadRealmDirOptions {
  file: string
  /** The new realm directory: must hold no realm yet. */
  dir: string
  /** The master keys the dump was made under (the source realm's stash, {@link readStashKeys}: one key, or several mid-rotation). Copied into `dir/stash`. */
  masterKeys: readonly MasterKeyEntry[]
  user: string
  /** Where the new realm's listeners bind and what realm.json tells clients. @default DEFAULT_KDC_CONFIG */
  config?: KdcConfig
  onProgress?: (entries: number) => void
}

/**
 * `kadmin load FILE --dir NEWDIR`: loadDump into a new realm directory, then the rest of kdc
 * init's layout: the stash (the source's master key), listen.json and, when no port is 0,
 * realm.json (kdc start rewrites it with the addresses bound). On failure nothing is left.
 */
export async function loadRealmDir(o: LoadRealmDirOptions): Promise<{ realm: string; entries: number; sha256: string }> {
  const c = o.config ?? DEFAULT_KDC_CONFIG
  for (const f of [REALM_FILES.stash, REALM_FILES.db, REALM_FILES.realmFile, REALM_FILES.listen, REALM_FILES.acl, REALM_FILES.audit])
    if (await exists(path.join(o.dir, f)))
      throw new TesseraError(TesseraErrorCode.TESSERA_REALM_EXISTS, `${o.dir} already holds a realm (${f} exists): load only into a new realm directory`)
  const r = await loadDump({
    file: o.file,
    dir: o.dir,
    masterKeys: o.masterKeys,
    actor: { kind: 'local', user: o.user },
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
  })
  const written = [REALM_FILES.stash, REALM_FILES.listen, REALM_FILES.realmFile].map((f) => path.join(o.dir, f))
  try {
    await writeStash(written[0]!, o.masterKeys)
    const listen = { host: c.host, ...(c.advertiseHost !== undefined ? { advertiseHost: c.advertiseHost } : {}), ports: { ...c.ports } }
    await writeFile(written[1]!, `${JSON.stringify(listen, null, 2)}\n`, { mode: 0o644, flag: 'wx' })
    if (Object.values(c.ports).every((p) => p !== 0)) {
      const db = await PrincipalDb.open({ location: path.join(o.dir, DB_DIR), masterKeys: o.masterKeys })
      try {
        const realm = await db.getRealm()
        if (realm !== undefined) await writeRealmFile(written[2]!, makeRealmFile(realm, [{ host: advertisedHost(c), ...c.ports }], c.maxClockSkewMs))
      } finally {
        await db.close()
      }
    }
  } catch (err) {
    for (const f of [...written, path.join(o.dir, DB_DIR), path.join(o.dir, AUDIT_FILE), path.join(o.dir, ACL_FILE)])
      await rm(f, { recursive: true, force: true })
    throw err
  }
  return r
}
