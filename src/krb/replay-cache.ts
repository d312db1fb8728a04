/**
 * Replay cache for authenticators (RFC 4120 §3.2.3, MIT replay.c). Entries live only
 * until their authenticator would fail the skew check anyway (ctime + skew), held in
 * time buckets so expiry drops whole buckets. Bounded: when full it refuses to
 * remember (the caller answers "busy") rather than evicting, since evicting would
 * reopen a replay window.
 *
 * Across restarts: an authenticator dated before this cache's start may have been seen
 * by a previous process, so it is refused as "cold"; clients retry with a fresh
 * authenticator. That covers everything a previous process accepted except
 * authenticators dated ahead of its clock (a client clock ahead of the service's). With
 * a `file`, those are appended to it, synced, before they are accepted, and loaded at
 * start. Without a file, `aheadMarginMs: maxClockSkewMs` covers them too (the skew check
 * bounds how far ahead they were), at the price of refusing everything dated within the
 * skew after the start. (A restart takes far longer than a millisecond; a cache
 * re-created within the millisecond of an acceptance by another cache of the same
 * process is not covered: share one cache between the verifiers of a process.)
 */
import { closeSync, constants as fsc, fdatasyncSync, fstatSync, fsyncSync, openSync, readSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import path from 'node:path'

/** Options of a ReplayCache. */
export interface ReplayCacheOptions {
  /** Clock skew window, ms: an entry is kept until ctime + maxClockSkewMs. */
  maxClockSkewMs: number
  /** Most entries held. @default 2000000 */
  maxEntries?: number
  /** Clock. @default Date.now */
  now?: () => number
  /**
   * Once the cache is half full, one client may hold at most this share of it; past that
   * its requests get 'full' while other clients are still served. @default 0.125
   */
  maxClientShare?: number
  /** Bucket width, ms. @default 10000 */
  bucketMs?: number
  /** Monotonic clock, ms (detects a wall clock stepped back since the start). @default performance.now */
  monoMs?: () => number
  /**
   * Move the cold boundary back with a wall clock stepped back since the start, so honest
   * authenticators are not all 'cold' until the wall clock catches up. The price: an
   * authenticator a previous process accepted within the step before this start can be
   * accepted again. The KDC sets it (a TGS request can be replayed only by the holder of its
   * connection's transport keys); a service, whose AP_REQs travel in the clear, should not.
   * @default false
   */
  followClockStepBack?: boolean
  /**
   * Replay file: authenticators accepted while dated more than `aheadMarginMs` ahead of
   * the clock are appended to it (mode 0600, synced) before they are accepted, and the
   * live ones are loaded at start, so a restarted process refuses them too. A file that
   * cannot be read is logged and replaced, and the cache then starts as if it had none
   * (cold for the whole skew). @default none
   */
  file?: string
  /**
   * Restart safety margin, ms: authenticators dated up to start + aheadMarginMs are
   * refused as cold, and with a `file` only those dated more than this ahead of the clock
   * are written to it (a margin trades a cold period after the start for fewer synced
   * writes). Without a file, maxClockSkewMs makes the cache restart-safe. Unset and
   * without a file, the cache is not restart-safe for authenticators dated ahead of the
   * clock (cold only before the start). @default 0
   */
  aheadMarginMs?: number
  /** Where problems with the replay file are reported. @default process.emitWarning */
  logger?: ReplayCacheLogger
}

/** The logging surface of a ReplayCache (a winston Logger fits). */
export interface ReplayCacheLogger {
  warn(msg: string, meta?: Record<string, unknown>): unknown
}

const warningLogger: ReplayCacheLogger = {
  warn: (msg, meta) => process.emitWarning(meta ? `${msg} ${JSON.stringify(meta)}` : msg, 'TesseraReplayCacheWarning'),
}

/** A wall clock behind the monotonic one by more than this since the start was stepped back. */
const STEP_BACK_MS = 1000

/** Result of checking an authenticator. */
export type ReplayVerdict = 'fresh' | 'replay' | 'cold' | 'full'

interface Bucket {
  ids: Set<string>
  /** Entries per client in this bucket (dropped with it). */
  perClient: Map<string, number>
}

/** A bounded, time-bucketed replay cache. An instance is passed in, never a singleton. */
export class ReplayCache {
  readonly startedAt: number
  private readonly buckets = new Map<number, Bucket>()
  private readonly perClient = new Map<string, number>()
  private size = 0
  private readonly maxEntries: number
  private readonly bucketMs: number
  private readonly now: () => number
  private lastSweep = 0
  private readonly monoMs: () => number
  private readonly startMono: number
  /** Authenticators dated before this are 'cold' (see coldBefore). */
  private coldFrom: number
  private readonly coldFrom0: number
  private readonly aheadMarginMs: number
  private readonly journal: ReplayFile | undefined

  constructor(private readonly opts: ReplayCacheOptions) {
    this.now = opts.now ?? Date.now
    this.maxEntries = opts.maxEntries ?? 2_000_000
    this.bucketMs = opts.bucketMs ?? 10_000
    this.aheadMarginMs = opts.aheadMarginMs ?? 0
    if (!Number.isInteger(this.aheadMarginMs) || this.aheadMarginMs < 0) throw new RangeError('aheadMarginMs must be a non-negative integer')
    this.startedAt = this.now()
    this.monoMs = opts.monoMs ?? (() => performance.now())
    this.startMono = this.monoMs()
    let margin = this.aheadMarginMs
    if (opts.file !== undefined) {
      this.journal = new ReplayFile(opts.file, opts.logger ?? warningLogger)
      // What the previous process persisted is not known: cover all it may have accepted.
      if (!this.journal.load(this.startedAt)) margin = Math.max(margin, opts.maxClockSkewMs)
    }
    // A previous process accepted, unrecorded, only ctime <= (its last acceptance < our start) + margin.
    this.coldFrom = this.startedAt + margin
    this.coldFrom0 = this.coldFrom
  }

  /** Release the replay file (the cache still works in memory; nothing more is persisted). */
  close(): void {
    this.journal?.close()
  }

  /**
   * Whether `ctime` is 'cold'. If the wall clock was stepped back since the start (NTP
   * correcting a clock that ran fast), the boundary moves back with it, measured on the
   * monotonic clock: otherwise every honest authenticator would be 'cold' until the wall
   * clock caught up with the old start. The price, stated in docs/security.md: an
   * authenticator a previous process accepted within the step before this start is no
   * longer known to be cold.
   */
  private isCold(ctime: number, now: number): boolean {
    if (ctime >= this.coldFrom) return false
    if (!this.opts.followClockStepBack) return true
    const back = this.startedAt + (this.monoMs() - this.startMono) - now
    if (back > STEP_BACK_MS) this.coldFrom = Math.min(this.coldFrom, this.coldFrom0 - back)
    return ctime < this.coldFrom
  }

  /** Authenticators dated before this are refused as 'cold'. */
  get coldBefore(): number {
    return this.coldFrom
  }

  /** Entries held now. */
  get entries(): number {
    return this.size
  }

  /** Most entries this cache holds. */
  get capacity(): number {
    return this.maxEntries
  }

  /**
   * Check and remember the authenticator identified by `id` (e.g. a hash of its
   * ciphertext) with client time `ctime`. Call only after the skew check passed.
   */
  check(id: string, ctime: number, client = ''): ReplayVerdict {
    // `client` (e.g. "alice@REALM") enables the fair share; '' is nobody's and unlimited.
    const now = this.now()
    if (this.isCold(ctime, now)) return 'cold'
    if (this.journal?.has(id)) return 'replay'
    if (now - this.lastSweep >= this.bucketMs) this.sweep(now)
    const expires = ctime + this.opts.maxClockSkewMs
    const bucketId = Math.floor(expires / this.bucketMs)
    // An id can only sit in the bucket of its own expiry: ctime is inside the sealed authenticator.
    let bucket = this.buckets.get(bucketId)
    if (bucket?.ids.has(id)) return 'replay'
    if (this.size >= this.maxEntries) {
      this.sweep(now)
      if (this.size >= this.maxEntries) return 'full'
    }
    // Fair share: one (authenticated) client flooding requests cannot fill the cache for all.
    const held = this.perClient.get(client) ?? 0
    if (client !== '' && this.size * 2 >= this.maxEntries && held >= this.maxEntries * (this.opts.maxClientShare ?? 0.125)) return 'full'
    // Dated ahead by more than the margin: a restarted process would not refuse it as
    // cold, so it must be on disk before it is accepted. If it cannot be, refuse it.
    if (this.journal && ctime > now + this.aheadMarginMs && !this.journal.append(id, expires, now)) return 'full'
    if (!bucket) {
      bucket = { ids: new Set(), perClient: new Map() }
      this.buckets.set(bucketId, bucket)
    }
    bucket.ids.add(id)
    bucket.perClient.set(client, (bucket.perClient.get(client) ?? 0) + 1)
    this.perClient.set(client, held + 1)
    this.size++
    return 'fresh'
  }

  /** Drop buckets whose every entry has expired. */
  sweep(now: number = this.now()): void {
    this.lastSweep = now
    this.journal?.expire(now)
    const current = Math.floor(now / this.bucketMs)
    for (const [id, bucket] of this.buckets) {
      if (id < current) {
        this.size -= bucket.ids.size
        for (const [client, n] of bucket.perClient) {
          const left = (this.perClient.get(client) ?? n) - n
          if (left > 0) this.perClient.set(client, left)
          else this.perClient.delete(client)
        }
        this.buckets.delete(id)
      }
    }
  }
}

/** First line of a replay file. */
const REPLAY_FILE_HEADER = 'tessera-rcache-v1'
/** Largest replay file read, bytes; a bigger one is not trusted (the cache starts cold). */
const MAX_REPLAY_FILE_BYTES = 16 * 1024 * 1024
/** Most live records loaded; more and the cache starts cold. */
const MAX_REPLAY_RECORDS = 262_144
/** Compact once the file holds this many records and twice the live ones. */
const COMPACT_AT_RECORDS = 4096
// one record: hex(utf8(id)) SP expiry (decimal ms since the epoch) LF
const RECORD = /^([0-9a-f]{2,256}) ([0-9]{1,16})$/

/**
 * The replay file: the live entries that must outlive the process, one text line each,
 * appended with write + fdatasync before the authenticator is accepted, so an acceptance
 * the caller saw is on disk. A torn last line (a crash mid-write) is an acceptance nobody
 * saw: skipped. Rewritten (temporary file, fsync, rename) at load and when it grows.
 */
class ReplayFile {
  private readonly entries = new Map<string, number>()
  private fd: number | undefined
  /** Records in the file (live or not), for compaction. */
  private records = 0
  private lastRetry = Number.NEGATIVE_INFINITY

  constructor(
    private readonly file: string,
    private readonly log: ReplayCacheLogger,
  ) {}

  /** Load the live entries and start a compacted file. False if the old file could not be trusted. */
  load(now: number): boolean {
    const ok = this.read(now)
    this.rewrite(now)
    return ok
  }

  private read(now: number): boolean {
    let fd: number
    try {
      // O_NONBLOCK: a FIFO planted at the path must not hang the start (it is refused below).
      fd = openSync(this.file, fsc.O_RDONLY | (fsc.O_NOFOLLOW ?? 0) | (fsc.O_NONBLOCK ?? 0))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true
      this.log.warn('replay file cannot be opened; refusing authenticators dated within the skew after the start', { file: this.file, err: (err as Error).message })
      return false
    }
    let text: string
    try {
      const st = fstatSync(fd)
      if (!st.isFile() || st.size > MAX_REPLAY_FILE_BYTES) {
        this.log.warn('replay file is not a regular file or is too large; refusing authenticators dated within the skew after the start', { file: this.file, size: st.size })
        return false
      }
      // Someone else could have edited it (removing the records of replays they want to make).
      const uid = process.getuid?.()
      if ((uid !== undefined && st.uid !== uid) || (st.mode & 0o022) !== 0) {
        this.log.warn('replay file is owned by another user or writable by others; not trusted: refusing authenticators dated within the skew after the start', {
          file: this.file,
          mode: (st.mode & 0o777).toString(8),
        })
        return false
      }
      const buf = Buffer.alloc(st.size)
      let off = 0
      while (off < buf.length) {
        const n = readSync(fd, buf, off, buf.length - off, off)
        if (n === 0) break
        off += n
      }
      text = buf.subarray(0, off).toString('latin1')
    } catch (err) {
      this.log.warn('replay file cannot be read; refusing authenticators dated within the skew after the start', { file: this.file, err: (err as Error).message })
      return false
    } finally {
      closeSync(fd)
    }
    const lines = text.split('\n')
    if (lines[0] !== REPLAY_FILE_HEADER) {
      this.log.warn('replay file has no valid header; refusing authenticators dated within the skew after the start', { file: this.file })
      return false
    }
    let bad = 0
    // The last element follows the last LF: empty, or a torn record.
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!
      if (line === '' && i === lines.length - 1) break
      const m = RECORD.exec(line)
      const expires = m ? Number(m[2]) : Number.NaN
      if (!m || m[1]!.length % 2 !== 0 || !Number.isSafeInteger(expires)) {
        bad++
        continue
      }
      if (expires < now) continue
      if (this.entries.size >= MAX_REPLAY_RECORDS) {
        this.log.warn('replay file holds too many live records; refusing authenticators dated within the skew after the start', { file: this.file })
        this.entries.clear()
        return false
      }
      this.entries.set(Buffer.from(m[1]!, 'hex').toString('utf8'), expires)
    }
    if (bad > 0) this.log.warn('replay file has malformed records; skipped them', { file: this.file, skipped: bad })
    return true
  }

  /** Replace the file by one holding the live entries, and open it for appending. On failure, no file. */
  private rewrite(now: number): void {
    this.close()
    this.expire(now)
    const dir = path.dirname(this.file)
    const tmp = path.join(dir, `.${path.basename(this.file)}.${randomBytes(6).toString('hex')}.tmp`)
    let fd: number | undefined
    try {
      // O_EXCL: never write through a file (or symlink) someone placed at the temporary name.
      fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600)
      let body = `${REPLAY_FILE_HEADER}\n`
      for (const [id, expires] of this.entries) body += recordOf(id, expires)
      writeSync(fd, body)
      fsyncSync(fd)
      closeSync(fd)
      fd = undefined
      renameSync(tmp, this.file)
      syncDir(dir)
      this.fd = openSync(this.file, fsc.O_WRONLY | fsc.O_APPEND | (fsc.O_NOFOLLOW ?? 0) | (fsc.O_NONBLOCK ?? 0))
      this.records = this.entries.size
    } catch (err) {
      if (fd !== undefined) closeSync(fd)
      try {
        unlinkSync(tmp)
      } catch {}
      this.log.warn('replay file cannot be written; authenticators dated ahead of the clock are refused until it can', { file: this.file, err: (err as Error).message })
    }
  }

  has(id: string): boolean {
    return this.entries.has(id)
  }

  /** Write one entry durably. False if it could not be (the caller refuses the authenticator). */
  append(id: string, expires: number, now: number): boolean {
    if (this.fd === undefined) {
      // Retry opening at most once a second; until then, refuse.
      if (now - this.lastRetry < 1000) return false
      this.lastRetry = now
      this.rewrite(now)
      if (this.fd === undefined) return false
    }
    try {
      // Another process on this file rewrote it under us: append to the new one.
      if (fstatSync(this.fd).ino !== statSync(this.file).ino) {
        closeSync(this.fd)
        this.fd = openSync(this.file, fsc.O_WRONLY | fsc.O_APPEND | (fsc.O_NOFOLLOW ?? 0) | (fsc.O_NONBLOCK ?? 0))
      }
      writeSync(this.fd, recordOf(id, expires))
      fdatasyncSync(this.fd)
    } catch (err) {
      this.log.warn('replay file write failed; refusing the authenticator', { file: this.file, err: (err as Error).message })
      this.close()
      return false
    }
    this.entries.set(id, expires)
    this.records++
    if (this.records >= COMPACT_AT_RECORDS && this.records >= 2 * this.entries.size) {
      // Read it back first: records another process appended are kept.
      this.read(now)
      this.rewrite(now)
    }
    return true
  }

  /** Forget entries that have expired (they stay in the file until the next rewrite). */
  expire(now: number): void {
    for (const [id, expires] of this.entries) if (expires < now) this.entries.delete(id)
  }

  close(): void {
    if (this.fd === undefined) return
    try {
      closeSync(this.fd)
    } catch {}
    this.fd = undefined
  }
}

function recordOf(id: string, expires: number): string {
  return `${Buffer.from(id, 'utf8').toString('hex')} ${expires}\n`
}

/** Make a rename durable (best effort: not every platform can fsync a directory). */
function syncDir(dir: string): void {
  try {
    const d = openSync(dir, fsc.O_RDONLY)
    try {
      fsyncSync(d)
    } finally {
      closeSync(d)
    }
  } catch {}
}
