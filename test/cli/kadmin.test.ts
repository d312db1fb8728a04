/**
 * `kadmin` and `kauth passwd` as an administrator and a user run them: main() of the real CLIs
 * against a realm directory made by initRealmDir, served by a real KDC on 127.0.0.1 port 0
 * (remote), then with the KDC stopped (`--local`), with and without --json.
 */
import { readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { expect } from 'chai'
import { startKdc } from '../../src/admin/start.js'
import { Exit } from '../../src/cli/common.js'
import { main, splitGlobalOptions } from '../../src/cli/kadmin.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { readKeytab } from '../../src/krb/keytab.js'
import { loadRealmFile } from '../../src/krb/realm-file.js'
import { pipedStdin, runKauth, tempDir } from '../helpers/cli-kdc.js'
import { ADMIN_PASSWORD, FAST_CONFIG } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const REALM = 'KADMIN.TEST'
const PORTS_0 = { as: 0, tgs: 0, time: 0, admin: 0 }
const CONFIG = { ...FAST_CONFIG, ports: PORTS_0 }

interface Run {
  code: number
  stdout: string
  stderr: string
}

/** A stderr that claims to be a terminal (for the progress bar). */
function ttyStream(): PassThrough & { isTTY: boolean; columns: number } {
  return Object.assign(new PassThrough(), { isTTY: true, columns: 120 })
}

/**
 * Run kadmin's main() with captured output. stdin is not a terminal (kadmin must never wait
 * for a prompt), unless `answers` are given: then it is a terminal that types the next answer
 * each time a prompt ending in ": " appears on stderr.
 */
async function runKadmin(argv: string[], env: NodeJS.ProcessEnv, o: { stderr?: PassThrough; answers?: string[] } = {}): Promise<Run> {
  const out = new PassThrough()
  const err = o.stderr ?? new PassThrough()
  const chunks = { o: [] as Buffer[], e: [] as Buffer[] }
  out.on('data', (c: Buffer) => chunks.o.push(c))
  err.on('data', (c: Buffer) => chunks.e.push(c))
  const tty = o.answers !== undefined
  const input = new PassThrough()
  const stdin = Object.assign(input, { isTTY: tty, setRawMode: () => input }) as unknown as NodeJS.ReadStream
  if (tty) {
    const answers = [...o.answers!]
    err.on('data', (c: Buffer) => {
      if (c.toString().endsWith(': ') && answers.length > 0) setImmediate(() => input.write(`${answers.shift()}\r`))
    })
  }
  const code = await main(argv, { env, stdout: out, stderr: err, stdin })
  await new Promise((r) => setImmediate(r))
  return { code, stdout: Buffer.concat(chunks.o).toString('utf8'), stderr: Buffer.concat(chunks.e).toString('utf8') }
}

function ok(r: Run): Run {
  expect(r.code, `exit ${r.code}: ${r.stderr}`).to.equal(Exit.OK)
  return r
}

function jsonOf<T = Record<string, unknown>>(r: Run): T {
  ok(r)
  return JSON.parse(r.stdout) as T
}

describe('kadmin (CLI)', function () {
  this.timeout(60_000)
  useProcessGuards()
  let tmp: string
  let dir: string
  let kdc: RunningKdc | undefined
  let env: NodeJS.ProcessEnv
  const pw = {} as Record<string, string>
  /** The administrator's login, before the command. */
  let asAdmin: string[]

  const secret = async (name: string, value: string) => {
    const f = path.join(tmp, `${name}.pw`)
    await writeFile(f, `${value}\n`, { mode: 0o600 })
    pw[name] = f
    return f
  }
  const kadmin = (...argv: string[]) => runKadmin([...asAdmin, ...argv], env)
  const local = (...argv: string[]) => runKadmin(['--local', '--dir', dir, ...argv], env)

  before(async () => {
    tmp = await tempDir('tessera-kadmin-')
    dir = path.join(tmp, 'realm')
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig(CONFIG) })
    await writeFile(path.join(tmp, 'kdc.json'), JSON.stringify(CONFIG))
    kdc = await startKdc({ dir, config: CONFIG })
    env = { TESSERA_REALM_FILE: path.join(dir, REALM_FILES.realmFile), TESSERA_CCACHE: path.join(tmp, 'ccache'), HOME: tmp, USER: 'nobody' }
    asAdmin = ['-p', 'admin', '--password-file', await secret('admin', ADMIN_PASSWORD)]
    await secret('bob', 'tulip-Gravel-41')
    await secret('bob2', 'otter-Lamp-77')
    await secret('short', 'Ab1')
    await secret('eve', 'quartz-Field-33')
  })
  after(async () => {
    await kdc?.close()
    await rm(tmp, { recursive: true, force: true })
  })

  describe('remote, over the admin listener', () => {
    it('adds, shows, lists, modifies, re-keys and deletes a principal; the user logs in with each password', async () => {
      expect(jsonOf(await kadmin('addprinc', 'bob', '--password-file', pw.bob!, '--json'))).to.deep.equal({ name: `bob@${REALM}`, kvno: 1 })
      const g = await kadmin('getprinc', 'bob', '--json')
      const view = jsonOf<{ name: string; kvno: number; keys: { kvno: number; kind: string; createdAt: number }[]; attributes: Record<string, boolean> }>(g)
      expect(view.name).to.equal(`bob@${REALM}`)
      expect(view.kvno).to.equal(1)
      expect(view.keys).to.have.length(1)
      expect(view.keys[0]).to.include({ kvno: 1, kind: 'password' })
      expect(view.keys[0]!.createdAt).to.be.a('number')
      expect(g.stdout, 'no key bytes').to.not.match(/"key"|"salt"/)
      const human = ok(await kadmin('getprinc', 'bob')).stdout
      expect(human).to.match(/^Principal: +bob@KADMIN\.TEST$/m)
      expect(human).to.match(/^Current key version \(kvno\): +1$/m)
      expect(human).to.match(/^Attributes: +REQUIRES_PRE_AUTH/m)
      expect(jsonOf<{ principals: string[] }>(await kadmin('listprincs', 'b*', '--json')).principals).to.deep.equal([`bob@${REALM}`])
      expect(ok(await kadmin('listprincs')).stdout.split('\n')).to.include(`krbtgt/${REALM}@${REALM}`)
      ok(await runKauth(['login', 'bob', '--password-file', pw.bob!], env))

      const m = jsonOf<{ maxLife: number; attributes: Record<string, boolean> }>(
        await kadmin('modprinc', 'bob', '--maxlife', '2h', '--no-allow-forwardable', '--json'),
      )
      expect(m.maxLife).to.equal(2 * 3600_000)
      expect(m.attributes.allowForwardable).to.equal(false)
      expect(jsonOf(await kadmin('cpw', 'bob', '--password-file', pw.bob2!, '--json'))).to.deep.equal({ name: `bob@${REALM}`, kvno: 2 })
      expect((await runKauth(['login', 'bob', '--password-file', pw.bob!], env)).code).to.equal(Exit.AUTH)
      ok(await runKauth(['login', 'bob', '--password-file', pw.bob2!], env))

      const d = await kadmin('delprinc', 'bob')
      expect(d.code, 'delprinc asks first; no terminal and no --force').to.equal(Exit.USAGE)
      expect(d.stderr).to.contain('--force')
      ok(await kadmin('getprinc', 'bob'))
      expect(ok(await kadmin('delprinc', 'bob', '--force')).stdout).to.equal(`Principal "bob@${REALM}" deleted.\n`)
      const gone = await kadmin('getprinc', 'bob')
      expect(gone.code).to.equal(Exit.FAILURE)
      expect(gone.stderr).to.contain(`principal bob@${REALM} does not exist`)
    })

    it('manages policies and says which rule a refused password breaks, creating nothing', async () => {
      const p = jsonOf<Record<string, number | string>>(
        await kadmin('addpol', 'strict', '--minlength', '12', '--minclasses', '3', '--history', '3', '--maxlife', '90d', '--lockoutduration', '1h', '--json'),
      )
      expect(p).to.include({ name: 'strict', minLength: 12, minClasses: 3, history: 3, maxPasswordLifeMs: 90 * 86_400_000, lockoutDurationMs: 3_600_000 })
      expect(jsonOf(await kadmin('modpol', 'strict', '--minlength', '14', '--json'))).to.include({ minLength: 14, minClasses: 3 })
      const human = ok(await kadmin('getpol', 'strict')).stdout
      expect(human).to.match(/^Minimum password length: +14$/m)
      expect(human).to.match(/^Maximum password life: +90d$/m)
      expect(jsonOf<{ policies: string[] }>(await kadmin('listpols', '--json')).policies).to.include('strict')

      const refused = await kadmin('addprinc', 'carol', '--policy', 'strict', '--password-file', await secret('medium', 'Tulip-41ab'))
      expect(refused.code).to.equal(Exit.FAILURE)
      expect(refused.stderr).to.contain('Password is too short')
      expect((await kadmin('getprinc', 'carol')).stderr).to.contain('does not exist')

      const bad = await kadmin('addpol', 'loose', '--minlife', 'soon')
      expect(bad.code).to.equal(Exit.USAGE)
      expect(bad.stderr).to.contain('not a duration: "soon"')
      ok(await kadmin('addprinc', 'carol', '--policy', 'strict', '--password-file', await secret('carol', 'Maple-Stone-12-River')))
      const inUse = await kadmin('delpol', 'strict')
      expect(inUse.code).to.equal(Exit.FAILURE)
      expect(inUse.stderr).to.match(/still used|in use/)
      ok(await kadmin('modprinc', 'carol', '--clear-policy'))
      expect(jsonOf<{ policy?: string }>(await kadmin('getprinc', 'carol', '--json')).policy).to.equal(undefined)
      ok(await kadmin('delpol', 'strict'))
      expect(jsonOf<{ policies: string[] }>(await kadmin('listpols', '--json')).policies).to.not.include('strict')
    })

    it('names the missing permission when the ACL refuses, and a wrong admin password is an authentication failure', async () => {
      ok(await kadmin('addprinc', 'eve', '--password-file', pw.eve!))
      const r = await runKadmin(['-p', 'eve', '--password-file', pw.eve!, 'addprinc', 'mallory', '--randkey'], env)
      expect(r.code).to.equal(Exit.FAILURE)
      expect(r.stderr).to.contain("addprinc requires the 'a' (add) permission")
      expect(r.stderr).to.contain('TSR_ERR_NOT_AUTHORIZED')
      // its own record it may read
      expect(jsonOf(await runKadmin(['-p', 'eve', '--password-file', pw.eve!, 'getprinc', 'eve', '--json'], env))).to.include({ name: `eve@${REALM}` })
      const wrong = await runKadmin(['-p', 'admin', '--password-file', pw.bob!, 'listprincs'], env)
      expect(wrong.code).to.equal(Exit.AUTH)
      const noTty = await runKadmin(['-p', 'admin', 'listprincs'], { ...env, TESSERA_CCACHE: path.join(tmp, 'no-cache') })
      expect(noTty.code).to.equal(Exit.CONFIG)
      expect(noTty.stderr).to.contain('no terminal')
    })

    it('asks for the passwords on a terminal (admin once, the new principal twice)', async () => {
      const e = { ...env, TESSERA_CCACHE: path.join(tmp, 'no-cache') }
      const r = await runKadmin(['-p', 'admin', 'addprinc', 'henry', '--json'], e, { answers: [ADMIN_PASSWORD, 'Spruce-Meadow-27', 'Spruce-Meadow-27'] })
      expect(jsonOf(r)).to.deep.equal({ name: `henry@${REALM}`, kvno: 1 })
      expect(r.stderr).to.equal(`Password for admin@${REALM}: \nEnter password for principal "henry": \nRe-enter password for principal "henry": \n`)
      const typo = await runKadmin(['-p', 'admin', 'cpw', 'henry'], e, { answers: [ADMIN_PASSWORD, 'Spruce-Meadow-28', 'Spruce-Meadow-29'] })
      expect(typo.code).to.equal(Exit.CONFIG)
      expect(typo.stderr).to.contain('the two passwords differ; nothing changed')
      ok(await runKauth(['login', 'henry'], e, pipedStdin('Spruce-Meadow-27\n')))
    })

    it('uses an initial kadmin/admin ticket from the credential cache (kauth login -S kadmin/admin)', async () => {
      const ccache = path.join(tmp, 'admin-cc')
      const e = { ...env, TESSERA_CCACHE: ccache }
      ok(await runKauth(['login', 'admin', '-S', 'kadmin/admin', '--password-file', pw.admin!], e))
      const r = await runKadmin(['listpols', '--json'], e)
      expect(jsonOf<{ policies: string[] }>(r).policies).to.be.an('array')
      // a ticket for someone else is not used: -p names who acts
      const other = await runKadmin(['-p', 'eve', 'listpols'], e)
      expect(other.code).to.equal(Exit.CONFIG)
      expect(other.stderr).to.contain('no terminal')
    })

    it('ktadd writes the current keys to a 0600 keytab without changing them; the service logs in with it', async () => {
      const svc = 'HTTP/www.kadmin.test'
      ok(await kadmin('addprinc', svc, '--randkey'))
      const kt = path.join(tmp, 'www.keytab')
      const r = jsonOf<{ name: string; keytab: string; kvnos: number[] }>(await kadmin('ktadd', svc, '--keytab', kt, '--json'))
      expect(r).to.deep.include({ name: `${svc}@${REALM}`, keytab: kt, kvnos: [1] })
      expect((await stat(kt)).mode & 0o777).to.equal(0o600)
      expect(jsonOf<{ kvno: number }>(await kadmin('getprinc', svc, '--json')).kvno, 'ktadd did not change the key').to.equal(1)
      ok(await runKauth(['login', '--keytab', kt], { ...env, TESSERA_CCACHE: path.join(tmp, 'svc-cc') }))
      expect(ok(await kadmin('ktadd', svc, '--keytab', kt, '--randkey')).stdout).to.contain(`with kvno 2 added to keytab ${kt}`)
      expect((await readKeytab(kt)).kvnos(`${svc}@${REALM}`)).to.deep.equal([1, 2])
      ok(await runKauth(['login', '--keytab', kt], { ...env, TESSERA_CCACHE: path.join(tmp, 'svc-cc') }))
    })

    it('rotates a service key into its keytab, refuses to purge the old one while its tickets may be valid, and sets a schedule', async () => {
      const svc = 'HTTP/rot.kadmin.test'
      ok(await kadmin('addprinc', svc, '--randkey'))
      const kt = path.join(tmp, 'rot.keytab')
      ok(await kadmin('ktadd', svc, '--keytab', kt))
      const r = ok(await kadmin('rotate', svc, '--keytab', kt, '--grace', '1h'))
      expect(r.stdout).to.match(new RegExp(`^${svc.replace('/', '\\/')}@${REALM}: kvno 2 current now; kvno 1 retires `))
      expect((await readKeytab(kt)).kvnos(`${svc}@${REALM}`)).to.deep.equal([1, 2])
      const v = jsonOf<{ kvno: number; keys: { kvno: number; state: string }[] }>(await kadmin('getprinc', svc, '--json'))
      expect(v.kvno).to.equal(2)
      expect(v.keys.map((k) => [k.kvno, k.state])).to.deep.equal([
        [1, 'previous'],
        [2, 'current'],
      ])
      const refused = await kadmin('purgekeys', svc)
      expect(refused.code).to.equal(Exit.FAILURE)
      expect(refused.stderr).to.match(/is still used: tickets sealed with it may be valid/)
      const forced = jsonOf<{ purged: number[]; forced: number[] }>(await kadmin('purgekeys', svc, '--force', '--json'))
      expect(forced).to.deep.include({ purged: [1], forced: [1] })
      ok(await kadmin('modprinc', svc, '--rotate-every', '30d', '--stage-ahead', '1d', '--grace', '2d'))
      const sched = jsonOf<{ rotation: { rotateEvery: number; stageAhead: number; grace: number } }>(await kadmin('getprinc', svc, '--json'))
      expect(sched.rotation).to.deep.include({ rotateEvery: 30 * 86400_000, stageAhead: 86400_000, grace: 2 * 86400_000 })
    })

    it('prints the realm JWKS (public keys only) and sets --allow-jwt on a service', async () => {
      const j = JSON.parse(ok(await kadmin('jwks', '--json')).stdout) as { keys: Record<string, string>[] }
      expect(j.keys).to.have.length(1)
      expect(Object.keys(j.keys[0]!).sort()).to.deep.equal(['alg', 'crv', 'kid', 'kty', 'use', 'x'])
      ok(await kadmin('addprinc', 'HTTP/jwt.kadmin.test', '--randkey', '--allow-jwt'))
      const v = jsonOf<{ attributes: { allowJwt: boolean } }>(await kadmin('getprinc', 'HTTP/jwt.kadmin.test', '--json'))
      expect(v.attributes.allowJwt).to.equal(true)
      ok(await kadmin('modprinc', 'HTTP/jwt.kadmin.test', '--no-allow-jwt'))
      expect(jsonOf<{ attributes: { allowJwt: boolean } }>(await kadmin('getprinc', 'HTTP/jwt.kadmin.test', '--json')).attributes.allowJwt).to.equal(false)
    })

    it('acl check prints the deciding line and why', async () => {
      const yes = ok(await kadmin('acl', 'check', 'admin', 'addprinc', 'anyone'))
      expect(yes.stdout).to.match(new RegExp(`^ALLOWED: line (\\d+) \\(admin@${REALM} +\\*e\\) grants 'a' \\(add\\) to admin@${REALM} on anyone@${REALM}\n`))
      expect(yes.stdout).to.match(new RegExp(`^  'a' granted by line \\d+: admin@${REALM} +\\*e$`, 'm'))
      const no = await kadmin('acl', 'check', 'eve', 'delprinc', 'bob', '--json')
      expect(no.code, 'a refused check exits 1').to.equal(Exit.FAILURE)
      const j = JSON.parse(no.stdout) as { allowed: boolean; op: string; reason: string; decisions: { letter: string; allowed: boolean; reason: string; rule: unknown }[] }
      expect(j).to.include({ allowed: false, op: 'delprinc' })
      expect(j.reason).to.contain('no ACL line matches eve@KADMIN.TEST')
      expect(j.decisions).to.deep.equal([{ letter: 'd', allowed: false, reason: j.decisions[0]!.reason, rule: null }])
      const self = ok(await kadmin('acl', 'check', 'eve', 'cpw', 'eve'))
      expect(self.stdout).to.contain('self-service rule: any principal may change its own password')
      expect((await kadmin('acl', 'check', 'eve', 'format_disk', 'bob')).code).to.equal(Exit.USAGE)
    })

    it('shows the audit log and verifies it', async () => {
      const a = jsonOf<{ records: { actor: string; op: string; outcome: string; seq: number }[] }>(await kadmin('audit', '--json', '--limit', '100'))
      expect(a.records.some((x) => x.op === 'addprinc' && x.actor === `admin@${REALM}` && x.outcome === 'ok')).to.equal(true)
      expect(a.records.some((x) => x.op === 'addprinc' && x.actor === `eve@${REALM}` && x.outcome === 'denied')).to.equal(true)
      expect(ok(await kadmin('audit', '--since', '1h')).stdout).to.match(/^ +SEQ +TIME +ACTOR/)
      const big = await kadmin('audit', '--limit', '500')
      expect(big.code).to.equal(Exit.USAGE)
      expect(big.stderr).to.contain('at most 100 records per request')
      const v = jsonOf<{ ok: boolean; records: number }>(await kadmin('audit', '--verify', '--json'))
      expect(v.ok).to.equal(true)
      expect(v.records).to.be.greaterThan(10)
    })

    it('rotate-identity stages, activates and retires the KDC identity keys: realm.json follows each step, logins work, the events and audit show them', async () => {
      const realmJson = path.join(dir, REALM_FILES.realmFile)
      const hex = (b: Uint8Array | undefined) => (b === undefined ? undefined : Buffer.from(b).toString('hex'))
      const before = await loadRealmFile(realmJson)
      expect(before.nextTransportKey).to.equal(undefined)
      // Stage: the next keys are published in realm.json before any use.
      const staged = jsonOf<{ transportKey: string; nextTransportKey?: string; nextSigningKey?: string; nextActivatesAt?: number }>(
        await kadmin('rotate-identity', '--json'),
      )
      expect(staged.nextTransportKey).to.be.a('string')
      expect(staged.nextSigningKey).to.be.a('string')
      const rf1 = await loadRealmFile(realmJson)
      expect(hex(rf1.transportKey)).to.equal(hex(before.transportKey))
      expect(hex(rf1.nextTransportKey)).to.be.a('string').and.not.equal(hex(before.transportKey))
      expect(hex(rf1.nextSigningKey)).to.be.a('string').and.not.equal(hex(before.signingKey))
      expect(ok(await kadmin('rotate-identity', '--status')).stdout).to.match(/^nextTransportKey +\S+$/m)
      // Activate: the staged keys are the realm's keys now; realm.json names them.
      ok(await kadmin('rotate-identity', '--activate'))
      const rf2 = await loadRealmFile(realmJson)
      expect(hex(rf2.transportKey)).to.equal(hex(rf1.nextTransportKey))
      expect(hex(rf2.signingKey)).to.equal(hex(rf1.nextSigningKey))
      expect(rf2.nextTransportKey).to.equal(undefined)
      ok(await runKauth(['login', 'admin', '--password-file', pw.admin!], env))
      // Retire: the previous keys are gone.
      const retired = jsonOf<{ previousTransportKey?: string; previousSigningKey?: string; transportKey: string }>(
        await kadmin('rotate-identity', '--retire', '--json'),
      )
      expect(retired.previousTransportKey).to.equal(undefined)
      expect(retired.previousSigningKey).to.equal(undefined)
      expect(hex(kdc!.context.realm.transportKey.publicKey)).to.equal(hex(rf2.transportKey))
      ok(await runKauth(['login', 'admin', '--password-file', pw.admin!], env))
      // Each step is a key event and an audit record.
      const w = ok(await kadmin('watch', '--from', '0', '--no-follow', '--json'))
      const types = w.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { type: string }).type)
        .filter((t) => t.startsWith('identity-'))
      expect(types).to.deep.equal(['identity-staged', 'identity-activated', 'identity-retired'])
      const a = jsonOf<{ records: { op: string; outcome: string }[] }>(await kadmin('audit', '--json', '--limit', '20'))
      expect(a.records.filter((r) => r.op.endsWith('-identity') && r.outcome === 'ok').map((r) => r.op)).to.deep.equal([
        'rotate-identity',
        'activate-identity',
        'retire-identity',
      ])
    })

    it('kauth passwd changes the own password through kadmin/changepw; a wrong old one and a weak new one are refused clearly', async () => {
      ok(await kadmin('addprinc', 'grace', '--password-file', await secret('grace', 'Birch-Lantern-58')))
      await secret('grace2', 'Cobalt-Harbor-93')
      const wrong = await runKauth(['passwd', 'grace', '--password-file', pw.bob!, '--new-password-file', pw.grace2!], env)
      expect(wrong.code).to.equal(Exit.AUTH)
      expect(wrong.stderr).to.contain('the old password of grace@KADMIN.TEST is wrong')
      expect(wrong.stderr).to.contain('password not changed')
      expect(jsonOf<{ lockout: { failureCount: number } }>(await kadmin('getprinc', 'grace', '--json')).lockout.failureCount).to.equal(1)

      const weak = await runKauth(['passwd', 'grace', '--password-file', pw.grace!, '--new-password-file', pw.short!], env)
      expect(weak.code).to.equal(Exit.FAILURE)
      expect(weak.stderr).to.contain('password not changed: Password is too short')

      const r = await runKauth(['passwd', 'grace', '--password-file', pw.grace!, '--new-password-file', pw.grace2!, '--json'], env)
      expect(jsonOf(r)).to.deep.equal({ principal: `grace@${REALM}`, kvno: 2 })
      expect((await runKauth(['login', 'grace', '--password-file', pw.grace!], env)).code).to.equal(Exit.AUTH)
      ok(await runKauth(['login', 'grace', '--password-file', pw.grace2!], env))
      const again = await runKauth(['passwd', 'grace', '--password-file', pw.grace2!, '--new-password-file', pw.grace2!], env)
      expect(again.code, 'the current password again').to.equal(Exit.FAILURE)
      expect(again.stderr).to.contain('Cannot reuse password')
    })

    it('refuses --local while the daemon holds the database, naming it', async () => {
      const r = await local('listprincs')
      expect(r.code).to.equal(Exit.CONFIG)
      expect(r.stderr).to.contain(`a kdc is running on ${dir}`)
      expect(r.stderr).to.contain(`realm ${REALM}, admin listener 127.0.0.1:${kdc!.addresses.admin.port}`)
      expect(r.stderr).to.contain('without --local')
    })

    it('dumps through the running daemon (a consistent snapshot, 0600), and refuses to overwrite a file', async () => {
      const file = path.join(tmp, 'remote.dump')
      const r = await kadmin('--json', 'dump', file)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      const j = JSON.parse(r.stdout) as { file: string; entries: number; sha256: string }
      expect(j.entries).to.be.greaterThan(3)
      expect((await stat(file)).mode & 0o777).to.equal(0o600)
      const again = await kadmin('dump', file)
      expect(again.code).to.not.equal(Exit.OK)
      expect(again.stderr).to.contain('already exists')
    })
  })

  describe('--local, the daemon stopped', () => {
    before(async () => {
      await kdc?.close()
      kdc = undefined
    })

    it('edits the database directly, audited as the local Unix user', async () => {
      expect(jsonOf(await local('addprinc', 'frank', '--randkey', '--json'))).to.deep.equal({ name: `frank@${REALM}`, kvno: 1 })
      expect(jsonOf<{ kvno: number; keys: unknown[] }>(await local('getprinc', 'frank', '--json')).keys).to.have.length(1)
      ok(await local('modprinc', 'frank', '--disable'))
      expect(jsonOf<{ attributes: { disabled: boolean } }>(await local('getprinc', 'frank', '--json')).attributes.disabled).to.equal(true)
      const prot = await local('modprinc', `krbtgt/${REALM}`, '--disable')
      expect(prot.code).to.equal(Exit.FAILURE)
      expect(prot.stderr).to.contain('cannot be disabled')
      const a = jsonOf<{ records: { actor: string; op: string; target?: string }[] }>(await local('audit', '--json'))
      const mine = a.records.filter((x) => x.target === 'frank')
      expect(mine.map((x) => x.op)).to.deep.equal(['addprinc', 'getprinc', 'modprinc', 'getprinc'])
      expect(mine.every((x) => x.actor === `local:${os.userInfo().username}`)).to.equal(true)
    })

    it('adds principals in bulk from a file, going on past a refused name; a progress bar only on a terminal', async () => {
      const names = path.join(tmp, 'names.txt')
      await writeFile(names, '# services\nsvc1\nsvc2\n\nfrank\nsvc3\n')
      const piped = await local('addprinc', '--from', names, '--randkey', '--json')
      expect(piped.code, 'frank exists').to.equal(Exit.FAILURE)
      expect(piped.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { name: string }).name)).to.deep.equal(
        ['svc1', 'svc2', 'svc3'].map((n) => `${n}@${REALM}`),
      )
      expect(piped.stderr).to.equal(`kadmin: frank: principal frank@${REALM} already exists\n`)
      expect(piped.stderr, 'no escapes when piped').to.not.contain('\u001b')

      await writeFile(names, 'bulk1\nbulk2\nbulk3\n')
      const tty = ttyStream()
      const r = await runKadmin(['--local', '--dir', dir, 'addprinc', '--from', names, '--randkey'], env, { stderr: tty })
      ok(r)
      expect(r.stderr).to.contain('3/3')
      expect(r.stdout).to.equal('3 of 3 principals created.\n')
    })

    it('audit --verify passes on a good log and names the first bad line of an edited one', async () => {
      expect(ok(await local('audit', '--verify')).stdout).to.match(/^audit log OK: \d+ records/)
      const file = path.join(dir, REALM_FILES.audit)
      const good = await readFile(file, 'utf8')
      const lines = good.split('\n')
      lines[2] = lines[2]!.replace('"outcome":"ok"', '"outcome":"ok" ').replace(/"op":"(\w+)"/, '"op":"$1x"')
      await writeFile(file, lines.join('\n'))
      try {
        const r = await local('audit', '--verify')
        expect(r.code).to.equal(Exit.FAILURE)
        expect(r.stderr).to.match(/^kadmin: audit log verification failed at line 3: line 3 \(seq 3\) was altered/)
        const j = await local('audit', '--verify', '--json')
        expect(j.code).to.equal(Exit.FAILURE)
        expect(JSON.parse(j.stdout)).to.include({ ok: false, firstBadLine: 3 })
      } finally {
        await writeFile(file, good)
      }
    })

    it('dumps, loads into a new realm directory, and the new realm serves logins and kadmin', async () => {
      const dump = path.join(tmp, 'realm.dump')
      const d = jsonOf<{ file: string; entries: number; sha256: string }>(await local('dump', dump, '--json'))
      expect(d.entries).to.be.greaterThan(10)
      expect((await stat(dump)).mode & 0o777).to.equal(0o600)
      const again = await local('dump', dump)
      expect(again.code).to.equal(Exit.FAILURE)
      expect(again.stderr).to.contain('already exists')

      const newDir = path.join(tmp, 'restored')
      const stash = path.join(dir, REALM_FILES.stash)
      const cfg = path.join(tmp, 'kdc.json')
      const l = jsonOf<{ dir: string; realm: string; entries: number; sha256: string }>(
        await runKadmin(['load', dump, '--dir', newDir, '--stash', stash, '--config', cfg, '--json'], env),
      )
      expect(l).to.deep.equal({ dir: newDir, realm: REALM, entries: d.entries, sha256: d.sha256 })
      expect((await stat(path.join(newDir, REALM_FILES.stash))).mode & 0o777).to.equal(0o600)
      const twice = await runKadmin(['load', dump, '--dir', newDir, '--stash', stash], env)
      expect(twice.code).to.equal(Exit.CONFIG)
      expect(twice.stderr).to.contain('already holds a realm')

      const restored = await startKdc({ dir: newDir, config: CONFIG })
      try {
        const e = { ...env, TESSERA_REALM_FILE: path.join(newDir, REALM_FILES.realmFile), TESSERA_CCACHE: path.join(tmp, 'restored-cc') }
        ok(await runKauth(['login', 'grace', '--password-file', pw.grace2!], e))
        const f = jsonOf<{ attributes: { disabled: boolean } }>(await runKadmin([...asAdmin, 'getprinc', 'frank', '--json'], e))
        expect(f.attributes.disabled).to.equal(true)
        expect(jsonOf<{ principals: string[] }>(await runKadmin([...asAdmin, 'listprincs', 'bulk*', '--json'], e)).principals).to.have.length(3)
        const v = jsonOf<{ ok: boolean }>(await runKadmin([...asAdmin, 'audit', '--verify', '--json'], e))
        expect(v.ok).to.equal(true)
      } finally {
        await restored.close()
      }
    })
  })

  describe('argument handling', () => {
    it('reads --password-file and --keytab before the command as the administrator\'s, after it as the command\'s', () => {
      expect(splitGlobalOptions(['-p', 'admin', '--password-file', 'a.pw', 'addprinc', 'bob', '--password-file', 'b.pw'])).to.deep.equal([
        '-p',
        'admin',
        '--admin-password-file',
        'a.pw',
        'addprinc',
        'bob',
        '--password-file',
        'b.pw',
      ])
      expect(splitGlobalOptions(['--keytab=admin.kt', '--json', 'ktadd', 'x', '--keytab', 'x.kt'])).to.deep.equal([
        '--admin-keytab=admin.kt',
        '--json',
        'ktadd',
        'x',
        '--keytab',
        'x.kt',
      ])
    })

    it('refuses an unknown command, a missing name and a bad duration as usage errors', async () => {
      expect((await runKadmin(['frobnicate'], env)).code).to.equal(Exit.USAGE)
      const noName = await runKadmin(['addprinc', '--randkey'], {})
      expect(noName.code).to.equal(Exit.USAGE)
      expect(noName.stderr).to.contain('addprinc needs a NAME (or --from FILE)')
      const r = await runKadmin(['--local', '--dir', dir, 'addprinc', 'x', '--randkey', '--maxlife', 'forever'], env)
      expect(r.code).to.equal(Exit.USAGE)
      expect(r.stderr).to.contain('not a duration')
    })
  })
})
