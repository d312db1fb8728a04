/** The principal database over abstract-level: principals, key versions, policies, realm keys, lockout counters. */
import { mkdir } from 'node:fs/promises'
import type { AbstractBatchOptions, AbstractLevel, AbstractSublevel } from 'abstract-level'
import { Level } from 'level'
import { MemoryLevel } from 'memory-level'
import { KeyUsage } from '../../proto/key-usage.js'
import { hkdf, hmacSha256, type KdfParams, randomBytes, seal, tryOpen, wipe } from '../crypto/index.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { decode, encode } from '../wire/codec.js'
import { mayRotate } from './key-states.js'
import { KeyedMutex } from './mutex.js'
import { LruCache } from './lru.js'
import { MASTER_KEY_BYTES, type MasterKeyEntry } from './master-key.js'
import {
  checkPrincipalId,
  checkRealm,
  formatName,
  formatPrincipal,
  isValidPrincipalId,
  lengthPrefixed,
  principalFromKey,
  principalKey,
  samePrincipal,
} from './names.js'
import { checkPolicy, checkPolicyName } from './policy.js'
import type {
  AttemptOutcome,
  FailureOutcome,
  KeyVersion,
  LockoutState,
  Policy,
  PreauthCheck,
  PrincipalId,
  PrincipalRecord,
  RealmRecord,
} from './types.js'

export { DEFAULT_POLICY } from './policy.js'

/** Any abstract-level database; PrincipalDb sets the encodings it needs on its own sublevels. */
// biome-ignore lint/suspicious/noExplicitAny: the store is written against any abstract-level backend
export type AnyLevel = AbstractLevel<any, any, any>

/** Options of {@link PrincipalDb.open}. */
export interface PrincipalDbOptions {
  /** LevelDB directory, created (mode 0700) if missing. Absent (and no `db`): an in-memory database (memory-level). */
  location?: string
  /**
   * An abstract-level database to use instead of `location`, e.g. another backend. PrincipalDb
   * opens it if needed and closes it on close(). One PrincipalDb per database: the cache and
   * the mutexes are per instance.
   */
  db?: AnyLevel
  /** The realm master key, 32 bytes, as kvno 1 (a realm whose master key was never rotated). Copied. */
  masterKey?: Uint8Array
  /**
   * Every master key of the stash ({@link readStashKeys}), instead of `masterKey`. The database
   * says which one seals (`master-keys` record, see {@link PrincipalDb.masterKeyStatus}); a
   * stash key the database does not know yet is ignored (a `kdc master-key add` cut short).
   */
  masterKeys?: readonly MasterKeyEntry[]
  /** Principals kept decoded in the LRU cache at most; 0 disables it. @default 200000 */
  cacheSize?: number
  /**
   * Bytes the LRU cache of decoded principals holds at most, by an estimate of each record's
   * size in memory ({@link cacheEntryBytes}: about 1.85 KB for a principal with one key in use).
   * Misses read the store (docs/decisions/0012-principal-cache.md). @default 67108864 (64 MiB)
   */
  cacheBytes?: number
  /** LevelDB's own block cache (records as stored: keys sealed), bytes; `location` only. @default 8388608 (8 MiB, LevelDB's default) */
  storeCacheBytes?: number
  /** LevelDB's block size for tables it writes from now on, bytes; `location` only. @default 4096 (LevelDB's default) */
  storeBlockSize?: number
  /**
   * Read a principal missing from the cache synchronously when the store can (classic-level
   * and memory-level getSync), rather than through the threadpool (docs/decisions/0012-principal-cache.md). @default true
   */
  syncReads?: boolean
  /** Write `lastSuccess` on every successful login (one write per login). @default false */
  trackLastSuccess?: boolean
  /** Clock for `modifiedAt`, ms since epoch. @default Date.now */
  now?: () => number
}

/**
 * One record an admin write adds to its batch, in the `admin` sublevel (the audit head, an
 * event of the event log, say); with `del` instead of `value`, one it removes (an event past
 * its retention).
 */
export interface AdminMetaPut {
  key: string
  value: Uint8Array
  /** Remove the record instead (`value` is then ignored). */
  del?: true
}

/**
 * Options of the writing methods (create, update, delete, rename, putPolicy, deletePolicy).
 * `commit` wraps the write: it is called under the record's lock once the change is decided,
 * with `write`, which writes the change plus `extra` records (sublevel `admin`) as one synced
 * batch. It must call `write` exactly once (or throw, and nothing is written). The admin layer
 * uses it to anchor the audit log in the batch of the change it records.
 */
export interface WriteOptions {
  commit?: (write: (extra: AdminMetaPut[]) => Promise<void>) => Promise<void>
}

/** Defaults of {@link PrincipalDbOptions}. */
export const DEFAULT_PRINCIPAL_DB_OPTIONS = {
  cacheSize: 200_000,
  cacheBytes: 64 * 1024 * 1024,
  storeCacheBytes: 8 * 1024 * 1024,
  storeBlockSize: 4096,
  trackLastSuccess: false,
  syncReads: true,
} as const

/**
 * What one cached principal costs in memory, estimated from its stored size: the decoded
 * record (objects, strings, one Uint8Array per key) takes about 1.45 KB for a principal with
 * one key, and the usage subkey the KDC derives once it seals with that key (src/crypto/keys.ts
 * usageKey, kept as long as the key object lives) about 0.4 KB more (measured: V8 heap per
 * cached record, 20,000 records, after gc), and an absent name about its key string and map entry.
 */
export function cacheEntryBytes(storedBytes: number | undefined): number {
  return storedBytes === undefined ? 160 : 1250 + 2 * storedBytes
}

/** Records one {@link PrincipalDb.createMany} call takes at most (one batch in memory). */
export const MAX_CREATE_MANY = 10_000

/** Options of {@link PrincipalDb.list}. */
export interface ListOptions {
  /** Only principals of this realm. */
  realm?: string
  /**
   * '*' matches any run of characters, everything else matches itself. Matched against the
   * full `name/instance@REALM` if the pattern contains '@', else against `name/instance`.
   */
  glob?: string
  /** Stop after this many matches. */
  limit?: number
}

// Bumped when the stored form changes; a database written by a newer format is refused.
const FORMAT_VERSION = 1
// The value sealed in the check record: opening it proves the master key is the right one.
const CHECK_BINDING = 'tessera-db-check-v1'
// classic-level: fsync before the write is acknowledged (durability across a crash or kill -9).
// `sync` is a classic-level option, not part of abstract-level's batch options type.
const SYNC: AbstractBatchOptions<string, Uint8Array> & { sync: boolean } = { sync: true }

/** A key version as stored: the key sealed under the master key, the rest in clear. */
interface StoredKey extends Omit<KeyVersion, 'key'> {
  sealed: Uint8Array
}
/** A principal as stored. */
interface StoredPrincipal extends Omit<PrincipalRecord, 'keys' | 'passwordHistory'> {
  v: number
  /** Master key version the keys are sealed under (absent: 1). */
  mk?: number
  keys: StoredKey[]
  passwordHistory?: StoredKey[]
}
interface StoredKeyPair {
  publicKey: Uint8Array
  sealed: Uint8Array
}
interface StoredRealm {
  v: number
  /** Master key version the pairs are sealed under (absent: 1). */
  mk?: number
  realm: string
  createdAt: number
  transportKey: StoredKeyPair
  signingKey: StoredKeyPair
  nextTransportKey?: StoredKeyPair
  nextSigningKey?: StoredKeyPair
  nextActivatesAt?: number
  previousTransportKey?: StoredKeyPair
  previousSigningKey?: StoredKeyPair
}

/** The identity key roles of a realm record, with the role name their sealed form is bound to. */
const REALM_PAIRS = [
  ['transportKey', 'transport'],
  ['signingKey', 'signing'],
  ['nextTransportKey', 'next-transport'],
  ['nextSigningKey', 'next-signing'],
  ['previousTransportKey', 'previous-transport'],
  ['previousSigningKey', 'previous-signing'],
] as const

/** The master keys the database knows (meta `master-keys`); absent: kvno 1 alone. */
export interface MasterKeyStatus {
  /** The version new seals use. */
  active: number
  /** Every version the database knows (a stash must hold those records may still be sealed under). */
  known: number[]
  /** Set while `reseal` runs or was cut short: the version being resealed to, and the last principal key done. */
  reseal?: { target: number; after?: string }
}

/** Keys derived once from the first master key and kept (sealed) across master-key rotations. */
const DERIVED_LABELS = ['tessera kdf hint v1', 'tessera audit v1'] as const
/** HKDF label of an audit epoch's key (from the master key made active, with a fresh salt). */
const AUDIT_EPOCH_LABEL = 'tessera audit epoch v1'

type Sub = AbstractSublevel<AnyLevel, unknown, string, Uint8Array>

interface Load {
  promise: Promise<Readonly<PrincipalRecord> | undefined>
  /** Set when a write to the same principal completed while the load was running. */
  stale: boolean
}

function corrupt(what: string): never {
  throw new TesseraError(TesseraErrorCode.TESSERA_DB, `principal database: corrupt ${what}`)
}

function notFound(id: PrincipalId): never {
  throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `principal ${formatPrincipal(id)} does not exist`)
}

function isBytes(x: unknown): x is Uint8Array {
  return x instanceof Uint8Array
}

/** A private copy as a plain Uint8Array (decoded binaries are views into the record buffer). */
function copyBytes(b: Uint8Array): Uint8Array {
  return new Uint8Array(b)
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !isBytes(o) && !Object.isFrozen(o)) {
    // for-in over own keys (records are plain objects and arrays): no array of values per object.
    const r = o as Record<string, unknown>
    for (const k in r) if (Object.hasOwn(r, k)) deepFreeze(r[k])
    Object.freeze(o)
  }
  return o
}

/** Fields of a stored record, and of a stored key version, that the decoded one does not carry. */
const STORED_ONLY: ReadonlySet<string> = new Set(['v', 'mk', 'keys', 'passwordHistory'])
const SEALED_ONLY: ReadonlySet<string> = new Set(['sealed'])

/**
 * A shallow copy of `src`'s own fields but those in `skip`, built field by field: rest and
 * spread syntax would make it a dictionary-mode object in V8, slower to build, to freeze and
 * to read on every request. (The decoder never yields "__proto__" as a key.)
 */
function copyFieldsExcept(src: object, skip: ReadonlySet<string>): Record<string, unknown> {
  const o = src as Record<string, unknown>
  const out: Record<string, unknown> = {}
  for (const f in o) if (!skip.has(f) && Object.hasOwn(o, f)) out[f] = o[f]
  return out
}

/** Cached in place of a record for a name the store does not hold (unknown names are served from memory as known ones are). */
const ABSENT = Object.freeze({}) as Readonly<PrincipalRecord>

const RANDOM_KEY = 'random'
/** Resolution of the KDF-hint shares (see kdfHint). */
const HINT_STEPS = 16

function kdfKey(k: Readonly<KdfParams>): string {
  return `${k.alg}:${k.N}:${k.r}:${k.p}`
}

/** What the decoy write of {@link PrincipalDb.decoyFailure} stores (the size of a small counter record). */
const DECOY_VALUE = new Uint8Array(64)

const COUNTER_FIELDS = ['failureCount', 'failureWindowStart', 'lastFailure', 'lockedUntil', 'lastSuccess'] as const

/** The lockout counters of a record. */
function pickCounters(r: LockoutState): LockoutState {
  const c: LockoutState = { failureCount: r.failureCount }
  if (r.failureWindowStart !== undefined) c.failureWindowStart = r.failureWindowStart
  if (r.lastFailure !== undefined) c.lastFailure = r.lastFailure
  if (r.lockedUntil !== undefined) c.lockedUntil = r.lockedUntil
  if (r.lastSuccess !== undefined) c.lastSuccess = r.lastSuccess
  return c
}

/** `r` with the counters of `c` (absent fields removed); mutates and returns `r`. */
function applyCounters<T extends LockoutState>(r: T, c: LockoutState): T {
  for (const f of COUNTER_FIELDS) {
    if (c[f] === undefined) delete r[f]
    else (r as LockoutState)[f] = c[f] as number
  }
  return r
}

function sameCounters(a: LockoutState, b: LockoutState): boolean {
  return COUNTER_FIELDS.every((f) => a[f] === b[f])
}

/** When a lockout that starts at `now` ends. */
function lockEnd(now: number, policy: Policy): number {
  return policy.lockoutDurationMs > 0 ? Math.min(now + policy.lockoutDurationMs, Number.MAX_SAFE_INTEGER) : Number.MAX_SAFE_INTEGER
}

/** Programmer mistakes in a record about to be written. */
function checkRecordShape(rec: PrincipalRecord): void {
  if (rec.attributes === null || typeof rec.attributes !== 'object') throw new TypeError('record attributes must be an object')
  if (!Array.isArray(rec.keys)) throw new TypeError('record keys must be an array')
  const seen = new Set<number>()
  for (const k of rec.keys) {
    if (!isBytes(k.key) || k.key.length !== 32) throw new RangeError('every key version must hold a 32-byte key')
    if (!Number.isSafeInteger(k.kvno) || k.kvno < 0) throw new RangeError('kvno must be a non-negative integer')
    if (seen.has(k.kvno)) throw new RangeError(`duplicate kvno ${k.kvno}`)
    seen.add(k.kvno)
  }
  if (rec.passwordHistory !== undefined) {
    if (!Array.isArray(rec.passwordHistory)) throw new TypeError('record passwordHistory must be an array')
    for (const k of rec.passwordHistory)
      if (!isBytes(k.key) || k.key.length !== 32) throw new RangeError('every password history entry must hold a 32-byte key')
  }
  if (!Number.isSafeInteger(rec.failureCount) || rec.failureCount < 0)
    throw new RangeError('failureCount must be a non-negative integer')
  if (rec.revokedAt !== undefined && (!Number.isSafeInteger(rec.revokedAt) || rec.revokedAt < 0))
    throw new RangeError('revokedAt must be a time in ms')
}

/** '*' wildcard match in O(pattern x text) worst case, without building a RegExp from user input. */
export function globMatch(pattern: string, text: string): boolean {
  let p = 0
  let t = 0
  let star = -1
  let mark = 0
  while (t < text.length) {
    if (p < pattern.length && pattern[p] === '*') {
      star = p++
      mark = t
    } else if (p < pattern.length && pattern[p] === text[t]) {
      p++
      t++
    } else if (star >= 0) {
      p = star + 1
      t = ++mark
    } else return false
  }
  while (pattern[p] === '*') p++
  return p === pattern.length
}

/**
 * The principal database. Every logical change is one atomic batch written with
 * `sync: true`; keys (principal keys and the KDC identity secrets) are sealed under the
 * master key, everything else is plain MessagePack. Sublevels: `principals` (key:
 * {@link principalKey}), `policies` (key: policy name), `policy-refs` (which principal uses
 * which policy, so a policy in use is not deleted) and `meta` (check record, format, realm).
 */
export class PrincipalDb {
  readonly #db: AnyLevel
  readonly #principals: Sub
  readonly #policyStore: Sub
  readonly #policyRefs: Sub
  readonly #meta: Sub
  readonly #admin: Sub
  /** Master keys by version; #active seals. */
  readonly #ring = new Map<number, Uint8Array>()
  #active = 1
  #mkStatus: MasterKeyStatus = { active: 1, known: [1] }
  /** Keys derived from the first master key (stable across rotations), by label. */
  readonly #derived = new Map<string, Uint8Array>()
  /** The audit keys of epochs 1, 2, … (epoch 0's is `tessera audit v1`): one per useMasterKey. */
  readonly #auditEpochs: Uint8Array[] = []
  readonly #realmListeners = new Set<() => void | Promise<void>>()
  readonly #cache: LruCache<string, Readonly<PrincipalRecord>>
  readonly #loads = new Map<string, Load>()
  readonly #mutex = new KeyedMutex()
  readonly #policies = new Map<string, Readonly<Policy>>()
  /** How many principals' current keys use each KDF parameter set (key: kdfKey()); random keys under RANDOM_KEY. */
  readonly #kdfCensus = new Map<string, { kdf: KdfParams | undefined; count: number }>()
  #censusReady: Promise<void> | undefined
  /** Principals (database keys) the rotation scheduler may have a step for (see mayRotate): found by the pass at open, kept by every write. */
  readonly #scheduled = new Set<string>()
  /** Principal writes since open, and the key census of the pass at open with the count when it began. */
  #principalWrites = 0
  #openKeyCensus: (KeyCensus & { writesAt: number }) | undefined
  /** Keys the per-name choice of {@link kdfHint} (derived from the master key: stable across restarts, unknown outside). */
  #hintKey: Uint8Array = new Uint8Array(32)
  /** Lockout counters, authoritative while open (see attemptPreauth). */
  readonly #counters = new Map<string, LockoutState>()
  readonly #counterLoads = new Map<string, Promise<void>>()
  /** Keys whose counters wait for the next group commit, and those in the one running. */
  readonly #dirty = new Set<string>()
  readonly #flushingKeys = new Set<string>()
  #nextCommit: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | undefined
  #committing: Promise<void> | undefined
  readonly #trackLastSuccess: boolean
  readonly #syncReads: boolean
  readonly #now: () => number
  readonly #where: string
  /** Set by close(): new calls are refused, calls already running finish first. */
  #closing = false
  #closed: Promise<void> | undefined
  readonly #inflight = new Set<Promise<unknown>>()
  /** Principal lookups answered from the cache, and loads from the store (metrics). */
  #cacheHits = 0
  #cacheMisses = 0
  #censusDone = false

  private constructor(db: AnyLevel, opts: PrincipalDbOptions, where: string) {
    this.#db = db
    const sub = (name: string): Sub => db.sublevel<string, Uint8Array>(name, { keyEncoding: 'utf8', valueEncoding: 'view' }) as Sub
    this.#principals = sub('principals')
    this.#policyStore = sub('policies')
    this.#policyRefs = sub('policy-refs')
    this.#meta = sub('meta')
    this.#admin = sub('admin')
    if (opts.masterKeys !== undefined) for (const e of opts.masterKeys) this.#ring.set(e.kvno, copyBytes(e.key))
    else this.#ring.set(1, copyBytes(opts.masterKey!))
    this.#cache = new LruCache(opts.cacheSize ?? DEFAULT_PRINCIPAL_DB_OPTIONS.cacheSize, opts.cacheBytes ?? DEFAULT_PRINCIPAL_DB_OPTIONS.cacheBytes)
    this.#trackLastSuccess = opts.trackLastSuccess ?? DEFAULT_PRINCIPAL_DB_OPTIONS.trackLastSuccess
    this.#syncReads = (opts.syncReads ?? DEFAULT_PRINCIPAL_DB_OPTIONS.syncReads) && (db.supports as { getSync?: boolean }).getSync === true
    this.#now = opts.now ?? Date.now
    this.#where = where
  }

  /**
   * Open (creating if needed) the database and check the master key against the check record
   * written at first open. Throws TesseraError: TESSERA_DB_LOCKED if another process (the
   * running kdc) holds the LevelDB directory, TESSERA_CONFIG if the master key does not match,
   * TESSERA_DB for other storage failures.
   */
  static async open(opts: PrincipalDbOptions): Promise<PrincipalDb> {
    if (opts.masterKeys !== undefined) {
      if (!Array.isArray(opts.masterKeys) || opts.masterKeys.length === 0) throw new RangeError('masterKeys must list at least one key')
      for (const e of opts.masterKeys)
        if (!Number.isSafeInteger(e?.kvno) || e.kvno < 1 || !isBytes(e.key) || e.key.length !== MASTER_KEY_BYTES)
          throw new RangeError(`every master key must be a kvno >= 1 and ${MASTER_KEY_BYTES} bytes`)
    } else if (!isBytes(opts.masterKey) || opts.masterKey.length !== MASTER_KEY_BYTES)
      throw new RangeError(`masterKey must be ${MASTER_KEY_BYTES} bytes`)
    if (opts.cacheSize !== undefined && (!Number.isSafeInteger(opts.cacheSize) || opts.cacheSize < 0))
      throw new RangeError('cacheSize must be a non-negative integer')
    for (const f of ['cacheBytes', 'storeCacheBytes', 'storeBlockSize'] as const)
      if (opts[f] !== undefined && (!Number.isSafeInteger(opts[f]) || opts[f] < 0)) throw new RangeError(`${f} must be a non-negative integer`)
    let db: AnyLevel
    let where: string
    if (opts.db) {
      db = opts.db
      where = 'the given database'
    } else if (opts.location !== undefined) {
      where = opts.location
      try {
        await mkdir(opts.location, { recursive: true, mode: 0o700 })
      } catch (err) {
        throw new TesseraError(TesseraErrorCode.TESSERA_DB, `cannot create database directory ${opts.location}`, { cause: err })
      }
      db = new Level<string, Uint8Array>(opts.location, {
        keyEncoding: 'utf8',
        valueEncoding: 'view',
        cacheSize: opts.storeCacheBytes ?? DEFAULT_PRINCIPAL_DB_OPTIONS.storeCacheBytes,
        blockSize: opts.storeBlockSize ?? DEFAULT_PRINCIPAL_DB_OPTIONS.storeBlockSize,
      })
    } else {
      where = 'memory'
      db = new MemoryLevel<string, Uint8Array>({ keyEncoding: 'utf8', valueEncoding: 'view' })
    }
    const pdb = new PrincipalDb(db, opts, where)
    try {
      await pdb.#guard('open', () => db.open())
      await pdb.#checkMasterKey()
      await pdb.#loadPolicies()
      // Counted in the background: only the pre-auth hint for unknown names waits for it.
      pdb.#censusReady = pdb.#track(pdb.#takeCensus()).then(() => {
        pdb.#censusDone = true
      })
      pdb.#censusReady.catch(() => {})
    } catch (err) {
      await pdb.close().catch(() => {})
      throw err
    }
    return pdb
  }

  /**
   * Close the database (releasing the LevelDB lock) once the calls already running have
   * finished, and forget cached records and the master key. Later calls are refused with
   * TESSERA_DB. Calling close() again returns the same promise.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close()
    return this.#closed
  }

  async #close(): Promise<void> {
    this.#closing = true
    // Let calls already running (say a failure count being written) finish before the store closes.
    while (this.#inflight.size > 0 || this.#committing !== undefined)
      await Promise.allSettled([...this.#inflight, this.#committing])
    this.#cache.clear()
    this.#counters.clear()
    this.#loads.clear()
    this.#policies.clear()
    try {
      await this.#db.close()
    } catch (err) {
      throw this.#wrap(err, 'close')
    } finally {
      for (const k of this.#ring.values()) wipe(k)
      for (const k of this.#derived.values()) wipe(k)
      for (const k of this.#auditEpochs) wipe(k)
      wipe(this.#hintKey)
    }
  }

  // ---- realm ----

  /** The realm record (identity keys unsealed), or undefined before `kdc init` stored one. */
  async getRealm(): Promise<RealmRecord | undefined> {
    this.#assertOpen()
    const raw = await this.#track(this.#get(this.#meta, 'realm'))
    if (raw === undefined) return undefined
    const s = this.#decodeObject(raw, 'realm record') as unknown as StoredRealm
    if (s.v !== FORMAT_VERSION || typeof s.realm !== 'string') corrupt('realm record')
    const mk = s.mk ?? 1
    const pair = (p: StoredKeyPair | undefined, which: string) => {
      if (!p || !isBytes(p.publicKey) || !isBytes(p.sealed)) corrupt('realm record')
      return { secretKey: this.#openKey(p.sealed, `realm:${s.realm}:${which}`, 0, mk), publicKey: copyBytes(p.publicKey) }
    }
    const r: RealmRecord = {
      realm: s.realm,
      createdAt: s.createdAt,
      transportKey: pair(s.transportKey, 'transport'),
      signingKey: pair(s.signingKey, 'signing'),
    }
    for (const [field, role] of REALM_PAIRS.slice(2)) if (s[field] !== undefined) r[field] = pair(s[field], role)
    if (typeof s.nextActivatesAt === 'number') r.nextActivatesAt = s.nextActivatesAt
    return r
  }

  #encodeRealm(r: RealmRecord): Uint8Array {
    checkRealm(r.realm)
    const stored: StoredRealm = {
      v: FORMAT_VERSION,
      realm: r.realm,
      createdAt: r.createdAt,
      transportKey: undefined as unknown as StoredKeyPair,
      signingKey: undefined as unknown as StoredKeyPair,
    }
    if (this.#active !== 1) stored.mk = this.#active
    for (const [field, role] of REALM_PAIRS) {
      const p = r[field]
      if (p === undefined) {
        if (field === 'transportKey' || field === 'signingKey') throw new RangeError('a realm record needs its transport and signing keys')
        continue
      }
      if (!isBytes(p.secretKey) || p.secretKey.length !== 32 || !isBytes(p.publicKey) || p.publicKey.length !== 32)
        throw new RangeError('realm identity keys must be 32-byte key pairs')
      stored[field] = { publicKey: p.publicKey, sealed: this.#sealKey(p.secretKey, `realm:${r.realm}:${role}`, 0) }
    }
    if (r.nextActivatesAt !== undefined) {
      if (!Number.isSafeInteger(r.nextActivatesAt) || r.nextActivatesAt < 0) throw new RangeError('nextActivatesAt must be ms since epoch')
      stored.nextActivatesAt = r.nextActivatesAt
    }
    return encode(stored)
  }

  /** Store the realm record, once. TesseraError(TESSERA_EXISTS) if the database already has one. */
  async putRealm(r: RealmRecord): Promise<void> {
    this.#assertOpen()
    const value = this.#encodeRealm(r)
    await this.#locked('meta:realm', async () => {
      if ((await this.#get(this.#meta, 'realm')) !== undefined)
        throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, 'this database already holds a realm')
      await this.#batch([{ type: 'put', sublevel: this.#meta, key: 'realm', value }], [])
    })
  }

  /**
   * Replace the realm record (an identity-key rotation step) as one synced batch, through
   * `opts.commit` (the audit anchor). `change` gets the record as stored now and returns the new one;
   * it runs under the realm lock. The realm's name never changes. Listeners of
   * {@link onRealmChange} are told once the write landed.
   */
  async updateRealm(change: (r: RealmRecord) => RealmRecord, opts?: WriteOptions): Promise<RealmRecord> {
    this.#assertOpen()
    const next = await this.#locked('meta:realm', async () => {
      const cur = await this.getRealm()
      if (cur === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, 'this database holds no realm')
      const r = change(cur)
      if (r.realm !== cur.realm) throw new RangeError('the realm name of a realm record never changes')
      await this.#batch([{ type: 'put', sublevel: this.#meta, key: 'realm', value: this.#encodeRealm(r) }], [], opts)
      return r
    })
    // Awaited, so that the caller's answer comes after the listeners acted (the KDC rewrote realm.json).
    for (const fn of this.#realmListeners) await Promise.resolve().then(fn).catch(() => {})
    return next
  }

  /**
   * Call `fn` after every {@link updateRealm} of this database object; updateRealm resolves
   * once `fn` has (its failure is its own). Returns the unsubscribe.
   */
  onRealmChange(fn: () => void | Promise<void>): () => void {
    this.#realmListeners.add(fn)
    return () => this.#realmListeners.delete(fn)
  }

  /**
   * A key derived for `label` from the realm's first master key, the same for the realm's whole
   * life: master-key rotations keep it (sealed in the `derived` record). Except the audit key,
   * `derivedKey('tessera audit v1')`: that is the key of the current audit epoch (epoch 0: from
   * the first master key; each {@link useMasterKey} starts the next, from the new master key).
   * A copy: the caller wipes it.
   */
  derivedKey(label: (typeof DERIVED_LABELS)[number]): Uint8Array {
    this.#assertOpen()
    const k = label === 'tessera audit v1' ? (this.#auditEpochs.at(-1) ?? this.#derived.get(label)) : this.#derived.get(label)
    if (k === undefined) throw new RangeError(`no derived key ${label}`)
    return copyBytes(k)
  }

  /** The current audit epoch: 0 until the first {@link useMasterKey} that changed the active key. */
  auditEpoch(): number {
    this.#assertOpen()
    return this.#auditEpochs.length
  }

  /** The audit key of every epoch, index = epoch (the last is the current one): what verifying the whole log needs. Copies. */
  auditEpochKeys(): Uint8Array[] {
    this.#assertOpen()
    return [this.#derived.get('tessera audit v1')!, ...this.#auditEpochs].map(copyBytes)
  }

  /** The audit epoch a dump holds, from its entry `key` → `value` (undefined: not the entry that says). No key is opened. */
  static auditEpochOfEntry(key: string, value: Uint8Array): number | undefined {
    if (key !== '!meta!derived') return undefined
    try {
      const epochs = (decode(value) as Partial<StoredDerived> | null)?.epochs
      return Array.isArray(epochs) ? epochs.length : 0
    } catch {
      return undefined
    }
  }

  // ---- principals ----

  /**
   * The principal, or undefined if there is none (or `id` is not a valid name, since no such
   * record can exist). Hot path: served from the LRU cache when possible. The record is
   * shared and frozen: treat it as read-only (use {@link update} to change it).
   */
  /** The cached record, synchronously, or undefined when it is not in the cache (use {@link get}). */
  peek(id: PrincipalId): Readonly<PrincipalRecord> | undefined {
    if (this.#closing) return undefined
    const hit = this.#cache.get(principalKey(id))
    if (hit !== undefined) this.#cacheHits++
    return hit === ABSENT ? undefined : hit
  }

  /**
   * {@link peek} by database key ({@link principalKey} of the id), for a caller that keeps the
   * key of a name it looks up often: building and hashing a fresh key string costs more than
   * the lookup.
   */
  peekByKey(key: string): Readonly<PrincipalRecord> | undefined {
    if (this.#closing) return undefined
    const hit = this.#cache.get(key)
    if (hit !== undefined) this.#cacheHits++
    return hit === ABSENT ? undefined : hit
  }

  get(id: PrincipalId): Promise<Readonly<PrincipalRecord> | undefined> {
    this.#assertOpen()
    let r: Readonly<PrincipalRecord> | undefined | Promise<Readonly<PrincipalRecord> | undefined>
    try {
      r = this.getNow(id)
    } catch (err) {
      return Promise.reject(err)
    }
    return r instanceof Promise ? r : Promise.resolve(r)
  }

  /**
   * {@link get} in the same turn when it can be: a cached record, or one read synchronously
   * (syncReads). Otherwise (a store read in the threadpool, or one already running) the
   * promise of it. Throws what get() rejects with.
   */
  getNow(id: PrincipalId): Readonly<PrincipalRecord> | undefined | Promise<Readonly<PrincipalRecord> | undefined> {
    this.#assertOpen()
    const key = principalKey(id)
    const hit = this.#cache.get(key)
    if (hit !== undefined) {
      this.#cacheHits++
      return hit === ABSENT ? undefined : hit
    }
    const running = this.#loads.get(key)
    if (running !== undefined) return running.promise
    this.#cacheMisses++
    // principalKey is injective on strings, but LevelDB sees UTF-8 bytes, and an ill-formed
    // string (lone surrogate) would share bytes with a valid one: only valid names reach the store.
    if (!isValidPrincipalId(id)) return undefined
    if (this.#syncReads) {
      // One synchronous read (LevelDB: the mmapped table or the OS page cache), as MIT's KDC
      // reads its database: no threadpool round trip. A write landing meanwhile drops the
      // cached copy in its own #batch, after it landed, so what is cached here stays current.
      let raw: Uint8Array | undefined
      let rec: Readonly<PrincipalRecord>
      try {
        raw = this.#principals.getSync(key)
        if (raw !== undefined) rec = deepFreeze(this.#unsealPrincipal(this.#decodePrincipal(raw), key))
      } catch (err) {
        throw this.#wrap(err, 'read')
      }
      if (raw === undefined) {
        this.#cache.set(key, ABSENT, cacheEntryBytes(undefined))
        return undefined
      }
      this.#cache.set(key, rec!, cacheEntryBytes(raw.length))
      return rec!
    }
    const load: Load = { stale: false, promise: Promise.resolve(undefined) }
    this.#loads.set(key, load)
    load.promise = (async () => {
      try {
        const raw = await this.#get(this.#principals, key)
        if (raw === undefined) {
          // Remembered as absent (until a write of this name), so that an unknown name costs
          // what a known one costs: a lookup in memory, not one in the store every time.
          if (!load.stale && !this.#closing) this.#cache.set(key, ABSENT, cacheEntryBytes(undefined))
          return undefined
        }
        const rec = deepFreeze(this.#unsealPrincipal(this.#decodePrincipal(raw), key))
        // A load that overlapped a write may have read the old value: return it, never cache it.
        if (!load.stale && !this.#closing) this.#cache.set(key, rec, cacheEntryBytes(raw.length))
        return rec
      } finally {
        if (this.#loads.get(key) === load) this.#loads.delete(key)
      }
    })()
    return this.#track(load.promise)
  }

  /**
   * Store a new principal. Throws TesseraError: TESSERA_BAD_NAME (see checkPrincipalId),
   * TESSERA_EXISTS, TESSERA_NOT_FOUND if `rec.policy` names no stored policy.
   */
  async create(rec: PrincipalRecord, opts?: WriteOptions): Promise<void> {
    this.#assertOpen()
    checkPrincipalId(rec)
    checkRecordShape(rec)
    const key = principalKey(rec)
    await this.#locked(key, async () => {
      if ((await this.#get(this.#principals, key)) !== undefined)
        throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `principal ${formatPrincipal(rec)} already exists`)
      this.#counters.delete(key)
      const ops: BatchOp[] = [{ type: 'put', sublevel: this.#principals, key, value: this.#encodePrincipal(rec, key) }]
      await this.#withPolicy(rec.policy, async () => {
        if (rec.policy !== undefined) ops.push(this.#refOp('put', rec.policy, key))
        await this.#batch(ops, [key], opts)
      })
      this.#census(rec.keys[rec.keys.length - 1]?.kdf, 1)
      this.#noteRotation(key, rec)
    })
  }

  /**
   * Store many new principals as one atomic, synced batch (a bulk load: a migration, a
   * benchmark's million), each record exactly as {@link create} stores it (keys sealed under
   * the active master key, policy references). All or nothing: TesseraError(TESSERA_EXISTS)
   * if one of them exists (or is given twice), TESSERA_NOT_FOUND if one names no stored
   * policy, TESSERA_BAD_NAME as create. At most {@link MAX_CREATE_MANY} records per call.
   */
  async createMany(recs: readonly PrincipalRecord[], opts?: WriteOptions): Promise<void> {
    this.#assertOpen()
    if (!Array.isArray(recs)) throw new TypeError('createMany takes an array of records')
    if (recs.length > MAX_CREATE_MANY) throw new RangeError(`createMany takes at most ${MAX_CREATE_MANY} records per call`)
    const byKey = new Map<string, PrincipalRecord>()
    for (const rec of recs) {
      checkPrincipalId(rec)
      checkRecordShape(rec)
      const key = principalKey(rec)
      if (byKey.has(key)) throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `principal ${formatPrincipal(rec)} is given twice`)
      byKey.set(key, rec)
    }
    if (byKey.size === 0) return
    const keys = [...byKey.keys()].sort()
    const policies = [...new Set(recs.flatMap((r) => (r.policy === undefined ? [] : [`policy:${r.policy}`])))].sort()
    await this.#track(
      (async () => {
        // Principal locks, then policy locks, each set in sorted order: the order every other writer takes them in.
        const releases: (() => void)[] = []
        try {
          for (const k of [...keys, ...policies]) releases.push(await this.#mutex.acquire(k))
          const found = await this.#guard('read', () => this.#principals.getMany(keys))
          const i = found.findIndex((v) => v !== undefined)
          if (i >= 0) throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `principal ${formatPrincipal(byKey.get(keys[i]!)!)} already exists`)
          for (const p of policies)
            if (!this.#policies.has(p.slice('policy:'.length)))
              throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `policy ${JSON.stringify(p.slice('policy:'.length))} does not exist`)
          const ops: BatchOp[] = []
          for (const key of keys) {
            const rec = byKey.get(key)!
            this.#counters.delete(key)
            ops.push({ type: 'put', sublevel: this.#principals, key, value: this.#encodePrincipal(rec, key) })
            if (rec.policy !== undefined) ops.push(this.#refOp('put', rec.policy, key))
          }
          await this.#batch(ops, keys, opts)
          for (const [key, rec] of byKey) {
            this.#census(rec.keys[rec.keys.length - 1]?.kdf, 1)
            this.#noteRotation(key, rec)
          }
        } finally {
          for (const r of releases.reverse()) r()
        }
      })(),
    )
  }

  /**
   * Atomic read-modify-write of one principal: `mutate` gets a private, mutable copy (keys
   * unsealed) and may change anything but the name; `modifiedAt`/`modifiedBy` are then set and
   * the record is written in one synced batch. Calls for the same principal are serialized.
   * Returns the record as written. Throws TesseraError(TESSERA_NOT_FOUND) if there is none.
   */
  async update(
    id: PrincipalId,
    mutate: (rec: PrincipalRecord) => void | Promise<void>,
    by: string,
    opts?: WriteOptions,
  ): Promise<PrincipalRecord> {
    this.#assertOpen()
    checkPrincipalId(id)
    const key = principalKey(id)
    return this.#locked(key, async () => {
      const raw = await this.#get(this.#principals, key)
      if (raw === undefined) notFound(id)
      const rec = this.#unsealPrincipal(this.#decodePrincipal(raw), key)
      // The in-memory lockout counters are the authority: mutate sees them, and what it
      // sets (an unlock) becomes the authority.
      const live = this.#counters.get(key)
      if (live !== undefined) applyCounters(rec, live)
      const before = pickCounters(rec)
      const oldKdf = rec.keys[rec.keys.length - 1]?.kdf
      const oldPolicy = rec.policy
      await mutate(rec)
      if (!samePrincipal(rec, id)) throw new RangeError('update() must not change the principal name')
      checkRecordShape(rec)
      rec.modifiedAt = this.#now()
      rec.modifiedBy = by
      const latest = this.#counters.get(key)
      if (latest !== undefined) {
        if (sameCounters(before, rec)) applyCounters(rec, latest)
        else this.#counters.set(key, pickCounters(rec))
      }
      const ops: BatchOp[] = [{ type: 'put', sublevel: this.#principals, key, value: this.#encodePrincipal(rec, key) }]
      const newPolicy = rec.policy
      if (newPolicy === oldPolicy) {
        await this.#batch(ops, [key], opts)
      } else {
        if (oldPolicy !== undefined) ops.push(this.#refOp('del', oldPolicy, key))
        await this.#withPolicy(newPolicy, async () => {
          if (newPolicy !== undefined) ops.push(this.#refOp('put', newPolicy, key))
          await this.#batch(ops, [key], opts)
        })
      }
      this.#census(oldKdf, -1)
      this.#census(rec.keys[rec.keys.length - 1]?.kdf, 1)
      this.#noteRotation(key, rec)
      return rec
    })
  }

  /** Delete a principal and all its keys. Throws TesseraError(TESSERA_NOT_FOUND) if there is none. */
  async delete(id: PrincipalId, opts?: WriteOptions): Promise<void> {
    this.#assertOpen()
    checkPrincipalId(id)
    const key = principalKey(id)
    await this.#locked(key, async () => {
      const raw = await this.#get(this.#principals, key)
      if (raw === undefined) notFound(id)
      const s = this.#decodePrincipal(raw)
      const ops: BatchOp[] = [{ type: 'del', sublevel: this.#principals, key }]
      if (typeof s.policy === 'string') ops.push(this.#refOp('del', s.policy, key))
      await this.#batch(ops, [key], opts)
      this.#counters.delete(key)
      this.#census(s.keys[s.keys.length - 1]?.kdf, -1)
      this.#noteRotation(key, undefined)
    })
  }

  /**
   * Rename a principal in one synced batch: the record moves to `to` with every key version
   * (and the password history) sealed anew for its new name, since sealed keys are bound to
   * the name; salts stay as stored, so the password keeps working. `mutate` may adjust the
   * moved record (not its name). The lockout counters start afresh. Throws TesseraError:
   * TESSERA_NOT_FOUND (no `from`), TESSERA_EXISTS (`to` exists), TESSERA_BAD_NAME.
   */
  async rename(
    from: PrincipalId,
    to: PrincipalId,
    by: string,
    opts?: WriteOptions & { mutate?: (rec: PrincipalRecord) => void },
  ): Promise<PrincipalRecord> {
    this.#assertOpen()
    checkPrincipalId(from)
    checkPrincipalId(to)
    const fromKey = principalKey(from)
    const toKey = principalKey(to)
    if (fromKey === toKey) throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `principal ${formatPrincipal(to)} already exists`)
    // Both locks, always taken in key order, so two renames cannot wait on each other.
    const [first, second] = fromKey < toKey ? [fromKey, toKey] : [toKey, fromKey]
    return this.#locked(first, () =>
      this.#mutex.run(second, async () => {
        const raw = await this.#get(this.#principals, fromKey)
        if (raw === undefined) notFound(from)
        if ((await this.#get(this.#principals, toKey)) !== undefined)
          throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `principal ${formatPrincipal(to)} already exists`)
        const rec = this.#unsealPrincipal(this.#decodePrincipal(raw), fromKey)
        opts?.mutate?.(rec)
        rec.realm = to.realm
        rec.components = [...to.components]
        applyCounters(rec, { failureCount: 0 })
        checkRecordShape(rec)
        rec.modifiedAt = this.#now()
        rec.modifiedBy = by
        const ops: BatchOp[] = [
          { type: 'del', sublevel: this.#principals, key: fromKey },
          { type: 'put', sublevel: this.#principals, key: toKey, value: this.#encodePrincipal(rec, toKey) },
        ]
        if (rec.policy !== undefined) ops.push(this.#refOp('del', rec.policy, fromKey), this.#refOp('put', rec.policy, toKey))
        await this.#batch(ops, [fromKey, toKey], opts)
        this.#counters.delete(fromKey)
        this.#counters.delete(toKey)
        this.#noteRotation(fromKey, undefined)
        this.#noteRotation(toKey, rec)
        return rec
      }),
    )
  }

  // ---- admin records ----

  /** A record of the `admin` sublevel (written through {@link WriteOptions.commit} or {@link putAdminMeta}), or undefined. */
  async getAdminMeta(key: string): Promise<Uint8Array | undefined> {
    this.#assertOpen()
    const v = await this.#track(this.#get(this.#admin, key))
    return v === undefined ? undefined : copyBytes(v)
  }

  /** Write records of the `admin` sublevel alone, as one synced batch (through `opts.commit` if given). */
  async putAdminMeta(puts: AdminMetaPut[], opts?: WriteOptions): Promise<void> {
    this.#assertOpen()
    await this.#track(this.#batch(this.#adminOps(puts), [], opts))
  }

  /**
   * Every record of the store (all sublevels, values as stored: keys still sealed under the
   * master key), from one iterator, so from one consistent snapshot of LevelDB however many
   * writes land meanwhile. For dump; {@link PrincipalDb.restore} writes them back.
   */
  async *exportEntries(): AsyncGenerator<[string, Uint8Array]> {
    this.#assertOpen()
    const it = this.#db.iterator({ keyEncoding: 'utf8', valueEncoding: 'view' })
    try {
      for (;;) {
        const next = await this.#guard('export', () => it.next())
        if (next === undefined) break
        yield [next[0] as string, copyBytes(next[1] as Uint8Array)]
      }
    } finally {
      await it.close()
    }
  }

  /**
   * Write entries from {@link exportEntries} into an empty store (a new `location`, or `db`),
   * in batches, then close it; open it with {@link PrincipalDb.open} and the same master key.
   * `skip` leaves out entries by key. Throws TesseraError(TESSERA_EXISTS) if the store holds data.
   */
  static async restore(
    where: { location?: string; db?: AnyLevel },
    entries: AsyncIterable<[string, Uint8Array]> | Iterable<[string, Uint8Array]>,
    skip?: (key: string) => boolean,
  ): Promise<number> {
    let db: AnyLevel
    if (where.db) db = where.db
    else if (where.location !== undefined) {
      await mkdir(where.location, { recursive: true, mode: 0o700 })
      db = new Level<string, Uint8Array>(where.location, { keyEncoding: 'utf8', valueEncoding: 'view' })
    } else throw new TypeError('restore needs a location or a db')
    let n = 0
    try {
      await db.open()
      for await (const _ of db.keys({ limit: 1 }))
        throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, 'the target database is not empty; load only into a new realm directory')
      let ops: { type: 'put'; key: string; value: Uint8Array }[] = []
      for await (const [key, value] of entries) {
        if (skip?.(key)) continue
        ops.push({ type: 'put', key, value })
        n++
        if (ops.length >= 1000) {
          await db.batch(ops, { keyEncoding: 'utf8', valueEncoding: 'view', ...SYNC })
          ops = []
        }
      }
      if (ops.length > 0) await db.batch(ops, { keyEncoding: 'utf8', valueEncoding: 'view', ...SYNC })
    } catch (err) {
      if (err instanceof TesseraError) throw err
      throw new TesseraError(TesseraErrorCode.TESSERA_DB, 'principal database: restore failed', { cause: err })
    } finally {
      await db.close()
    }
    return n
  }

  #adminOps(puts: AdminMetaPut[]): BatchOp[] {
    return puts.map((p): BatchOp => {
      if (typeof p.key !== 'string' || !isBytes(p.value)) throw new TypeError('admin records are { key: string, value: Uint8Array }')
      if (p.del === true) return { type: 'del', sublevel: this.#admin, key: p.key }
      return { type: 'put', sublevel: this.#admin, key: p.key, value: p.value }
    })
  }

  /** Principal names, in storage order (by realm, then component lengths and text; not alphabetical). */
  async list(opts: ListOptions = {}): Promise<PrincipalId[]> {
    this.#assertOpen()
    const { realm, glob, limit } = opts
    if (limit !== undefined && (!Number.isSafeInteger(limit) || limit < 0)) throw new RangeError('limit must be a non-negative integer')
    const out: PrincipalId[] = []
    if (limit === 0) return out
    const range: { gte?: string; lt?: string } = {}
    if (realm !== undefined) {
      // The realm is the first length-prefixed part; the next part starts with a digit, and
      // every digit sorts before ':', so [prefix, prefix + ':') is exactly this realm.
      range.gte = lengthPrefixed(realm)
      range.lt = `${range.gte}:`
    }
    const full = glob?.includes('@') ?? false
    await this.#track(this.#guard('list', async () => {
      for await (const key of this.#principals.keys(range)) {
        const id = principalFromKey(key)
        if (glob !== undefined && !globMatch(glob, full ? formatPrincipal(id) : formatName(id.components))) continue
        out.push(id)
        if (limit !== undefined && out.length >= limit) break
      }
    }))
    return out
  }

  /**
   * Number of principals as kept in memory (no scan): undefined until the census taken at
   * open has finished. A change made while that census runs may be counted twice.
   */
  get principalCount(): number | undefined {
    if (!this.#censusDone) return undefined
    let n = 0
    for (const e of this.#kdfCensus.values()) n += e.count
    return n
  }

  /**
   * Principal lookups served from the cache (hits) and read from the store (misses) since
   * open; entries held, and their estimated bytes ({@link cacheEntryBytes}), against the bounds.
   */
  cacheStats(): { hits: number; misses: number; entries: number; capacity: number; bytes: number; maxBytes: number } {
    return {
      hits: this.#cacheHits,
      misses: this.#cacheMisses,
      entries: this.#cache.size,
      capacity: this.#cache.capacity,
      bytes: this.#cache.bytes,
      maxBytes: this.#cache.maxBytes,
    }
  }

  /** True from open until close() is called. */
  get isOpen(): boolean {
    return !this.#closing && this.#db.status === 'open'
  }

  /**
   * When the oldest current key of a service (a principal with a random key, krbtgt/* aside)
   * was created, and how many services there are. For aggregate metrics. From the pass over
   * the database at open while no principal was written since that pass began (waiting for
   * it if it still runs), else from a scan of the stored records (keys stay sealed), so call it rarely.
   */
  async keyCensus(): Promise<KeyCensus> {
    this.#assertOpen()
    await this.#censusReady?.catch(() => {})
    const o = this.#openKeyCensus
    if (o !== undefined && o.writesAt === this.#principalWrites)
      return { services: o.services, oldestServiceKeyCreatedAt: o.oldestServiceKeyCreatedAt }
    const c: KeyCensus = { services: 0, oldestServiceKeyCreatedAt: undefined }
    await this.#track(
      this.#guard('scan', async () => {
        for await (const raw of this.#principals.values()) countServiceKey(c, this.#decodePrincipal(raw))
      }),
    )
    return c
  }

  /**
   * The principals the rotation scheduler may have a step for (src/db/key-states.ts
   * mayRotate: a rotation schedule, or a staged key whose activation is not recorded), from
   * the pass over the database at open (waited for) and every write since. Only names: the
   * caller reads the records it needs.
   */
  async scheduledPrincipals(): Promise<PrincipalId[]> {
    this.#assertOpen()
    await this.#track(this.#censusReady ?? Promise.resolve())
    return [...this.#scheduled].map((k) => principalFromKey(k))
  }

  /** Number of principals. */
  async count(): Promise<number> {
    this.#assertOpen()
    let n = 0
    await this.#track(
      this.#guard('count', async () => {
        for await (const _ of this.#principals.keys()) n++
      }),
    )
    return n
  }

  // ---- pre-auth hints ----

  /**
   * The KDF parameters the pre-auth hint gives for a name no principal has: one of the sets
   * the current keys of the realm use (a random key counting as `configKdf`, which is what
   * its hint shows), chosen per name by a keyed hash, in proportion (in sixteenths, at least
   * one per set in use) to how many principals use each. So an unknown name's hint is stable, and drawn from the same distribution as those
   * of existing principals: raising the KDF parameters tells nobody which names are old.
   */
  async kdfHint(id: PrincipalId, configKdf: Readonly<KdfParams>): Promise<KdfParams> {
    this.#assertOpen()
    await this.#censusReady
    const sets = new Map<string, { kdf: Readonly<KdfParams>; count: number }>()
    const add = (kdf: Readonly<KdfParams>, count: number) => {
      const k = kdfKey(kdf)
      const e = sets.get(k)
      if (e) e.count += count
      else sets.set(k, { kdf, count })
    }
    for (const e of this.#kdfCensus.values()) if (e.count > 0) add(e.kdf ?? configKdf, e.count)
    if (sets.size === 0) return { ...configKdf }
    const ordered = [...sets.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1)).map((e) => e[1])
    const total = ordered.reduce((n, e) => n + e.count, 0)
    // Shares in sixteenths (at least one for a set in use): adding or removing a principal
    // moves an unknown name's hint only when a share crosses a sixteenth, and then only for
    // the names near that boundary (the pick is a point in [0, 1), not a residue mod the count).
    const weights = ordered.map((e) => Math.max(1, Math.round((HINT_STEPS * e.count) / total)))
    const sum = weights.reduce((a, b) => a + b, 0)
    const h = hmacSha256(this.#hintKey, new TextEncoder().encode(principalKey(id)))
    const u = (h[0]! * 2 ** 40 + h[1]! * 2 ** 32 + h[2]! * 2 ** 24 + h[3]! * 2 ** 16 + h[4]! * 2 ** 8 + h[5]!) / 2 ** 48
    let acc = 0
    for (let i = 0; i < ordered.length; i++) {
      acc += weights[i]! / sum
      if (u < acc) return { ...ordered[i]!.kdf }
    }
    return { ...ordered[ordered.length - 1]!.kdf }
  }

  /**
   * The one pass over the stored records at open, in the background (keys stay sealed; no
   * record is kept): the KDF census, the key census ({@link keyCensus}) and the principals
   * the rotation scheduler may have a step for ({@link scheduledPrincipals}).
   */
  async #takeCensus(): Promise<void> {
    const writesAt = this.#principalWrites
    const c: KeyCensus = { services: 0, oldestServiceKeyCreatedAt: undefined }
    await this.#guard('open', async () => {
      for await (const [key, raw] of this.#principals.iterator()) {
        const s = this.#decodePrincipal(raw)
        this.#census(s.keys[s.keys.length - 1]?.kdf, 1)
        countServiceKey(c, s)
        // Only added: a write since the iterator's snapshot has already set its own entry, and a stale extra one only costs the scheduler a look.
        if (mayRotate(s)) this.#scheduled.add(key)
      }
    })
    this.#openKeyCensus = { ...c, writesAt }
  }

  /** Keep {@link scheduledPrincipals} in step with a write of `key` (`rec` as written; undefined: deleted). */
  #noteRotation(key: string, rec: Readonly<PrincipalRecord> | undefined): void {
    if (rec !== undefined && mayRotate(rec)) this.#scheduled.add(key)
    else this.#scheduled.delete(key)
  }

  /** Count `delta` principals whose current key uses `kdf` (undefined: random key). */
  #census(kdf: KdfParams | undefined, delta: number): void {
    // A change made while the scan runs may be counted twice: it only shifts the weights.
    const k = kdf === undefined ? RANDOM_KEY : kdfKey(kdf)
    const e = this.#kdfCensus.get(k)
    if (e) e.count += delta
    else this.#kdfCensus.set(k, { kdf: kdf === undefined ? undefined : { ...kdf }, count: delta })
  }

  // ---- lockout ----

  /**
   * Decide one pre-authentication attempt atomically with the principal's lockout state
   * (MIT's lockout rules: a locked principal is refused before its password is tried).
   *
   * The counters live in memory while the database is open and are the authority: `check`
   * (which must be synchronous: it opens the encrypted timestamp) runs only after the
   * counters were found below `policy.maxFailures`, and its outcome is counted before any
   * other attempt for the principal is decided, so however many attempts run concurrently,
   * at most `maxFailures` wrong passwords are ever tried per counting window, and none is
   * tried once the limit is reached, the right one included. The outcome resolves once the
   * new counters are durable (one group-committed, synced batch shared by every attempt of
   * the moment, so concurrent failures do not queue behind each other's writes); a restart
   * reads them back. Counting rules: the window restarts at the first failure after
   * `failureCountIntervalMs` (0 = never) or after an expired lockout; at `maxFailures` (> 0)
   * the principal is locked until `now + lockoutDurationMs` (0 = until unlock(), stored as
   * Number.MAX_SAFE_INTEGER); a success clears the counters. Without a policy failures are
   * counted but never lock. Throws TesseraError(TESSERA_NOT_FOUND) if there is no such principal.
   *
   * `known`: the record as the caller got it from {@link get} (the AS has it already); used
   * only while it is still the cached copy (so current: every write drops it), else read again.
   */
  attemptPreauth(
    id: PrincipalId,
    now: number,
    policy: Policy | undefined,
    check: (rec: Readonly<PrincipalRecord>) => PreauthCheck,
    known?: Readonly<PrincipalRecord>,
  ): Promise<AttemptOutcome> {
    return Promise.resolve(this.attemptPreauthNow(id, now, policy, check, known))
  }

  /**
   * {@link attemptPreauth}, answered in the same turn when nothing has to be read or written:
   * `known` is the cached record, its counters are in memory, and the outcome changes no
   * counter (a clean login, a refusal while locked). Everything else (a failure, a login
   * that clears counters) returns the promise of the same decision, taken in this turn too.
   */
  attemptPreauthNow(
    id: PrincipalId,
    now: number,
    policy: Policy | undefined,
    check: (rec: Readonly<PrincipalRecord>) => PreauthCheck,
    known?: Readonly<PrincipalRecord>,
  ): AttemptOutcome | Promise<AttemptOutcome> {
    this.#assertOpen()
    checkPrincipalId(id)
    if (!Number.isFinite(now)) throw new RangeError('now must be a finite number')
    const key = principalKey(id)
    const cached = this.#cache.get(key)
    let c = this.#counters.get(key)
    if (known === undefined || cached !== known) return this.#track(this.#attempt(id, key, now, policy, check))
    // A cached record is current (every write drops it, a load that overlapped a write is
    // not cached): its counters need no read of their own.
    if (c === undefined) {
      c = pickCounters(known)
      this.#counters.set(key, c)
    }
    const out = this.#decide(key, known, c, now, policy, check)
    return out instanceof Promise ? this.#track(out) : out
  }

  async #attempt(
    id: PrincipalId,
    key: string,
    now: number,
    policy: Policy | undefined,
    check: (rec: Readonly<PrincipalRecord>) => PreauthCheck,
  ): Promise<AttemptOutcome> {
    const rec = await this.get(id)
    if (rec === undefined) notFound(id)
    let c = this.#counters.get(key)
    if (c === undefined) {
      const cached = this.#cache.get(key)
      if (cached !== undefined && cached !== ABSENT) {
        c = pickCounters(cached)
        this.#counters.set(key, c)
      }
    }
    while (c === undefined) {
      await this.#loadCounters(key, id)
      c = this.#counters.get(key)
    }
    return this.#decide(key, rec, c, now, policy, check)
  }

  /**
   * Decide one attempt on counters `c` in memory. Nothing here awaits before the counters
   * are updated: the attempts of one principal are decided one at a time, each seeing the
   * counts of all those decided before it. An outcome that changed the counters resolves
   * once they are committed; one that changed nothing is returned as it is.
   */
  #decide(
    key: string,
    rec: Readonly<PrincipalRecord>,
    c: LockoutState,
    now: number,
    policy: Policy | undefined,
    check: (rec: Readonly<PrincipalRecord>) => PreauthCheck,
  ): AttemptOutcome | Promise<AttemptOutcome> {
    if (c.lockedUntil !== undefined && c.lockedUntil > now) return { outcome: 'locked', lockedUntil: c.lockedUntil }
    const before = pickCounters(c)
    if (c.lockedUntil !== undefined) {
      // The lockout has expired: the next failure opens a new window.
      delete c.lockedUntil
      c.failureCount = 0
      delete c.failureWindowStart
    }
    const interval = policy?.failureCountIntervalMs ?? 0
    if (c.failureWindowStart !== undefined && interval > 0 && now - c.failureWindowStart >= interval) {
      c.failureCount = 0
      delete c.failureWindowStart
    }
    const max = policy !== undefined && policy.maxFailures > 0 ? policy.maxFailures : 0
    if (max > 0 && c.failureCount >= max) {
      // Counted up to the limit without a lock (the policy was tightened since): lock now, try nothing.
      const lockedUntil = lockEnd(now, policy!)
      c.lockedUntil = lockedUntil
      return this.#commitCounters(key).then(() => ({ outcome: 'locked', lockedUntil }))
    }
    const verdict = check(rec)
    if (verdict.ok) {
      c.failureCount = 0
      delete c.failureWindowStart
      // A login that clears counters (or any login, with trackLastSuccess) is written; a
      // clean one costs no write.
      const ok: AttemptOutcome = { outcome: 'ok' }
      if (this.#trackLastSuccess || !sameCounters(before, c)) {
        c.lastSuccess = now
        return this.#commitCounters(key).then(() => ok)
      }
      this.#forgetCleanCounters(key)
      return ok
    }
    if (c.failureCount === 0 || c.failureWindowStart === undefined) c.failureWindowStart = now
    c.failureCount += 1
    c.lastFailure = now
    let lockedNow = false
    if (max > 0 && c.failureCount >= max) {
      c.lockedUntil = lockEnd(now, policy!)
      lockedNow = true
    }
    const out: AttemptOutcome = { outcome: 'failed', reason: verdict.reason, failureCount: c.failureCount, lockedNow }
    if (c.lockedUntil !== undefined) out.lockedUntil = c.lockedUntil
    return this.#commitCounters(key).then(() => out)
  }

  /**
   * Wait for the same group-committed, synced write a failed attempt on an existing
   * principal waits for, without changing anything: a failed attempt on an unknown name
   * calls it so that both answer after the same work.
   */
  decoyFailure(): Promise<void> {
    this.#assertOpen()
    return this.#track(this.#commitCounters(undefined))
  }

  /**
   * The end of the lock of `rec` (a record from {@link get} or {@link peek}) as the KDC decides
   * by it now, in the same turn: the in-memory counters when there are any (a lock decided and
   * not yet written is there only), else the record's.
   */
  lockedUntilNow(rec: Readonly<PrincipalRecord>): number | undefined {
    const c = this.#counters.get(principalKey(rec))
    return c !== undefined ? c.lockedUntil : rec.lockedUntil
  }

  /** The lockout counters as the KDC decides by them now (memory first, then the store). */
  async lockoutState(id: PrincipalId): Promise<LockoutState | undefined> {
    this.#assertOpen()
    checkPrincipalId(id)
    const key = principalKey(id)
    const c = this.#counters.get(key)
    if (c !== undefined) return { ...c }
    const rec = await this.get(id)
    return rec === undefined ? undefined : pickCounters(rec)
  }

  /**
   * Count one failed pre-authentication at time `now` (see {@link attemptPreauth}, whose
   * rules it follows, as a failure that needs no password check). A principal already
   * locked is not counted again.
   */
  async recordFailure(id: PrincipalId, now: number, policy: Policy | undefined): Promise<FailureOutcome> {
    const out = await this.attemptPreauth(id, now, policy, () => ({ ok: false, reason: 'recorded' }))
    if (out.outcome === 'failed') {
      const r: FailureOutcome = { failureCount: out.failureCount, lockedNow: out.lockedNow }
      if (out.lockedUntil !== undefined) r.lockedUntil = out.lockedUntil
      return r
    }
    const st = (await this.lockoutState(id))!
    return { failureCount: st.failureCount, lockedUntil: (out as { lockedUntil: number }).lockedUntil, lockedNow: false }
  }

  /** Record a successful login: clears the counters unless locked (then `lockedUntil` is returned). */
  async recordSuccess(id: PrincipalId, now: number): Promise<{ lockedUntil?: number }> {
    const out = await this.attemptPreauth(id, now, undefined, () => ({ ok: true }))
    return out.outcome === 'locked' ? { lockedUntil: out.lockedUntil } : {}
  }

  /** Load the counters of `key` from the store into memory (one read however many callers wait). */
  #loadCounters(key: string, id: PrincipalId): Promise<void> {
    let p = this.#counterLoads.get(key)
    if (p === undefined) {
      p = (async () => {
        try {
          const raw = await this.#get(this.#principals, key)
          if (this.#counters.has(key)) return
          if (raw === undefined) notFound(id)
          this.#counters.set(key, pickCounters(this.#decodePrincipal(raw)))
        } finally {
          this.#counterLoads.delete(key)
        }
      })()
      this.#counterLoads.set(key, p)
    }
    return p
  }

  /** Drop counters that hold nothing and have no write pending: the store has the same. */
  #forgetCleanCounters(key: string): void {
    const c = this.#counters.get(key)
    if (c === undefined || this.#dirty.has(key) || this.#flushingKeys.has(key)) return
    if (c.failureCount === 0 && c.failureWindowStart === undefined && c.lockedUntil === undefined && !this.#trackLastSuccess)
      this.#counters.delete(key)
  }

  /**
   * Make the counters of `key` (undefined: nothing, a decoy) durable: joins the next group
   * commit and resolves when it is written. One commit runs at a time; everything that
   * arrives meanwhile goes into the next one.
   */
  #commitCounters(key: string | undefined): Promise<void> {
    if (key !== undefined) this.#dirty.add(key)
    let next = this.#nextCommit
    if (next === undefined) {
      let resolve!: () => void
      let reject!: (e: unknown) => void
      const promise = new Promise<void>((res, rej) => {
        resolve = res
        reject = rej
      })
      next = { promise, resolve, reject }
      this.#nextCommit = next
      if (this.#committing === undefined) this.#startCommit()
    }
    return next.promise
  }

  #startCommit(): void {
    const batch = this.#nextCommit!
    this.#nextCommit = undefined
    const keys = [...this.#dirty].sort()
    this.#dirty.clear()
    for (const k of keys) this.#flushingKeys.add(k)
    this.#committing = this.#writeCounters(keys)
      .then(batch.resolve, batch.reject)
      .finally(() => {
        for (const k of keys) this.#flushingKeys.delete(k)
        this.#committing = undefined
        if (this.#nextCommit !== undefined) this.#startCommit()
      })
  }

  /** One synced batch with the current counters of `keys`, each written under its principal's lock. */
  async #writeCounters(keys: string[]): Promise<void> {
    const ops: BatchOp[] = []
    const written: [string, number][] = []
    const step = async (i: number): Promise<void> => {
      if (i < keys.length) {
        const key = keys[i]!
        return this.#mutex.run(key, async () => {
          const raw = await this.#get(this.#principals, key)
          const c = this.#counters.get(key)
          if (raw !== undefined && c !== undefined) {
            const s = applyCounters(this.#decodePrincipal(raw), c)
            const value = encode(s)
            ops.push({ type: 'put', sublevel: this.#principals, key, value })
            written.push([key, value.length])
          }
          await step(i + 1)
        })
      }
      if (ops.length === 0) {
        // Nothing real to write (only failures on unknown names): the same read and synced write.
        await this.#get(this.#meta, 'lockout-decoy')
        ops.push({ type: 'put', sublevel: this.#meta, key: 'lockout-decoy', value: DECOY_VALUE })
      }
      await this.#guard('write', () => this.#db.batch(ops, SYNC))
      // Cached copies keep serving (no reload from the store after every failure); their
      // counters are brought up to date for readers of get().
      for (const [key, stored] of written) {
        const hit = this.#cache.get(key)
        const c = this.#counters.get(key)
        if (hit !== undefined && hit !== ABSENT && c !== undefined) this.#cache.set(key, deepFreeze(applyCounters({ ...hit }, c)), cacheEntryBytes(stored))
        this.#forgetCleanCounters(key)
      }
    }
    await step(0)
  }

  /** Clear a lockout and the failure counters (an admin action: sets modifiedAt/modifiedBy). */
  async unlock(id: PrincipalId, by: string): Promise<void> {
    await this.update(
      id,
      (r) => {
        delete r.lockedUntil
        delete r.failureWindowStart
        r.failureCount = 0
      },
      by,
    )
  }

  // ---- policies ----

  /** The policy named `name` (frozen), or undefined. Served from memory. */
  async getPolicy(name: string): Promise<Readonly<Policy> | undefined> {
    return this.peekPolicy(name)
  }

  /** {@link getPolicy} in the same turn (policies are all in memory). */
  peekPolicy(name: string): Readonly<Policy> | undefined {
    this.#assertOpen()
    return this.#policies.get(name)
  }

  /** Create or replace a policy. Throws TesseraError (TESSERA_BAD_NAME, TESSERA_VALIDATION) if invalid. */
  async putPolicy(p: Policy, opts?: WriteOptions): Promise<void> {
    this.#assertOpen()
    checkPolicy(p)
    const copy: Policy = {
      name: p.name,
      minLength: p.minLength,
      minClasses: p.minClasses,
      maxFailures: p.maxFailures,
      failureCountIntervalMs: p.failureCountIntervalMs,
      lockoutDurationMs: p.lockoutDurationMs,
      maxPasswordLifeMs: p.maxPasswordLifeMs,
    }
    if (p.history !== undefined) copy.history = p.history
    if (p.minPasswordLifeMs !== undefined) copy.minPasswordLifeMs = p.minPasswordLifeMs
    await this.#locked(`policy:${p.name}`, async () => {
      await this.#batch([{ type: 'put', sublevel: this.#policyStore, key: p.name, value: encode(copy) }], [], opts)
      this.#policies.set(p.name, Object.freeze(copy))
    })
  }

  /**
   * Delete a policy. Throws TesseraError: TESSERA_NOT_FOUND if there is none, TESSERA_EXISTS
   * if a principal still uses it (change those principals first).
   */
  async deletePolicy(name: string, opts?: WriteOptions): Promise<void> {
    this.#assertOpen()
    checkPolicyName(name)
    await this.#locked(`policy:${name}`, async () => {
      if (!this.#policies.has(name))
        throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `policy ${JSON.stringify(name)} does not exist`)
      const prefix = lengthPrefixed(name)
      let user: PrincipalId | undefined
      await this.#guard('deletePolicy', async () => {
        for await (const k of this.#policyRefs.keys({ gte: prefix, lt: `${prefix}:`, limit: 1 }))
          user = principalFromKey(k.slice(prefix.length))
      })
      if (user !== undefined)
        throw new TesseraError(
          TesseraErrorCode.TESSERA_EXISTS,
          `policy ${JSON.stringify(name)} is still used by ${formatPrincipal(user)} (and maybe others)`,
        )
      await this.#batch([{ type: 'del', sublevel: this.#policyStore, key: name }], [], opts)
      this.#policies.delete(name)
    })
  }

  /** All policies (frozen), in name order. */
  async listPolicies(): Promise<Readonly<Policy>[]> {
    this.#assertOpen()
    return [...this.#policies.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }

  // ---- internals ----

  #assertOpen(): void {
    if (this.#closing) throw new TesseraError(TesseraErrorCode.TESSERA_DB, 'principal database is closed')
  }

  #wrap(err: unknown, what: string): TesseraError {
    if (err instanceof TesseraError) return err
    const e = err as { code?: unknown; cause?: { code?: unknown } } | undefined
    if (e?.code === 'LEVEL_LOCKED' || e?.cause?.code === 'LEVEL_LOCKED')
      return new TesseraError(
        TesseraErrorCode.TESSERA_DB_LOCKED,
        `the principal database at ${this.#where} is locked by another process, most likely the running kdc: ` +
          'stop it first (one process per realm directory)',
        { cause: err },
      )
    return new TesseraError(TesseraErrorCode.TESSERA_DB, `principal database: ${what} failed`, { cause: err })
  }

  /** Track a running call so close() can wait for it. */
  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p)
    const done = () => this.#inflight.delete(p)
    p.then(done, done)
    return p
  }

  /** Run `fn` under the per-key mutex, as a tracked call; refused once close() has begun. */
  #locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    this.#assertOpen()
    return this.#track(this.#mutex.run(key, fn))
  }

  /** Run a storage call, wrapping foreign errors (level) with their cause. */
  async #guard<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      throw this.#wrap(err, what)
    }
  }

  #get(sub: Sub, key: string): Promise<Uint8Array | undefined> {
    return this.#guard('read', () => sub.get(key))
  }

  /** Write one atomic, synced batch (through `opts.commit` if given), then drop the cached copies of `touched` principal keys. */
  async #batch(ops: BatchOp[], touched: string[], opts?: WriteOptions): Promise<void> {
    try {
      if (opts?.commit === undefined) await this.#guard('write', () => this.#db.batch(ops, SYNC))
      else {
        let calls = 0
        await opts.commit(async (extra) => {
          if (calls++ > 0) throw new Error('WriteOptions.commit must call write once')
          const all = [...ops, ...this.#adminOps(extra)]
          await this.#guard('write', () => this.#db.batch(all, SYNC))
        })
        if (calls !== 1) throw new Error('WriteOptions.commit must call write once')
      }
    } finally {
      // Also on failure: the outcome of a failed write is unknown, so no cached copy is trusted.
      for (const key of touched) this.#invalidate(key)
      if (touched.length > 0) this.#principalWrites++
    }
  }

  #invalidate(key: string): void {
    this.#cache.delete(key)
    const load = this.#loads.get(key)
    if (load !== undefined) {
      load.stale = true
      this.#loads.delete(key)
    }
  }

  /** Run `fn` holding the lock of policy `name` (after checking it exists), or directly if `name` is undefined. */
  async #withPolicy(name: string | undefined, fn: () => Promise<void>): Promise<void> {
    if (name === undefined) return fn()
    // Lock order is always principal -> policy, and deletePolicy takes only the policy lock.
    await this.#mutex.run(`policy:${name}`, async () => {
      if (!this.#policies.has(name))
        throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `policy ${JSON.stringify(name)} does not exist`)
      await fn()
    })
  }

  #refOp(type: 'put' | 'del', policy: string, key: string): BatchOp {
    const refKey = lengthPrefixed(policy) + key
    return type === 'put'
      ? { type, sublevel: this.#policyRefs, key: refKey, value: new Uint8Array(0) }
      : { type, sublevel: this.#policyRefs, key: refKey }
  }

  async #checkMasterKey(): Promise<void> {
    const check = await this.#get(this.#meta, 'check')
    const statusRaw = await this.#get(this.#meta, 'master-keys')
    if (check === undefined && statusRaw === undefined) {
      // Never adopt a key for a database that already has data: its check record is missing,
      // and a wrong key would otherwise be accepted and seal new keys under it.
      let hasData = false
      await this.#guard('open', async () => {
        for await (const _ of this.#db.keys({ limit: 1 })) hasData = true
      })
      if (hasData) throw new TesseraError(TesseraErrorCode.TESSERA_DB, 'principal database has data but no master-key check record')
      if (this.#ring.size !== 1 || !this.#ring.has(1)) throw new RangeError('a new database takes one master key, kvno 1')
      await this.#batch(
        [
          { type: 'put', sublevel: this.#meta, key: 'format', value: encode({ version: FORMAT_VERSION }) },
          { type: 'put', sublevel: this.#meta, key: 'check', value: this.#sealWith(this.#ring.get(1)!, new Uint8Array(32), CHECK_BINDING, 0) },
        ],
        [],
      )
      this.#loadDerived(undefined)
      return
    }
    const format = await this.#get(this.#meta, 'format')
    const version = format === undefined ? undefined : (this.#decodeObject(format, 'format record') as { version?: unknown }).version
    if (version !== FORMAT_VERSION)
      throw new TesseraError(TesseraErrorCode.TESSERA_DB, `principal database format ${String(version)} is not supported (expected ${FORMAT_VERSION})`)
    if (statusRaw !== undefined) {
      const st = this.#decodeObject(statusRaw, 'master-key record') as unknown as MasterKeyStatus
      if (!Number.isSafeInteger(st.active) || !Array.isArray(st.known) || !st.known.includes(st.active)) corrupt('master-key record')
      this.#mkStatus = { active: st.active, known: [...st.known] }
      if (st.reseal !== undefined) this.#mkStatus.reseal = { ...st.reseal }
    }
    for (const kvno of this.#mkStatus.known) {
      const key = this.#ring.get(kvno)
      if (key === undefined)
        throw new TesseraError(
          TesseraErrorCode.TESSERA_CONFIG,
          `the stash lacks master key kvno ${kvno}, which this database still uses (restore the stash from before the rotation, or finish it: docs/operations.md)`,
        )
      const rec = kvno === 1 ? check : await this.#get(this.#meta, `check:${kvno}`)
      try {
        if (rec === undefined) throw new Error('no check record')
        this.#openWith(key, rec, CHECK_BINDING, 0)
      } catch (err) {
        throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'master key does not match this database', { cause: err })
      }
    }
    this.#active = this.#mkStatus.active
    const derived = await this.#get(this.#meta, 'derived')
    this.#loadDerived(derived === undefined ? undefined : (this.#decodeObject(derived, 'derived-key record') as unknown as StoredDerived))
  }

  /** The stable derived keys: from the `derived` record, or (never rotated) from master key 1. */
  #loadDerived(d: StoredDerived | undefined): void {
    // Every key of the record is bound to the number of audit epochs (the audit-epoch keys also to
    // their place), so no epoch can be dropped, moved or added without breaking a seal.
    const epochs = d?.epochs ?? []
    if (!Array.isArray(epochs) || !epochs.every(isBytes)) corrupt('derived-key record')
    for (const label of DERIVED_LABELS) {
      let k: Uint8Array
      if (d !== undefined) {
        const sealed = d.keys?.[label]
        if (!isBytes(sealed)) corrupt('derived-key record')
        k = this.#openKey(sealed, `derived:${label}`, epochs.length, d.mk)
      } else {
        const first = this.#ring.get(1)
        if (first === undefined || this.#mkStatus.known.length !== 1) corrupt('database (no derived-key record after a master-key rotation)')
        k = hkdf(first, new Uint8Array(0), label, 32)
      }
      this.#derived.set(label, k)
    }
    this.#hintKey = copyBytes(this.#derived.get('tessera kdf hint v1')!)
    for (const [i, sealed] of epochs.entries()) this.#auditEpochs.push(this.#openKey(sealed, `audit-epoch:${i + 1}`, epochs.length, d!.mk))
  }

  /** The `derived` record sealed under master key `mk` (the active one), with the audit epochs `epochs`. */
  #encodeDerived(mk = this.#active, epochs: readonly Uint8Array[] = this.#auditEpochs): Uint8Array {
    const master = this.#ring.get(mk)!
    const keys: Record<string, Uint8Array> = {}
    for (const label of DERIVED_LABELS) keys[label] = this.#sealWith(master, this.#derived.get(label)!, `derived:${label}`, epochs.length)
    const out: StoredDerived = { mk, keys }
    if (epochs.length > 0) out.epochs = epochs.map((k, i) => this.#sealWith(master, k, `audit-epoch:${i + 1}`, epochs.length))
    return encode(out)
  }

  // ---- master-key rotation (MIT add_mkey / use_mkey / update_princ_encryption / purge_mkeys) ----

  /** The master keys the database knows, which one seals, a reseal under way, and stash keys it does not know yet. */
  masterKeyStatus(): MasterKeyStatus & { unregistered: number[] } {
    this.#assertOpen()
    const st = this.#mkStatus
    return {
      active: st.active,
      known: [...st.known],
      ...(st.reseal ? { reseal: { ...st.reseal } } : {}),
      unregistered: [...this.#ring.keys()].filter((k) => !st.known.includes(k)),
    }
  }

  #statusOp(st: MasterKeyStatus): BatchOp {
    return { type: 'put', sublevel: this.#meta, key: 'master-keys', value: encode(st) }
  }

  /**
   * add_mkey: make stash key `kvno` known to the database: its check record, and the derived
   * keys kept sealed from now on. Nothing is sealed under it yet. The key was given at open,
   * or is `key` (copied): the running KDC learns a key just written to its stash this way.
   * RangeError if `key` differs from a key of the same version the database already holds.
   */
  async addMasterKey(kvno: number, key?: Uint8Array): Promise<void> {
    this.#assertOpen()
    if (key !== undefined && (!isBytes(key) || key.length !== MASTER_KEY_BYTES)) throw new RangeError(`a master key is ${MASTER_KEY_BYTES} bytes`)
    await this.#locked('meta:master', async () => {
      if (key !== undefined) {
        const held = this.#ring.get(kvno)
        if (held === undefined) this.#ring.set(kvno, copyBytes(key))
        else if (!Buffer.from(held).equals(key)) throw new RangeError(`master key kvno ${kvno} is already held with other bytes`)
      }
      const mkey = this.#ring.get(kvno)
      if (mkey === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `the stash holds no master key kvno ${kvno}`)
      if (this.#mkStatus.known.includes(kvno)) return
      const st: MasterKeyStatus = { ...this.#mkStatus, known: [...this.#mkStatus.known, kvno] }
      const ops: BatchOp[] = [
        { type: 'put', sublevel: this.#meta, key: `check:${kvno}`, value: this.#sealWith(mkey, new Uint8Array(32), CHECK_BINDING, 0) },
        this.#statusOp(st),
      ]
      if ((await this.#get(this.#meta, 'derived')) === undefined) ops.push({ type: 'put', sublevel: this.#meta, key: 'derived', value: this.#encodeDerived() })
      await this.#batch(ops, [])
      this.#mkStatus = st
    })
  }

  /**
   * use_mkey: new seals use master key `kvno` (known) from now on; records sealed before stay
   * readable. It also starts the next audit epoch: a key derived from master key `kvno` (and a
   * fresh salt, so a key used again still gives a new one), kept with the earlier epochs' in the
   * `derived` record, sealed under `kvno` in the same batch. `audit(epoch, key)` gives the
   * options of that batch (the audit log's record of the switch). Nothing happens if `kvno` is active already.
   */
  async useMasterKey(kvno: number, audit?: (epoch: number, key: Uint8Array) => WriteOptions): Promise<void> {
    this.#assertOpen()
    await this.#locked('meta:master', async () => {
      if (!this.#mkStatus.known.includes(kvno))
        throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `the database knows no master key kvno ${kvno}: add it first`)
      if (this.#mkStatus.active === kvno) return
      const st: MasterKeyStatus = { active: kvno, known: [...this.#mkStatus.known] }
      const salt = randomBytes(32)
      const key = hkdf(this.#ring.get(kvno)!, salt, AUDIT_EPOCH_LABEL, 32)
      const epochs = [...this.#auditEpochs, key]
      const derived: BatchOp = { type: 'put', sublevel: this.#meta, key: 'derived', value: this.#encodeDerived(kvno, epochs) }
      try {
        await this.#batch([this.#statusOp(st), derived], [], audit?.(epochs.length, key))
      } catch (err) {
        wipe(key)
        throw err
      }
      this.#auditEpochs.push(key)
      this.#mkStatus = st
      this.#active = kvno
    })
  }

  /**
   * update_princ_encryption: re-seal every record not sealed under the active master key, in
   * batches of `batchSize` principals; each batch also moves the progress marker (meta
   * `master-keys`.reseal), so a run cut short (kill -9) resumes after the last batch that
   * landed. The realm record and the derived keys are resealed first. `onProgress(done,
   * total)` after each batch; `afterBatch` (tests) runs after each batch landed. When
   * `shouldStop()` says so after a batch, the run ends there (`stopped`), its marker kept for the next.
   */
  async reseal(
    o: {
      batchSize?: number
      onProgress?: (done: number, total: number) => void
      afterBatch?: () => Promise<void>
      shouldStop?: () => boolean
    } = {},
  ): Promise<{ resealed: number; total: number; stopped?: true }> {
    this.#assertOpen()
    const batchSize = o.batchSize ?? 100
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError('batchSize must be a positive integer')
    return this.#locked('meta:master', async () => {
      const target = this.#active
      const prior = this.#mkStatus.reseal
      const after = prior?.target === target ? prior.after : undefined
      const total = await this.#countKeys()
      // The marker first, with the realm record and the derived keys; the realm record under its
      // lock, so that an identity-key step of the running KDC is not overwritten by an older copy.
      let st: MasterKeyStatus = { active: target, known: [...this.#mkStatus.known], reseal: after === undefined ? { target } : { target, after } }
      await this.#mutex.run('meta:realm', async () => {
        const head: BatchOp[] = [{ type: 'put', sublevel: this.#meta, key: 'derived', value: this.#encodeDerived() }]
        const realm = await this.getRealm()
        if (realm !== undefined) head.push({ type: 'put', sublevel: this.#meta, key: 'realm', value: this.#encodeRealm(realm) })
        head.push(this.#statusOp(st))
        await this.#guard('write', () => this.#db.batch(head, SYNC))
        this.#mkStatus = st
      })
      let done = after === undefined ? 0 : await this.#countKeys(after)
      let resealed = 0
      o.onProgress?.(done, total)
      let cursor = after
      for (;;) {
        const keys: string[] = []
        const range = cursor === undefined ? { limit: batchSize } : { gt: cursor, limit: batchSize }
        await this.#guard('reseal', async () => {
          for await (const k of this.#principals.keys(range)) keys.push(k)
        })
        if (keys.length === 0) break
        const ops: BatchOp[] = []
        // Each record under its own lock (as #writeCounters), all locks held until the batch landed.
        const step = async (i: number): Promise<void> => {
          if (i < keys.length) {
            const key = keys[i]!
            return this.#mutex.run(key, async () => {
              const raw = await this.#get(this.#principals, key)
              if (raw !== undefined) {
                const sp = this.#decodePrincipal(raw)
                if ((sp.mk ?? 1) !== target) {
                  const rec = this.#unsealPrincipal(sp, key)
                  ops.push({ type: 'put', sublevel: this.#principals, key, value: this.#encodePrincipalStored(rec, key, sp) })
                  for (const k of rec.keys) wipe(k.key)
                  resealed++
                }
              }
              await step(i + 1)
            })
          }
          st = { active: target, known: [...st.known], reseal: { target, after: keys[keys.length - 1]! } }
          ops.push(this.#statusOp(st))
          await this.#guard('write', () => this.#db.batch(ops, SYNC))
          this.#mkStatus = st
          for (const key of keys) this.#invalidate(key)
        }
        await step(0)
        cursor = keys[keys.length - 1]!
        done += keys.length
        o.onProgress?.(Math.min(done, total), total)
        await o.afterBatch?.()
        if (keys.length < batchSize) break
        if (o.shouldStop?.()) return { resealed, total, stopped: true }
      }
      st = { active: target, known: [...st.known] }
      await this.#guard('write', () => this.#db.batch([this.#statusOp(st)], SYNC))
      this.#mkStatus = st
      return { resealed, total }
    })
  }

  /**
   * purge_mkeys: forget master key `kvno` once nothing is sealed under it (every record is
   * checked: refused, TESSERA_EXISTS, while one is, or while a reseal is unfinished). After
   * this the stash no longer needs it (`kdc master-key retire` then rewrites the stash).
   */
  async retireMasterKey(kvno: number): Promise<void> {
    this.#assertOpen()
    await this.#locked('meta:master', async () => {
      const st0 = this.#mkStatus
      if (!st0.known.includes(kvno)) return
      if (kvno === st0.active) throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `master key kvno ${kvno} is the active one: use another first`)
      if (st0.reseal !== undefined) throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, 'a reseal is unfinished: run it again first')
      const uses = (mk: number | undefined) => (mk ?? 1) === kvno
      let used: string | undefined
      await this.#guard('retire', async () => {
        for await (const [k, raw] of this.#principals.iterator())
          if (uses(this.#decodePrincipal(raw).mk)) {
            used = formatPrincipal(principalFromKey(k))
            break
          }
      })
      for (const meta of ['realm', 'derived']) {
        const raw = await this.#get(this.#meta, meta)
        if (raw !== undefined && uses((this.#decodeObject(raw, `${meta} record`) as { mk?: number }).mk)) used ??= `the ${meta} record`
      }
      if (used !== undefined) throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `master key kvno ${kvno} still seals ${used}: run reseal first`)
      const st: MasterKeyStatus = { active: st0.active, known: st0.known.filter((k) => k !== kvno) }
      await this.#batch([{ type: 'del', sublevel: this.#meta, key: kvno === 1 ? 'check' : `check:${kvno}` }, this.#statusOp(st)], [])
      this.#mkStatus = st
      const key = this.#ring.get(kvno)
      if (key !== undefined) wipe(key)
      this.#ring.delete(kvno)
    })
  }

  /** Principals in the store (those at or before `upTo` when given). */
  async #countKeys(upTo?: string): Promise<number> {
    let n = 0
    await this.#guard('count', async () => {
      for await (const _ of this.#principals.keys(upTo === undefined ? {} : { lte: upTo })) n++
    })
    return n
  }

  async #loadPolicies(): Promise<void> {
    await this.#guard('open', async () => {
      for await (const [name, raw] of this.#policyStore.iterator()) {
        const p = this.#decodeObject(raw, 'policy') as unknown as Policy
        if (p.name !== name) corrupt('policy')
        this.#policies.set(name, Object.freeze(p))
      }
    })
  }

  #decodeObject(raw: Uint8Array, what: string): Record<string, unknown> {
    let v: unknown
    try {
      v = decode(raw, { maxEntries: 1 << 16 })
    } catch (err) {
      throw new TesseraError(TesseraErrorCode.TESSERA_DB, `principal database: corrupt ${what}`, { cause: err })
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) corrupt(what)
    return v as Record<string, unknown>
  }

  #decodePrincipal(raw: Uint8Array): StoredPrincipal {
    const s = this.#decodeObject(raw, 'principal record') as unknown as StoredPrincipal
    if (s.v !== FORMAT_VERSION || !Array.isArray(s.keys) || !Array.isArray(s.components) || typeof s.failureCount !== 'number')
      corrupt('principal record')
    for (const k of s.keys) if (k === null || typeof k !== 'object' || !isBytes(k.sealed)) corrupt('principal record')
    if (s.passwordHistory !== undefined) {
      if (!Array.isArray(s.passwordHistory)) corrupt('principal record')
      for (const k of s.passwordHistory) if (k === null || typeof k !== 'object' || !isBytes(k.sealed)) corrupt('principal record')
    }
    return s
  }

  /**
   * The sealed form of one key, under the active master key. The sealed plaintext names what
   * the key belongs to (the principal's database key, or the realm role) and its kvno, and is
   * checked on open: a sealed key copied into another record (say a known user key into krbtgt) is refused.
   */
  #sealKey(key: Uint8Array, binding: string, kvno: number): Uint8Array {
    return this.#sealWith(this.#ring.get(this.#active)!, key, binding, kvno)
  }

  #sealWith(master: Uint8Array, key: Uint8Array, binding: string, kvno: number): Uint8Array {
    const plain = encode({ b: binding, n: kvno, k: key })
    try {
      return seal(master, KeyUsage.DB_KEY_AT_REST, plain)
    } finally {
      wipe(plain)
    }
  }

  /** Open a key sealed under master key version `mk` (absent in a record: 1). */
  #openKey(sealed: Uint8Array, binding: string, kvno: number, mk: number | undefined): Uint8Array {
    const master = this.#ring.get(mk ?? 1)
    if (master === undefined)
      throw new TesseraError(TesseraErrorCode.TESSERA_INTEGRITY, `a sealed key is under master key kvno ${mk ?? 1}, which the stash does not hold`)
    return this.#openWith(master, sealed, binding, kvno)
  }

  #openWith(master: Uint8Array, sealed: Uint8Array, binding: string, kvno: number): Uint8Array {
    const plain = tryOpen(master, KeyUsage.DB_KEY_AT_REST, sealed)
    if (plain === null) throw new TesseraError(TesseraErrorCode.TESSERA_INTEGRITY, 'a sealed key does not open under the master key')
    try {
      const v = decode(plain) as { b?: unknown; n?: unknown; k?: unknown } | null
      if (v === null || typeof v !== 'object' || v.b !== binding || v.n !== kvno || !isBytes(v.k) || v.k.length !== 32)
        throw new TesseraError(TesseraErrorCode.TESSERA_INTEGRITY, 'a sealed key does not belong to the record that holds it')
      return copyBytes(v.k)
    } finally {
      wipe(plain)
    }
  }

  /** The stored record `sp` with the keys of `rec` sealed again under the active master key; every other field as stored. */
  #encodePrincipalStored(rec: PrincipalRecord, key: string, sp: StoredPrincipal): Uint8Array {
    const fresh = this.#decodePrincipal(this.#encodePrincipal(rec, key))
    const out: StoredPrincipal = { ...sp, keys: fresh.keys }
    if (fresh.passwordHistory !== undefined) out.passwordHistory = fresh.passwordHistory
    if (fresh.mk === undefined) delete out.mk
    else out.mk = fresh.mk
    return encode(out)
  }

  #encodePrincipal(rec: PrincipalRecord, key: string): Uint8Array {
    const { passwordHistory: _h, ...plain } = rec
    const stored: StoredPrincipal = {
      ...plain,
      v: FORMAT_VERSION,
      ...(this.#active !== 1 ? { mk: this.#active } : {}),
      keys: rec.keys.map(({ key: k, ...meta }) => ({ ...meta, sealed: this.#sealKey(k, key, meta.kvno) })),
    }
    // Old password keys are bound to their own role, so none can be moved into `keys`.
    if (rec.passwordHistory !== undefined)
      stored.passwordHistory = rec.passwordHistory.map(({ key: k, ...meta }) => ({ ...meta, sealed: this.#sealKey(k, `history:${key}`, meta.kvno) }))
    return encode(stored)
  }

  #unsealPrincipal(s: StoredPrincipal, key: string): PrincipalRecord {
    // The record names the principal its key names: its own key (principalKey is injective)
    // is the one it is stored under.
    if (typeof s.realm !== 'string' || !Array.isArray(s.components) || !s.components.every((c) => typeof c === 'string') || principalKey(s) !== key)
      corrupt('principal record (name does not match its key)')
    const rec = copyFieldsExcept(s, STORED_ONLY)
    rec.components = [...s.components]
    rec.keys = s.keys.map((k) => this.#unsealKey(k, key, s.mk))
    if (s.passwordHistory !== undefined) rec.passwordHistory = s.passwordHistory.map((k) => this.#unsealKey(k, `history:${key}`, s.mk))
    return rec as unknown as PrincipalRecord
  }
  /** One stored key version, with its key opened (every field but `sealed`, then `key`). */
  #unsealKey(k: StoredKey, binding: string, mk: number | undefined): KeyVersion {
    const out = copyFieldsExcept(k, SEALED_ONLY)
    out.key = this.#openKey(k.sealed, binding, k.kvno, mk)
    return out as unknown as KeyVersion
  }
}

/** What {@link PrincipalDb.keyCensus} returns. */
export interface KeyCensus {
  /** Principals with a random current key (services), krbtgt/* aside. */
  services: number
  /** When the oldest current key of those was created, ms since epoch; undefined without services. */
  oldestServiceKeyCreatedAt: number | undefined
}

/** Count stored record `s` into `c` if it is a service (a random current key, not krbtgt/*). */
function countServiceKey(c: KeyCensus, s: StoredPrincipal): void {
  const k = s.keys[s.keys.length - 1]
  if (!k || k.kdf !== undefined || s.components[0] === 'krbtgt') return
  c.services++
  if (c.oldestServiceKeyCreatedAt === undefined || k.createdAt < c.oldestServiceKeyCreatedAt) c.oldestServiceKeyCreatedAt = k.createdAt
}

/** The `derived` meta record: the stable derived keys and the audit epochs' keys (1, 2, …), sealed under master key `mk`. */
interface StoredDerived {
  mk: number
  keys: Record<string, Uint8Array>
  epochs?: Uint8Array[]
}

type BatchOp =
  | { type: 'put'; sublevel: Sub; key: string; value: Uint8Array }
  | { type: 'del'; sublevel: Sub; key: string }
