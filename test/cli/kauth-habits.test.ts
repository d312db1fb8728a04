/**
 * kauth as a Kerberos user expects it (issue 10): expired tickets are not missing ones, clock
 * correction is told once, MIT's short options, keytab login and listing, --json everywhere.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { expect } from 'chai'
import { CredentialCache, defaultCcachePath } from '../../src/client/ccache.js'
import { Exit } from '../../src/cli/common.js'
import { fakeCreds } from '../helpers/cli-creds.js'
import { CLI_REALM, type CliKdc, PASSWORDS, runKauth, startCliKdc } from '../helpers/cli-kdc.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const HOUR = 3600_000
const SERVICE = 'HTTP/www.example.test'
const SERVICE2 = 'ldap/db.example.test'
const HOST = 'host/client.example.test'
const TGT = `krbtgt/${CLI_REALM}@${CLI_REALM}`

/** Every non-empty stdout line parsed as JSON (one object per line). */
function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

describe('kauth habits', function () {
  this.timeout(20000)
  useProcessGuards()
  let k: CliKdc
  let alicePw: string
  let keytab: string
  let n = 0
  let ccache: string
  let env: NodeJS.ProcessEnv

  before(async () => {
    k = await startCliKdc()
    await k.kdc.addPrincipal(SERVICE)
    await k.kdc.addPrincipal(SERVICE2)
    await k.kdc.addPrincipal(HOST)
    alicePw = path.join(k.dir, 'alice.pw')
    await writeFile(alicePw, `${PASSWORDS.alice}\n`, { mode: 0o600 })
    keytab = path.join(k.dir, 'host.keytab')
    await k.kdc.exportKeytab(HOST, keytab)
  })
  after(async () => {
    await k?.close()
  })
  beforeEach(() => {
    ccache = path.join(k.dir, `cc-${++n}`)
    env = k.env(ccache)
  })

  const login = async (...extra: string[]) => {
    const r = await runKauth(['login', 'alice', '--password-file', alicePw, ...extra], env)
    expect(r.code, r.stderr).to.equal(Exit.OK)
    return r
  }
  /** A cache whose every ticket expired an hour ago. */
  const expiredCache = async () => {
    const then = Date.now() - 11 * HOUR
    const cc = new CredentialCache(ccache, () => then)
    await cc.initialize(fakeCreds({ endtime: Date.now() - HOUR }, then))
    await cc.store(fakeCreds({ service: ['HTTP', 'old.example.test'], endtime: Date.now() - HOUR }, then))
  }

  describe('expired tickets (item 2)', () => {
    it('list shows expired entries marked as such, says when they expired and what to run', async () => {
      await expiredCache()
      const r = await runKauth(['list'], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.contain(TGT)
      expect(r.stdout).to.contain('HTTP/old.example.test')
      expect(r.stdout.match(/\(expired\)/g), r.stdout).to.have.length(2)
      expect(r.stderr).to.match(/expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/)
      expect(r.stderr).to.contain('kauth login')
      expect(r.stderr).to.not.contain('no credentials cache found')
    })

    it('list --json marks each expired ticket', async () => {
      await expiredCache()
      const r = await runKauth(['list', '--json'], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      const [j] = jsonLines(r.stdout) as [{ tickets: { service: string; expired: boolean }[] }]
      expect(j.tickets.map((t) => [t.service, t.expired])).to.deep.equal([
        [TGT, true],
        [`HTTP/old.example.test@${CLI_REALM}`, true],
      ])
    })

    it('ticket and renew say that the tickets expired, when, and to run kauth login (exit 6)', async () => {
      await expiredCache()
      for (const argv of [['ticket', SERVICE], ['renew']]) {
        const r = await runKauth(argv, env)
        expect(r.code, argv.join(' ')).to.equal(Exit.NO_CREDENTIALS)
        expect(r.stderr, argv.join(' ')).to.match(/expired at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; run kauth login/)
        expect(r.stderr).to.not.contain('no credentials cache found')
      }
    })

    it('still says "no credentials cache" when there is none', async () => {
      const r = await runKauth(['ticket', SERVICE], env)
      expect(r.code).to.equal(Exit.NO_CREDENTIALS)
      expect(r.stderr).to.contain('no credentials cache found')
    })
  })

  describe('clock correction (item 7)', () => {
    it('tells the user once, on stderr, that a clock 61 min behind is corrected', async () => {
      const far = await startCliKdc({ now: () => Date.now() + 61 * 60_000 })
      try {
        const e = far.env(path.join(far.dir, 'cc'))
        const r = await runKauth(['login', 'alice'], e, (await import('../helpers/cli-kdc.js')).pipedStdin(`${PASSWORDS.alice}\n`))
        expect(r.code, r.stderr).to.equal(Exit.OK)
        expect(r.stderr).to.contain("your clock is 1 h 1 min behind the KDC's; Tessera corrects for it")
        expect(r.stderr.match(/corrects for it/g)).to.have.length(1)
        // Later commands use the offset kept in the cache and say nothing more.
        await far.kdc.addPrincipal(SERVICE)
        const t = await runKauth(['ticket', SERVICE], e)
        expect(t.code, t.stderr).to.equal(Exit.OK)
        expect(t.stderr).to.equal('')
        const time = await runKauth(['time'], e)
        expect(time.code, time.stderr).to.equal(Exit.OK)
        expect(time.stdout).to.match(/^verdict: +your clock is 1 h 1 min behind the KDC's/m)
      } finally {
        await far.close()
      }
    })

    it('says nothing when the clocks agree, and time gives an in-sync verdict', async () => {
      const r = await login()
      expect(r.stderr).to.equal('')
      const t = await runKauth(['time'], env)
      expect(t.code, t.stderr).to.equal(Exit.OK)
      expect(t.stdout).to.match(/^verdict: +in sync/m)
    })

    it('names the KDC as the party that refused a skewed request', async () => {
      const far = await startCliKdc({ now: () => Date.now() + 61 * 60_000 })
      try {
        const { KdcClient } = await import('../../src/client/kdc-client.js')
        const c = new KdcClient(far.kdc.realmFile, { adjustClockOnSkew: false })
        try {
          const err = await c.login('alice', PASSWORDS.alice).then(
            () => undefined,
            (e: Error) => e,
          )
          expect(err?.message).to.match(/the KDC refused/)
          expect(err?.message).to.contain("behind the KDC's")
        } finally {
          c.close()
        }
      } finally {
        await far.close()
      }
    })
  })

  describe('MIT short options (item 8)', () => {
    it('login accepts -l, -r and -f', async () => {
      await login('-l', '1h', '-r', '2d', '-f')
      const r = await runKauth(['list', '--json'], env)
      const [j] = jsonLines(r.stdout) as [{ tickets: { start: string; end: string; renewTill?: string; flags: string[] }[] }]
      const t = j.tickets[0]!
      expect(Date.parse(t.end) - Date.parse(t.start)).to.be.within(HOUR - 5000, HOUR + 5000)
      expect(Date.parse(t.renewTill!) - Date.parse(t.start)).to.be.within(48 * HOUR - 5000, 48 * HOUR + 5000)
      expect(t.flags).to.include.members(['forwardable', 'renewable'])
    })

    it('list -s prints nothing and answers by exit status', async () => {
      const none = await runKauth(['list', '-s'], env)
      expect([none.code, none.stdout, none.stderr]).to.deep.equal([Exit.NO_CREDENTIALS, '', ''])
      await expiredCache()
      const expired = await runKauth(['list', '-s'], env)
      expect([expired.code, expired.stdout, expired.stderr]).to.deep.equal([Exit.NO_CREDENTIALS, '', ''])
      await login()
      const ok = await runKauth(['list', '-s'], env)
      expect([ok.code, ok.stdout, ok.stderr]).to.deep.equal([Exit.OK, '', ''])
    })

    it('-c names the cache, as with kinit and klist', async () => {
      const other = path.join(k.dir, `cc-c-${n}`)
      const r = await runKauth(['login', 'alice', '--password-file', alicePw, '-c', other], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      const l = await runKauth(['list', '-c', other, '--json'], env)
      expect((jsonLines(l.stdout)[0] as { cache: string }).cache).to.equal(other)
    })

    it('logout -A destroys every cache: the one in effect and the default one', async () => {
      const home = path.join(k.dir, `home-${n}`)
      await mkdir(home)
      const e = { ...env, HOME: home }
      const noCcache: NodeJS.ProcessEnv = { ...e }
      delete noCcache.TESSERA_CCACHE
      expect((await runKauth(['login', 'alice', '--password-file', alicePw], e)).code).to.equal(Exit.OK)
      expect((await runKauth(['login', 'alice', '--password-file', alicePw], noCcache)).code).to.equal(Exit.OK)
      expect(await new CredentialCache(defaultCcachePath(noCcache)).load()).to.not.equal(undefined)
      const r = await runKauth(['logout', '-A'], e)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(await new CredentialCache(ccache).load()).to.equal(undefined)
      expect(await new CredentialCache(defaultCcachePath(noCcache)).load()).to.equal(undefined)
    })

    it('ticket takes several services and prints one line each (kvno svc1 svc2)', async () => {
      await login()
      const r = await runKauth(['ticket', SERVICE, SERVICE2], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.equal(`${SERVICE}@${CLI_REALM}: kvno = 1\n${SERVICE2}@${CLI_REALM}: kvno = 1\n`)
      const j = await runKauth(['ticket', SERVICE, 'HTTP/nowhere.example.test', SERVICE2, '--json'], env)
      expect(j.code).to.equal(Exit.FAILURE)
      expect(jsonLines(j.stdout)).to.deep.equal([
        { service: `${SERVICE}@${CLI_REALM}`, kvno: 1 },
        { service: `${SERVICE2}@${CLI_REALM}`, kvno: 1 },
      ])
      expect(j.stderr).to.contain('HTTP/nowhere.example.test')
    })
  })

  describe('keytabs (item 8)', () => {
    it('login --keytab FILE logs in as the keytab principal, without a password', async () => {
      const r = await runKauth(['login', '--keytab', keytab], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.contain(`logged in as ${HOST}@${CLI_REALM}`)
      const t = await runKauth(['ticket', SERVICE], env)
      expect(t.code, t.stderr).to.equal(Exit.OK)
    })

    it('login -k -t FILE PRINCIPAL works as kinit -k -t does', async () => {
      const r = await runKauth(['login', '-k', '-t', keytab, HOST], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      const l = await runKauth(['list', '--json'], env)
      expect((jsonLines(l.stdout)[0] as { client: string }).client).to.equal(`${HOST}@${CLI_REALM}`)
    })

    it('login --keytab refuses a principal the keytab does not hold (exit 5)', async () => {
      const r = await runKauth(['login', '--keytab', keytab, 'alice'], env)
      expect(r.code).to.equal(Exit.CONFIG)
      expect(r.stderr).to.contain(`no key for alice@${CLI_REALM}`)
    })

    it('list --keytab FILE shows principals and key versions, never keys', async () => {
      const bytes = (await (await import('../../src/krb/keytab.js')).readKeytab(keytab)).entries[0]!.key
      const r = await runKauth(['list', '--keytab', keytab], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.contain(`Keytab: ${keytab}`)
      expect(r.stdout).to.match(new RegExp(`^ +1 +${HOST.replaceAll('.', '\\.')}@${CLI_REALM.replaceAll('.', '\\.')}`, 'm'))
      const j = await runKauth(['list', '-k', keytab, '--json'], env)
      expect(j.code, j.stderr).to.equal(Exit.OK)
      const [o] = jsonLines(j.stdout) as [{ keytab: string; entries: Record<string, unknown>[] }]
      expect(o.keytab).to.equal(keytab)
      expect(o.entries).to.have.length(1)
      expect(Object.keys(o.entries[0]!).sort()).to.deep.equal(['created', 'kvno', 'principal'])
      expect(o.entries[0]).to.deep.include({ principal: `${HOST}@${CLI_REALM}`, kvno: 1 })
      for (const enc of ['hex', 'base64', 'base64url'] as const) {
        const s = Buffer.from(bytes).toString(enc)
        expect(r.stdout + j.stdout).to.not.contain(s.slice(0, 16))
      }
    })
  })

  describe('--json (item 8)', () => {
    it('login, ticket, renew, list and time print one JSON object per line', async () => {
      const l = await runKauth(['login', 'alice', '--password-file', alicePw, '-r', '1d', '--json'], env)
      expect(l.code, l.stderr).to.equal(Exit.OK)
      const [li] = jsonLines(l.stdout)
      expect(li).to.include({ client: `alice@${CLI_REALM}`, cache: ccache })
      expect(li!.end).to.be.a('string')
      const t = await runKauth(['ticket', SERVICE, '--json'], env)
      expect(jsonLines(t.stdout)).to.deep.equal([{ service: `${SERVICE}@${CLI_REALM}`, kvno: 1 }])
      const rn = await runKauth(['renew', '--json'], env)
      expect(rn.code, rn.stderr).to.equal(Exit.OK)
      expect(jsonLines(rn.stdout)[0]).to.include({ client: `alice@${CLI_REALM}`, service: TGT })
      const ls = await runKauth(['list', '--json'], env)
      expect(ls.stdout.trim().split('\n')).to.have.length(1)
      const tm = await runKauth(['time', '--json', '--samples', '1'], env)
      const [ti] = jsonLines(tm.stdout)
      expect(ti).to.include.keys(['serverTime', 'offsetMs', 'delayMs', 'boundMs', 'verified', 'verdict'])
    })
  })
})
