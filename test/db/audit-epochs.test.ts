/**
 * The audit epochs of PrincipalDb (src/db/principal-db.ts useMasterKey, the `derived` record):
 * each use of another master key starts an epoch whose key the old master key does not give;
 * the keys persist sealed, and an epoch dropped from the record, or the record put back as it
 * was before the switch, makes the database refuse to open.
 */
import { expect } from 'chai'
import { Level } from 'level'
import { auditKey } from '../../src/admin/audit.js'
import { randomKey } from '../../src/crypto/index.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import { TesseraErrorCode } from '../../src/errors.js'
import { decode, encode } from '../../src/wire/codec.js'
import { rejectsWith, tempDir } from './helpers/records.js'

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')

async function rawDerived(location: string, change?: (v: Uint8Array) => Uint8Array): Promise<Uint8Array> {
  const raw = new Level<string, Uint8Array>(location, { keyEncoding: 'utf8', valueEncoding: 'view' })
  await raw.open()
  try {
    const v = await raw.get('!meta!derived')
    if (v === undefined) throw new Error('no derived record')
    if (change) await raw.put('!meta!derived', change(v))
    return v
  } finally {
    await raw.close()
  }
}

describe('PrincipalDb audit epochs', () => {
  it('starts an epoch at each use of another master key, keeps every epoch key sealed, and refuses an epoch dropped or rolled back', async () => {
    const t = await tempDir()
    const k1 = { kvno: 1, key: randomKey() }
    const k2 = { kvno: 2, key: randomKey() }
    try {
      let db = await PrincipalDb.open({ location: t.dir, masterKeys: [k1] })
      expect(db.auditEpoch()).to.equal(0)
      expect(hex(db.derivedKey('tessera audit v1'))).to.equal(hex(auditKey(k1.key)))
      const hint = hex(db.derivedKey('tessera kdf hint v1'))
      await db.addMasterKey(2, k2.key)
      expect(db.auditEpoch(), 'add starts no epoch').to.equal(0)
      await db.close()
      const beforeUse = await rawDerived(t.dir)

      db = await PrincipalDb.open({ location: t.dir, masterKeys: [k1, k2] })
      await db.useMasterKey(2)
      expect(db.auditEpoch()).to.equal(1)
      const keys = db.auditEpochKeys().map(hex)
      expect(keys).to.have.length(2)
      expect(keys[0]).to.equal(hex(auditKey(k1.key)))
      expect(keys[1]).to.not.equal(keys[0])
      expect(hex(db.derivedKey('tessera audit v1')), 'the current epoch').to.equal(keys[1])
      expect(hex(db.derivedKey('tessera kdf hint v1')), 'the kdf hint key stays').to.equal(hint)
      await db.useMasterKey(2)
      expect(db.auditEpoch(), 'the active key again: no new epoch').to.equal(1)
      await db.reseal()
      await db.retireMasterKey(1)
      await db.close()

      // Persisted, under kvno 2 alone.
      db = await PrincipalDb.open({ location: t.dir, masterKeys: [k2] })
      expect(db.auditEpochKeys().map(hex)).to.deep.equal(keys)
      await db.close()

      // The epoch dropped from the record: the seals bound to the count no longer open.
      const current = await rawDerived(t.dir, (v) => {
        const d = decode(v) as Record<string, unknown>
        delete d.epochs
        return encode(d)
      })
      await rejectsWith(PrincipalDb.open({ location: t.dir, masterKeys: [k2] }), TesseraErrorCode.TESSERA_INTEGRITY)
      // The record as it was before the switch (sealed under the retired kvno 1).
      await rawDerived(t.dir, () => beforeUse)
      await rejectsWith(PrincipalDb.open({ location: t.dir, masterKeys: [k2] }), TesseraErrorCode.TESSERA_INTEGRITY)
      await rawDerived(t.dir, () => current)
      db = await PrincipalDb.open({ location: t.dir, masterKeys: [k2] })
      expect(db.auditEpoch()).to.equal(1)
      await db.close()
    } finally {
      await t.remove()
    }
  })
})
