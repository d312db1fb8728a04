/** Realm creation: identity keys, krbtgt, kadmin principals, the first admin; `kdc init` on disk. */
import { randomBytes } from 'node:crypto'
import { constants as fsc } from 'node:fs'
import { access, mkdir, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import {
  constantTimeEqual,
  defaultSalt,
  ed25519KeyPair,
  identityKeyId,
  type KdfParams,
  passwordToKey,
  randomKey,
  x25519KeyPair,
} from '../crypto/index.js'
import { createStash } from '../db/master-key.js'
import { checkPrincipalId, checkRealm, formatName } from '../db/names.js'
import { PrincipalDb } from '../db/principal-db.js'
import type { KeyVersion, PrincipalAttributes, PrincipalRecord, RealmRecord } from '../db/types.js'
import { defaultAcl } from '../admin/acl.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { type RealmFile, realmFileJson } from '../krb/realm-file.js'
import { advertisedHost, DEFAULT_KDC_CONFIG, type KdcConfig, type KdcConfigInput } from './config.js'

/** Files of a realm directory. */
export const REALM_FILES = {
  stash: 'stash',
  db: 'db',
  realmFile: 'realm.json',
  /** Where the listeners bind, as `kdc init` was told: what `kdc start` uses unless told otherwise. */
  listen: 'listen.json',
  logs: 'log',
  /** Who may administer the realm (MIT kadm5.acl syntax; docs/admin.md). */
  acl: 'kadm5.acl',
  /** The tamper-evident audit log of admin requests. */
  audit: 'audit.log',
} as const

/** The listener settings of a realm directory (DIR/listen.json). */
export type ListenSettings = Pick<KdcConfigInput, 'host' | 'advertiseHost' | 'ports'>

/** The listener settings `kdc init` recorded in `dir`, or {} for a realm made before they were recorded. */
export async function readListenSettings(dir: string): Promise<ListenSettings> {
  const file = path.join(dir, REALM_FILES.listen)
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {}
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot read ${file}: ${(err as Error).message}`, { cause: err })
  }
  let o: Record<string, unknown>
  try {
    o = JSON.parse(text) as Record<string, unknown>
  } catch (err) {
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `${file} is not valid JSON`, { cause: err })
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `${file} is not a JSON object`)
  const out: ListenSettings = {}
  for (const k of Object.keys(o))
    if (k !== 'host' && k !== 'advertiseHost' && k !== 'ports') throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `${file}: unknown setting "${k}"`)
  if (o.host !== undefined) out.host = o.host as string
  if (o.advertiseHost !== undefined) out.advertiseHost = o.advertiseHost as string
  if (o.ports !== undefined) out.ports = o.ports as ListenSettings['ports'] & object
  return out // validated with the rest of the configuration (resolveKdcConfig)
}

function listenSettingsOf(c: KdcConfig): ListenSettings {
  return { host: c.host, ...(c.advertiseHost !== undefined ? { advertiseHost: c.advertiseHost } : {}), ports: { ...c.ports } }
}

/** Options of a new principal record. */
export interface NewPrincipalOptions {
  realm: string
  components: string[]
  /** A password (key derived with kdf) or a random key when both are absent. */
  password?: string | undefined
  key?: Uint8Array | undefined
  kvno?: number
  kdf: KdfParams
  attributes?: PrincipalAttributes
  maxLife: number
  maxRenewableLife: number
  policy?: string | undefined
  by: string
  now: number
}

/** Derive (or draw) a key version for a principal. */
export async function makeKeyVersion(o: {
  realm: string
  components: string[]
  password?: string | undefined
  key?: Uint8Array | undefined
  kvno: number
  kdf: KdfParams
  now: number
}): Promise<KeyVersion> {
  if (o.password !== undefined) {
    const salt = defaultSalt(o.realm, formatName(o.components))
    return { kvno: o.kvno, key: await passwordToKey(o.password, salt, o.kdf), kdf: { ...o.kdf }, salt, createdAt: o.now }
  }
  return { kvno: o.kvno, key: o.key ?? randomKey(), createdAt: o.now }
}

/** A complete principal record, ready for db.create(). */
export async function newPrincipalRecord(o: NewPrincipalOptions): Promise<PrincipalRecord> {
  const key = await makeKeyVersion({ ...o, kvno: o.kvno ?? 1 })
  // No ticket sealed with this version outlives maxLife (raised by modprinc; src/admin/key-lifecycle.ts).
  key.sealLifeMs = o.maxLife
  const rec: PrincipalRecord = {
    realm: o.realm,
    components: o.components,
    attributes: { requiresPreauth: true, ...o.attributes },
    maxLife: o.maxLife,
    maxRenewableLife: o.maxRenewableLife,
    keys: [key],
    createdAt: o.now,
    createdBy: o.by,
    modifiedAt: o.now,
    modifiedBy: o.by,
    failureCount: 0,
  }
  if (o.policy !== undefined) rec.policy = o.policy
  return rec
}

/** Longest life of a kadmin/admin ticket (MIT: 3 h). */
export const KADMIN_ADMIN_MAX_LIFE_MS = 3 * 3600_000
/** Longest life of a kadmin/changepw ticket (MIT: 5 min). */
export const KADMIN_CHANGEPW_MAX_LIFE_MS = 5 * 60_000

/** Options of bootstrapRealm. */
export interface BootstrapOptions {
  realm: string
  /** @default "admin" */
  adminName?: string
  adminPassword: string
  config?: KdcConfig
  now?: number
}

/** Fill an empty database with a realm: identity keys, krbtgt/REALM, kadmin/admin, kadmin/changepw, the admin. */
export async function bootstrapRealm(db: PrincipalDb, o: BootstrapOptions): Promise<RealmRecord> {
  const c = o.config ?? DEFAULT_KDC_CONFIG
  const now = o.now ?? Date.now()
  const realmRec: RealmRecord = {
    realm: o.realm,
    createdAt: now,
    transportKey: x25519KeyPair(),
    signingKey: ed25519KeyPair(),
  }
  await db.putRealm(realmRec)
  const base = {
    realm: o.realm,
    kdf: c.kdf,
    maxLife: c.principalMaxLifeMs,
    maxRenewableLife: c.principalMaxRenewableLifeMs,
    by: 'kdc init',
    now,
  }
  await db.create(await newPrincipalRecord({ ...base, components: ['krbtgt', o.realm] }))
  // Short-lived, as MIT makes them: an admin session is 3 h at most, a password change 5 min.
  await db.create(await newPrincipalRecord({ ...base, components: ['kadmin', 'admin'], maxLife: KADMIN_ADMIN_MAX_LIFE_MS }))
  await db.create(await newPrincipalRecord({ ...base, components: ['kadmin', 'changepw'], maxLife: KADMIN_CHANGEPW_MAX_LIFE_MS }))
  const admin = (o.adminName ?? 'admin').split('/')
  await db.create(await newPrincipalRecord({ ...base, components: admin, password: o.adminPassword }))
  return realmRec
}

/** The realm file for a realm record and addresses. */
export function makeRealmFile(realm: RealmRecord, kdcs: RealmFile['kdcs'], maxClockSkewMs: number): RealmFile {
  const rf: RealmFile = {
    realm: realm.realm,
    kdcs,
    transportKey: realm.transportKey.publicKey,
    signingKey: realm.signingKey.publicKey,
    maxClockSkewMs,
  }
  // A staged identity rotation is published before any client needs it (PROTOCOL.md §11).
  if (realm.nextTransportKey !== undefined) rf.nextTransportKey = realm.nextTransportKey.publicKey
  if (realm.nextSigningKey !== undefined) rf.nextSigningKey = realm.nextSigningKey.publicKey
  if (realm.nextActivatesAt !== undefined && (rf.nextTransportKey !== undefined || rf.nextSigningKey !== undefined))
    rf.nextKeysActiveFrom = realm.nextActivatesAt
  return rf
}

type Pair = RealmRecord['transportKey']

/** The transport key pair the KDC uses for a client that names none (HS_INIT without `k`) at `now`. */
export function activeTransportPair(realm: RealmRecord, now: number): Pair {
  return realm.nextTransportKey !== undefined && now >= (realm.nextActivatesAt ?? 0) ? realm.nextTransportKey : realm.transportKey
}

/** The signing key pair of time answers that name none, and of JWTs, at `now`. */
export function activeSigningPair(realm: RealmRecord, now: number): Pair {
  return realm.nextSigningKey !== undefined && now >= (realm.nextActivatesAt ?? 0) ? realm.nextSigningKey : realm.signingKey
}

/**
 * The pair a client names by key id (HS_INIT / TIME_REQ `k`, a resumption ticket), among those
 * held; with no id, the active one. Undefined: an id the KDC does not hold (retired, or foreign).
 */
export function pairForKeyId(realm: RealmRecord, which: 'transport' | 'signing', kid: Uint8Array | undefined, now: number): Pair | undefined {
  if (kid === undefined) return which === 'transport' ? activeTransportPair(realm, now) : activeSigningPair(realm, now)
  return heldPairs(realm, which).find((p) => constantTimeEqual(identityKeyId(p.publicKey), kid))
}

/** Every transport (or signing) key pair the KDC answers to now: current, next, previous. */
export function heldPairs(realm: RealmRecord, which: 'transport' | 'signing'): Pair[] {
  const list = which === 'transport'
    ? [realm.transportKey, realm.nextTransportKey, realm.previousTransportKey]
    : [realm.signingKey, realm.nextSigningKey, realm.previousSigningKey]
  return list.filter((p): p is Pair => p !== undefined)
}

/** Write realm.json (world-readable: it holds nothing secret). */
export async function writeRealmFile(file: string, r: RealmFile): Promise<void> {
  // An unpredictable name, created exclusively ('wx'): never written through a link planted at it.
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`
  await writeFile(tmp, `${JSON.stringify(realmFileJson(r), null, 2)}\n`, { mode: 0o644, flag: 'wx' })
  const { rename } = await import('node:fs/promises')
  try {
    await rename(tmp, file)
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {})
    throw err
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

/** Options of initRealmDir (`kdc init`). */
export interface InitRealmOptions {
  dir: string
  realm: string
  adminName?: string
  adminPassword: string
  config?: KdcConfig
}

/** Create a realm in `dir`. Refuses a directory that already holds a realm. */
export async function initRealmDir(o: InitRealmOptions): Promise<RealmFile> {
  const c = o.config ?? DEFAULT_KDC_CONFIG
  for (const f of Object.values(REALM_FILES))
    if (f !== 'log' && (await exists(path.join(o.dir, f))))
      throw new TesseraError(TesseraErrorCode.TESSERA_REALM_EXISTS, `${o.dir} already holds a realm (${f} exists); refusing to touch it`)
  // Check every name before creating anything, so a typo leaves nothing behind.
  checkRealm(o.realm)
  checkPrincipalId({ realm: o.realm, components: (o.adminName ?? 'admin').split('/') })
  if (o.adminPassword.length === 0) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'the admin password is empty')
  await mkdir(o.dir, { recursive: true, mode: 0o700 })
  const created = [REALM_FILES.stash, REALM_FILES.db, REALM_FILES.realmFile, REALM_FILES.listen, REALM_FILES.acl].map((f) => path.join(o.dir, f))
  let masterKey: Uint8Array | undefined
  let db: PrincipalDb | undefined
  try {
    masterKey = await createStash(created[0]!)
    db = await PrincipalDb.open({ location: created[1]!, masterKey })
    const realm = await bootstrapRealm(db, {
      realm: o.realm,
      adminPassword: o.adminPassword,
      config: c,
      ...(o.adminName ? { adminName: o.adminName } : {}),
    })
    const rf = makeRealmFile(realm, [{ host: advertisedHost(c), ...c.ports }], c.maxClockSkewMs)
    // Port 0 is "any free port": only kdc start knows the port, and writes realm.json then.
    // A realm file with port 0 would be of no use to a client.
    if (Object.values(c.ports).every((p) => p !== 0)) await writeRealmFile(created[2]!, rf)
    await writeFile(created[3]!, `${JSON.stringify(listenSettingsOf(c), null, 2)}\n`, { mode: 0o644, flag: 'wx' })
    // The initial admin gets every permission, extract included.
    await writeFile(created[4]!, defaultAcl({ realm: o.realm, components: (o.adminName ?? 'admin').split('/') }), { mode: 0o600, flag: 'wx' })
    await db.close()
    db = undefined
    return rf
  } catch (err) {
    // Half a realm is worse than none: remove what this call created.
    await db?.close().catch(() => {})
    db = undefined
    for (const f of created) await rm(f, { recursive: true, force: true })
    throw err
  } finally {
    await db?.close()
    masterKey?.fill(0)
  }
}
