import { appendFile, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { AuditLog, readAuditLog, verifyAuditLog } from '../../src/admin/audit.js'
import { ACL_FILE, dumpDatabase, loadDump } from '../../src/admin/dump.js'
import { addPolicy, addPrincipal, changeKey, getPrincipal, modifyPrincipal } from '../../src/admin/operations.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import { TesseraErrorCode } from '../../src/errors.js'
import { rejectsWith } from '../db/helpers/records.js'
import { as, LOCAL, makeRealm, p, REALM, type Realm } from './helpers.js'

/** A realm with a few audited requests: 6 records. */
async function busyRealm(backend: 'memory' | 'level'): Promise<Realm> {
  const r = await makeRealm(backend)
  await addPolicy(r.ctx, LOCAL, { name: 'users', minLength: 8, history: 3 })
  await addPrincipal(r.ctx, as('admin'), { name: 'carol', password: 'Cx-Secret-Passw0rd9', policy: 'users' })
  await changeKey(r.ctx, as('admin'), { name: 'carol', password: 'Cy-Secret-Passw0rd9', keepold: true })
  await rejectsWith(getPrincipal(r.ctx, as('bob'), { name: 'carol' }), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
  await changeKey(r.ctx, as('admin'), { name: 'svc/web', randkey: true, keepold: true })
  await modifyPrincipal(r.ctx, as('admin'), { name: 'bob', maxLife: 3600_000 })
  return r
}

async function lines(file: string): Promise<string[]> {
  return (await readFile(file, 'utf8')).split('\n').filter((l) => l.length > 0)
}

async function rewrite(file: string, ls: string[]): Promise<void> {
  await writeFile(file, ls.map((l) => `${l}\n`).join(''))
}

describe('audit log', () => {
  let r: Realm
  beforeEach(async () => {
    r = await busyRealm('level')
  })
  afterEach(async () => {
    await r.close()
  })

  async function verdict() {
    return verifyAuditLog(r.audit.file, await r.audit.anchor(), r.key)
  }

  it('is a 0600 file of JSON lines, never holding a password or a key', async () => {
    expect((await stat(r.audit.file)).mode & 0o777).to.equal(0o600)
    const text = await readFile(r.audit.file, 'utf8')
    expect(text).not.to.include('Passw0rd')
    const recs = await readAuditLog(r.audit.file)
    expect(recs.map((x) => x.seq)).to.deep.equal([1, 2, 3, 4, 5, 6])
    expect(recs[2]).to.include({ op: 'cpw', target: 'carol', kvno: 2, outcome: 'ok', actor: `admin@${REALM}` })
    expect(recs[3]).to.include({ op: 'getprinc', outcome: 'denied' })
    expect(await verdict()).to.deep.equal({ ok: true, records: 6 })
  })

  it('names an edited line', async () => {
    const ls = await lines(r.audit.file)
    ls[2] = ls[2]!.replace('"outcome":"ok"', '"outcome":"denied"')
    await rewrite(r.audit.file, ls)
    expect(await verdict()).to.include({ ok: false, firstBadLine: 3 })
  })

  it('names an edited line even with its own hash recomputed without the key', async () => {
    const ls = await lines(r.audit.file)
    const rec = JSON.parse(ls[1]!)
    rec.actor = `mallory@${REALM}`
    ls[1] = JSON.stringify(rec)
    await rewrite(r.audit.file, ls)
    expect(await verdict()).to.include({ ok: false, firstBadLine: 2 })
  })

  it('names the line after a deleted one', async () => {
    const ls = await lines(r.audit.file)
    ls.splice(3, 1)
    await rewrite(r.audit.file, ls)
    const v = await verdict()
    expect(v).to.include({ ok: false, firstBadLine: 4 })
    expect(v.problem).to.include('removed')
  })

  it('names the first of two swapped lines', async () => {
    const ls = await lines(r.audit.file)
    ;[ls[1], ls[2]] = [ls[2]!, ls[1]!]
    await rewrite(r.audit.file, ls)
    expect(await verdict()).to.include({ ok: false, firstBadLine: 2 })
  })

  it('detects a cut tail through the anchor in the database', async () => {
    const ls = await lines(r.audit.file)
    await rewrite(r.audit.file, ls.slice(0, 4))
    const v = await verdict()
    expect(v).to.include({ ok: false, firstBadLine: 5 })
    expect(v.problem).to.include('cut off')
  })

  it('detects a line appended outside Tessera', async () => {
    const ls = await lines(r.audit.file)
    await rewrite(r.audit.file, [...ls, ls[5]!.replace('"seq":6', '"seq":7')])
    expect(await verdict()).to.include({ ok: false, firstBadLine: 7 })
  })

  describe('crash ordering', () => {
    it('a crash after the database batch and before the append: reopening appends the record, the change and the log agree', async () => {
      const opts = r.audit.commit({ actor: 'local:root', op: 'modprinc', target: 'alice', outcome: 'ok' })
      const crash = new Error('crash between the batch and the append')
      await r.db
        .update(
          p('alice'),
          (x) => {
            x.maxLife = 1234
          },
          'local:root',
          {
            commit: (write) =>
              opts.commit!(async (extra) => {
                await write(extra)
                throw crash
              }),
          },
        )
        .catch((e) => expect(e).to.equal(crash))
      expect((await lines(r.audit.file)).length).to.equal(6)
      // As after kill -9: nothing else runs; the next process opens the same directory.
      await r.reopen()
      expect(r.audit.recovery).to.deep.equal({ repaired: true })
      expect((await r.db.get(p('alice')))!.maxLife).to.equal(1234)
      const recs = await readAuditLog(r.audit.file)
      expect(recs[6]).to.include({ seq: 7, op: 'modprinc', target: 'alice' })
      expect(await verdict()).to.deep.equal({ ok: true, records: 7 })
    })

    it('a crash in the middle of the append (a torn line): the torn part is cut and the record appended whole', async () => {
      const opts = r.audit.commit({ actor: 'local:root', op: 'modprinc', target: 'alice', outcome: 'ok' })
      await r.db
        .update(p('alice'), () => {}, 'local:root', {
          commit: (write) =>
            opts.commit!(async (extra) => {
              await write(extra)
              await appendFile(r.audit.file, Buffer.from(extra[0]!.value).subarray(0, 40))
              throw new Error('crash')
            }),
        })
        .catch(() => {})
      await r.reopen()
      expect(r.audit.recovery.repaired).to.equal(true)
      expect(await verdict()).to.deep.equal({ ok: true, records: 7 })
    })

    it('a crash before the database batch: neither the change nor the record', async () => {
      const opts = r.audit.commit({ actor: 'local:root', op: 'modprinc', target: 'alice', outcome: 'ok' })
      await r.db
        .update(
          p('alice'),
          (x) => {
            x.maxLife = 999
          },
          'local:root',
          {
            commit: (write) =>
              opts.commit!(async () => {
                void write
                throw new Error('crash')
              }),
          },
        )
        .catch(() => {})
      await r.reopen()
      expect(r.audit.recovery).to.deep.equal({ repaired: false })
      expect((await r.db.get(p('alice')))!.maxLife).not.to.equal(999)
      expect(await verdict()).to.deep.equal({ ok: true, records: 6 })
      await modifyPrincipal(r.ctx, LOCAL, { name: 'alice', maxLife: 999 })
      expect(await verdict()).to.deep.equal({ ok: true, records: 7 })
    })

    it('reports at open a log that disagrees with the anchor beyond repair', async () => {
      const ls = await lines(r.audit.file)
      await rewrite(r.audit.file, ls.slice(0, 3))
      await r.reopen()
      expect(r.audit.recovery.problem).to.include('ends at seq 3')
    })
  })

  it('refuses admin requests while the log cannot be written (fail closed), and writes the missed record once it can', async () => {
    let full = false
    const errors: string[] = []
    await r.audit.close()
    await rejectsWith(r.audit.record({ actor: 'x', op: 'getprinc', outcome: 'ok' }), TesseraErrorCode.TESSERA_AUDIT)
    r.audit = await AuditLog.open({
      file: r.audit.file,
      db: r.db,
      key: r.key,
      log: { error: (m) => errors.push(m) },
      beforeAppend: () => {
        if (full) throw new Error('ENOSPC')
      },
    })
    const { AdminContext } = await import('../../src/admin/operations.js')
    const ctx = new AdminContext({ db: r.db, realm: REALM, acl: r.ctx.acl, audit: r.audit, maxLife: 1, maxRenewableLife: 1 })
    full = true
    // The batch lands (the change is made, its line is the head in the database); the append fails and is reported.
    await modifyPrincipal(ctx, as('admin'), { name: 'bob', maxLife: 7200_000 })
    expect(errors.join()).to.include('cannot append record 7')
    // Every later request is refused while the log cannot be written.
    await rejectsWith(getPrincipal(ctx, as('admin'), { name: 'bob' }), TesseraErrorCode.TESSERA_AUDIT)
    await rejectsWith(modifyPrincipal(ctx, as('admin'), { name: 'bob', maxLife: 1800_000 }), TesseraErrorCode.TESSERA_AUDIT)
    expect((await r.db.get(p('bob')))!.maxLife).to.equal(7200_000)
    expect((await r.audit.anchor())!.seq).to.equal(7)
    full = false
    await getPrincipal(ctx, as('admin'), { name: 'bob' })
    expect(await verdict()).to.deep.equal({ ok: true, records: 8 })
  })
})

describe('dump and load', function () {
  this.timeout(30_000)
  for (const backend of ['memory', 'level'] as const) {
    it(`round-trips principals with every key version, policies, realm keys and the ACL (${backend})`, async () => {
      const r = await busyRealm(backend)
      const acl = 'admin *e\nhelpdesk ci *\n'
      await writeFile(join(r.dir, ACL_FILE), acl)
      const { AclFile } = await import('../../src/admin/acl.js')
      const { AdminContext } = await import('../../src/admin/operations.js')
      const ctx = new AdminContext({
        db: r.db,
        realm: REALM,
        acl: AclFile.open(join(r.dir, ACL_FILE), { realm: REALM, watch: false }),
        audit: r.audit,
        maxLife: 1,
        maxRenewableLife: 1,
      })
      const file = join(r.dir, 'realm.dump')
      // Changes while the dump runs: the dump is one snapshot, whatever lands meanwhile.
      const [out] = await Promise.all([dumpDatabase(ctx, as('admin'), file), addPrincipal(r.ctx, LOCAL, { name: 'during', randkey: true })])
      expect((await stat(file)).mode & 0o777).to.equal(0o600)
      expect(await readFile(file, 'utf8')).not.to.include('Passw0rd')
      await rejectsWith(dumpDatabase(ctx, as('admin'), file), TesseraErrorCode.TESSERA_EXISTS)
      await rejectsWith(dumpDatabase(ctx, as('helpdesk'), join(r.dir, 'x.dump')), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)

      const dir = join(r.dir, 'restored')
      const loaded = await loadDump({ file, dir, masterKey: r.masterKey, actor: LOCAL })
      expect(loaded).to.include({ realm: REALM, entries: out.entries })
      await rejectsWith(loadDump({ file, dir, masterKey: r.masterKey, actor: LOCAL }), TesseraErrorCode.TESSERA_REALM_EXISTS)

      const db2 = await PrincipalDb.open({ location: join(dir, 'db'), masterKey: r.masterKey })
      try {
        for (const name of ['carol', 'svc/web', 'admin', `krbtgt/${REALM}`]) {
          const a = (await r.db.get(p(name)))!
          const b = (await db2.get(p(name)))!
          expect(b.keys.map((k) => [k.kvno, Buffer.from(k.key).toString('hex')])).to.deep.equal(
            a.keys.map((k) => [k.kvno, Buffer.from(k.key).toString('hex')]),
          )
          expect({ ...b, keys: [], passwordHistory: [] }).to.deep.equal({ ...a, keys: [], passwordHistory: [] })
        }
        expect((await db2.get(p('carol')))!.keys).to.have.length(2)
        expect(await db2.listPolicies()).to.deep.equal(await r.db.listPolicies())
        expect((await db2.getRealm())!.signingKey).to.deep.equal((await r.db.getRealm())!.signingKey)
        expect(await readFile(join(dir, ACL_FILE), 'utf8')).to.equal(acl)
        const recs = await readAuditLog(join(dir, 'audit.log'))
        expect(recs).to.have.length(1)
        expect(recs[0]).to.include({ op: 'load', actor: 'local:root', seq: 1 })
        expect(recs[0]!.details).to.include({ sha256: out.sha256 })
      } finally {
        await db2.close()
        await r.close()
      }
    })
  }

  it('refuses an edited or cut dump, and a wrong master key, leaving nothing behind', async () => {
    const r = await busyRealm('memory')
    try {
      const file = join(r.dir, 'realm.dump')
      await dumpDatabase(r.ctx, LOCAL, file)
      const ls = await lines(file)
      await rewrite(join(r.dir, 'cut.dump'), ls.slice(0, -1))
      await rejectsWith(loadDump({ file: join(r.dir, 'cut.dump'), dir: join(r.dir, 'a'), masterKey: r.masterKey, actor: LOCAL }), TesseraErrorCode.TESSERA_VALIDATION)
      const edited = [...ls]
      edited[3] = edited[3]!.replace(/"v":"./, '"v":"A')
      await rewrite(join(r.dir, 'edited.dump'), edited)
      await rejectsWith(loadDump({ file: join(r.dir, 'edited.dump'), dir: join(r.dir, 'b'), masterKey: r.masterKey, actor: LOCAL }), TesseraErrorCode.TESSERA_VALIDATION)
      // A wrong master key fails the end record's MAC before anything is written.
      await rejectsWith(loadDump({ file, dir: join(r.dir, 'c'), masterKey: new Uint8Array(32), actor: LOCAL }), TesseraErrorCode.TESSERA_VALIDATION)
      for (const d of ['a', 'b', 'c']) await rejectsWith(stat(join(r.dir, d, 'db')), 'ENOENT')
    } finally {
      await r.close()
    }
  })
})
