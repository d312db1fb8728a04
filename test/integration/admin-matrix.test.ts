/**
 * The admin service over the real daemon on an on-disk realm (initRealmDir + startKdc of
 * src/admin/start.ts), through AdminClient: the authorisation matrix (admin, self, another
 * user, a service) for every operation, each denial audited and nothing changed; ACL
 * wildcards, back-references, deny letters, restrictions and a hot reload of kadm5.acl;
 * password policy refusals; the protected principals; audit verification after real
 * traffic; dump -> load of the whole realm.
 */
import { copyFile, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { AclFile } from '../../src/admin/acl.js'
import { AUDIT_FILE, AuditLog, auditKey, readAnchor, verifyAuditLog } from '../../src/admin/audit.js'
import { ACL_FILE, dumpDatabase, loadDump } from '../../src/admin/dump.js'
import { type Actor, AdminContext } from '../../src/admin/operations.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient, type AdminError } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { readStash } from '../../src/db/master-key.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { ADMIN_PASSWORD, FAST_CONFIG, HOUR, REALM, TestClock } from '../helpers/kdc-helpers.js'
import { expectAdminError } from '../helpers/refusals.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

// biome-ignore lint/suspicious/noExplicitAny: results are free-form wire values
type J = any

const ACL_TEXT = `# the matrix of admin-matrix.test.ts
admin@${REALM}  *e
viewer      il
viewer      *
svcadmin    ie     svc/*
*/root      ci     *1
denier      xD
restricted  am     *     +requires_preauth -allow_svr -maxlife 1h -policy users
`

const PW = {
  alice: 'Tulip-Gravel-41',
  bob: 'Otter-Lamp-77',
  viewer: 'Maple-Stone-12',
  svcadmin: 'Cedar-River-90',
  aliceRoot: 'Quartz-Field-33',
  denier: 'Grape-Moon-55',
  restricted: 'Amber-Cloud-18',
  carol: 'Birch-Harbor-62',
}

describe('admin authorisation matrix over the daemon (integration)', function () {
  this.timeout(60_000)
  useProcessGuards()
  const clock = new TestClock()
  let tmp: string
  let dir: string
  let kdc: RunningKdc
  let kc: KdcClient
  let admin: AdminClient
  const users: Record<string, AdminClient> = {}
  let svcKey: Uint8Array

  const start = async (d: string) =>
    startKdc({ dir: d, config: { ...FAST_CONFIG, ports: { as: 0, tgs: 0, time: 0, admin: 0 } }, now: clock.now, log: false })
  const client = (k: RunningKdc) => new KdcClient(k.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000, now: clock.now })

  before(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'tessera-admin-matrix-'))
    dir = path.join(tmp, 'realm')
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig({ ...FAST_CONFIG, ports: { as: 0, tgs: 0, time: 0, admin: 0 } }) })
    await writeFile(path.join(dir, ACL_FILE), ACL_TEXT, { mode: 0o600 })
    kdc = await start(dir)
    kc = client(kdc)
    admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    await admin.call('addpol', { name: 'users', minLength: 10, minClasses: 3, history: 3, minPasswordLifeMs: HOUR })
    await admin.call('addpol', { name: 'basic', minLength: 8 })
    await admin.call('addprinc', { name: 'alice', password: PW.alice, policy: 'basic' })
    await admin.call('addprinc', { name: 'bob', password: PW.bob })
    for (const n of ['viewer', 'svcadmin', 'denier', 'restricted'] as const) await admin.call('addprinc', { name: n, password: PW[n] })
    await admin.call('addprinc', { name: 'alice/root', password: PW.aliceRoot })
    await admin.call('addprinc', { name: 'svc/db', randkey: true })
    const web = (await admin.call('addprinc', { name: 'svc/web', randkey: true })) as J
    svcKey = web.keys[0].key
    users.alice = await AdminClient.login(kc, 'alice', PW.alice)
    users.bob = await AdminClient.login(kc, 'bob', PW.bob)
    users.service = await AdminClient.loginWithKey(kc, 'svc/web', { key: svcKey })
    for (const n of ['viewer', 'svcadmin', 'denier', 'restricted'] as const) users[n] = await AdminClient.login(kc, n, PW[n])
    users.aliceRoot = await AdminClient.login(kc, 'alice/root', PW.aliceRoot)
  })
  after(async () => {
    kc?.close()
    await kdc?.close()
    await rm(tmp, { recursive: true, force: true })
  })

  /** What the denials must leave unchanged, read back by the admin. */
  const state = async () =>
    JSON.stringify(
      await Promise.all([
        admin.call('listprincs', {}),
        admin.call('listpols', {}),
        admin.call('getprinc', { name: 'alice' }),
        admin.call('getprinc', { name: 'svc/db' }),
        admin.call('getpol', { name: 'users' }),
      ]),
    )

  /** A denial: 107, audited as denied with its actor, op and target, and nothing changed. */
  async function denied(who: AdminClient, op: string, args: Record<string, unknown>): Promise<AdminError> {
    const before = await state()
    const e = await expectAdminError(who.call(op, args), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
    const { records } = (await admin.call('audit', { limit: 1 })) as J
    const r = records[0]
    expect([r.actor, r.op, r.outcome, r.code], `audit record of ${who.principal} ${op}`).to.deep.equal([who.principal, op, 'denied', 'TESSERA_NOT_AUTHORIZED'])
    if (typeof args.name === 'string') expect(r.target).to.equal(args.name)
    expect(r.reason).to.equal(e.message)
    expect(await state(), `${op} by ${who.principal} changed something`).to.equal(before)
    return e
  }

  describe('the matrix: self, another user and a service, for every operation', () => {
    type Who = 'self' | 'other' | 'service'
    /** Every operation, with the actors (besides the admin) the rules allow; `alice` is "self". */
    const MATRIX: { op: string; args: Record<string, unknown>; allow: Who[] }[] = [
      { op: 'addprinc', args: { name: 'm-new', randkey: true }, allow: [] },
      { op: 'delprinc', args: { name: 'alice' }, allow: [] },
      { op: 'renprinc', args: { name: 'alice', newName: 'alice2' }, allow: [] },
      { op: 'modprinc', args: { name: 'alice', maxLife: HOUR }, allow: [] },
      { op: 'getprinc', args: { name: 'alice' }, allow: ['self'] },
      { op: 'listprincs', args: {}, allow: [] },
      { op: 'cpw', args: { name: 'alice', password: 'Willow-Creek-27' }, allow: ['self'] },
      { op: 'ktadd', args: { name: 'svc/db' }, allow: [] },
      { op: 'addpol', args: { name: 'm-pol' }, allow: [] },
      { op: 'modpol', args: { name: 'users', minLength: 4 }, allow: [] },
      { op: 'delpol', args: { name: 'users' }, allow: [] },
      { op: 'getpol', args: { name: 'basic' }, allow: ['self'] },
      { op: 'listpols', args: {}, allow: [] },
      { op: 'aclcheck', args: { actor: 'alice', op: 'getprinc', target: 'bob' }, allow: [] },
      { op: 'audit', args: { limit: 1 }, allow: [] },
    ]
    const ACTOR: Record<Who, string> = { self: 'alice', other: 'bob', service: 'service' }

    for (const who of ['other', 'service', 'self'] as Who[])
      for (const { op, args, allow } of MATRIX) {
        const ok = allow.includes(who)
        it(`${op} by ${who}: ${ok ? 'allowed' : 'refused 107, audited, nothing changed'}`, async () => {
          const c = users[ACTOR[who]]!
          if (!ok) {
            await denied(c, op, args)
            return
          }
          const r = (await c.call(op, args)) as J
          if (op === 'getprinc') expect(r.name).to.equal(`alice@${REALM}`)
          if (op === 'getpol') expect(r.name).to.equal('basic')
          if (op === 'cpw') {
            expect(r.keys).to.deep.equal([])
            await kc.login('alice', 'Willow-Creek-27')
          }
        })
      }

    it('names the same refusal for an existing and a missing target (permission before existence)', async () => {
      for (const [op, extra] of [
        ['getprinc', {}],
        ['delprinc', {}],
        ['modprinc', { maxLife: HOUR }],
        ['cpw', { randkey: true }],
        ['ktadd', {}],
      ] as const) {
        const a = await denied(users.bob!, op, { name: 'svc/db', ...extra })
        const b = await denied(users.bob!, op, { name: 'svc/nothing', ...extra })
        expect(a.message.replaceAll('svc/db', 'X')).to.equal(b.message.replaceAll('svc/nothing', 'X'))
      }
      const p = await denied(users.bob!, 'getpol', { name: 'users' })
      const q = await denied(users.bob!, 'getpol', { name: 'no-such-policy' })
      expect(p.message).to.equal(q.message)
      // The admin, who may inquire, learns it.
      await expectAdminError(admin.call('getprinc', { name: 'svc/nothing' }), ErrorCode.ADM_ERR_NOT_FOUND)
    })

    it('lets a service change its own random key (no ACL line) and keep at most 5 versions', async () => {
      let kvno = 0
      for (let i = 0; i < 7; i++) kvno = ((await users.service!.call('cpw', { name: 'svc/web', randkey: true, keepold: true })) as J).kvno
      expect(kvno).to.equal(8)
      const view = (await admin.call('getprinc', { name: 'svc/web' })) as J
      expect(view.keys.map((k: J) => k.kvno)).to.deep.equal([4, 5, 6, 7, 8])
      await denied(users.service!, 'cpw', { name: 'svc/db', randkey: true })
    })

    it('serves only the self-service operations through kadmin/changepw, whatever the ACL grants', async () => {
      const cp = await AdminClient.login(kc, 'viewer', PW.viewer, 'kadmin/changepw')
      expect(((await cp.call('getprinc', { name: 'viewer' })) as J).name).to.equal(`viewer@${REALM}`)
      await denied(cp, 'getprinc', { name: 'alice' })
      await denied(cp, 'listprincs', {})
    })

    it('the admin runs every operation, each change read back', async () => {
      const add = (await admin.call('addprinc', { name: 'm-new', randkey: true })) as J
      expect(add.kvno).to.equal(1)
      await admin.call('renprinc', { name: 'm-new', newName: 'm-renamed' })
      await expectAdminError(admin.call('getprinc', { name: 'm-new' }), ErrorCode.ADM_ERR_NOT_FOUND)
      const mod = (await admin.call('modprinc', { name: 'm-renamed', maxLife: HOUR, attributes: { allowForwardable: false } })) as J
      expect([mod.maxLife, mod.attributes.allowForwardable]).to.deep.equal([HOUR, false])
      const cpw = (await admin.call('cpw', { name: 'm-renamed', randkey: true, keepold: true })) as J
      expect(cpw.kvno).to.equal(2)
      const kt = (await admin.call('ktadd', { name: 'm-renamed' })) as J
      expect(kt.keys.map((k: J) => k.kvno)).to.deep.equal([1, 2])
      expect(Buffer.from(kt.keys[1].key).equals(Buffer.from(cpw.keys[0].key))).to.equal(true)
      expect(await admin.call('listprincs', { glob: 'm-*' })).to.deep.equal([`m-renamed@${REALM}`])
      await admin.call('delprinc', { name: 'm-renamed' })
      expect(await admin.call('listprincs', { glob: 'm-*' })).to.deep.equal([])
      await admin.call('addpol', { name: 'm-pol', maxFailures: 3 })
      await admin.call('modpol', { name: 'm-pol', minLength: 12 })
      expect(((await admin.call('getpol', { name: 'm-pol' })) as J).minLength).to.equal(12)
      expect(await admin.call('listpols', {})).to.include('m-pol')
      await admin.call('delpol', { name: 'm-pol' })
      expect(await admin.call('listpols', {})).to.not.include('m-pol')
      const e = (await admin.call('aclcheck', { actor: 'viewer', op: 'addprinc', target: 'x' })) as J
      expect(e.allowed).to.equal(false)
      expect(e.decisions[0].rule.line).to.equal(3)
      expect(e.decisions[0].rule.allowed).to.have.members(['i', 'l'])
      const { records } = (await admin.call('audit', { limit: 3 })) as J
      expect(records.map((r: J) => r.op)).to.deep.equal(['delpol', 'listpols', 'aclcheck'])
      await expectAdminError(admin.call('delpol', { name: 'basic' }), ErrorCode.ADM_ERR_IN_USE)
    })
  })

  describe('the ACL file', () => {
    it('matches wildcards by component and stops at the first matching line', async () => {
      expect(((await users.svcadmin!.call('getprinc', { name: 'svc/db' })) as J).name).to.equal(`svc/db@${REALM}`)
      expect(((await users.svcadmin!.call('ktadd', { name: 'svc/db' })) as J).keys).to.have.length(1)
      await denied(users.svcadmin!, 'getprinc', { name: 'alice' })
      // "viewer il" decides before "viewer *" is reached.
      expect(await users.viewer!.call('listprincs', { glob: 'svc/*' })).to.deep.equal([`svc/db@${REALM}`, `svc/web@${REALM}`])
      await denied(users.viewer!, 'addprinc', { name: 'v-new', randkey: true })
    })

    it('follows a back-reference: alice/root may change alice, no one else', async () => {
      const r = (await users.aliceRoot!.call('cpw', { name: 'alice', password: 'Coral-Summit-39' })) as J
      expect(r.name).to.equal(`alice@${REALM}`)
      await denied(users.aliceRoot!, 'cpw', { name: 'bob', password: 'Hazel-Dune-64' })
    })

    it('takes away upper-case letters: xD may modify but not delete', async () => {
      await users.denier!.call('modprinc', { name: 'bob', maxLife: 2 * HOUR })
      await denied(users.denier!, 'delprinc', { name: 'bob' })
      await denied(users.denier!, 'ktadd', { name: 'svc/db' })
    })

    it('imposes restrictions on add and modify: +requires_preauth -allow_svr -maxlife 1h -policy users', async () => {
      const asked = { maxLife: 5 * HOUR, attributes: { requiresPreauth: false, allowService: true } }
      await users.restricted!.call('addprinc', { name: 'r-new', password: 'Silver-Falcon-84', ...asked })
      const v = (await admin.call('getprinc', { name: 'r-new' })) as J
      expect([v.maxLife, v.attributes.requiresPreauth, v.attributes.allowService, v.policy]).to.deep.equal([HOUR, true, false, 'users'])
      await admin.call('modprinc', { name: 'r-new', maxLife: 8 * HOUR, policy: null, attributes: { allowService: true } })
      const m = (await users.restricted!.call('modprinc', { name: 'r-new', maxLife: 30 * 60_000, ...{ attributes: { allowService: true } } })) as J
      expect([m.maxLife, m.attributes.allowService, m.policy]).to.deep.equal([30 * 60_000, false, 'users'])
      const m2 = (await users.restricted!.call('modprinc', { name: 'r-new', maxLife: 9 * HOUR })) as J
      expect(m2.maxLife).to.equal(HOUR)
      // No d on the old name: no rename.
      await denied(users.restricted!, 'renprinc', { name: 'r-new', newName: 'r-renamed' })
    })

    it('reloads kadm5.acl when it changes: the next request follows the new file, no restart', async () => {
      const file = path.join(dir, ACL_FILE)
      // As an editor saves: a new file renamed over the old one.
      const save = async (text: string) => {
        await writeFile(`${file}.new`, text, { mode: 0o600 })
        await rename(`${file}.new`, file)
      }
      await denied(users.bob!, 'getprinc', { name: 'alice' })
      await save(`${ACL_TEXT}bob  i  alice\n`)
      expect(((await users.bob!.call('getprinc', { name: 'alice' })) as J).name).to.equal(`alice@${REALM}`)
      await denied(users.bob!, 'getprinc', { name: 'viewer' })
      await save(ACL_TEXT)
      await denied(users.bob!, 'getprinc', { name: 'alice' })
      // A file that does not parse is ignored: the last good ACL stays.
      await save(`${ACL_TEXT}bob  i  alice\nbob  Q  alice\n`)
      await denied(users.bob!, 'getprinc', { name: 'alice' })
      expect(((await users.viewer!.call('getprinc', { name: 'alice' })) as J).name).to.equal(`alice@${REALM}`)
      await save(ACL_TEXT)
    })
  })

  describe('password policy', () => {
    before(async () => {
      await admin.call('addprinc', { name: 'carol', password: PW.carol, policy: 'users' })
    })

    it('refuses with MIT-like messages: too short, too few classes, the principal name', async () => {
      const cases: [string, RegExp][] = [
        ['Sh0rt-1', /^Password is too short/],
        ['alllowercaseletters', /^Password does not contain enough character classes/],
        ['Carol-is-Me-123', /^Password contains the principal name/],
      ]
      for (const [pw, msg] of cases) {
        expect((await expectAdminError(admin.call('cpw', { name: 'carol', password: pw }), ErrorCode.ADM_ERR_PASSWORD_POLICY)).message).to.match(msg)
        const name = pw.startsWith('Carol') ? 'carol' : 'carol2'
        if (name === 'carol2')
          expect((await expectAdminError(admin.call('addprinc', { name, password: pw, policy: 'users' }), ErrorCode.ADM_ERR_PASSWORD_POLICY)).message).to.match(msg)
      }
      expect((await expectAdminError(admin.call('addprinc', { name: 'dave', password: 'dave-Was-Here-1' }), ErrorCode.ADM_ERR_PASSWORD_POLICY)).message).to.match(
        /^Password contains the principal name/,
      )
      await expectAdminError(admin.call('getprinc', { name: 'carol2' }), ErrorCode.ADM_ERR_NOT_FOUND)
    })

    it('keeps a history: the current password and the last two are refused, the fourth back is allowed', async () => {
      const pws = [PW.carol, 'Pine-Valley-x91', 'Oak-Meadow-x92', 'Elm-Canyon-x93']
      await admin.call('cpw', { name: 'carol', password: pws[1] })
      await admin.call('cpw', { name: 'carol', password: pws[2] })
      for (const old of pws.slice(0, 3))
        expect((await expectAdminError(admin.call('cpw', { name: 'carol', password: old }), ErrorCode.ADM_ERR_PASSWORD_POLICY)).message).to.match(/^Cannot reuse password/)
      await admin.call('cpw', { name: 'carol', password: pws[3] })
      await admin.call('cpw', { name: 'carol', password: pws[0] })
      await kc.login('carol', pws[0]!)
    })

    it('binds a principal changing its own password to minlife, not the administrator', async () => {
      const self = await AdminClient.login(kc, 'carol', PW.carol, 'kadmin/changepw')
      const e = await expectAdminError(self.call('cpw', { name: 'carol', password: 'Fern-Glacier-x94' }), ErrorCode.ADM_ERR_PASSWORD_POLICY)
      expect(e.message).to.match(/^Current password's minimum life has not expired/)
      await kc.login('carol', PW.carol)
      // Two hours on (the clock stays there for the rest of the suite: the tickets held last 10 h).
      clock.offset += 2 * HOUR
      const later = await AdminClient.login(kc, 'carol', PW.carol, 'kadmin/changepw')
      await later.call('cpw', { name: 'carol', password: 'Fern-Glacier-x94' })
      await kc.login('carol', 'Fern-Glacier-x94')
      await admin.call('cpw', { name: 'carol', password: 'Ivy-Lagoon-x95' })
    })
  })

  describe('protected principals', () => {
    it('refuses to delete, rename, disable, expire or extract krbtgt and kadmin/*', async () => {
      for (const name of [`krbtgt/${REALM}`, 'kadmin/admin', 'kadmin/changepw']) {
        await expectAdminError(admin.call('delprinc', { name }), ErrorCode.ADM_ERR_PROTECTED)
        await expectAdminError(admin.call('renprinc', { name, newName: 'taken-over' }), ErrorCode.ADM_ERR_PROTECTED)
        await expectAdminError(admin.call('modprinc', { name, attributes: { disabled: true } }), ErrorCode.ADM_ERR_PROTECTED)
        await expectAdminError(admin.call('modprinc', { name, expiresAt: clock.now() + HOUR }), ErrorCode.ADM_ERR_PROTECTED)
        await expectAdminError(admin.call('ktadd', { name }), ErrorCode.ADM_ERR_PROTECTED)
      }
      await expectAdminError(admin.call('renprinc', { name: 'bob', newName: 'kadmin/bob' }), ErrorCode.ADM_ERR_PROTECTED)
      // Their keys can still be changed by a holder of c.
      const r = (await admin.call('cpw', { name: 'kadmin/changepw', randkey: true, keepold: true })) as J
      expect(r.kvno).to.equal(2)
      await AdminClient.login(kc, 'bob', PW.bob, 'kadmin/changepw')
    })

    it('refuses to delete, disable or rename the last full administrator', async () => {
      await expectAdminError(admin.call('delprinc', { name: 'admin' }), ErrorCode.ADM_ERR_PROTECTED)
      await expectAdminError(admin.call('modprinc', { name: 'admin', attributes: { disabled: true } }), ErrorCode.ADM_ERR_PROTECTED)
      await expectAdminError(admin.call('modprinc', { name: 'admin', expiresAt: clock.now() - 1 }), ErrorCode.ADM_ERR_PROTECTED)
      await expectAdminError(admin.call('renprinc', { name: 'admin', newName: 'admin2' }), ErrorCode.ADM_ERR_PROTECTED)
      expect(((await admin.call('getprinc', { name: 'admin' })) as J).attributes.disabled).to.equal(false)
    })
  })

  describe('the audit log after real traffic', () => {
    it('verifies through the audit op and catches an edited, a deleted and a truncated line', async () => {
      const v = (await admin.call('audit', { limit: 1, verify: true })) as J
      expect(v.verification.ok, v.verification.problem).to.equal(true)
      expect(v.verification.records).to.be.greaterThan(100)
      const key = auditKey(await readStash(path.join(dir, REALM_FILES.stash)))
      const anchor = await readAnchor(kdc.db)
      const lines = (await readFile(path.join(dir, AUDIT_FILE), 'utf8')).split('\n').filter((l) => l.length > 0)
      expect(lines.length).to.be.at.least(anchor!.seq)
      const upTo = lines.slice(0, anchor!.seq)
      const check = async (name: string, ls: string[]) => {
        const f = path.join(tmp, name)
        await writeFile(f, ls.map((l) => `${l}\n`).join(''))
        return verifyAuditLog(f, anchor, key)
      }
      expect((await check('intact.log', upTo)).ok).to.equal(true)
      const i = 40
      const denial = upTo.findIndex((l, n) => n > i && l.includes('"outcome":"denied"'))
      const edited = [...upTo]
      edited[denial] = edited[denial]!.replace('"outcome":"denied"', '"outcome":"ok"')
      expect(await check('edited.log', edited)).to.include({ ok: false, firstBadLine: denial + 1 })
      const deleted = upTo.filter((_, n) => n !== i)
      expect(await check('deleted.log', deleted)).to.include({ ok: false, firstBadLine: i + 1 })
      const truncated = upTo.slice(0, -1)
      const t = await check('truncated.log', truncated)
      expect(t.ok).to.equal(false)
      expect(t.problem).to.match(/cut off/)
    })
  })

  describe('dump -> load', () => {
    it('round-trips principals with every key version, policies, the ACL and passwords', async () => {
      const names = (await admin.call('listprincs', {})) as string[]
      const views = await Promise.all(names.map((name) => admin.call('getprinc', { name })))
      const pols = (await admin.call('listpols', {})) as string[]
      const policies = await Promise.all(pols.map((name) => admin.call('getpol', { name })))
      const keys = (await admin.call('ktadd', { name: 'svc/web' })) as J
      expect(keys.keys).to.have.length(5)
      const aclText = await readFile(path.join(dir, ACL_FILE), 'utf8')
      kc.close()
      await kdc.close()

      // kadmin --local dump while the daemon is stopped.
      const masterKey = await readStash(path.join(dir, REALM_FILES.stash))
      const db = await PrincipalDb.open({ location: path.join(dir, REALM_FILES.db), masterKey })
      const audit = await AuditLog.open({ file: path.join(dir, AUDIT_FILE), db, key: auditKey(masterKey) })
      const aclFile = AclFile.open(path.join(dir, ACL_FILE), { realm: REALM, watch: false })
      const ctx = new AdminContext({ db, realm: REALM, acl: aclFile, audit, maxLife: 10 * HOUR, maxRenewableLife: 7 * 24 * HOUR })
      const local: Actor = { kind: 'local', user: 'root' }
      const dumpFile = path.join(tmp, 'realm.dump')
      const dumped = await dumpDatabase(ctx, local, dumpFile)
      aclFile.close()
      await audit.close()
      await db.close()

      const dir2 = path.join(tmp, 'restored')
      const loaded = await loadDump({ file: dumpFile, dir: dir2, masterKey, actor: local })
      expect(loaded).to.deep.include({ realm: REALM, entries: dumped.entries, sha256: dumped.sha256 })
      await copyFile(path.join(dir, REALM_FILES.stash), path.join(dir2, REALM_FILES.stash))
      await copyFile(path.join(dir, REALM_FILES.listen), path.join(dir2, REALM_FILES.listen))
      masterKey.fill(0)

      kdc = await start(dir2)
      kc = client(kdc)
      admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
      expect(await admin.call('listprincs', {})).to.deep.equal(names)
      expect(await Promise.all(names.map((name) => admin.call('getprinc', { name })))).to.deep.equal(views)
      expect(await admin.call('listpols', {})).to.deep.equal(pols)
      expect(await Promise.all(pols.map((name) => admin.call('getpol', { name })))).to.deep.equal(policies)
      expect(await readFile(path.join(dir2, ACL_FILE), 'utf8')).to.equal(aclText)
      const keys2 = (await admin.call('ktadd', { name: 'svc/web' })) as J
      expect(keys2).to.deep.equal(keys)
      await kc.login('alice', 'Coral-Summit-39')
      await kc.login('carol', 'Ivy-Lagoon-x95')
      await AdminClient.loginWithKey(kc, 'svc/web', { key: keys.keys.at(-1).key })
      // The loaded realm's audit log starts anew with the load, and verifies.
      const { records, verification } = (await admin.call('audit', { verify: true, limit: 1000 })) as J
      expect(verification.ok, verification.problem).to.equal(true)
      expect(records[0]).to.deep.include({ seq: 1, op: 'load', actor: 'local:root' })
      expect(records[0].details.sha256).to.equal(dumped.sha256)
    })
  })
})
