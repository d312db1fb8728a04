/** The principal database over abstract-level: principals, key versions, policies, realm keys, lockout counters. */
import { mkdir } from 'node:fs/promises'
import type { AbstractBatchOptions, AbstractLevel, AbstractSublevel } from 'abstract-level'
import { Level } from 'level'
import { MemoryLevel } from 'memory-level'
import { KeyUsage } from '../../proto/key-usage.js'
import { seal, tryOpen, wipe } from '../crypto/index.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { decode, encode } from '../wire/codec.js'
import { KeyedMutex } from './mutex.js'
import { LruCache } from './lru.js'
import { MASTER_KEY_BYTES } from './master-key.js'
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
import type { FailureOutcome, KeyVersion, Policy, PrincipalId, PrincipalRecord, RealmRecord } from './types.js'

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
  /** The realm master key, 32 bytes. Copied; the caller may wipe its own copy. */
  masterKey: Uint8Array
  /** Principals kept decoded in the LRU cache; 0 disables it. @default 200000 */
  cacheSize?: number
  /** Write `lastSuccess` on every successful login (one write per login). @default false */
  trackLastSuccess?: boolean
  /** Clock for `modifiedAt`, ms since epoch. @default Date.now */
  now?: () => number
}

/** Defaults of {@link PrincipalDbOptions}. */
export const DEFAULT_PRINCIPAL_DB_OPTIONS = { cacheSize: 200_000, trackLastSuccess: false } as const

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
interface StoredPrincipal extends Omit<PrincipalRecord, 'keys'> {
  v: number
  keys: StoredKey[]
}
interface StoredKeyPair {
  publicKey: Uint8Array
  sealed: Uint8Array
}
interface StoredRealm {
  v: number
  realm: string
  createdAt: number
  transportKey: StoredKeyPair
  signingKey: StoredKeyPair
}

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
    for (const v of Object.values(o)) deepFreeze(v)
    Object.freeze(o)
  }
  return o
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
  if (!Number.isSafeInteger(rec.failureCount) || rec.failureCount < 0)
    throw new RangeError('failureCount must be a non-negative integer')
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
  readonly #masterKey: Uint8Array
  readonly #cache: LruCache<string, Readonly<PrincipalRecord>>
  readonly #loads = new Map<string, Load>()
  readonly #mutex = new KeyedMutex()
  readonly #policies = new Map<string, Readonly<Policy>>()
  readonly #trackLastSuccess: boolean
  readonly #now: () => number
  readonly #where: string
  /** Set by close(): new calls are refused, calls already running finish first. */
  #closing = false
  #closed: Promise<void> | undefined
  readonly #inflight = new Set<Promise<unknown>>()

  private constructor(db: AnyLevel, opts: PrincipalDbOptions, where: string) {
    this.#db = db
    const sub = (name: string): Sub => db.sublevel<string, Uint8Array>(name, { keyEncoding: 'utf8', valueEncoding: 'view' }) as Sub
    this.#principals = sub('principals')
    this.#policyStore = sub('policies')
    this.#policyRefs = sub('policy-refs')
    this.#meta = sub('meta')
    this.#masterKey = copyBytes(opts.masterKey)
    this.#cache = new LruCache(opts.cacheSize ?? DEFAULT_PRINCIPAL_DB_OPTIONS.cacheSize)
    this.#trackLastSuccess = opts.trackLastSuccess ?? DEFAULT_PRINCIPAL_DB_OPTIONS.trackLastSuccess
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
    if (!isBytes(opts.masterKey) || opts.masterKey.length !== MASTER_KEY_BYTES)
      throw new RangeError(`masterKey must be ${MASTER_KEY_BYTES} bytes`)
    if (opts.cacheSize !== undefined && (!Number.isSafeInteger(opts.cacheSize) || opts.cacheSize < 0))
      throw new RangeError('cacheSize must be a non-negative integer')
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
      db = new Level<string, Uint8Array>(opts.location, { keyEncoding: 'utf8', valueEncoding: 'view' })
    } else {
      where = 'memory'
      db = new MemoryLevel<string, Uint8Array>({ keyEncoding: 'utf8', valueEncoding: 'view' })
    }
    const pdb = new PrincipalDb(db, opts, where)
    try {
      await pdb.#guard('open', () => db.open())
      await pdb.#checkMasterKey()
      await pdb.#loadPolicies()
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
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight])
    this.#cache.clear()
    this.#loads.clear()
    this.#policies.clear()
    try {
      await this.#db.close()
    } catch (err) {
      throw this.#wrap(err, 'close')
    } finally {
      wipe(this.#masterKey)
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
    const pair = (p: StoredKeyPair | undefined, which: string) => {
      if (!p || !isBytes(p.publicKey) || !isBytes(p.sealed)) corrupt('realm record')
      return { secretKey: this.#openKey(p.sealed, `realm:${s.realm}:${which}`, 0), publicKey: copyBytes(p.publicKey) }
    }
    return {
      realm: s.realm,
      createdAt: s.createdAt,
      transportKey: pair(s.transportKey, 'transport'),
      signingKey: pair(s.signingKey, 'signing'),
    }
  }

  /** Store the realm record, once. TesseraError(TESSERA_EXISTS) if the database already has one. */
  async putRealm(r: RealmRecord): Promise<void> {
    this.#assertOpen()
    checkRealm(r.realm)
    for (const p of [r.transportKey, r.signingKey])
      if (!isBytes(p?.secretKey) || p.secretKey.length !== 32 || !isBytes(p.publicKey) || p.publicKey.length !== 32)
        throw new RangeError('realm identity keys must be 32-byte key pairs')
    await this.#locked('meta:realm', async () => {
      if ((await this.#get(this.#meta, 'realm')) !== undefined)
        throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, 'this database already holds a realm')
      const stored: StoredRealm = {
        v: FORMAT_VERSION,
        realm: r.realm,
        createdAt: r.createdAt,
        transportKey: {
          publicKey: r.transportKey.publicKey,
          sealed: this.#sealKey(r.transportKey.secretKey, `realm:${r.realm}:transport`, 0),
        },
        signingKey: {
          publicKey: r.signingKey.publicKey,
          sealed: this.#sealKey(r.signingKey.secretKey, `realm:${r.realm}:signing`, 0),
        },
      }
      await this.#batch([{ type: 'put', sublevel: this.#meta, key: 'realm', value: encode(stored) }], [])
    })
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
    return this.#cache.get(principalKey(id))
  }

  /**
   * {@link peek} by database key ({@link principalKey} of the id), for a caller that keeps the
   * key of a name it looks up often: building and hashing a fresh key string costs more than
   * the lookup.
   */
  peekByKey(key: string): Readonly<PrincipalRecord> | undefined {
    if (this.#closing) return undefined
    return this.#cache.get(key)
  }

  get(id: PrincipalId): Promise<Readonly<PrincipalRecord> | undefined> {
    this.#assertOpen()
    const key = principalKey(id)
    const hit = this.#cache.get(key)
    if (hit !== undefined) return Promise.resolve(hit)
    const running = this.#loads.get(key)
    if (running !== undefined) return running.promise
    // principalKey is injective on strings, but LevelDB sees UTF-8 bytes, and an ill-formed
    // string (lone surrogate) would share bytes with a valid one: only valid names reach the store.
    if (!isValidPrincipalId(id)) return Promise.resolve(undefined)
    const load: Load = { stale: false, promise: Promise.resolve(undefined) }
    this.#loads.set(key, load)
    load.promise = (async () => {
      try {
        const raw = await this.#get(this.#principals, key)
        if (raw === undefined) return undefined
        const rec = deepFreeze(this.#unsealPrincipal(this.#decodePrincipal(raw), key))
        // A load that overlapped a write may have read the old value: return it, never cache it.
        if (!load.stale && !this.#closing) this.#cache.set(key, rec)
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
  async create(rec: PrincipalRecord): Promise<void> {
    this.#assertOpen()
    checkPrincipalId(rec)
    checkRecordShape(rec)
    const key = principalKey(rec)
    await this.#locked(key, async () => {
      if ((await this.#get(this.#principals, key)) !== undefined)
        throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `principal ${formatPrincipal(rec)} already exists`)
      const ops: BatchOp[] = [{ type: 'put', sublevel: this.#principals, key, value: this.#encodePrincipal(rec, key) }]
      await this.#withPolicy(rec.policy, async () => {
        if (rec.policy !== undefined) ops.push(this.#refOp('put', rec.policy, key))
        await this.#batch(ops, [key])
      })
    })
  }

  /**
   * Atomic read-modify-write of one principal: `mutate` gets a private, mutable copy (keys
   * unsealed) and may change anything but the name; `modifiedAt`/`modifiedBy` are then set and
   * the record is written in one synced batch. Calls for the same principal are serialized.
   * Returns the record as written. Throws TesseraError(TESSERA_NOT_FOUND) if there is none.
   */
  async update(id: PrincipalId, mutate: (rec: PrincipalRecord) => void | Promise<void>, by: string): Promise<PrincipalRecord> {
    this.#assertOpen()
    checkPrincipalId(id)
    const key = principalKey(id)
    return this.#locked(key, async () => {
      const raw = await this.#get(this.#principals, key)
      if (raw === undefined) notFound(id)
      const rec = this.#unsealPrincipal(this.#decodePrincipal(raw), key)
      const oldPolicy = rec.policy
      await mutate(rec)
      if (!samePrincipal(rec, id)) throw new RangeError('update() must not change the principal name')
      checkRecordShape(rec)
      rec.modifiedAt = this.#now()
      rec.modifiedBy = by
      const ops: BatchOp[] = [{ type: 'put', sublevel: this.#principals, key, value: this.#encodePrincipal(rec, key) }]
      const newPolicy = rec.policy
      if (newPolicy === oldPolicy) {
        await this.#batch(ops, [key])
      } else {
        if (oldPolicy !== undefined) ops.push(this.#refOp('del', oldPolicy, key))
        await this.#withPolicy(newPolicy, async () => {
          if (newPolicy !== undefined) ops.push(this.#refOp('put', newPolicy, key))
          await this.#batch(ops, [key])
        })
      }
      return rec
    })
  }

  /** Delete a principal and all its keys. Throws TesseraError(TESSERA_NOT_FOUND) if there is none. */
  async delete(id: PrincipalId): Promise<void> {
    this.#assertOpen()
    checkPrincipalId(id)
    const key = principalKey(id)
    await this.#locked(key, async () => {
      const raw = await this.#get(this.#principals, key)
      if (raw === undefined) notFound(id)
      const s = this.#decodePrincipal(raw)
      const ops: BatchOp[] = [{ type: 'del', sublevel: this.#principals, key }]
      if (typeof s.policy === 'string') ops.push(this.#refOp('del', s.policy, key))
      await this.#batch(ops, [key])
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

  // ---- lockout ----

  /**
   * Count one failed pre-authentication at time `now`. Serialized per principal and written
   * (synced) before it resolves, so N concurrent calls count N failures. The count restarts at
   * 1 when the window (`failureCountIntervalMs` from the window start; 0 = no expiry) has
   * passed or an earlier lockout has expired. When it reaches `maxFailures` (> 0) the
   * principal is locked until `now + lockoutDurationMs` (0 = until unlock(), stored as
   * Number.MAX_SAFE_INTEGER). A principal already locked is not counted again (no write).
   * Without a policy failures are counted but never lock.
   */
  async recordFailure(id: PrincipalId, now: number, policy: Policy | undefined): Promise<FailureOutcome> {
    this.#assertOpen()
    checkPrincipalId(id)
    if (!Number.isFinite(now)) throw new RangeError('now must be a finite number')
    const key = principalKey(id)
    return this.#locked(key, async () => {
      const raw = await this.#get(this.#principals, key)
      if (raw === undefined) notFound(id)
      // Works on the stored form: the counters are in clear, the sealed keys are left untouched.
      const s = this.#decodePrincipal(raw)
      if (s.lockedUntil !== undefined && s.lockedUntil > now)
        return { failureCount: s.failureCount, lockedUntil: s.lockedUntil, lockedNow: false }
      let count = s.failureCount
      let start = s.failureWindowStart
      if (s.lockedUntil !== undefined) {
        // The lockout has expired: the next failure opens a new window.
        delete s.lockedUntil
        count = 0
      }
      const interval = policy?.failureCountIntervalMs ?? 0
      if (count === 0 || start === undefined || (interval > 0 && now - start >= interval)) {
        count = 0
        start = now
      }
      count += 1
      s.failureCount = count
      s.failureWindowStart = start
      s.lastFailure = now
      let lockedNow = false
      if (policy !== undefined && policy.maxFailures > 0 && count >= policy.maxFailures) {
        s.lockedUntil =
          policy.lockoutDurationMs > 0 ? Math.min(now + policy.lockoutDurationMs, Number.MAX_SAFE_INTEGER) : Number.MAX_SAFE_INTEGER
        lockedNow = true
      }
      await this.#batch([{ type: 'put', sublevel: this.#principals, key, value: encode(s) }], [key])
      const out: FailureOutcome = { failureCount: count, lockedNow }
      if (s.lockedUntil !== undefined) out.lockedUntil = s.lockedUntil
      return out
    })
  }

  /**
   * A successful login at `now`. Writes only when there are failure counters to reset (an
   * expired lockout is cleared with them) or when `trackLastSuccess` is on; `lastSuccess` is
   * set whenever it writes. So a normal login costs no write. An active lockout is left as
   * it is and returned: the caller must refuse the login (checked under the principal's lock).
   */
  async recordSuccess(id: PrincipalId, now: number): Promise<{ lockedUntil?: number }> {
    checkPrincipalId(id)
    const cached = await this.get(id)
    if (cached === undefined) notFound(id)
    const dirty = (r: { failureCount: number; failureWindowStart?: number }) => r.failureCount !== 0 || r.failureWindowStart !== undefined
    // Nothing counted, nothing locked: a successful login costs no write.
    if (!dirty(cached) && cached.lockedUntil === undefined && !this.#trackLastSuccess) return {}
    const key = principalKey(id)
    return this.#locked(key, async () => {
      const raw = await this.#get(this.#principals, key)
      if (raw === undefined) notFound(id)
      const s = this.#decodePrincipal(raw)
      // Decided under the principal's lock, so a lockout written by a parallel failure is seen.
      if (s.lockedUntil !== undefined && s.lockedUntil > now) return { lockedUntil: s.lockedUntil }
      const reset = dirty(s) || s.lockedUntil !== undefined
      if (!reset && !this.#trackLastSuccess) return {}
      if (reset) {
        s.failureCount = 0
        delete s.failureWindowStart
        delete s.lockedUntil
      }
      s.lastSuccess = now
      await this.#batch([{ type: 'put', sublevel: this.#principals, key, value: encode(s) }], [key])
      return {}
    })
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
    this.#assertOpen()
    return this.#policies.get(name)
  }

  /** Create or replace a policy. Throws TesseraError (TESSERA_BAD_NAME, TESSERA_VALIDATION) if invalid. */
  async putPolicy(p: Policy): Promise<void> {
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
    await this.#locked(`policy:${p.name}`, async () => {
      await this.#batch([{ type: 'put', sublevel: this.#policyStore, key: p.name, value: encode(copy) }], [])
      this.#policies.set(p.name, Object.freeze(copy))
    })
  }

  /**
   * Delete a policy. Throws TesseraError: TESSERA_NOT_FOUND if there is none, TESSERA_EXISTS
   * if a principal still uses it (change those principals first).
   */
  async deletePolicy(name: string): Promise<void> {
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
      await this.#batch([{ type: 'del', sublevel: this.#policyStore, key: name }], [])
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

  /** Write one atomic, synced batch, then drop the cached copies of `touched` principal keys. */
  async #batch(ops: BatchOp[], touched: string[]): Promise<void> {
    try {
      await this.#guard('write', () => this.#db.batch(ops, SYNC))
    } finally {
      // Also on failure: the outcome of a failed write is unknown, so no cached copy is trusted.
      for (const key of touched) this.#invalidate(key)
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
    if (check === undefined) {
      // Never adopt a key for a database that already has data: its check record is missing,
      // and a wrong key would otherwise be accepted and seal new keys under it.
      let hasData = false
      await this.#guard('open', async () => {
        for await (const _ of this.#db.keys({ limit: 1 })) hasData = true
      })
      if (hasData) throw new TesseraError(TesseraErrorCode.TESSERA_DB, 'principal database has data but no master-key check record')
      await this.#batch(
        [
          { type: 'put', sublevel: this.#meta, key: 'format', value: encode({ version: FORMAT_VERSION }) },
          { type: 'put', sublevel: this.#meta, key: 'check', value: this.#sealKey(new Uint8Array(32), CHECK_BINDING, 0) },
        ],
        [],
      )
      return
    }
    const format = await this.#get(this.#meta, 'format')
    const version = format === undefined ? undefined : (this.#decodeObject(format, 'format record') as { version?: unknown }).version
    if (version !== FORMAT_VERSION)
      throw new TesseraError(TesseraErrorCode.TESSERA_DB, `principal database format ${String(version)} is not supported (expected ${FORMAT_VERSION})`)
    try {
      this.#openKey(check, CHECK_BINDING, 0)
    } catch (err) {
      throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'master key does not match this database', { cause: err })
    }
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
    return s
  }

  /**
   * The sealed form of one key. The sealed plaintext names what the key belongs to (the
   * principal's database key, or the realm role) and its kvno, and is checked on open: a
   * sealed key copied into another record (say a known user key into krbtgt) is refused.
   */
  #sealKey(key: Uint8Array, binding: string, kvno: number): Uint8Array {
    const plain = encode({ b: binding, n: kvno, k: key })
    try {
      return seal(this.#masterKey, KeyUsage.DB_KEY_AT_REST, plain)
    } finally {
      wipe(plain)
    }
  }

  #openKey(sealed: Uint8Array, binding: string, kvno: number): Uint8Array {
    const plain = tryOpen(this.#masterKey, KeyUsage.DB_KEY_AT_REST, sealed)
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

  #encodePrincipal(rec: PrincipalRecord, key: string): Uint8Array {
    const stored: StoredPrincipal = {
      ...rec,
      v: FORMAT_VERSION,
      keys: rec.keys.map(({ key: k, ...meta }) => ({ ...meta, sealed: this.#sealKey(k, key, meta.kvno) })),
    }
    return encode(stored)
  }

  #unsealPrincipal(s: StoredPrincipal, key: string): PrincipalRecord {
    const { v: _v, keys, ...rest } = s
    const id = principalFromKey(key)
    if (!samePrincipal(rest, id)) corrupt('principal record (name does not match its key)')
    return {
      ...rest,
      components: [...rest.components],
      keys: keys.map(({ sealed, ...meta }) => ({ ...meta, key: this.#openKey(sealed, key, meta.kvno) })),
    }
  }
}

type BatchOp =
  | { type: 'put'; sublevel: Sub; key: string; value: Uint8Array }
  | { type: 'del'; sublevel: Sub; key: string }
