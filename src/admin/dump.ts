/**
 * dump and load: the whole database as JSON lines (keys still sealed under the master key),
 * from one LevelDB snapshot while the KDC serves, plus the ACL; load restores it into a new
 * realm directory with a fresh audit log whose first record names the dump.
 */
import { createHash, randomBytes } from 'node:crypto'
import { constants as fsc, createReadStream } from 'node:fs'
import { type FileHandle, mkdir, open, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createInterface } from 'node:readline'
import type { MasterKeyEntry } from '../db/master-key.js'
import { PrincipalDb } from '../db/principal-db.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { constantTimeEqual, hmacSha256 } from '../crypto/index.js'
import { AUDIT_FILE, AUDIT_HEAD_KEY, AuditLog, dumpMac, dumpMacKey } from './audit.js'
import { type Actor, type AdminContext, actorName, authorize, runAdmin } from './operations.js'

/** The ACL file's name in the realm directory. */
export const ACL_FILE = 'kadm5.acl'
/** The database directory's name in the realm directory (as kdc init lays it out). */
export const DB_DIR = 'db'
/** First line of a dump. */
export const DUMP_FORMAT = 'tessera-dump'
export const DUMP_VERSION = 1

/** The root key of the audit head (sublevel `admin`): not carried into a loaded realm, which starts its own log. */
const AUDIT_HEAD_ROOT_KEY = `!admin!${AUDIT_HEAD_KEY}`

interface DumpHeader {
  format: typeof DUMP_FORMAT
  version: number
  realm: string
  time: number
  /** The ACL file's text, if the realm had one. */
  acl?: string
  /** The audit anchor of the source at dump time (the new realm's log names it). */
  auditSeq?: number
}

function dumpError(message: string, cause?: unknown): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, message, cause === undefined ? undefined : { cause })
}

/** Options of {@link dumpDatabase}. */
export interface DumpOptions {
  /** Called every 1000 entries and at the end with the count so far (a progress bar). */
  onProgress?: (entries: number) => void
}

/**
 * dump FILE: needs `i`, `l` and `e` on all targets. Writes (exclusively, mode 0600, via a
 * temporary file renamed into place) a header line, one line per database entry
 * (`{"k": key, "v": base64}`, values as stored: keys sealed), and a trailer with the count and
 * the SHA-256 of everything before it. Returns the entry count and that hash.
 */
export async function dumpDatabase(
  ctx: AdminContext,
  actor: Actor,
  file: string,
  o: DumpOptions = {},
): Promise<{ entries: number; sha256: string }> {
  return runAdmin(ctx, actor, 'dump', file, async (base) => {
    authorize(ctx, actor, 'dump')
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`)
    let fh: FileHandle | undefined
    const hash = createHash('sha256')
    let n = 0
    try {
      try {
        await stat(file)
        throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `${file} already exists; refusing to overwrite it`)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
      fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600)
      await fh.chmod(0o600)
      const header: DumpHeader = { format: DUMP_FORMAT, version: DUMP_VERSION, realm: ctx.realm, time: ctx.now() }
      if (ctx.aclFile !== undefined) {
        try {
          header.acl = await readFile(ctx.aclFile, 'utf8')
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        }
      }
      const anchor = await ctx.audit.anchor()
      if (anchor !== undefined) header.auditSeq = anchor.seq
      let chunk = ''
      const put = async (line: string, flush = false) => {
        const text = `${line}\n`
        hash.update(text)
        chunk += text
        if (flush || chunk.length > 1 << 16) {
          await fh!.write(chunk)
          chunk = ''
        }
      }
      await put(JSON.stringify(header))
      // The audit epoch of the snapshot itself (a master-key use may land while it is read).
      let epoch = 0
      for await (const [k, v] of ctx.db.exportEntries()) {
        epoch = PrincipalDb.auditEpochOfEntry(k, v) ?? epoch
        await put(JSON.stringify({ k, v: Buffer.from(v).toString('base64') }))
        if (++n % 1000 === 0) o.onProgress?.(n)
      }
      const digest = hash.copy().digest('hex')
      // Keyed, under the dump's own audit epoch (that of its master key): an edited dump cannot be
      // given a new end record without the master key, and a retired master key does not make one.
      const keys = ctx.db.auditEpochKeys()
      let macHex: string
      try {
        const ak = keys[epoch]
        if (ak === undefined) throw new TesseraError(TesseraErrorCode.TESSERA_DB, `the dump holds audit epoch ${epoch}, which the database does not know`)
        macHex = dumpMac(ak, digest)
      } finally {
        for (const k of keys) k.fill(0)
      }
      await put(JSON.stringify({ end: true, entries: n, sha256: digest, mac: macHex }), true)
      await fh.sync()
      await fh.close()
      fh = undefined
      await rename(tmp, file)
      o.onProgress?.(n)
      await ctx.audit.record({ ...base, details: { entries: n, sha256: digest } })
      return { entries: n, sha256: digest }
    } catch (err) {
      await fh?.close().catch(() => {})
      await unlink(tmp).catch(() => {})
      if (err instanceof TesseraError) throw err
      throw new TesseraError(TesseraErrorCode.TESSERA_DB, `cannot write the dump ${file}: ${(err as Error).message}`, { cause: err })
    }
  })
}

/** Options of {@link loadDump}. */
export interface LoadOptions {
  /** The dump file. */
  file: string
  /** The new realm directory: must not hold a database yet. */
  dir: string
  /**
   * The master keys the dump's keys are sealed under: the source realm's stash
   * ({@link readStashKeys}), one key or several during a master-key rotation.
   */
  masterKeys?: readonly MasterKeyEntry[]
  /** Instead of `masterKeys`: a realm's one master key (kvno 1, a realm never rotated). */
  masterKey?: Uint8Array
  /** Who loads (the local Unix user), for the new audit log. */
  actor: Actor
  onProgress?: (entries: number) => void
  now?: () => number
}

/**
 * load FILE into a new realm directory: checks the dump's trailer (count and SHA-256) before
 * writing anything, restores every entry (principals with every key version, policies, realm
 * keys) into `dir/db`, writes the ACL to `dir/kadm5.acl` (0600), opens the database with
 * `masterKeys` (refused if they are not the keys the dump was made under, as is a dump whose
 * end-record MAC does not verify under the realm's audit key) and starts `dir/audit.log`
 * with a `load` record. Writing the stash and realm.json is the caller's (kdc layout).
 */
export async function loadDump(o: LoadOptions): Promise<{ realm: string; entries: number; sha256: string }> {
  const masterKeys = o.masterKeys ?? (o.masterKey !== undefined ? [{ kvno: 1, key: o.masterKey }] : undefined)
  if (masterKeys === undefined) throw new TypeError('loadDump needs masterKeys (or masterKey)')
  const dbDir = path.join(o.dir, DB_DIR)
  try {
    await stat(dbDir)
    throw new TesseraError(TesseraErrorCode.TESSERA_REALM_EXISTS, `${dbDir} already exists: load only into a new realm directory`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  // First pass: the whole file is intact (count and hash), so a cut or edited dump loads nothing.
  const hash = createHash('sha256')
  let header: DumpHeader | undefined
  let trailer: { end: true; entries: number; sha256: string; mac?: string } | undefined
  let count = 0
  for await (const line of readLines(o.file)) {
    if (trailer !== undefined) throw dumpError(`${o.file}: data after the end record`)
    const v = parseLine(line, o.file)
    if (header === undefined) {
      const h = v as unknown as DumpHeader
      if (h.format !== DUMP_FORMAT || h.version !== DUMP_VERSION || typeof h.realm !== 'string')
        throw dumpError(`${o.file} is not a Tessera dump (version ${DUMP_VERSION})`)
      header = h
      hash.update(`${line}\n`)
    } else if (v.end === true) {
      trailer = v as unknown as typeof trailer
    } else {
      if (typeof v.k !== 'string' || typeof v.v !== 'string') throw dumpError(`${o.file}: malformed entry after ${count} entries`)
      hash.update(`${line}\n`)
      count++
    }
  }
  const digest = hash.digest('hex')
  if (header === undefined || trailer === undefined) throw dumpError(`${o.file} is incomplete (no end record): refusing to load it`)
  if (trailer.entries !== count || trailer.sha256 !== digest) throw dumpError(`${o.file} does not match its end record (edited or damaged)`)
  const mac = trailer.mac
  // The MAC key comes from the audit key of the dump's current audit epoch, which the database
  // keeps sealed (epoch 0: from the realm's first master key; after a `master-key use`, from the
  // key it made active): checked once the entries are restored and opened with the stash; a
  // mismatch removes everything again.
  const checkMac = (ak: Uint8Array) => {
    const mk = dumpMacKey(ak)
    const want = Buffer.from(hmacSha256(mk, new TextEncoder().encode(digest)))
    mk.fill(0)
    const got = typeof mac === 'string' && /^[0-9a-f]{64}$/.test(mac) ? Buffer.from(mac, 'hex') : Buffer.alloc(0)
    if (got.length !== want.length || !constantTimeEqual(got, want))
      throw dumpError(`${o.file}: its end record is not sealed by this realm's master key (edited, or made under another master key)`)
  }
  const h = header
  await mkdir(o.dir, { recursive: true, mode: 0o700 })
  try {
    async function* entries(): AsyncGenerator<[string, Uint8Array]> {
      let n = 0
      let first = true
      for await (const line of readLines(o.file)) {
        if (first) {
          first = false
          continue
        }
        const v = parseLine(line, o.file)
        if (v.end === true) break
        yield [v.k as string, new Uint8Array(Buffer.from(v.v as string, 'base64'))]
        if (++n % 1000 === 0) o.onProgress?.(n)
      }
    }
    const n = await PrincipalDb.restore({ location: dbDir }, entries(), (k) => k === AUDIT_HEAD_ROOT_KEY)
    o.onProgress?.(n)
    if (h.acl !== undefined) await writeFile(path.join(o.dir, ACL_FILE), h.acl, { mode: 0o600, flag: 'wx' })
    let db: PrincipalDb
    try {
      db = await PrincipalDb.open({ location: dbDir, masterKeys })
    } catch (err) {
      if (err instanceof TesseraError && err.code === TesseraErrorCode.TESSERA_CONFIG)
        throw dumpError(`${o.file}: ${err.message} (give the stash of the realm the dump was made from, as it was then)`, err)
      throw err
    }
    const ak = db.derivedKey('tessera audit v1')
    try {
      checkMac(ak)
      const realm = await db.getRealm()
      if (realm === undefined || realm.realm !== h.realm) throw dumpError(`${o.file}: the dump holds no realm record for ${h.realm}`)
      const audit = await AuditLog.open({ file: path.join(o.dir, AUDIT_FILE), db, key: ak, ...(o.now ? { now: o.now } : {}) })
      const details: Record<string, string | number> = { file: path.resolve(o.file), sha256: digest, entries: count }
      if (h.auditSeq !== undefined) details.sourceAuditSeq = h.auditSeq
      // The new log starts in the loaded realm's audit epoch, and says so (verifyAuditLog).
      details.auditEpoch = db.auditEpoch()
      await audit.record({ actor: actorName(o.actor), op: 'load', outcome: 'ok', details })
      await audit.close()
    } finally {
      ak.fill(0)
      await db.close()
    }
    return { realm: h.realm, entries: count, sha256: digest }
  } catch (err) {
    // Half a realm is worse than none: remove what this load created.
    await rm(dbDir, { recursive: true, force: true })
    await rm(path.join(o.dir, AUDIT_FILE), { force: true })
    if (h.acl !== undefined) await rm(path.join(o.dir, ACL_FILE), { force: true })
    throw err
  }
}

async function* readLines(file: string): AsyncGenerator<string> {
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Number.POSITIVE_INFINITY })
  try {
    for await (const l of rl) if (l.length > 0) yield l
  } catch (err) {
    throw dumpError(`cannot read ${file}: ${(err as Error).message}`, err)
  } finally {
    rl.close()
  }
}

function parseLine(line: string, file: string): Record<string, unknown> {
  try {
    const v = JSON.parse(line) as unknown
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object')
    return v as Record<string, unknown>
  } catch (err) {
    throw dumpError(`${file}: a line is not JSON`, err)
  }
}
