/**
 * Bulk load of a benchmark realm on disk: `kdc init` in a directory, then principals with
 * random keys written through PrincipalDb.createMany (synced batches of BULK_BATCH, every
 * record as addPrincipal writes it: newPrincipalRecord, keys sealed under the master key),
 * with the database closed again so that a KDC can start on it.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { randomBytes } from '../../src/crypto/index.js'
import { readStashKeys } from '../../src/db/master-key.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import type { PrincipalRecord } from '../../src/db/types.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { initRealmDir, newPrincipalRecord, REALM_FILES } from '../../src/kdc/realm.js'

/** Records per createMany call (one synced batch each). */
export const BULK_BATCH = 2000

/** The realm of the on-disk benchmark KDC. */
export const BULK_REALM = 'SCALE.BENCH'

/** A loaded realm directory. */
export interface BulkRealm {
  dir: string
  /** The principals of `keep`, with their keys. */
  kept: { name: string; key: Uint8Array }[]
  /** `kdc init`, ms. */
  initMs: number
  /** The bulk load itself, ms. */
  loadMs: number
  remove(): Promise<void>
}

/**
 * A fresh realm directory under the OS temp dir holding, beyond `kdc init`'s principals, one
 * principal per name of `groups` (names from `name(i)`, i < count); the keys of groups with
 * `keep` come back.
 */
export async function bulkLoadRealm(groups: readonly { count: number; name: (i: number) => string; keep?: boolean }[]): Promise<BulkRealm> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-bench-realm-'))
  const remove = () => rm(dir, { recursive: true, force: true })
  try {
    const t0 = performance.now()
    const config = resolveKdcConfig({ ports: { as: 0, tgs: 0, time: 0, admin: 0 }, kdf: { N: 1024 } })
    await initRealmDir({ dir, realm: BULK_REALM, adminPassword: Buffer.from(randomBytes(18)).toString('base64url'), config })
    const initMs = performance.now() - t0
    const t1 = performance.now()
    const masterKeys = await readStashKeys(path.join(dir, REALM_FILES.stash))
    const db = await PrincipalDb.open({ location: path.join(dir, REALM_FILES.db), masterKeys, cacheSize: 0 })
    for (const m of masterKeys) m.key.fill(0)
    const kept: BulkRealm['kept'] = []
    try {
      const now = Date.now()
      for (const g of groups)
        for (let i = 0; i < g.count; i += BULK_BATCH) {
          const recs: PrincipalRecord[] = []
          for (let k = i; k < Math.min(i + BULK_BATCH, g.count); k++) {
            const name = g.name(k)
            const rec = await newPrincipalRecord({
              realm: BULK_REALM,
              components: name.split('/'),
              kdf: config.kdf,
              attributes: {},
              maxLife: config.principalMaxLifeMs,
              maxRenewableLife: config.principalMaxRenewableLifeMs,
              by: 'bench',
              now,
            })
            recs.push(rec)
            if (g.keep) kept.push({ name, key: new Uint8Array(rec.keys[0]!.key) })
          }
          await db.createMany(recs)
          for (const r of recs) r.keys[0]!.key.fill(0)
        }
    } finally {
      await db.close()
    }
    return { dir, kept, initMs, loadMs: performance.now() - t1, remove }
  } catch (err) {
    await remove()
    throw err
  }
}
