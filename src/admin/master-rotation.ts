/**
 * Master-key rotation of a realm directory (`kdc master-key STEP --dir DIR`; docs/operations.md
 * "Rotating the master key"), in MIT's steps: add (add_mkey: a new key in the stash, known to
 * the database), use (use_mkey: new seals use it), reseal (update_princ_encryption: every record
 * sealed again under it, resumable after a crash), retire (purge_mkeys: the old key leaves the
 * database, then the stash). With the KDC running, each step is carried out by the daemon over
 * its control socket (src/admin/master-control.ts, docs/decisions/0011) while it keeps serving;
 * with none, on the database opened here. Each step is audited. `use` also starts a new audit
 * epoch (src/admin/audit.ts): later records, and dumps, are MAC'd under a key derived from the new
 * master key, so the old one alone forges nothing; the database keeps every epoch's key sealed,
 * so the log verifies across the rotation.
 */
import path from 'node:path'
import { randomKey, wipe } from '../crypto/index.js'
import { type MasterKeyEntry, readStashKeys, writeStashKeys } from '../db/master-key.js'
import { type MasterKeyStatus, PrincipalDb } from '../db/principal-db.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { REALM_FILES } from '../kdc/realm.js'
import { AUDIT_FILE, type AuditEvent, AuditLog } from './audit.js'
import { findControlSocket, requestMasterKeyStep } from './master-control.js'
import { auditText } from './operations.js'

/** A step of the rotation; `status` changes nothing. */
export type MasterKeyStep = 'status' | 'add' | 'use' | 'reseal' | 'retire'

/** Every step, in rotation order after `status`. */
export const MASTER_KEY_STEPS: readonly MasterKeyStep[] = ['status', 'add', 'use', 'reseal', 'retire']

/** Options of {@link runMasterKeyStep}. */
export interface MasterKeyStepOptions {
  dir: string
  step: MasterKeyStep
  /** The Unix user, for the audit log (`local:USER`). */
  user: string
  /** use: the version to make active. @default the newest known */
  kvno?: number
  /** reseal: principals per synced batch (and per progress marker). @default 100 */
  batchSize?: number
  /** reseal: called after each batch with (done, total). */
  onProgress?: (done: number, total: number) => void
  /** reseal (tests, offline only): runs after each batch landed. */
  afterBatch?: () => Promise<void>
  /** Skip the running daemon's control socket and open the database here (tests). @default false */
  offline?: boolean
}

/** What a step did and the state after it. */
export interface MasterKeyReport {
  step: MasterKeyStep
  /** add: the version added; use: made active; retire: the versions removed. */
  kvno?: number
  /** use: the audit epoch now current (a new one when the active key changed). */
  auditEpoch?: number
  retired?: number[]
  /** reseal: records sealed again, and principals in the database. */
  resealed?: number
  total?: number
  /** reseal: the run ended early (the KDC is closing); the marker is kept and the next run resumes. */
  stopped?: true
  status: MasterKeyStatus & { unregistered: number[] }
  /** Versions the stash holds after the step. */
  stash: number[]
  /** Where the step ran: `kdc` (the running daemon, pid) or `local` (the database opened here). */
  via: 'kdc' | 'local'
  /** status, via the daemon: a step it is running now, with its progress. */
  running?: { step: MasterKeyStep; done?: number; total?: number }
}

/** What a step works on: an open database, its stash file and its audit log. */
export interface MasterKeyTarget {
  db: PrincipalDb
  stashFile: string
  /** Where each step is recorded (absent: `status` only, which records nothing). */
  audit?: AuditLog
}

/** Options of {@link applyMasterKeyStep}. */
export interface ApplyMasterKeyOptions {
  step: MasterKeyStep
  /** The audit log's actor (`local:USER`). */
  actor: string
  kvno?: number
  batchSize?: number
  onProgress?: (done: number, total: number) => void
  afterBatch?: () => Promise<void>
  /** reseal: asked after each batch; true ends the run there (the marker is kept). */
  shouldStop?: () => boolean
}

function wipeAll(keys: readonly MasterKeyEntry[]): void {
  for (const k of keys) wipe(k.key)
}

async function stashVersions(file: string): Promise<number[]> {
  const keys = await readStashKeys(file)
  wipeAll(keys)
  return keys.map((k) => k.kvno)
}

/**
 * One step on an open database: the offline path's and the daemon's. Every step re-reads the
 * stash, writes it atomically (0600) before the database learns a new key and after it forgot
 * an old one, so a crash at any point leaves a stash that opens the database. Audited, ok or not.
 */
export async function applyMasterKeyStep(t: MasterKeyTarget, o: ApplyMasterKeyOptions): Promise<Omit<MasterKeyReport, 'via'>> {
  const { db, stashFile } = t
  if (o.step !== 'status' && t.audit === undefined) throw new TypeError('a master-key step other than status needs the audit log')
  const report: Partial<MasterKeyReport> = { step: o.step }
  try {
    const st = db.masterKeyStatus()
    if (o.step === 'add') {
      const stash = await readStashKeys(stashFile)
      const fresh: MasterKeyEntry[] = []
      try {
        // An add cut short after the stash was written: finish it with that key, make no other.
        // Only a key newer than every known one is that: an older unknown one is left by a retire
        // cut short before it rewrote the stash, a key the database forgot (perhaps a compromised
        // one), never to be brought back (the next retire drops it from the stash).
        const newest = Math.max(...st.known)
        const pending = stash.filter((k) => !st.known.includes(k.kvno) && k.kvno > newest).sort((a, b) => b.kvno - a.kvno)[0]
        let entry = pending
        if (entry === undefined) {
          entry = { kvno: Math.max(...st.known, ...stash.map((k) => k.kvno)) + 1, key: randomKey() }
          fresh.push(entry)
          // The stash first (atomically, 0600): a crash now leaves a key the database ignores until add runs again.
          await writeStashKeys(stashFile, [...stash, entry])
        }
        await db.addMasterKey(entry.kvno, entry.key)
        report.kvno = entry.kvno
      } finally {
        wipeAll(stash)
        wipeAll(fresh)
      }
    } else if (o.step === 'use') {
      const kvno = o.kvno ?? Math.max(...st.known)
      // The switch to the next audit epoch is recorded in the batch that makes the key active.
      await db.useMasterKey(kvno, t.audit!.beginEpoch(o.actor, kvno))
      report.kvno = kvno
      report.auditEpoch = db.auditEpoch()
    } else if (o.step === 'reseal') {
      const r = await db.reseal({
        ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}),
        ...(o.onProgress ? { onProgress: o.onProgress } : {}),
        ...(o.afterBatch ? { afterBatch: o.afterBatch } : {}),
        ...(o.shouldStop ? { shouldStop: o.shouldStop } : {}),
      })
      report.resealed = r.resealed
      report.total = r.total
      if (r.stopped) report.stopped = true
    } else if (o.step === 'retire') {
      const old = st.known.filter((k) => k !== st.active)
      for (const kvno of old) await db.retireMasterKey(kvno)
      // The database first, then the stash: a crash in between leaves a stash key the database ignores.
      const known = new Set(db.masterKeyStatus().known)
      const keys = await readStashKeys(stashFile)
      try {
        const kept = keys.filter((k) => known.has(k.kvno))
        if (kept.length !== keys.length) await writeStashKeys(stashFile, kept)
      } finally {
        wipeAll(keys)
      }
      report.retired = old
    }
  } catch (err) {
    if (o.step !== 'status') {
      const ev: AuditEvent = { actor: o.actor, op: `master-key-${o.step}`, outcome: 'error', reason: auditText((err as Error).message) }
      if (err instanceof TesseraError) ev.code = err.code
      await t.audit?.record(ev).catch(() => {})
    }
    throw err
  }
  if (o.step !== 'status') {
    const details: Record<string, number | boolean> = {}
    if (report.kvno !== undefined) details.kvno = report.kvno
    if (report.auditEpoch !== undefined) details.auditEpoch = report.auditEpoch
    if (report.resealed !== undefined) details.resealed = report.resealed
    if (report.stopped) details.stopped = true
    await t.audit!.record({ actor: o.actor, op: `master-key-${o.step}`, outcome: 'ok', ...(Object.keys(details).length ? { details } : {}) })
  }
  report.status = db.masterKeyStatus()
  report.stash = await stashVersions(stashFile)
  return report as Omit<MasterKeyReport, 'via'>
}

async function openDb(dir: string, keys: MasterKeyEntry[]): Promise<PrincipalDb> {
  try {
    return await PrincipalDb.open({ location: path.join(dir, REALM_FILES.db), masterKeys: keys })
  } catch (err) {
    if (err instanceof TesseraError && err.code === TesseraErrorCode.TESSERA_DB_LOCKED)
      throw new TesseraError(
        TesseraErrorCode.TESSERA_DB_LOCKED,
        `a kdc is running on ${dir} but its control socket does not answer (see its log: the socket is refused when ${path.join(dir, 'control')} is not a 0700 directory of the kdc's user): ` +
          'fix that and restart the kdc, or stop it for this step',
        { cause: err },
      )
    throw err
  }
}

/**
 * Run one step of a master-key rotation on `o.dir`: through the running KDC when one listens
 * on the realm's control socket (it keeps serving; reseal progress comes back as it goes),
 * else on the database opened here.
 */
export async function runMasterKeyStep(o: MasterKeyStepOptions): Promise<MasterKeyReport> {
  if (!o.offline) {
    const sock = await findControlSocket(o.dir)
    if (sock !== undefined) {
      const r = await requestMasterKeyStep(sock, {
        step: o.step,
        user: o.user,
        ...(o.kvno !== undefined ? { kvno: o.kvno } : {}),
        ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}),
        ...(o.onProgress ? { onProgress: o.onProgress } : {}),
      })
      if (r !== undefined) return r
      // undefined: a socket left by a kdc that is gone (kill -9); the database is free.
    }
  }
  const stashFile = path.join(o.dir, REALM_FILES.stash)
  const keys = await readStashKeys(stashFile)
  let db: PrincipalDb
  try {
    db = await openDb(o.dir, keys)
  } finally {
    wipeAll(keys)
  }
  let audit: AuditLog | undefined
  try {
    if (o.step !== 'status') audit = await AuditLog.open({ file: path.join(o.dir, AUDIT_FILE), db, key: db.derivedKey('tessera audit v1') })
    const r = await applyMasterKeyStep(
      { db, stashFile, ...(audit ? { audit } : {}) },
      {
        step: o.step,
        actor: `local:${o.user}`,
        ...(o.kvno !== undefined ? { kvno: o.kvno } : {}),
        ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}),
        ...(o.onProgress ? { onProgress: o.onProgress } : {}),
        ...(o.afterBatch ? { afterBatch: o.afterBatch } : {}),
      },
    )
    return { ...r, via: 'local' }
  } finally {
    await audit?.close().catch(() => {})
    await db.close().catch(() => {})
  }
}
