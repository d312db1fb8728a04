import { rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { AclFile } from '../../src/admin/acl.js'
import { readAuditLog, verifyAuditLog } from '../../src/admin/audit.js'
import {
  type Actor,
  AdminContext,
  addPolicy,
  addPrincipal,
  changeKey,
  checkAcl,
  deletePolicy,
  deletePrincipal,
  extractKeys,
  getPolicy,
  getPrincipal,
  listPolicies,
  listPrincipals,
  MAX_SELF_KEEPOLD,
  modifyPolicy,
  modifyPrincipal,
  readAudit,
  renamePrincipal,
} from '../../src/admin/operations.js'
import { dumpDatabase } from '../../src/admin/dump.js'
import { constantTimeEqual, defaultSalt, passwordToKey } from '../../src/crypto/index.js'
import type { PrincipalDb } from '../../src/db/principal-db.js'
import { PasswordPolicyError, TesseraErrorCode } from '../../src/errors.js'
import { rejectsWith } from '../db/helpers/records.js'
import { as, FAST_KDF, HOUR, LOCAL, makeRealm, p, REALM, type Realm } from './helpers.js'

/** Everything in the store but the audit head (which every request moves) and the lockout decoy. */
async function stateOf(db: PrincipalDb): Promise<Map<string, string>> {
  const m = new Map<string, string>()
  for await (const [k, v] of db.exportEntries()) if (!k.endsWith('audit-head') && !k.endsWith('lockout-decoy')) m.set(k, Buffer.from(v).toString('hex'))
  return m
}

async function lastAudit(r: Realm) {
  const recs = await readAuditLog(r.audit.file)
  return recs[recs.length - 1]!
}

type Call = (r: Realm, a: Actor, target: string) => Promise<unknown>

/** One call per operation, with typical arguments. */
const CALLS: Record<string, Call> = {
  addprinc: (r, a, t) => addPrincipal(r.ctx, a, { name: `${t}-new`, randkey: true }),
  delprinc: (r, a, t) => deletePrincipal(r.ctx, a, { name: t }),
  renprinc: (r, a, t) => renamePrincipal(r.ctx, a, { name: t, newName: `${t}-renamed` }),
  modprinc: (r, a, t) => modifyPrincipal(r.ctx, a, { name: t, maxLife: 2 * HOUR }),
  cpw: (r, a, t) => changeKey(r.ctx, a, { name: t, randkey: true }),
  getprinc: (r, a, t) => getPrincipal(r.ctx, a, { name: t }),
  listprincs: (r, a) => listPrincipals(r.ctx, a, {}),
  ktadd: (r, a, t) => extractKeys(r.ctx, a, { name: t }),
  addpol: (r, a) => addPolicy(r.ctx, a, { name: 'newpol', minLength: 10 }),
  modpol: (r, a) => modifyPolicy(r.ctx, a, { name: 'users', minLength: 11 }),
  delpol: (r, a) => deletePolicy(r.ctx, a, { name: 'unused' }),
  getpol: (r, a) => getPolicy(r.ctx, a, { name: 'users' }),
  listpols: (r, a) => listPolicies(r.ctx, a),
  audit: (r, a) => readAudit(r.ctx, a, { verify: true }),
  aclcheck: (r, a) => checkAcl(r.ctx, a, { actor: 'bob', op: 'cpw', target: 'bob' }),
  dump: (r, a) => dumpDatabase(r.ctx, a, join(r.dir, `dump-${Math.random()}`)),
}

// The authorisation matrix (MIT t_kadmin_acl.py): actor, target, the operations it may run; all others are refused.
const MATRIX: { who: string; actor: string; target: string; allowed: string[] }[] = [
  { who: 'the admin', actor: 'admin', target: 'bob', allowed: Object.keys(CALLS) },
  { who: 'a user on itself', actor: 'alice', target: 'alice', allowed: ['cpw', 'getprinc'] },
  { who: 'a user on another', actor: 'alice', target: 'bob', allowed: [] },
  { who: 'a service on itself', actor: 'svc/web', target: 'svc/web', allowed: ['cpw', 'getprinc'] },
  { who: 'a service on another', actor: 'svc/web', target: 'svc/db', allowed: [] },
  { who: 'the helpdesk (ci on *)', actor: 'helpdesk', target: 'bob', allowed: ['cpw', 'getprinc', 'getpol', 'aclcheck'] },
  { who: 'a viewer (il)', actor: 'viewer', target: 'bob', allowed: ['getprinc', 'listprincs', 'getpol', 'listpols', 'aclcheck'] },
  { who: 'svcadmin (xe on svc/*) in its scope', actor: 'svcadmin', target: 'svc/db', allowed: ['addprinc', 'delprinc', 'renprinc', 'modprinc', 'cpw', 'getprinc', 'ktadd'] },
  { who: 'svcadmin out of its scope', actor: 'svcadmin', target: 'bob', allowed: [] },
]

for (const backend of ['memory', 'level'] as const) {
  describe(`admin operations (${backend})`, function () {
    this.timeout(30_000)
    let r: Realm
    beforeEach(async () => {
      r = await makeRealm(backend)
      await addPolicy(r.ctx, LOCAL, { name: 'users', minLength: 8 })
      await addPolicy(r.ctx, LOCAL, { name: 'unused' })
    })
    afterEach(async () => {
      await r.close()
    })

    describe('the authorisation matrix', () => {
      for (const row of MATRIX) {
        for (const [op, call] of Object.entries(CALLS)) {
          const ok = row.allowed.includes(op)
          it(`${row.who}: ${op} ${ok ? 'is allowed' : 'is refused, audited, and changes nothing'}`, async () => {
            const before = await stateOf(r.db)
            const actor = as(row.actor)
            if (ok) {
              await call(r, actor, row.target)
              const last = await lastAudit(r)
              expect(last.outcome).to.equal('ok')
              expect(last.op).to.equal(op)
              expect(last.actor).to.equal(`${row.actor}@${REALM}`)
              return
            }
            const err = await rejectsWith(call(r, actor, row.target), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
            expect(err.message).to.match(/requires the '[a-z]' \(|kadmin\/changepw/)
            const last = await lastAudit(r)
            expect(last).to.include({ op, outcome: 'denied', actor: `${row.actor}@${REALM}`, code: TesseraErrorCode.TESSERA_NOT_AUTHORIZED, peer: '127.0.0.1:5000' })
            expect(last.reason).to.equal(err.message)
            expect(await stateOf(r.db)).to.deep.equal(before)
          })
        }
      }
    })

    it('checks permission before existence: a caller without i learns nothing about a missing principal', async () => {
      const e1 = await rejectsWith(getPrincipal(r.ctx, as('alice'), { name: 'nosuch' }), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
      const e2 = await rejectsWith(getPrincipal(r.ctx, as('alice'), { name: 'bob' }), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
      expect(e1.message.replaceAll('nosuch', 'X')).to.equal(e2.message.replaceAll('bob', 'X'))
      await rejectsWith(getPrincipal(r.ctx, as('admin'), { name: 'nosuch' }), TesseraErrorCode.TESSERA_NOT_FOUND)
      expect((await lastAudit(r)).outcome).to.equal('error')
    })

    it('lets the local user do anything, audited as local:USER', async () => {
      await addPrincipal(r.ctx, LOCAL, { name: 'carol', password: 'Cx-Secret-Passw0rd9' })
      expect((await lastAudit(r)).actor).to.equal('local:root')
      expect((await r.db.get(p('carol')))!.createdBy).to.equal('local:root')
    })

    it('serves through kadmin/changepw only a principal its own password', async () => {
      await changeKey(r.ctx, as('alice', { via: 'changepw' }), { name: 'alice', password: 'New-Passw0rd!1' })
      const err = await rejectsWith(changeKey(r.ctx, as('admin', { via: 'changepw' }), { name: 'bob', password: 'New-Passw0rd!1' }), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
      expect(err.message).to.include('kadmin/changepw')
    })

    it('refuses a self key change without an initial ticket', async () => {
      const err = await rejectsWith(changeKey(r.ctx, as('alice', { initial: false }), { name: 'alice', randkey: true }), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
      expect(err.message).to.include('initial ticket')
    })

    describe('password policy', () => {
      beforeEach(async () => {
        await addPolicy(r.ctx, as('admin'), {
          name: 'strict',
          minLength: 12,
          minClasses: 3,
          history: 3,
          minPasswordLifeMs: HOUR,
          maxPasswordLifeMs: 30 * 24 * HOUR,
        })
        await modifyPrincipal(r.ctx, as('admin'), { name: 'alice', policy: 'strict' })
        r.clock.now += 2 * HOUR
      })

      async function refuses(actor: Actor, pw: string, reason: string, message: string) {
        const before = await stateOf(r.db)
        const err = await rejectsWith(changeKey(r.ctx, actor, { name: 'alice', password: pw }), TesseraErrorCode.TESSERA_PASSWORD_POLICY)
        expect(err).to.be.instanceOf(PasswordPolicyError)
        expect((err as PasswordPolicyError).reason).to.equal(reason)
        expect(err.message).to.include(message)
        expect(err.message).not.to.include(pw)
        const last = await lastAudit(r)
        expect(last).to.include({ outcome: 'error', code: TesseraErrorCode.TESSERA_PASSWORD_POLICY })
        expect(JSON.stringify(last)).not.to.include(pw)
        expect(await stateOf(r.db)).to.deep.equal(before)
      }

      it('refuses a short password: "Password is too short"', () => refuses(as('alice'), 'Sh0rt!', 'TOO_SHORT', 'Password is too short'))
      it('refuses too few classes: "Password does not contain enough character classes"', () =>
        refuses(as('alice'), 'onlylowercaseletters', 'TOO_FEW_CLASSES', 'Password does not contain enough character classes'))
      it('refuses the current password, also to an admin: "Cannot reuse password"', async () => {
        await changeKey(r.ctx, as('admin'), { name: 'alice', password: 'First-Passw0rd' })
        await refuses(as('admin'), 'First-Passw0rd', 'REUSE', 'Cannot reuse password')
      })

      it('remembers history - 1 earlier passwords, and forgets older ones', async () => {
        const pws = ['First-Passw0rd', 'Second-Passw0rd', 'Third-Passw0rd', 'Fourth-Passw0rd']
        await changeKey(r.ctx, as('alice'), { name: 'alice', password: pws[0]! })
        for (const pw of pws.slice(1, 3)) {
          r.clock.now += 2 * HOUR
          await changeKey(r.ctx, as('alice'), { name: 'alice', password: pw })
        }
        r.clock.now += 2 * HOUR
        await refuses(as('alice'), pws[0]!, 'REUSE', 'Cannot reuse password')
        await changeKey(r.ctx, as('alice'), { name: 'alice', password: pws[3]! })
        r.clock.now += 2 * HOUR
        await changeKey(r.ctx, as('alice'), { name: 'alice', password: pws[0]! })
        const rec = (await r.db.get(p('alice')))!
        expect(rec.passwordHistory).to.have.length(2)
      })

      it('refuses a self change before minlife: "Current password\'s minimum life has not expired"; an admin is not bound by it', async () => {
        await changeKey(r.ctx, as('alice'), { name: 'alice', password: 'First-Passw0rd' })
        r.clock.now += 10 * 60_000
        await refuses(as('alice'), 'Second-Passw0rd', 'TOO_SOON', "Current password's minimum life has not expired")
        await changeKey(r.ctx, as('admin'), { name: 'alice', password: 'Second-Passw0rd' })
      })

      it('sets the password expiry from maxlife on a change', async () => {
        await changeKey(r.ctx, as('alice'), { name: 'alice', password: 'First-Passw0rd' })
        const v = await getPrincipal(r.ctx, as('alice'), { name: 'alice' })
        expect(v.passwordExpiresAt).to.equal(r.clock.now + 30 * 24 * HOUR)
        expect(v.kvno).to.equal(2)
      })

      it('applies the quality rules to addprinc', async () => {
        await rejectsWith(addPrincipal(r.ctx, as('admin'), { name: 'dave', password: 'short', policy: 'strict' }), TesseraErrorCode.TESSERA_PASSWORD_POLICY)
        expect(await r.db.get(p('dave'))).to.equal(undefined)
      })

      it('lets a principal read its own policy without an ACL line', async () => {
        expect((await getPolicy(r.ctx, as('alice'), { name: 'strict' })).minLength).to.equal(12)
        await rejectsWith(getPolicy(r.ctx, as('alice'), { name: 'users' }), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
      })
    })

    describe('keys', () => {
      it('keeps at most MAX_SELF_KEEPOLD versions when a service changes its own key with keepold', async () => {
        for (let i = 0; i < 7; i++) await changeKey(r.ctx, as('svc/web'), { name: 'svc/web', randkey: true, keepold: true })
        const rec = (await r.db.get(p('svc/web')))!
        expect(rec.keys.map((k) => k.kvno)).to.deep.equal([4, 5, 6, 7, 8])
        expect(rec.keys).to.have.length(MAX_SELF_KEEPOLD)
      })

      it('keeps every version when an admin asks keepold, none without', async () => {
        for (let i = 0; i < 7; i++) await changeKey(r.ctx, as('admin'), { name: 'svc/db', randkey: true, keepold: true })
        expect((await r.db.get(p('svc/db')))!.keys).to.have.length(8)
        await changeKey(r.ctx, as('admin'), { name: 'svc/db', randkey: true })
        expect((await r.db.get(p('svc/db')))!.keys.map((k) => k.kvno)).to.deep.equal([9])
      })

      it('returns only the key it just made (MIT CVE-2014-5351), and audits its kvno', async () => {
        const out = await changeKey(r.ctx, as('admin'), { name: 'svc/db', randkey: true, keepold: true })
        expect(out.kvno).to.equal(2)
        expect(out.keys.map((k) => k.kvno)).to.deep.equal([2])
        const rec = (await r.db.get(p('svc/db')))!
        expect(constantTimeEqual(out.keys[0]!.key, rec.keys[1]!.key)).to.equal(true)
        expect((await lastAudit(r)).kvno).to.equal(2)
        const pw = await changeKey(r.ctx, as('admin'), { name: 'bob', password: 'New-Secret-Passw0rd' })
        expect(pw.keys).to.deep.equal([])
        expect(r.events.map((e) => e.type)).to.deep.equal(['changed', 'changed'])
      })

      it('ktadd gives the current and still valid older versions, and does not change the key', async () => {
        await changeKey(r.ctx, as('admin'), { name: 'svc/db', randkey: true, keepold: true })
        await r.db.update(
          p('svc/db'),
          (x) => {
            x.keys[0]!.retiresAt = r.clock.now - 1
          },
          'test',
        )
        await changeKey(r.ctx, as('admin'), { name: 'svc/db', randkey: true, keepold: true })
        const before = await stateOf(r.db)
        const out = await extractKeys(r.ctx, as('admin'), { name: 'svc/db' })
        expect(out.keys.map((k) => k.kvno)).to.deep.equal([2, 3])
        expect(await stateOf(r.db)).to.deep.equal(before)
        expect(await lastAudit(r)).to.include({ op: 'ktadd', kvno: 3 })
        expect((await lastAudit(r)).kvnos).to.deep.equal([2, 3])
      })

      it('ktadd with randkey needs c too, changes the key and gives only the new one', async () => {
        await r.ctx.db.update(p('svc/db'), () => {}, 'test')
        const out = await extractKeys(r.ctx, as('admin'), { name: 'svc/db', randkey: true, keepold: true })
        expect(out.keys.map((k) => k.kvno)).to.deep.equal([2])
        expect((await r.db.get(p('svc/db')))!.keys).to.have.length(2)
      })

      it('refuses to extract the keys of krbtgt/REALM and kadmin/*', async () => {
        await rejectsWith(extractKeys(r.ctx, as('admin'), { name: `krbtgt/${REALM}` }), TesseraErrorCode.TESSERA_PROTECTED)
        await rejectsWith(extractKeys(r.ctx, as('admin'), { name: 'kadmin/admin' }), TesseraErrorCode.TESSERA_PROTECTED)
      })
    })

    describe('protected principals and fields', () => {
      for (const name of [`krbtgt/${REALM}`, 'kadmin/admin', 'kadmin/changepw']) {
        it(`refuses to delete, rename or disable ${name}`, async () => {
          const before = await stateOf(r.db)
          await rejectsWith(deletePrincipal(r.ctx, as('admin'), { name }), TesseraErrorCode.TESSERA_PROTECTED)
          await rejectsWith(renamePrincipal(r.ctx, as('admin'), { name, newName: 'x' }), TesseraErrorCode.TESSERA_PROTECTED)
          await rejectsWith(modifyPrincipal(r.ctx, as('admin'), { name, attributes: { disabled: true } }), TesseraErrorCode.TESSERA_PROTECTED)
          await rejectsWith(modifyPrincipal(r.ctx, LOCAL, { name, expiresAt: r.clock.now }), TesseraErrorCode.TESSERA_PROTECTED)
          expect(await stateOf(r.db)).to.deep.equal(before)
          expect((await lastAudit(r)).code).to.equal(TesseraErrorCode.TESSERA_PROTECTED)
        })
      }

      it('refuses to rename a principal to a protected name', async () => {
        await rejectsWith(renamePrincipal(r.ctx, as('admin'), { name: 'bob', newName: 'kadmin/bob' }), TesseraErrorCode.TESSERA_PROTECTED)
      })

      it('refuses to delete or disable the last full admin, and allows it once another exists', async () => {
        await rejectsWith(deletePrincipal(r.ctx, LOCAL, { name: 'admin' }), TesseraErrorCode.TESSERA_PROTECTED)
        await rejectsWith(modifyPrincipal(r.ctx, LOCAL, { name: 'admin', attributes: { disabled: true } }), TesseraErrorCode.TESSERA_PROTECTED)
        await rejectsWith(renamePrincipal(r.ctx, LOCAL, { name: 'admin', newName: 'admin2' }), TesseraErrorCode.TESSERA_PROTECTED)
        const r2 = new AdminContext({
          db: r.db,
          realm: REALM,
          acl: (await import('../../src/admin/acl.js')).Acl.parse('admin *e\nbob *\n', { realm: REALM }),
          audit: r.audit,
          kdf: FAST_KDF,
          maxLife: HOUR,
          maxRenewableLife: HOUR,
          now: () => r.clock.now,
        })
        await modifyPrincipal(r2, LOCAL, { name: 'bob', attributes: { disabled: true } })
        await rejectsWith(deletePrincipal(r2, LOCAL, { name: 'admin' }), TesseraErrorCode.TESSERA_PROTECTED)
        await modifyPrincipal(r2, LOCAL, { name: 'bob', attributes: { disabled: false } })
        await modifyPrincipal(r2, LOCAL, { name: 'admin', attributes: { disabled: true } })
        await deletePrincipal(r2, LOCAL, { name: 'admin' })
      })

      for (const field of ['failureCount', 'lastSuccess', 'createdBy', 'modifiedBy', 'keys', 'lockedUntil']) {
        it(`refuses a request that sets ${field}, the KDC's own`, async () => {
          const before = await stateOf(r.db)
          const args = { name: 'bob', [field]: field === 'keys' ? [] : field.endsWith('By') ? 'me' : 0 }
          await rejectsWith(modifyPrincipal(r.ctx, LOCAL, args as never), TesseraErrorCode.TESSERA_PROTECTED)
          await rejectsWith(addPrincipal(r.ctx, LOCAL, { ...args, name: 'zed', randkey: true } as never), TesseraErrorCode.TESSERA_PROTECTED)
          expect(await stateOf(r.db)).to.deep.equal(before)
        })
      }

      it('refuses an unknown field and an unknown attribute', async () => {
        await rejectsWith(modifyPrincipal(r.ctx, LOCAL, { name: 'bob', colour: 'red' } as never), TesseraErrorCode.TESSERA_VALIDATION)
        await rejectsWith(modifyPrincipal(r.ctx, LOCAL, { name: 'bob', attributes: { okAsDelegate: true } as never }), TesseraErrorCode.TESSERA_VALIDATION)
      })
    })

    describe('principals', () => {
      it('addprinc sets what was asked, defaults the rest, and reports a random key once', async () => {
        const out = await addPrincipal(r.ctx, as('admin'), {
          name: 'HTTP/www.example.com',
          randkey: true,
          maxLife: 2 * HOUR,
          expiresAt: r.clock.now + 100 * HOUR,
          attributes: { allowService: true, allowForwardable: false },
        })
        expect(out.keys).to.have.length(1)
        const v = await getPrincipal(r.ctx, as('admin'), { name: 'HTTP/www.example.com' })
        expect(v).to.deep.include({ kvno: 1, maxLife: 2 * HOUR, maxRenewableLife: 7 * 24 * HOUR, expiresAt: r.clock.now + 100 * HOUR, createdBy: `admin@${REALM}` })
        expect(v.attributes).to.deep.equal({ disabled: false, requiresPreauth: true, allowForwardable: false, allowRenewable: true, allowService: true, allowJwt: false })
        await rejectsWith(addPrincipal(r.ctx, as('admin'), { name: 'HTTP/www.example.com', randkey: true }), TesseraErrorCode.TESSERA_EXISTS)
        await rejectsWith(addPrincipal(r.ctx, as('admin'), { name: 'x', randkey: true, password: 'Both-Passw0rd' }), TesseraErrorCode.TESSERA_VALIDATION)
        await rejectsWith(addPrincipal(r.ctx, as('admin'), { name: 'x@OTHER.ORG', randkey: true }), TesseraErrorCode.TESSERA_BAD_NAME)
      })

      it('imposes the restrictions of the ACL line on add and modify', async () => {
        await addPrincipal(r.ctx, as('restricted'), { name: 'r1', randkey: true, maxLife: 5 * HOUR, attributes: { allowService: true, requiresPreauth: false } })
        const v = await getPrincipal(r.ctx, as('admin'), { name: 'r1' })
        expect(v).to.deep.include({ maxLife: HOUR, policy: 'users' })
        expect(v.attributes).to.deep.include({ allowService: false, requiresPreauth: true })
        await modifyPrincipal(r.ctx, as('restricted'), { name: 'bob', attributes: { requiresPreauth: false }, policy: null })
        const b = await getPrincipal(r.ctx, as('admin'), { name: 'bob' })
        expect(b).to.deep.include({ maxLife: HOUR, policy: 'users' })
        expect(b.attributes.requiresPreauth).to.equal(true)
      })

      it('getprinc shows kvno, every version with its times, the lockout state, and no key bytes', async () => {
        await changeKey(r.ctx, as('admin'), { name: 'bob', password: 'New-Secret-Passw0rd', keepold: true })
        await addPolicy(r.ctx, LOCAL, { name: 'lock', maxFailures: 2 })
        await modifyPrincipal(r.ctx, LOCAL, { name: 'bob', policy: 'lock' })
        const lock = (await r.db.getPolicy('lock'))!
        await r.db.recordFailure(p('bob'), r.clock.now, lock)
        await r.db.recordFailure(p('bob'), r.clock.now, lock)
        const v = await getPrincipal(r.ctx, as('bob'), { name: 'bob' })
        expect(v.kvno).to.equal(2)
        expect(v.keys.map((k) => [k.kvno, k.kind])).to.deep.equal([
          [1, 'password'],
          [2, 'password'],
        ])
        expect(v.lockout).to.include({ failureCount: 2, locked: true })
        const json = JSON.stringify(v)
        expect(json).not.to.match(/"key"|"sealed"|"salt"|passwordHistory/)
        await modifyPrincipal(r.ctx, as('admin'), { name: 'bob', unlock: true })
        const after = await getPrincipal(r.ctx, as('admin'), { name: 'bob' })
        expect(after.lockout).to.include({ failureCount: 0, locked: false })
        expect(r.events.map((e) => e.type)).to.include('unlocked')
      })

      it('renprinc moves the record in one step; the keys open under the new name and the password still works', async () => {
        await renamePrincipal(r.ctx, as('admin'), { name: 'bob', newName: 'robert' })
        expect(await r.db.get(p('bob'))).to.equal(undefined)
        if (backend === 'level') await r.reopen()
        const rec = (await r.db.get(p('robert')))!
        const k = rec.keys[0]!
        expect(k.salt).to.equal(defaultSalt(REALM, 'bob'))
        const again = await passwordToKey('bob-Passw0rd!', k.salt!, k.kdf!)
        expect(constantTimeEqual(again, k.key)).to.equal(true)
        await rejectsWith(renamePrincipal(r.ctx, as('admin'), { name: 'alice', newName: 'robert' }), TesseraErrorCode.TESSERA_EXISTS)
        expect(await lastAudit(r)).to.include({ op: 'renprinc', target: 'alice', newTarget: `robert@${REALM}`, outcome: 'error' })
      })

      it('delprinc removes it; listprincs filters by glob and sorts', async () => {
        await deletePrincipal(r.ctx, as('admin'), { name: 'bob' })
        expect(await r.db.get(p('bob'))).to.equal(undefined)
        expect(await listPrincipals(r.ctx, as('admin'), { glob: 'svc/*' })).to.deep.equal([`svc/db@${REALM}`, `svc/web@${REALM}`])
        await rejectsWith(deletePrincipal(r.ctx, as('admin'), { name: 'bob' }), TesseraErrorCode.TESSERA_NOT_FOUND)
      })
    })

    describe('policies', () => {
      it('addpol, modpol, getpol, listpols, delpol', async () => {
        const pol = await addPolicy(r.ctx, as('admin'), { name: 'p1', minLength: 10, history: 4, minPasswordLifeMs: HOUR, maxFailures: 3 })
        expect(pol).to.include({ minLength: 10, history: 4, minClasses: 1, maxFailures: 3 })
        await rejectsWith(addPolicy(r.ctx, as('admin'), { name: 'p1' }), TesseraErrorCode.TESSERA_EXISTS)
        expect(await modifyPolicy(r.ctx, as('admin'), { name: 'p1', minClasses: 2 })).to.include({ minLength: 10, minClasses: 2 })
        expect(await getPolicy(r.ctx, as('viewer'), { name: 'p1' })).to.include({ minClasses: 2, history: 4 })
        expect(await listPolicies(r.ctx, as('viewer'))).to.deep.equal(['p1', 'unused', 'users'])
        await modifyPrincipal(r.ctx, as('admin'), { name: 'bob', policy: 'p1' })
        await rejectsWith(deletePolicy(r.ctx, as('admin'), { name: 'p1' }), TesseraErrorCode.TESSERA_EXISTS)
        await modifyPrincipal(r.ctx, as('admin'), { name: 'bob', policy: null })
        await deletePolicy(r.ctx, as('admin'), { name: 'p1' })
        await rejectsWith(modifyPolicy(r.ctx, as('admin'), { name: 'p1', minClasses: 2 }), TesseraErrorCode.TESSERA_NOT_FOUND)
        await rejectsWith(addPolicy(r.ctx, as('admin'), { name: 'p2', minPasswordLifeMs: 2 * HOUR, maxPasswordLifeMs: HOUR }), TesseraErrorCode.TESSERA_VALIDATION)
      })
    })

    it('explains a decision for acl check', async () => {
      const e = await checkAcl(r.ctx, as('admin'), { actor: 'helpdesk', op: 'delprinc', target: 'bob' })
      expect(e.allowed).to.equal(false)
      expect(e.decisions[0]!.rule?.line).to.equal(3)
    })

    it('every request leaves one record, and the log verifies against the anchor', async () => {
      await addPrincipal(r.ctx, as('admin'), { name: 'carol', password: 'Cx-Secret-Passw0rd9' })
      await rejectsWith(getPrincipal(r.ctx, as('bob'), { name: 'carol' }), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
      await getPrincipal(r.ctx, as('carol'), { name: 'carol' })
      const recs = await readAuditLog(r.audit.file)
      expect(recs.slice(-3).map((x) => [x.op, x.outcome])).to.deep.equal([
        ['addprinc', 'ok'],
        ['getprinc', 'denied'],
        ['getprinc', 'ok'],
      ])
      expect(JSON.stringify(recs)).not.to.include('Cx-Secret-Passw0rd9')
      expect(await verifyAuditLog(r.audit.file, await r.audit.anchor(), r.key)).to.deep.equal({ ok: true, records: recs.length })
    })
  })
}

describe('admin operations with a reloading ACL file', () => {
  it('applies an edited ACL to the next request', async () => {
    const r = await makeRealm('memory')
    try {
      const file = join(r.dir, 'kadm5.acl')
      await writeFile(file, 'admin *e\n')
      const acl = AclFile.open(file, { realm: REALM, watch: false })
      const ctx = new AdminContext({ db: r.db, realm: REALM, acl, audit: r.audit, kdf: FAST_KDF, maxLife: HOUR, maxRenewableLife: HOUR })
      await rejectsWith(getPrincipal(ctx, as('alice'), { name: 'bob' }), TesseraErrorCode.TESSERA_NOT_AUTHORIZED)
      // Saved by rename (what editors and mv do): the next request follows it. An edit in
      // place is followed once the file has been still for ACL_SETTLE_MS (acl.test.ts).
      await writeFile(`${file}.new`, 'admin *e\nalice i bob\n')
      await rename(`${file}.new`, file)
      expect((await getPrincipal(ctx, as('alice'), { name: 'bob' })).name).to.equal(`bob@${REALM}`)
      acl.close()
    } finally {
      await r.close()
    }
  })
})
