/**
 * Attack catalog for the administration (issue 11) and key rotation ops (issue 12): a hostile
 * user and a hostile holder of files, from outside, against the real daemon (startKdc of
 * src/admin/start.ts on an on-disk realm, 127.0.0.1 port 0), through AdminClient, the
 * kadmin / kauth CLIs and the realm directory's files. Defences that hold are ordinary tests;
 * attacks that succeed are written asserting the correct behaviour and marked `it.skip('BUG: …')`.
 */
import { createHash } from 'node:crypto'
import { copyFile, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { AUDIT_FILE, auditKey, readAnchor, verifyAuditLog } from '../../src/admin/audit.js'
import { ACL_FILE } from '../../src/admin/dump.js'
import { startKdc } from '../../src/admin/start.js'
import { Exit } from '../../src/cli/common.js'
import { main as kadminMain } from '../../src/cli/kadmin.js'
import { AdminClient, AdminError } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { readStash } from '../../src/db/master-key.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { readKeytab } from '../../src/krb/keytab.js'
import { runKauth } from '../helpers/cli-kdc.js'
import { ADMIN_PASSWORD, FAST_CONFIG, HOUR, MIN, REALM, TestClock } from '../helpers/kdc-helpers.js'
import { expectAdminError, expectKrbError } from '../helpers/refusals.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

// biome-ignore lint/suspicious/noExplicitAny: results are free-form wire values
type J = any

const PORTS_0 = { as: 0, tgs: 0, time: 0, admin: 0 }
const CONFIG = { ...FAST_CONFIG, ports: PORTS_0 }

const ACL_TEXT = `# attack-11
admin@${REALM}  *e
helpdesk    a      *
eve         il
svcops      mc     svc/*
`

const PW = {
  helpdesk: 'Amber-Cloud-18',
  eve: 'Grape-Moon-55',
  svcops: 'Cedar-River-90',
  alice: 'Tulip-Gravel-41',
  alice2: 'Otter-Lamp-77',
  lou: 'Maple-Stone-12',
  backdoor: 'Quartz-Field-33',
  weak: 'Ab1',
}

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** kadmin's main() with captured output and a stdin that is not a terminal (as test/cli/kadmin.test.ts). */
async function runKadmin(argv: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  const out = new PassThrough()
  const err = new PassThrough()
  const chunks = { o: [] as Buffer[], e: [] as Buffer[] }
  out.on('data', (c: Buffer) => chunks.o.push(c))
  err.on('data', (c: Buffer) => chunks.e.push(c))
  const input = new PassThrough()
  const stdin = Object.assign(input, { isTTY: false, setRawMode: () => input }) as unknown as NodeJS.ReadStream
  const code = await kadminMain(argv, { env, stdout: out, stderr: err, stdin })
  await new Promise((r) => setImmediate(r))
  return { code, stdout: Buffer.concat(chunks.o).toString('utf8'), stderr: Buffer.concat(chunks.e).toString('utf8') }
}

describe('attack 11: administration and key rotation from outside (security)', function () {
  this.timeout(60_000)
  useProcessGuards()
  const clock = new TestClock()
  let tmp: string
  let dir: string
  let kdc: RunningKdc
  let kc: KdcClient
  let admin: AdminClient
  let env: NodeJS.ProcessEnv
  const secrets: string[] = []
  const files: Record<string, string> = {}

  const start = (d: string) => startKdc({ dir: d, config: CONFIG, now: clock.now, log: false })
  const client = (k: RunningKdc) => new KdcClient(k.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000, now: clock.now })
  const secretFile = async (name: string, value: string) => {
    const f = path.join(tmp, `${name}.pw`)
    await writeFile(f, `${value}\n`, { mode: 0o600 })
    files[name] = f
    return f
  }

  before(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'tessera-attack11-'))
    dir = path.join(tmp, 'realm')
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig(CONFIG) })
    await writeFile(path.join(dir, ACL_FILE), ACL_TEXT, { mode: 0o600 })
    kdc = await start(dir)
    kc = client(kdc)
    admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    for (const n of ['helpdesk', 'eve', 'svcops', 'alice'] as const) await admin.call('addprinc', { name: n, password: PW[n] })
    secrets.push(...Object.values(PW), ADMIN_PASSWORD)
    env = { TESSERA_REALM_FILE: path.join(dir, REALM_FILES.realmFile), TESSERA_CCACHE: path.join(tmp, 'ccache'), HOME: tmp, USER: 'nobody' }
    await secretFile('admin', ADMIN_PASSWORD)
    for (const [k, v] of Object.entries(PW)) await secretFile(k, v)
  })
  after(async () => {
    kc?.close()
    await kdc?.close()
    await rm(tmp, { recursive: true, force: true })
  })

  describe('the kadmin tickets', () => {
    it('fixed: a kadmin/admin ticket lives at most 3 h and a kadmin/changepw ticket at most 5 min (issue 11, MIT)', async () => {
      const a = await AdminClient.login(kc, 'alice', PW.alice)
      const c = await AdminClient.login(kc, 'alice', PW.alice, 'kadmin/changepw')
      expect(a.creds.endtime - a.creds.authtime, 'kadmin/admin ticket life').to.be.at.most(3 * HOUR)
      expect(c.creds.endtime - c.creds.authtime, 'kadmin/changepw ticket life').to.be.at.most(5 * MIN)
    })

    it('fixed: an expired principal can no longer administer with a kadmin ticket it obtained before', async () => {
      await admin.call('addprinc', { name: 'exp', password: PW.eve })
      await admin.call('modprinc', { name: 'exp', attributes: {} })
      const exp = await AdminClient.login(kc, 'exp', PW.eve)
      await exp.call('getprinc', { name: 'exp' })
      await admin.call('modprinc', { name: 'exp', expiresAt: clock.now() - 1000 })
      // The AS refuses it now (KDC_ERR_NAME_EXP) ...
      await expectKrbError(AdminClient.login(kc, 'exp', PW.eve))
      // ... and the admin listener, which refuses a disabled client, must refuse an expired one too.
      const e = await expectKrbError(exp.call('cpw', { name: 'exp', password: 'Birch-Harbor-62' }))
      expect(e.code).to.be.oneOf([ErrorCode.KDC_ERR_CLIENT_REVOKED, ErrorCode.KDC_ERR_NAME_EXP])
    })

    it('refuses a kadmin/changepw ticket to a locked-out principal even with the right password (no lockout bypass through kauth passwd)', async () => {
      await admin.call('addpol', { name: 'lock2', maxFailures: 2, failureCountIntervalMs: HOUR, lockoutDurationMs: HOUR })
      await admin.call('addprinc', { name: 'lou', password: PW.lou, policy: 'lock2' })
      for (let i = 0; i < 2; i++) await expectKrbError(AdminClient.login(kc, 'lou', 'Wrong-Guess-00', 'kadmin/changepw'))
      const g = (await admin.call('getprinc', { name: 'lou' })) as J
      expect(g.lockout.locked, 'wrong old passwords through kadmin/changepw count towards the lockout').to.equal(true)
      await expectKrbError(AdminClient.login(kc, 'lou', PW.lou, 'kadmin/changepw'))
      const r = await runKauth(['passwd', 'lou', '--password-file', files.lou!, '--new-password-file', files.alice2!], env)
      expect(r.code, r.stderr).to.not.equal(Exit.OK)
      expect(r.stderr).to.not.contain(PW.lou)
    })
  })

  describe('protected principals', () => {
    it('fixed: a holder of `a` cannot plant an undeletable kadmin/* principal (creation refused, or the admin can remove it)', async () => {
      const hd = await AdminClient.login(kc, 'helpdesk', PW.helpdesk)
      let created = false
      try {
        await hd.call('addprinc', { name: 'kadmin/backdoor', password: PW.backdoor })
        created = true
      } catch (err) {
        expect(err).to.be.instanceOf(AdminError)
        expect((err as AdminError).code).to.equal(ErrorCode.ADM_ERR_PROTECTED)
      }
      if (!created) return
      // Once made, nobody can delete, disable, rename or expire it: the full administrator must be able to remove it.
      await admin.call('delprinc', { name: 'kadmin/backdoor' })
    })

    it('keeps rotate and purgekeys of kadmin/admin from handing out its key or leaving it without one', async () => {
      const r = (await admin.call('rotate', { name: 'kadmin/admin', emergency: true })) as J
      expect(r.keys, 'the key of kadmin/admin never leaves the KDC').to.deep.equal([])
      // The old admin ticket is dead (its key retired at once), but a fresh login works: nobody is locked out.
      await expectKrbError(admin.call('getprinc', { name: 'admin' }))
      admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
      const p = (await admin.call('purgekeys', { name: 'kadmin/admin', allOld: true })) as J
      expect(p.kept).to.deep.equal([r.kvno])
      await expectAdminError(admin.call('purgekeys', { name: 'kadmin/admin', keepkvno: r.kvno + 1 }), ErrorCode.ADM_ERR_BAD_REQUEST)
      await AdminClient.login(kc, 'eve', PW.eve)
    })

    it('fixed: the last full administrator cannot be given an expiry that disables it a moment later', async () => {
      try {
        await expectAdminError(admin.call('modprinc', { name: 'admin', expiresAt: clock.now() + 2000 }), ErrorCode.ADM_ERR_PROTECTED)
      } finally {
        await admin.call('modprinc', { name: 'admin', expiresAt: null }).catch(() => {})
      }
    })
  })

  describe('self-service and narrow grants', () => {
    it('gives a principal with no ACL line nothing beyond its own record, password and policy', async () => {
      const al = await AdminClient.login(kc, 'alice', PW.alice)
      const before = JSON.stringify(await admin.call('getprinc', { name: 'alice' }))
      await expectAdminError(al.call('modprinc', { name: 'alice', attributes: { allowService: true } }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('modprinc', { name: 'alice', maxLife: 100 * HOUR }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('modprinc', { name: 'alice', policy: null }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('modprinc', { name: 'alice', unlock: true }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('renprinc', { name: 'alice', newName: 'alice/admin' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('ktadd', { name: 'alice' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('rotate', { name: 'alice' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('purgekeys', { name: 'alice', allOld: true }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('aclcheck', { actor: 'admin', op: 'ktadd', target: 'svc/x' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(al.call('getpol', { name: 'lock2' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      // A field the KDC keeps, on its own record: 113 whoever asks.
      await expectAdminError(al.call('modprinc', { name: 'alice', failureCount: 0 }), ErrorCode.ADM_ERR_PROTECTED)
      await expectAdminError(al.call('cpw', { name: 'alice', password: PW.alice2, keys: [] }), ErrorCode.ADM_ERR_PROTECTED)
      expect(JSON.stringify(await admin.call('getprinc', { name: 'alice' }))).to.equal(before)
    })

    it('gives look-alike names made by a holder of `a` none of the rights of the name they imitate (case, components, `*`)', async () => {
      const hd = await AdminClient.login(kc, 'helpdesk', PW.helpdesk)
      for (const name of ['Admin', 'ADMIN', 'admin/admin', '*', '*/admin']) {
        await hd.call('addprinc', { name, password: PW.backdoor })
        const who = await AdminClient.login(kc, name, PW.backdoor)
        await expectAdminError(who.call('listprincs', {}), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
        await expectAdminError(who.call('getprinc', { name: 'admin' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
        const e = (await admin.call('aclcheck', { actor: name, op: 'addprinc', target: 'x' })) as J
        expect(e.allowed, `${name} may add`).to.equal(false)
      }
      for (const bad of ['admin ', ' admin', 'adm\u200bin', 'admin@OTHER.REALM', 'a\u0301dmin'])
        await expectAdminError(hd.call('addprinc', { name: bad, password: PW.backdoor }), ErrorCode.ADM_ERR_BAD_REQUEST)
    })

    it('keeps `mc svc/*` inside svc/*: no rename out, no purge --force outside, no schedule on a user', async () => {
      await admin.call('addprinc', { name: 'svc/app', randkey: true })
      const ops = await AdminClient.login(kc, 'svcops', PW.svcops)
      await expectAdminError(ops.call('renprinc', { name: 'svc/app', newName: 'svc/app2' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(ops.call('modprinc', { name: 'alice', rotateEvery: HOUR }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(ops.call('rotate', { name: `krbtgt/${REALM}`, emergency: true }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(ops.call('ktadd', { name: 'svc/app' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      // A back-reference-looking or wildcard-looking name is just a name: `*` is a legal component.
      await expectAdminError(ops.call('rotate', { name: 'svc' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      await expectAdminError(ops.call('getprinc', { name: '*' }), ErrorCode.TSR_ERR_NOT_AUTHORIZED)
      // rotate hands back only the new key (CVE-2014-5351), purge keeps the current one.
      const r = (await ops.call('rotate', { name: 'svc/app' })) as J
      expect(r.keys.map((k: J) => k.kvno)).to.deep.equal([2])
      await expectAdminError(ops.call('purgekeys', { name: 'svc/app', allOld: true }), ErrorCode.ADM_ERR_IN_USE)
      const p = (await ops.call('purgekeys', { name: 'svc/app', allOld: true, force: true })) as J
      expect(p.kept).to.deep.equal([2])
    })

    it('fixed: a rotation schedule cannot make a principal pile up key versions without bound (rotateEvery 1 ms)', async () => {
      await admin.call('addprinc', { name: 'svc/spin', randkey: true })
      const ops = await AdminClient.login(kc, 'svcops', PW.svcops)
      let scheduled = false
      try {
        await ops.call('modprinc', { name: 'svc/spin', rotateEvery: 1 })
        scheduled = true
      } catch (err) {
        expect(err).to.be.instanceOf(AdminError)
        expect((err as AdminError).code).to.equal(ErrorCode.ADM_ERR_BAD_REQUEST)
      }
      if (!scheduled) return
      try {
        await new Promise((r) => setTimeout(r, 500))
        const g = (await admin.call('getprinc', { name: 'svc/spin' })) as J
        expect(g.keys.length, 'key versions kept after 0.5 s of a 1 ms schedule').to.be.at.most(3)
      } finally {
        await admin.call('modprinc', { name: 'svc/spin', rotateEvery: null }).catch(() => {})
      }
    })
  })

  describe('the audit log', () => {
    it('never writes a password or a key into audit.log, whatever the traffic', async () => {
      const made = (await admin.call('addprinc', { name: 'svc/keyed', randkey: true })) as J
      const cpw = (await admin.call('cpw', { name: 'svc/keyed', randkey: true, keepold: true })) as J
      const kt = (await admin.call('ktadd', { name: 'svc/keyed' })) as J
      const keys: Uint8Array[] = [made, cpw, kt].flatMap((r: J) => r.keys.map((k: J) => k.key as Uint8Array))
      await admin.call('addprinc', { name: 'carol', password: PW.alice2 })
      await expectAdminError(admin.call('addprinc', { name: 'dave', password: PW.weak }), ErrorCode.ADM_ERR_PASSWORD_POLICY)
      await expectAdminError(admin.call('cpw', { name: 'carol', password: PW.alice2 }), ErrorCode.ADM_ERR_PASSWORD_POLICY)
      await expectAdminError(admin.call('cpw', { name: 'carol', password: 42 as unknown as string }), ErrorCode.ADM_ERR_BAD_REQUEST)
      await expectAdminError(admin.call('addprinc', { name: 'erin', password: PW.backdoor, randkey: true }), ErrorCode.ADM_ERR_BAD_REQUEST)
      await expectAdminError(admin.call('nosuchop', { name: 'x', password: PW.backdoor }), ErrorCode.ADM_ERR_BAD_REQUEST)
      ok(await runKauth(['passwd', 'carol', '--password-file', files.alice2!, '--new-password-file', files.backdoor!], env))
      await runKauth(['passwd', 'carol', '--password-file', files.helpdesk!, '--new-password-file', files.svcops!], env)
      await runKauth(['passwd', 'carol', '--password-file', files.backdoor!, '--new-password-file', files.weak!], env)
      const log = await readFile(path.join(dir, AUDIT_FILE), 'utf8')
      for (const s of [...secrets, PW.backdoor]) expect(log, 'a password in audit.log').to.not.contain(JSON.stringify(s).slice(1, -1))
      for (const k of keys) {
        const b = Buffer.from(k)
        for (const enc of [b.toString('hex'), b.toString('base64'), b.toString('base64url')]) expect(log).to.not.contain(enc.slice(0, 16))
      }
      expect((await stat(path.join(dir, AUDIT_FILE))).mode & 0o777).to.equal(0o600)
    })

    it('catches lines swapped, an old line replayed at the end, and a forged line, when verifying a copy', async () => {
      const key = auditKey(await readStash(path.join(dir, REALM_FILES.stash)))
      const anchor = await readAnchor(kdc.db)
      const lines = (await readFile(path.join(dir, AUDIT_FILE), 'utf8')).split('\n').filter((l) => l.length > 0).slice(0, anchor!.seq)
      const check = async (name: string, ls: string[]) => {
        const f = path.join(tmp, name)
        await writeFile(f, ls.map((l) => `${l}\n`).join(''))
        return verifyAuditLog(f, anchor, key)
      }
      expect((await check('ok.log', lines)).ok).to.equal(true)
      const swapped = [...lines]
      ;[swapped[5], swapped[6]] = [swapped[6]!, swapped[5]!]
      expect(await check('swapped.log', swapped)).to.include({ ok: false, firstBadLine: 6 })
      const replayed = [...lines.slice(0, -1), lines[3]!]
      expect((await check('replayed.log', replayed)).ok).to.equal(false)
      // A forged tail: the right seq and prev, a made-up hash.
      const last = JSON.parse(lines[lines.length - 1]!) as J
      const forged = { ...last, seq: last.seq + 1, prev: last.h, op: 'getprinc', h: 'f'.repeat(64) }
      expect(await check('forged.log', [...lines, JSON.stringify(forged)])).to.include({ ok: false, firstBadLine: lines.length + 1 })
      // Re-ordered keys of a genuine line (same values): the canonical form is checked too.
      const r = JSON.parse(lines[2]!) as J
      const { h, seq, ...rest } = r
      expect(await check('respelt.log', [...lines.slice(0, 2), JSON.stringify({ seq, h, ...rest }), ...lines.slice(3)])).to.include({ ok: false, firstBadLine: 3 })
    })

    it('flags an audit.log replaced under the running daemon (the records it then writes are lost with the old inode)', async () => {
      const file = path.join(dir, AUDIT_FILE)
      const copy = path.join(tmp, 'audit.copy')
      await copyFile(file, copy)
      await rename(copy, file)
      await admin.call('getprinc', { name: 'alice' })
      await admin.call('addprinc', { name: 'after-swap', randkey: true })
      const v = (await admin.call('audit', { limit: 1, verify: true })) as J
      expect(v.verification.ok, 'the replaced file is behind the anchor').to.equal(false)
      expect(v.verification.problem).to.match(/cut off|anchor/)
    })
  })

  describe('keytabs written by ktadd (CLI)', () => {
    it('never writes through a symlink planted at the keytab path, and writes a fresh keytab 0600 with the current key only', async () => {
      await admin.call('addprinc', { name: 'svc/kt', randkey: true })
      const asAdmin = ['-p', 'admin', '--password-file', files.admin!]
      const kt = path.join(tmp, 'svc.keytab')
      for (const mode of [0o600, 0o644]) {
        const victim = path.join(tmp, `victim-${mode.toString(8)}.txt`)
        await writeFile(victim, 'do not touch\n', { mode })
        await symlink(victim, kt)
        const r = await runKadmin([...asAdmin, 'ktadd', 'svc/kt', '--keytab', kt], env)
        expect(r.code, `a symlink to a ${mode.toString(8)} file that is no keytab`).to.not.equal(Exit.OK)
        expect(await readFile(victim, 'utf8')).to.equal('do not touch\n')
        expect((await stat(victim)).mode & 0o777).to.equal(mode)
        await rm(kt)
      }
      const r2 = await runKadmin([...asAdmin, 'ktadd', 'svc/kt', '--keytab', kt], env)
      expect(r2.code, r2.stderr).to.equal(Exit.OK)
      expect((await stat(kt)).mode & 0o777).to.equal(0o600)
      expect((await readKeytab(kt)).entries.map((e) => e.kvno)).to.deep.equal([1])
      expect(r2.stdout + r2.stderr).to.not.match(/"key"/)
    })
  })

  describe('a second realm: races on the last administrator, dump and load', () => {
    let dir2: string
    let kdc2: RunningKdc | undefined
    let kc2: KdcClient | undefined

    before(async () => {
      dir2 = path.join(tmp, 'realm2')
      await initRealmDir({ dir: dir2, realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig(CONFIG) })
      await writeFile(path.join(dir2, ACL_FILE), `admin  *e\nadmin2  *e\n`, { mode: 0o600 })
      kdc2 = await start(dir2)
      kc2 = client(kdc2)
      await (await AdminClient.login(kc2, 'admin', ADMIN_PASSWORD)).call('addprinc', { name: 'user', password: PW.alice })
    })
    after(async () => {
      kc2?.close()
      await kdc2?.close()
    })

    it('fixed: a user with no rights cannot write an audit record that --verify can never read again (an over-long line)', async () => {
      const ev = await AdminClient.login(kc2!, 'user', PW.alice)
      // 12000 control characters: 12 KB on the wire, 72 KB of JSON escapes in the audit line.
      await expectAdminError(ev.call('getprinc', { name: '\u0001'.repeat(12_000) }), ErrorCode.ADM_ERR_BAD_REQUEST)
      const v = (await (await AdminClient.login(kc2!, 'admin', ADMIN_PASSWORD)).call('audit', { limit: 1, verify: true })) as J
      expect(v.verification.ok, v.verification.problem).to.equal(true)
    })

    it('fixed: two full administrators deleting each other at the same moment leave one of them', async () => {
      // Each on its own connection, so that the two requests really run side by side.
      const kcA = client(kdc2!)
      const kcB = client(kdc2!)
      try {
        const a = await AdminClient.login(kcA, 'admin', ADMIN_PASSWORD)
        await a.call('addprinc', { name: 'admin2', password: PW.alice2 })
        const b = await AdminClient.login(kcB, 'admin2', PW.alice2)
        await Promise.all([a.call('getprinc', { name: 'admin' }), b.call('getprinc', { name: 'admin2' })])
        const out = await Promise.allSettled([a.call('delprinc', { name: 'admin2' }), b.call('delprinc', { name: 'admin' })])
        const names = (await kdc2!.db.list({ realm: REALM })).map((p) => p.components.join('/'))
        expect(out.filter((o) => o.status === 'fulfilled').length, `both deletes succeeded; principals left: ${names.join(', ')}`).to.be.at.most(1)
        expect(names.filter((n) => n === 'admin' || n === 'admin2')).to.have.length.at.least(1)
      } finally {
        kcA.close()
        kcB.close()
      }
    })

    it('dumps 0600 with keys sealed, never over an existing file, and refuses to load into a directory that holds a realm', async () => {
      await kdc2!.close()
      kdc2 = undefined
      const dump = path.join(tmp, 'realm2.dump')
      const d = await runKadmin(['--local', '--dir', dir2, 'dump', dump], env)
      expect(d.code, d.stderr).to.equal(Exit.OK)
      expect((await stat(dump)).mode & 0o777).to.equal(0o600)
      const text = await readFile(dump, 'utf8')
      for (const s of [ADMIN_PASSWORD, PW.alice, PW.alice2]) expect(text, 'keys stay sealed: no password in the dump').to.not.contain(s)
      const again = await runKadmin(['--local', '--dir', dir2, 'dump', dump], env)
      expect(again.code, 'dump never overwrites a file').to.not.equal(Exit.OK)
      expect(await readFile(dump, 'utf8')).to.equal(text)
      const before = await readFile(path.join(dir2, ACL_FILE), 'utf8')
      const l = await runKadmin(['load', dump, '--dir', dir2, '--stash', path.join(dir2, REALM_FILES.stash)], env)
      expect(l.code).to.not.equal(Exit.OK)
      expect(l.stderr).to.match(/already holds a realm/)
      expect(await readFile(path.join(dir2, ACL_FILE), 'utf8')).to.equal(before)
      // Only the db directory missing (a half-cleaned realm): still refused, the stash and ACL left alone.
      const half = path.join(tmp, 'half')
      await initRealmDir({ dir: half, realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig(CONFIG) })
      await rm(path.join(half, 'db'), { recursive: true })
      const stash = await readFile(path.join(half, REALM_FILES.stash))
      const l2 = await runKadmin(['load', dump, '--dir', half, '--stash', path.join(dir2, REALM_FILES.stash)], env)
      expect(l2.code).to.not.equal(Exit.OK)
      expect(await readFile(path.join(half, REALM_FILES.stash))).to.deep.equal(stash)
    })

    it('fixed: a dump edited and re-summed (unkeyed SHA-256) does not load: the ACL cannot be rewritten through a backup', async () => {
      const text = await readFile(path.join(tmp, 'realm2.dump'), 'utf8')
      const lines = text.split('\n').filter((l) => l.length > 0)
      const header = JSON.parse(lines[0]!) as J
      header.acl = `mallory  *e\n${header.acl}`
      const body = [JSON.stringify(header), ...lines.slice(1, -1)].map((l) => `${l}\n`).join('')
      const trailer = JSON.parse(lines[lines.length - 1]!) as J
      trailer.sha256 = createHash('sha256').update(body).digest('hex')
      const forged = path.join(tmp, 'forged.dump')
      await writeFile(forged, `${body}${JSON.stringify(trailer)}\n`, { mode: 0o600 })
      const newDir = path.join(tmp, 'restored')
      const l = await runKadmin(['load', forged, '--dir', newDir, '--stash', path.join(dir2, REALM_FILES.stash)], env)
      const acl = await readFile(path.join(newDir, ACL_FILE), 'utf8').catch(() => '')
      expect(acl, `load exit ${l.code}: the edited ACL came back`).to.not.contain('mallory')
      expect(l.code).to.not.equal(Exit.OK)
    })
  })
})

function ok(r: { code: number; stderr: string }): void {
  expect(r.code, r.stderr).to.equal(Exit.OK)
}
