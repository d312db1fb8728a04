/**
 * The admin audit log: append-only JSON lines (0600) in the realm directory, each record
 * chained to the previous one by a keyed hash, the head anchored in the principal database
 * in the same batch as the change it records.
 *
 * Crash ordering (the database is the authority, the file follows it):
 *   1. the record is built (seq = head + 1, prev = head's hash, h = HMAC over the record);
 *   2. ONE synced LevelDB batch writes the change and the new head, which holds the whole line;
 *   3. the line is appended to the file and fsynced; only then is the request answered.
 * A crash before 2 leaves neither the change nor the line. A crash between 2 and 3 leaves the
 * change and the head but not the line (or half of it): {@link AuditLog.open} finds the file
 * one record behind the head, cuts a torn last line and appends the head's line. So after any
 * crash, once the log is open, the file holds exactly the records of the changes that landed.
 * A failed append at run time is retried before the next record, and while it keeps failing
 * every admin request is refused (fail closed): the head never moves past a line not on disk.
 *
 * Audit epochs: `kdc master-key use` starts a new audit key, derived from the new master key
 * (PrincipalDb.useMasterKey). The batch that makes the key active carries an `audit-epoch`
 * record, MAC'd under the old key and chained as usual, whose `details.confirm` is a MAC under
 * the new key of the same record (without `confirm`); the records after it are MAC'd under the
 * new key. {@link verifyAuditLog} walks the epochs with every epoch's key (the database keeps
 * them), so someone who holds only a retired master key can no longer write a line that verifies.
 */
import { createReadStream } from 'node:fs'
import { type FileHandle, open as fsOpen } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { hkdf, hmacSha256 } from '../crypto/index.js'
import type { PrincipalDb, WriteOptions } from '../db/principal-db.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'

/** The audit log's file name in the realm directory. */
export const AUDIT_FILE = 'audit.log'
/** The key of the head record in the database's `admin` sublevel. */
export const AUDIT_HEAD_KEY = 'audit-head'
/** The op of the record that switches the log to the next audit epoch (see the module comment). */
export const AUDIT_EPOCH_OP = 'audit-epoch'
/** `prev` of the first record. */
export const AUDIT_GENESIS = '0'.repeat(64)
/** Longest line read back, bytes (records are small; a longer line is corrupt). */
const MAX_LINE_BYTES = 64 * 1024

/** What an admin request did, as the operation layer reports it. Never a password or key. */
export interface AuditEvent {
  /** Who: `name@REALM`, or `local:USER` for kadmin --local. */
  actor: string
  /** The operation (addprinc, cpw, ...), or a lifecycle event (load, recovery). */
  op: string
  /** Principal or policy the request named. */
  target?: string
  /** renprinc: the new name. */
  newTarget?: string
  /** Key version made (cpw, addprinc) or extracted (ktadd: the newest). */
  kvno?: number
  /** ktadd: every version written. */
  kvnos?: number[]
  outcome: 'ok' | 'denied' | 'error'
  /** Why it was refused or failed. */
  reason?: string
  /** The error code of a refusal or failure. */
  code?: string
  /** Network peer (address:port) of a remote request. */
  peer?: string
  /** Other non-secret facts (changed fields, flags, policy names). */
  details?: Record<string, string | number | boolean | null>
}

/** One line of the log. */
export interface AuditRecord extends AuditEvent {
  /** 1, 2, 3, ... without gaps. */
  seq: number
  /** ms since epoch. */
  time: number
  /** `h` of the previous record ({@link AUDIT_GENESIS} for the first). */
  prev: string
  /** HMAC-SHA256 (hex) under the audit key of this record's JSON without `h`. */
  h: string
}

/** The head as the database holds it. */
export interface AuditAnchor {
  seq: number
  hash: string
}

/** The audit key: HKDF of the realm master key ("tessera audit v1"). Without it nobody can forge a record that verifies. */
export function auditKey(masterKey: Uint8Array): Uint8Array {
  return hkdf(masterKey, new Uint8Array(0), 'tessera audit v1', 32)
}

/** The key of a dump's end-record MAC, from the audit key (so from the master key): an edited dump cannot be re-summed without it. */
export function dumpMacKey(auditKeyBytes: Uint8Array): Uint8Array {
  return hkdf(auditKeyBytes, new Uint8Array(0), 'tessera dump mac v1', 32)
}

/** A dump's end-record MAC (hex) of `digest`, under the dump MAC key of audit key `auditKeyBytes` (that of the epoch the dump holds). */
export function dumpMac(auditKeyBytes: Uint8Array, digest: string): string {
  const k = dumpMacKey(auditKeyBytes)
  try {
    return Buffer.from(hmacSha256(k, new TextEncoder().encode(digest))).toString('hex')
  } finally {
    k.fill(0)
  }
}

const FIELDS = ['seq', 'time', 'actor', 'op', 'target', 'newTarget', 'kvno', 'kvnos', 'outcome', 'reason', 'code', 'peer', 'details', 'prev'] as const

/** An {@link AUDIT_EPOCH_OP} record's `details.confirm`: the MAC, under the new epoch's key, of the record's canonical JSON without `h` and without `confirm`. */
function epochConfirm(newKey: Uint8Array, r: Omit<AuditRecord, 'h'>): string {
  const { confirm: _c, ...details } = r.details ?? {}
  return mac(newKey, body({ ...r, details }))
}

/** The record's canonical JSON without `h`: fixed key order, absent fields left out. */
function body(r: Omit<AuditRecord, 'h'>): string {
  const o: Record<string, unknown> = {}
  for (const f of FIELDS) if (r[f] !== undefined) o[f] = r[f]
  return JSON.stringify(o)
}

function mac(key: Uint8Array, text: string): string {
  return Buffer.from(hmacSha256(key, Buffer.from(text, 'utf8'))).toString('hex')
}

function line(r: AuditRecord): string {
  return `${body(r).slice(0, -1)},"h":${JSON.stringify(r.h)}}`
}

function parseRecord(text: string): AuditRecord | undefined {
  try {
    const v = JSON.parse(text) as AuditRecord
    if (v === null || typeof v !== 'object' || !Number.isSafeInteger(v.seq) || typeof v.prev !== 'string' || typeof v.h !== 'string')
      return undefined
    return v
  } catch {
    return undefined
  }
}

function auditError(message: string, cause?: unknown): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_AUDIT, message, cause === undefined ? undefined : { cause })
}

/** Where the log reports what it repaired or could not (a winston logger fits). */
export interface AuditLogSink {
  error(message: string, meta?: Record<string, unknown>): void
  warn?(message: string, meta?: Record<string, unknown>): void
}

/** Options of {@link AuditLog.open}. */
export interface AuditLogOptions {
  /** The log file (realm directory + {@link AUDIT_FILE}); created 0600 if missing. */
  file: string
  db: PrincipalDb
  /** {@link auditKey} of the realm master key. Copied. */
  key: Uint8Array
  /** @default Date.now */
  now?: () => number
  log?: AuditLogSink
  /** Test hook: runs before each append; a throw makes that append fail as a full disk would. */
  beforeAppend?: () => void
}

/** What {@link AuditLog.open} found. */
export interface AuditRecovery {
  /** The last record was in the database but not (or half) in the file, and was appended. */
  repaired: boolean
  /** The file and the anchor disagree in a way recovery does not fix (tampering?): run verifyAuditLog. */
  problem?: string
}

/** The open audit log: appends in database-commit order, one record at a time. */
export class AuditLog {
  readonly file: string
  readonly recovery: AuditRecovery
  readonly #db: PrincipalDb
  /** The current epoch's key (replaced by {@link beginEpoch}). */
  #key: Uint8Array
  readonly #now: () => number
  readonly #log: AuditLogSink | undefined
  #fh: FileHandle
  #seq: number
  #prev: string
  /** A line whose batch landed but whose append failed: written before anything else. */
  #unwritten: string | undefined
  #tail: Promise<unknown> = Promise.resolve()
  #closed = false
  readonly #beforeAppend: (() => void) | undefined

  private constructor(o: AuditLogOptions, fh: FileHandle, seq: number, prev: string, recovery: AuditRecovery) {
    this.file = o.file
    this.#db = o.db
    this.#key = new Uint8Array(o.key)
    this.#now = o.now ?? Date.now
    this.#log = o.log
    this.#beforeAppend = o.beforeAppend
    this.#fh = fh
    this.#seq = seq
    this.#prev = prev
    this.recovery = recovery
  }

  /** Open (create 0600) the log and reconcile it with the database's anchor (see the module comment). */
  static async open(o: AuditLogOptions): Promise<AuditLog> {
    if (!(o.key instanceof Uint8Array) || o.key.length !== 32) throw new RangeError('the audit key must be 32 bytes')
    let fh: FileHandle
    try {
      fh = await fsOpen(o.file, 'a+', 0o600)
      await fh.chmod(0o600)
    } catch (err) {
      throw auditError(`cannot open the audit log ${o.file}`, err)
    }
    try {
      const raw = await o.db.getAdminMeta(AUDIT_HEAD_KEY)
      const headLine = raw === undefined ? undefined : Buffer.from(raw).toString('utf8')
      const head = headLine === undefined ? undefined : parseRecord(headLine)
      if (headLine !== undefined && head === undefined) throw auditError('the audit head in the database is corrupt')
      const { last, cut } = await readTail(fh)
      if (cut !== undefined) await fh.truncate(cut)
      const recovery: AuditRecovery = { repaired: false }
      let seq = 0
      let prev = AUDIT_GENESIS
      if (head === undefined) {
        if (last !== undefined) {
          recovery.problem = `the audit log has records (last seq ${last.seq}) but the database holds no anchor`
          seq = last.seq
          prev = last.h
        }
      } else {
        seq = head.seq
        prev = head.h
        const behindByOne = last === undefined ? head.seq === 1 && head.prev === AUDIT_GENESIS : last.seq === head.seq - 1 && last.h === head.prev
        if (last !== undefined && last.seq === head.seq && last.h === head.h) {
          // In step.
        } else if (behindByOne) {
          await appendLine(fh, headLine!)
          recovery.repaired = true
        } else
          recovery.problem =
            last === undefined
              ? `the audit log is empty but the database anchor is at seq ${head.seq}`
              : `the audit log ends at seq ${last.seq} but the database anchor is at seq ${head.seq}`
      }
      if (cut !== undefined && !recovery.repaired) recovery.problem ??= 'the audit log ended in a torn line, which was cut'
      if (recovery.repaired) o.log?.warn?.(`audit log ${o.file}: appended record ${seq} from the database (the process had stopped before writing it)`)
      if (recovery.problem !== undefined) o.log?.error(`audit log ${o.file}: ${recovery.problem}; run kadmin audit --verify`)
      return new AuditLog(o, fh, seq, prev, recovery)
    } catch (err) {
      await fh.close().catch(() => {})
      throw err instanceof TesseraError ? err : auditError(`cannot open the audit log ${o.file}`, err)
    }
  }

  /** The anchor as the database holds it (undefined before the first record). */
  async anchor(): Promise<AuditAnchor | undefined> {
    return readAnchor(this.#db)
  }

  /**
   * Options for a database write that this record describes: the write's batch carries the
   * new head, and the line is appended once the batch landed. `event` may be a function,
   * called once the change is decided (say, to report the kvno it made). If the write fails
   * nothing is recorded (record the failure with {@link record}).
   */
  commit(event: AuditEvent | (() => AuditEvent)): WriteOptions {
    return {
      commit: (write) =>
        this.#serial(async () => {
          const rec = this.#build(typeof event === 'function' ? event() : event)
          const text = line(rec)
          await write([{ key: AUDIT_HEAD_KEY, value: Buffer.from(text, 'utf8') }])
          this.#advance(rec)
          await this.#append(text)
        }),
    }
  }

  /** Record an event that changes nothing in the database (a refusal, a failure, a read): the head alone, then the line. */
  record(event: AuditEvent): Promise<AuditRecord> {
    return this.#serial(async () => {
      const rec = this.#build(event)
      const text = line(rec)
      await this.#db.putAdminMeta([{ key: AUDIT_HEAD_KEY, value: Buffer.from(text, 'utf8') }])
      this.#advance(rec)
      await this.#append(text)
      return rec
    })
  }

  /**
   * For PrincipalDb.useMasterKey: the options of its batch, which carry the {@link AUDIT_EPOCH_OP}
   * record announcing epoch `epoch` (MAC'd under the current key, confirmed under `key`); once the
   * batch landed, later records are MAC'd under `key` (copied).
   */
  beginEpoch(actor: string, masterKvno: number): (epoch: number, key: Uint8Array) => WriteOptions {
    return (epoch, key) => ({
      commit: (write) =>
        this.#serial(async () => {
          const partial: Omit<AuditRecord, 'h'> = {
            actor,
            op: AUDIT_EPOCH_OP,
            outcome: 'ok',
            details: { epoch, kvno: masterKvno },
            seq: this.#seq + 1,
            time: this.#now(),
            prev: this.#prev,
          }
          partial.details!.confirm = epochConfirm(key, partial)
          const rec: AuditRecord = { ...partial, h: mac(this.#key, body(partial)) }
          const text = line(rec)
          await write([{ key: AUDIT_HEAD_KEY, value: Buffer.from(text, 'utf8') }])
          this.#advance(rec)
          this.#key.fill(0)
          this.#key = new Uint8Array(key)
          await this.#append(text)
        }),
    })
  }

  /** Close the file (the database is the caller's). */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    await this.#tail.catch(() => {})
    await this.#fh.close()
    this.#key.fill(0)
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(async () => {
      if (this.#closed) throw auditError(`the audit log ${this.file} is closed`)
      if (this.#unwritten !== undefined) {
        try {
          this.#beforeAppend?.()
          await appendLine(this.#fh, this.#unwritten)
          this.#unwritten = undefined
        } catch (err) {
          throw auditError(`the audit log ${this.file} cannot be written; admin requests are refused until it can`, err)
        }
      }
      return fn()
    })
    this.#tail = run.catch(() => {})
    return run
  }

  #build(e: AuditEvent): AuditRecord {
    const partial: Omit<AuditRecord, 'h'> = { ...e, seq: this.#seq + 1, time: this.#now(), prev: this.#prev }
    return { ...partial, h: mac(this.#key, body(partial)) }
  }

  #advance(rec: AuditRecord): void {
    this.#seq = rec.seq
    this.#prev = rec.h
  }

  async #append(text: string): Promise<void> {
    try {
      this.#beforeAppend?.()
      await appendLine(this.#fh, text)
    } catch (err) {
      // The change has landed and its line is the head in the database: keep it for the next attempt.
      this.#unwritten = text
      this.#log?.error(`audit log ${this.file}: cannot append record ${this.#seq}; it is kept in the database and retried`, {
        error: (err as Error).message,
      })
    }
  }
}

async function appendLine(fh: FileHandle, text: string): Promise<void> {
  await fh.appendFile(`${text}\n`, 'utf8')
  await fh.sync()
}

/** The last complete record of the file, and where to cut a torn last line (if any). */
async function readTail(fh: FileHandle): Promise<{ last?: AuditRecord; cut?: number }> {
  const { size } = await fh.stat()
  if (size === 0) return {}
  const len = Math.min(size, 2 * MAX_LINE_BYTES)
  const buf = Buffer.alloc(len)
  await fh.read(buf, 0, len, size - len)
  let end = len
  let cut: number | undefined
  if (buf[len - 1] !== 0x0a) {
    const nl = buf.lastIndexOf(0x0a)
    end = nl + 1
    cut = size - len + end
  }
  const text = buf.subarray(0, end).toString('utf8')
  const lines = text.split('\n').filter((l) => l.length > 0)
  const lastText = lines[lines.length - 1]
  const out: { last?: AuditRecord; cut?: number } = {}
  if (lastText !== undefined) {
    const last = parseRecord(lastText)
    if (last !== undefined) out.last = last
  }
  if (cut !== undefined) out.cut = cut
  return out
}

/** The anchor stored in `db`, or undefined. */
export async function readAnchor(db: PrincipalDb): Promise<AuditAnchor | undefined> {
  const raw = await db.getAdminMeta(AUDIT_HEAD_KEY)
  if (raw === undefined) return undefined
  const head = parseRecord(Buffer.from(raw).toString('utf8'))
  if (head === undefined) throw auditError('the audit head in the database is corrupt')
  return { seq: head.seq, hash: head.h }
}

/** Outcome of {@link verifyAuditLog}. */
export interface AuditVerification {
  ok: boolean
  /** Records read. */
  records: number
  /** 1-based line of the first problem. */
  firstBadLine?: number
  problem?: string
}

async function* lines(file: string): AsyncGenerator<string> {
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Number.POSITIVE_INFINITY })
  try {
    for await (const l of rl) yield l
  } finally {
    rl.close()
  }
}

/** The epoch a log starts in: that of the realm a `load` record names (absent: 0). */
function startEpoch(first: AuditRecord): number {
  const e = first.op === 'load' ? first.details?.auditEpoch : undefined
  return typeof e === 'number' && Number.isSafeInteger(e) && e >= 0 ? e : 0
}

/**
 * Verify the whole log against the anchor: every line a record whose `h` is its HMAC, seq 1,
 * 2, 3, ... each `prev` the `h` before it, and the last record the anchor. Names the first bad
 * line: an edited line fails its own hash, a deleted one leaves a gap in seq, a reordered one
 * comes out of order, a cut tail ends before the anchor.
 *
 * `keys` are the audit epochs' keys, index = epoch (PrincipalDb.auditEpochKeys; one key: a log
 * never switched). Each line is checked under its epoch's key; an {@link AUDIT_EPOCH_OP} record
 * must name the next epoch and carry its confirmation under that epoch's key; the log must end
 * in the last epoch (so a log rebuilt, or cut back, under an older key does not verify).
 */
export async function verifyAuditLog(
  file: string,
  anchor: AuditAnchor | undefined,
  keys: Uint8Array | readonly Uint8Array[],
): Promise<AuditVerification> {
  const ring: readonly Uint8Array[] = keys instanceof Uint8Array ? [keys] : keys
  if (ring.length === 0) throw new RangeError('verifyAuditLog needs the key of at least one audit epoch')
  let n = 0
  let expectSeq = 1
  let prev = AUDIT_GENESIS
  let epoch = -1
  const bad = (lineNo: number, problem: string): AuditVerification => ({ ok: false, records: n, firstBadLine: lineNo, problem })
  try {
    for await (const text of lines(file)) {
      const lineNo = n + 1
      const r = text.length <= MAX_LINE_BYTES ? parseRecord(text) : undefined
      if (r === undefined) return bad(lineNo, `line ${lineNo} is not an audit record`)
      if (epoch < 0) epoch = startEpoch(r)
      const key = ring[epoch]
      if (key === undefined) return bad(lineNo, `line ${lineNo} (seq ${r.seq}) is in audit epoch ${epoch}, which the database does not know`)
      const { h, ...rest } = r
      // The text must be exactly the canonical form: no field added, reordered or re-spelt.
      if (mac(key, body(rest)) !== h || line(r) !== text)
        return bad(lineNo, `line ${lineNo} (seq ${r.seq}) was altered: its hash does not match its content`)
      if (r.op === AUDIT_EPOCH_OP) {
        const next = ring[epoch + 1]
        if (r.details?.epoch !== epoch + 1 || next === undefined || r.details?.confirm !== epochConfirm(next, rest))
          return bad(lineNo, `line ${lineNo} (seq ${r.seq}) announces an audit epoch the database does not confirm`)
        epoch++
      }
      if (r.seq > expectSeq)
        return bad(lineNo, `line ${lineNo} has seq ${r.seq} where ${expectSeq} was expected: ${r.seq - expectSeq} record(s) before it were removed`)
      if (r.seq < expectSeq) return bad(lineNo, `line ${lineNo} has seq ${r.seq} where ${expectSeq} was expected: records are out of order or repeated`)
      if (r.prev !== prev) return bad(lineNo, `line ${lineNo} (seq ${r.seq}) does not follow the line before it (chain broken)`)
      n++
      expectSeq++
      prev = h
      if (anchor !== undefined && r.seq > anchor.seq)
        return bad(lineNo, `line ${lineNo} (seq ${r.seq}) is beyond the database anchor (seq ${anchor.seq}): written outside Tessera`)
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      if (anchor === undefined) return { ok: true, records: 0 }
      return bad(1, `the audit log ${file} does not exist but the database anchor is at seq ${anchor.seq}`)
    }
    throw auditError(`cannot read the audit log ${file}`, err)
  }
  if (anchor === undefined) return n === 0 ? { ok: true, records: 0 } : bad(1, 'the database holds no audit anchor for this log')
  if (n < anchor.seq)
    return bad(n + 1, `the log ends at seq ${n} but the database anchor is at seq ${anchor.seq}: the last ${anchor.seq - n} record(s) were cut off`)
  if (prev !== anchor.hash) return bad(n, `the last line (seq ${n}) is not the record the database anchored`)
  if (n > 0 && epoch !== ring.length - 1)
    return bad(n, `the log ends in audit epoch ${epoch} but the database is in epoch ${ring.length - 1}: it was cut back or rebuilt under an older key`)
  return { ok: true, records: n }
}

/** Options of {@link readAuditLog}. */
export interface ReadAuditOptions {
  /** Only records at or after this time (ms since epoch). */
  since?: number
  /** At most this many: the newest, or with `after` the first ones after it (paging forward). */
  limit?: number
  /** Only records whose `seq` is above this (page through the log: pass the last `seq` seen). */
  after?: number
}

/** The records of the log (for `kadmin audit`); lines that do not parse are skipped (verify to find them). */
export async function readAuditLog(file: string, o: ReadAuditOptions = {}): Promise<AuditRecord[]> {
  const out: AuditRecord[] = []
  try {
    for await (const text of lines(file)) {
      const r = parseRecord(text)
      if (r === undefined || (o.since !== undefined && r.time < o.since)) continue
      if (o.after !== undefined) {
        if (r.seq <= o.after) continue
        out.push(r)
        if (o.limit !== undefined && out.length >= o.limit) break
        continue
      }
      out.push(r)
      if (o.limit !== undefined && out.length > o.limit) out.shift()
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out
    throw auditError(`cannot read the audit log ${file}`, err)
  }
  return out
}
