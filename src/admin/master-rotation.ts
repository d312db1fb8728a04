/**
 * Master-key rotation of a realm directory, the daemon stopped (`kdc master-key STEP --dir DIR`;
 * docs/operations.md "Master key"), in MIT's steps: add (add_mkey: a new key in the stash, known
 * to the database), use (use_mkey: new seals use it), reseal (update_princ_encryption: every
 * record sealed again under it, resumable after a crash), retire (purge_mkeys: the old key
 * leaves the database, then the stash). The KDC runs between any two steps: it opens the stash
 * with every key it holds. Each step is audited; the audit key is derived once from the first
 * master key and kept sealed (src/db), so the log verifies across the rotation.
 */
import path from 'node:path'
import { randomKey, wipe } from '../crypto/index.js'
import { type MasterKeyEntry, readStashKeys, writeStashKeys } from '../db/master-key.js'
import { type MasterKeyStatus, PrincipalDb } from '../db/principal-db.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { REALM_FILES } from '../kdc/realm.js'
import { AUDIT_FILE, AuditLog } from './audit.js'

/** A step of the rotation; `status` changes nothing. */
export type MasterKeyStep = 'status' | 'add' | 'use' | 'reseal' | 'retire'

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
  /** reseal (tests): runs after each batch landed. */
  afterBatch?: () => Promise<void>
}

/** What a step did and the state after it. */
export interface MasterKeyReport {
  step: MasterKeyStep
  /** add: the version added; use: made active; retire: the versions removed. */
  kvno?: number
  retired?: number[]
  /** reseal: records sealed again, and principals in the database. */
  resealed?: number
  total?: number
  status: MasterKeyStatus & { unregistered: number[] }
  /** Versions the stash holds after the step. */
  stash: number[]
}

async function openDb(dir: string, keys: MasterKeyEntry[]): Promise<PrincipalDb> {
  try {
    return await PrincipalDb.open({ location: path.join(dir, REALM_FILES.db), masterKeys: keys })
  } catch (err) {
    if (err instanceof TesseraError && err.code === TesseraErrorCode.TESSERA_DB_LOCKED)
      throw new TesseraError(TesseraErrorCode.TESSERA_DB_LOCKED, `a kdc is running on ${dir}: stop it for this step (the KDC may run between steps)`, { cause: err })
    throw err
  }
}

/** Run one step of a master-key rotation on `o.dir` (the daemon stopped). */
export async function runMasterKeyStep(o: MasterKeyStepOptions): Promise<MasterKeyReport> {
  const stashFile = path.join(o.dir, REALM_FILES.stash)
  let keys = await readStashKeys(stashFile)
  let db = await openDb(o.dir, keys)
  const report: Partial<MasterKeyReport> = { step: o.step }
  let audit: AuditLog | undefined
  try {
    const st = db.masterKeyStatus()
    if (o.step === 'add') {
      // An add cut short after the stash was written: finish it with that key, make no other.
      let kvno = st.unregistered.length > 0 ? Math.max(...st.unregistered) : undefined
      if (kvno === undefined) {
        kvno = Math.max(...st.known, ...keys.map((k) => k.kvno)) + 1
        const next = [...keys, { kvno, key: randomKey() }]
        // The stash first (atomically, 0600): a crash now leaves a key the database ignores until add runs again.
        await writeStashKeys(stashFile, next)
        await db.close()
        for (const k of keys) wipe(k.key)
        keys = await readStashKeys(stashFile)
        for (const k of next) wipe(k.key)
        db = await openDb(o.dir, keys)
      }
      await db.addMasterKey(kvno)
      report.kvno = kvno
    } else if (o.step === 'use') {
      const kvno = o.kvno ?? Math.max(...st.known)
      await db.useMasterKey(kvno)
      report.kvno = kvno
    } else if (o.step === 'reseal') {
      const r = await db.reseal({
        ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}),
        ...(o.onProgress ? { onProgress: o.onProgress } : {}),
        ...(o.afterBatch ? { afterBatch: o.afterBatch } : {}),
      })
      report.resealed = r.resealed
      report.total = r.total
    } else if (o.step === 'retire') {
      const old = st.known.filter((k) => k !== st.active)
      for (const kvno of old) await db.retireMasterKey(kvno)
      // The database first, then the stash: a crash in between leaves a stash key the database ignores.
      const known = new Set(db.masterKeyStatus().known)
      const kept = keys.filter((k) => known.has(k.kvno))
      if (kept.length !== keys.length) await writeStashKeys(stashFile, kept)
      report.retired = old
    }
    if (o.step !== 'status') {
      audit = await AuditLog.open({ file: path.join(o.dir, AUDIT_FILE), db, key: db.derivedKey('tessera audit v1') })
      const details: Record<string, number> = {}
      if (report.kvno !== undefined) details.kvno = report.kvno
      if (report.resealed !== undefined) details.resealed = report.resealed
      await audit.record({ actor: `local:${o.user}`, op: `master-key-${o.step}`, outcome: 'ok', ...(Object.keys(details).length ? { details } : {}) })
    }
    report.status = db.masterKeyStatus()
    report.stash = (await readStashKeys(stashFile)).map((k) => {
      wipe(k.key)
      return k.kvno
    })
    return report as MasterKeyReport
  } finally {
    await audit?.close().catch(() => {})
    await db.close().catch(() => {})
    for (const k of keys) wipe(k.key)
  }
}
