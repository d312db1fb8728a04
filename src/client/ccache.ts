/**
 * Credential cache: a file (0600) holding a client's TGT and service tickets with
 * their session keys. Format: "TSCC" || version(1) || MessagePack { crealm, cname,
 * entries: [Credentials] }. Writes go to a temp file renamed over the cache (never a
 * torn file), under a lock file so two processes updating at once do not lose entries.
 */
import { constants } from 'node:fs'
import { type FileHandle, mkdir, open, rename, rm, stat, unlink } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Ticket } from '../../proto/messages.js'
import { validate } from '../../proto/validate.js'
import { randomBytes } from '../crypto/index.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { sameName } from '../krb/parts.js'
import { decode, encode } from '../wire/codec.js'
import type { StoredTicket } from '../wire/resumption.js'
import type { Credentials } from './kdc-client.js'

const MAGIC = Buffer.from('TSCC', 'ascii')
const VERSION = 1
const LOCK_STALE_MS = 10_000

/**
 * Where the cache lives when neither --ccache nor TESSERA_CCACHE says:
 * $XDG_RUNTIME_DIR/tessera_ccache (a per-user tmpfs on systemd machines), else
 * $XDG_CACHE_HOME/tessera/ccache (default ~/.cache/tessera/ccache), else
 * <tmpdir>/tessera_cc_<uid>. Not /tmp first, as MIT does: in a shared, sticky /tmp
 * another user can create the file or its lock first and so deny us our own cache.
 */
export function defaultCcachePath(env: NodeJS.ProcessEnv): string {
  if (env.XDG_RUNTIME_DIR) return path.join(env.XDG_RUNTIME_DIR, 'tessera_ccache')
  let home = env.HOME
  if (!home)
    try {
      home = os.homedir()
    } catch {
      home = undefined
    }
  if (env.XDG_CACHE_HOME || home) return path.join(env.XDG_CACHE_HOME || path.join(home!, '.cache'), 'tessera', 'ccache')
  const uid = typeof process.getuid === 'function' ? process.getuid() : os.userInfo().username
  return path.join(os.tmpdir(), `tessera_cc_${uid}`)
}

/**
 * The credential cache to use, for the CLIs and the library alike: TESSERA_CCACHE, else
 * {@link defaultCcachePath}. Pass `process.env` (the library never reads it by itself):
 * `new CredentialCache(ccachePath(process.env))` is the cache `kauth login` filled.
 */
export function ccachePath(env: NodeJS.ProcessEnv): string {
  return env.TESSERA_CCACHE || defaultCcachePath(env)
}

/** What a cache holds. */
export interface CacheContents {
  crealm: string
  cname: string[]
  entries: Credentials[]
  /** Transport resumption tickets (PROTOCOL.md §3.6), so the next command skips the key exchange. */
  resume?: StoredTicket[]
  /** The KDC's clock minus ours, as measured at login (MIT keeps the same in its ccache), ms. */
  clockOffsetMs?: number
}

/** Options of CredentialCache.load. */
export interface CacheLoadOptions {
  /** Keep expired entries (to show them, as klist does). @default false */
  expired?: boolean
}

// A week: anything beyond is not a clock offset but a broken value.
const MAX_OFFSET_MS = 7 * 24 * 3600_000

function checkOffset(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= MAX_OFFSET_MS ? v : undefined
}

/** The well-formed, unexpired resumption tickets of a cache; anything else is dropped (never fatal). */
function checkResume(v: unknown, now: number): StoredTicket[] {
  if (!Array.isArray(v)) return []
  const out: StoredTicket[] = []
  for (const e of v.slice(0, 64)) {
    const o = e as Record<string, unknown>
    if (typeof o !== 'object' || o === null) continue
    if (typeof o.id !== 'string' || !(o.tk instanceof Uint8Array) || !(o.rms instanceof Uint8Array) || o.rms.length !== 32) continue
    if (o.tk.length < 1 || o.tk.length > 256) continue
    if (typeof o.receivedAtMs !== 'number' || typeof o.lifetimeS !== 'number') continue
    if (o.receivedAtMs + o.lifetimeS * 1000 <= now) continue
    out.push({ id: o.id, tk: new Uint8Array(o.tk), rms: new Uint8Array(o.rms), receivedAtMs: o.receivedAtMs, lifetimeS: o.lifetimeS })
  }
  return out
}

function bad(msg: string, cause?: unknown): never {
  throw new TesseraError(TesseraErrorCode.TESSERA_CCACHE, msg, cause ? { cause } : undefined)
}

function symlinkRefused(file: string): never {
  bad(
    `credential cache ${file} is a symbolic link: Tessera refuses symlinked caches on purpose ` +
      '(a link planted by someone else could send your tickets elsewhere); name the real file with --ccache or TESSERA_CCACHE',
  )
}

function checkEntry(e: unknown): Credentials {
  const o = e as Record<string, unknown>
  if (typeof o !== 'object' || o === null) bad('cache entry is not a map')
  try {
    validate(Ticket, o.ticket)
  } catch (err) {
    bad('cache entry has an invalid ticket', err)
  }
  if (!(o.sessionKey instanceof Uint8Array) || o.sessionKey.length !== 32) bad('cache entry has no session key')
  for (const k of ['flags', 'authtime', 'starttime', 'endtime'] as const) if (typeof o[k] !== 'number') bad(`cache entry lacks ${k}`)
  if (!Array.isArray(o.sname) || !Array.isArray(o.cname)) bad('cache entry lacks names')
  const c = { ...o, sessionKey: new Uint8Array(o.sessionKey as Uint8Array) } as unknown as Credentials
  return c
}

/** A credential cache file. */
export class CredentialCache {
  constructor(
    readonly file: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Contents with expired entries dropped (unless `opts.expired`), or undefined when there is no cache. */
  async load(opts: CacheLoadOptions = {}): Promise<CacheContents | undefined> {
    let buf: Buffer
    // One handle for the checks and the read (no swap in between); no symlinks followed.
    let fh: FileHandle
    try {
      fh = await open(this.file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return undefined
      if (code === 'ELOOP') symlinkRefused(this.file)
      bad(`cannot read credential cache ${this.file}: ${(err as Error).message}`, err)
    }
    try {
      const s = await fh.stat()
      if (!s.isFile()) bad(`credential cache ${this.file} is not a regular file`)
      if (typeof process.getuid === 'function' && s.uid !== process.getuid())
        bad(`credential cache ${this.file} belongs to another user; refusing it`)
      if ((s.mode & 0o077) !== 0) bad(`credential cache ${this.file} is readable by others; refusing it (chmod 600 or log in again)`)
      buf = await fh.readFile()
    } finally {
      await fh.close()
    }
    if (buf.length < 5 || !buf.subarray(0, 4).equals(MAGIC)) bad(`${this.file} is not a Tessera credential cache`)
    if (buf[4] !== VERSION) bad(`${this.file} has unsupported version ${buf[4]}`)
    let raw: Record<string, unknown>
    try {
      raw = decode(buf.subarray(5)) as Record<string, unknown>
    } catch (err) {
      bad(`credential cache ${this.file} is corrupt`, err)
    }
    if (typeof raw !== 'object' || raw === null || typeof raw.crealm !== 'string' || !Array.isArray(raw.cname) || !Array.isArray(raw.entries))
      bad(`credential cache ${this.file} is corrupt`)
    const now = this.now()
    const entries = raw.entries.map(checkEntry).filter((e) => opts.expired || e.endtime > now)
    const resume = checkResume(raw.resume, now)
    const offset = checkOffset(raw.clockOffsetMs)
    return {
      crealm: raw.crealm,
      cname: raw.cname as string[],
      entries,
      ...(resume.length > 0 ? { resume } : {}),
      ...(offset !== undefined ? { clockOffsetMs: offset } : {}),
    }
  }

  /**
   * Replace the cache's resumption tickets (kept with the credentials, so only in an
   * existing cache: after logout none are kept).
   */
  async saveResumption(resume: StoredTicket[]): Promise<void> {
    await this.withLock(async () => {
      const cur = await this.load()
      if (!cur) return
      return this.write({ ...cur, resume })
    })
  }

  /**
   * Start a new cache for a fresh login (replaces everything), with the transport resumption
   * tickets to keep, if any, and the clock offset to the KDC measured at login.
   */
  async initialize(tgt: Credentials, resume?: StoredTicket[], opts: { clockOffsetMs?: number } = {}): Promise<void> {
    const offset = checkOffset(opts.clockOffsetMs)
    await this.withLock(async () =>
      this.write({
        crealm: tgt.crealm,
        cname: tgt.cname,
        entries: [tgt],
        ...(resume ? { resume } : {}),
        ...(offset ? { clockOffsetMs: offset } : {}),
      }),
    )
  }

  /**
   * Add or replace the entry for creds' service. The cache must belong to the same client.
   * `resume`, if given, replaces the transport resumption tickets.
   */
  async store(creds: Credentials, resume?: StoredTicket[]): Promise<void> {
    await this.withLock(async () => {
      const cur = await this.load()
      if (!cur) return this.write({ crealm: creds.crealm, cname: creds.cname, entries: [creds], ...(resume ? { resume } : {}) })
      if (cur.crealm !== creds.crealm || !sameName(cur.cname, creds.cname))
        bad('credential cache belongs to another principal; log in again')
      const entries = cur.entries.filter((e) => !(e.srealm === creds.srealm && sameName(e.sname, creds.sname)))
      entries.push(creds)
      return this.write({ ...cur, entries, ...(resume ? { resume } : {}) })
    })
  }

  /** The cached, unexpired ticket for a service, if any. */
  async find(sname: string[], srealm?: string): Promise<Credentials | undefined> {
    const cur = await this.load()
    return cur?.entries.find((e) => sameName(e.sname, sname) && (srealm === undefined || e.srealm === srealm))
  }

  /** Remove the cache (kdestroy): overwrite, then unlink. True if there was one. */
  async destroy(): Promise<boolean> {
    return this.withLock(async () => {
      let fh: FileHandle
      try {
        // Never through a symlink: logout must not overwrite whatever a planted link points at.
        fh = await open(this.file, constants.O_RDWR | constants.O_NOFOLLOW | constants.O_NONBLOCK)
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOENT') return false
        if (code === 'ELOOP') symlinkRefused(this.file)
        throw err
      }
      try {
        const s = await fh.stat()
        if (!s.isFile()) bad(`credential cache ${this.file} is not a regular file`)
        if (typeof process.getuid === 'function' && s.uid !== process.getuid())
          bad(`credential cache ${this.file} belongs to another user; refusing it`)
        await fh.write(Buffer.alloc(s.size), 0, s.size, 0)
        await fh.sync()
      } finally {
        await fh.close()
      }
      await unlink(this.file)
      return true
    })
  }


  /**
   * A directory anyone may write to without the sticky bit lets anyone replace our cache
   * between our checks and our use: refuse it. (A sticky /tmp is allowed: others cannot
   * replace our files there, only take a name first.)
   */
  private async checkDir(): Promise<void> {
    const dir = path.dirname(this.file)
    let s: Awaited<ReturnType<typeof stat>>
    try {
      s = await stat(dir)
    } catch {
      return // made on first use (withLock)
    }
    if ((s.mode & 0o002) !== 0 && (s.mode & 0o1000) === 0)
      bad(`the directory of credential cache ${this.file} is writable by everyone; refusing it`)
  }

  private async write(c: CacheContents): Promise<void> {
    const now = this.now()
    const body = encode({
      crealm: c.crealm,
      cname: c.cname,
      entries: c.entries.filter((e) => e.endtime > now),
      ...(c.resume && c.resume.length > 0 ? { resume: checkResume(c.resume, now) } : {}),
      ...(c.clockOffsetMs ? { clockOffsetMs: c.clockOffsetMs } : {}),
    })
    const tmp = `${this.file}.${process.pid}.${Buffer.from(randomBytes(6)).toString('hex')}.tmp`
    const fh = await open(tmp, 'wx', 0o600)
    try {
      await fh.write(Buffer.concat([MAGIC, Buffer.from([VERSION]), body]))
      await fh.sync()
    } finally {
      await fh.close()
    }
    await rename(tmp, this.file)
  }

  private async withLock<T>(fn: () => Promise<T>): Promise<T> {
    const lock = `${this.file}.lock`
    const deadline = Date.now() + 5000
    await this.checkDir()
    let madeDir = false
    for (;;) {
      try {
        const fh = await open(lock, 'wx', 0o600)
        await fh.close()
        break
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'ENOENT' && !madeDir) {
          // First use of the default path (~/.cache/tessera): make the directory, private.
          madeDir = true
          await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 })
          continue
        }
        if (code !== 'EEXIST') bad(`cannot lock credential cache: ${(err as Error).message}`, err)
        try {
          const s = await stat(lock)
          if (Date.now() - s.mtimeMs > LOCK_STALE_MS) await rm(lock, { force: true })
        } catch {
          // lock vanished meanwhile: retry
        }
        if (Date.now() > deadline) bad(`credential cache ${this.file} is locked by another process`)
        await new Promise((r) => setTimeout(r, 10 + Math.random() * 20))
      }
    }
    try {
      return await fn()
    } finally {
      await rm(lock, { force: true })
    }
  }
}
