/** kauth main() in-process against an in-memory KDC: login, list, ticket, renew, logout, failover, usage. */
import { chmod, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { expect } from 'chai'
import { CredentialCache } from '../../src/client/ccache.js'
import { Exit } from '../../src/cli/common.js'
import {
  allPorts,
  BlackHole,
  CLI_REALM,
  type CliKdc,
  closedPort,
  PASSWORDS,
  pipedStdin,
  runKauth,
  startCliKdc,
  writeRealm,
} from '../helpers/cli-kdc.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const SERVICE = 'HTTP/www.example.test'
const TGT = `krbtgt/${CLI_REALM}@${CLI_REALM}`
const STACK_LINE = /^\s+at /m

interface ListJson {
  cache: string
  client: string
  tickets: { service: string; kvno: number; start: string; end: string; flags: string[]; renewTill?: string }[]
}

describe('kauth', function () {
  this.timeout(20000)
  useProcessGuards()
  let k: CliKdc
  let alicePw: string
  let n = 0
  let ccache: string
  let env: NodeJS.ProcessEnv

  before(async () => {
    k = await startCliKdc()
    await k.kdc.addPrincipal(SERVICE, {})
    alicePw = path.join(k.dir, 'alice.pw')
    await writeFile(alicePw, `${PASSWORDS.alice}\n`, { mode: 0o600 })
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
  const listJson = async (): Promise<ListJson> => {
    const r = await runKauth(['list', '--json'], env)
    expect(r.code, r.stderr).to.equal(Exit.OK)
    return JSON.parse(r.stdout) as ListJson
  }

  describe('login', () => {
    it('warns when the password file is readable by others, and still logs in', async () => {
      const open = path.join(k.dir, 'alice-open.pw')
      await writeFile(open, `${PASSWORDS.alice}\n`, { mode: 0o644 })
      const r = await runKauth(['login', 'alice', '--password-file', open], env)
      expect(r.code).to.equal(Exit.OK)
      expect(r.stderr).to.contain('readable by other users')
      const quiet = await runKauth(['login', 'alice', '--password-file', alicePw], env)
      expect(quiet.stderr).to.equal('')
    })

    it('logs in with --password-file and caches a TGT in a 0600 file', async () => {
      const r = await login()
      expect(r.stdout).to.match(/^logged in as alice@TESSERA\.TEST; ticket valid until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$/)
      expect(r.stderr).to.equal('')
      expect((await stat(ccache)).mode & 0o777).to.equal(0o600)
    })

    it('reads the password from piped stdin', async () => {
      const r = await runKauth(['login', 'alice'], env, pipedStdin(`${PASSWORDS.alice}\n`))
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.contain('logged in as alice@TESSERA.TEST')
      expect((await listJson()).client).to.equal(`alice@${CLI_REALM}`)
    })

    it('logs in as $USER when no principal is named', async () => {
      const r = await runKauth(['login', '--password-file', alicePw], { ...env, USER: 'alice' })
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.contain('logged in as alice@TESSERA.TEST')
    })

    it('accepts name@REALM', async () => {
      const r = await runKauth(['login', `bob@${CLI_REALM}`], env, pipedStdin(`${PASSWORDS.bob}\n`))
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect((await listJson()).client).to.equal(`bob@${CLI_REALM}`)
    })

    it('exits 3 on a wrong password with one line saying so, and no stack trace', async () => {
      const r = await runKauth(['login', 'alice'], env, pipedStdin('not-the-password\n'))
      expect(r.code).to.equal(Exit.AUTH)
      expect(r.stderr).to.contain('wrong password')
      expect(r.stderr).to.match(/^kauth: [^\n]+\n$/)
      expect(r.stderr).to.not.match(STACK_LINE)
      expect(r.stdout).to.equal('')
    })

    it('exits 3 with the same message for an unknown principal', async () => {
      const r = await runKauth(['login', 'mallory'], env, pipedStdin('whatever\n'))
      expect(r.code).to.equal(Exit.AUTH)
      expect(r.stderr).to.contain('wrong password or unknown principal')
    })

    it('leaves the cache alone when the login fails', async () => {
      await login()
      const r = await runKauth(['login', 'alice'], env, pipedStdin('nope\n'))
      expect(r.code).to.equal(Exit.AUTH)
      expect((await listJson()).client).to.equal(`alice@${CLI_REALM}`)
    })

    it('exits 5 on an empty password from stdin', async () => {
      const r = await runKauth(['login', 'alice'], env, pipedStdin('\n'))
      expect(r.code).to.equal(Exit.CONFIG)
      expect(r.stderr).to.contain('empty password')
    })

    it('exits 5 on a bad --lifetime', async () => {
      const r = await runKauth(['login', 'alice', '--password-file', alicePw, '--lifetime', 'soon'], env)
      expect(r.code).to.equal(Exit.CONFIG)
      expect(r.stderr).to.contain('bad duration "soon"')
    })

    it('exits 5 with the path it looked at when there is no realm file', async () => {
      const { TESSERA_REALM_FILE: _, ...noRealm } = env
      const r = await runKauth(['login', 'alice', '--password-file', alicePw], noRealm)
      expect(r.code).to.equal(Exit.CONFIG)
      expect(r.stderr).to.contain(`no realm file at ${path.join(k.dir, '.config', 'tessera', 'realm.json')}`)
      expect(r.stderr).to.not.match(STACK_LINE)
    })

    it('exits 5 on a realm file that is not JSON, naming it', async () => {
      const bad = path.join(k.dir, 'bad-realm.json')
      await writeFile(bad, '{ this is not json')
      const r = await runKauth(['login', 'alice', '--password-file', alicePw, '--realm-file', bad], env)
      expect(r.code).to.equal(Exit.CONFIG)
      expect(r.stderr).to.contain(`realm file ${bad} is not valid JSON`)
    })

    it('prefers --realm-file over TESSERA_REALM_FILE', async () => {
      const r = await runKauth(
        ['login', 'alice', '--password-file', alicePw, '--realm-file', k.realmPath],
        { ...env, TESSERA_REALM_FILE: path.join(k.dir, 'missing.json') },
      )
      expect(r.code, r.stderr).to.equal(Exit.OK)
    })
  })

  describe('list', () => {
    it('prints the client, each service, its times, flags and kvno', async () => {
      await login()
      const r = await runKauth(['list'], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      const lines = r.stdout.split('\n')
      expect(lines[0]).to.equal(`Credentials cache: ${ccache}`)
      expect(lines[1]).to.equal(`Principal: alice@${CLI_REALM}`)
      expect(lines[3]).to.match(/^Valid starting\s+Expires\s+Service$/)
      expect(lines[4]).to.match(new RegExp(`^\\S+Z  \\S+Z  ${TGT.replaceAll('.', '\\.')}$`))
      expect(lines[5]).to.match(/^\s+flags: [a-z,-]*initial[a-z,-]*; kvno 1$/)
    })

    it('prints JSON with client, services, start/end and flags with --json', async () => {
      const before = Date.now()
      await login()
      const j = await listJson()
      expect(j.cache).to.equal(ccache)
      expect(j.client).to.equal(`alice@${CLI_REALM}`)
      expect(j.tickets).to.have.length(1)
      const t = j.tickets[0]!
      expect(t.service).to.equal(TGT)
      expect(t.kvno).to.equal(1)
      expect(t.flags).to.include.members(['initial', 'pre-authent'])
      expect(t.flags).to.not.include('renewable')
      expect(t.renewTill).to.equal(undefined)
      const start = Date.parse(t.start)
      const end = Date.parse(t.end)
      expect(start).to.be.within(before - 2000, Date.now() + 1000)
      expect(end - start).to.be.within(9.9 * 3600_000, 10.1 * 3600_000) // the KDC's default life, 10 h
    })

    it('exits 6 when there is no cache', async () => {
      const r = await runKauth(['list'], env)
      expect(r.code).to.equal(Exit.NO_CREDENTIALS)
      expect(r.stderr).to.contain('no credentials cache')
    })

    it('refuses a cache readable by others', async () => {
      await login()
      await chmod(ccache, 0o644)
      const r = await runKauth(['list'], env)
      expect(r.code).to.not.equal(Exit.OK)
      expect(r.stderr).to.contain('readable by others')
      expect(r.stdout).to.equal('')
    })
  })

  describe('ticket', () => {
    it('gets a service ticket, prints its kvno and caches it', async () => {
      await login()
      const r = await runKauth(['ticket', SERVICE], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.equal(`${SERVICE}@${CLI_REALM}: kvno = 1\n`)
      const j = await listJson()
      expect(j.tickets.map((t) => t.service)).to.deep.equal([TGT, `${SERVICE}@${CLI_REALM}`])
      const st = j.tickets[1]!
      expect(st.flags).to.not.include('initial')
      const text = await runKauth(['list'], env)
      expect(text.stdout).to.contain(`${SERVICE}@${CLI_REALM}\n`)
    })

    it('keeps transport resumption tickets in the cache: the next command resumes instead of a new key exchange', async () => {
      await login()
      const afterLogin = (await new CredentialCache(ccache).load())!.resume ?? []
      expect(afterLogin.map((t) => t.id.split('|')[1]), 'a ticket from the AS listener').to.deep.equal([String(k.kdc.addresses.as.port)])
      expect(await runKauth(['ticket', SERVICE], env).then((r) => r.code)).to.equal(Exit.OK)
      const afterTicket = (await new CredentialCache(ccache).load())!.resume ?? []
      expect(afterTicket.map((t) => t.id.split('|')[1]).sort()).to.deep.equal(
        [String(k.kdc.addresses.as.port), String(k.kdc.addresses.tgs.port)].sort(),
      )
      // A second ticket command resumes: a full handshake would have brought a new ticket.
      expect(await runKauth(['ticket', SERVICE], env).then((r) => r.code)).to.equal(Exit.OK)
      const again = (await new CredentialCache(ccache).load())!.resume ?? []
      const tgsOf = (l: typeof again) => Buffer.from(l.find((t) => t.id.split('|')[1] === String(k.kdc.addresses.tgs.port))!.tk).toString('hex')
      expect(tgsOf(again)).to.equal(tgsOf(afterTicket))
      expect((await stat(ccache)).mode & 0o777).to.equal(0o600)
      // And logout removes them with the rest.
      expect((await runKauth(['logout'], env)).code).to.equal(Exit.OK)
      expect(await new CredentialCache(ccache).load()).to.equal(undefined)
    })

    it('exits 1 naming an unknown service', async () => {
      await login()
      const r = await runKauth(['ticket', 'HTTP/nowhere.example.test'], env)
      expect(r.code).to.equal(Exit.FAILURE)
      expect(r.stderr).to.contain('unknown service HTTP/nowhere.example.test')
    })

    it('exits 6 without a cache', async () => {
      const r = await runKauth(['ticket', SERVICE], env)
      expect(r.code).to.equal(Exit.NO_CREDENTIALS)
      expect(r.stderr).to.contain('run kauth login')
    })
  })

  describe('renew', () => {
    it('renews a TGT obtained with --renewable 2d', async () => {
      await login('--renewable', '2d')
      const first = (await listJson()).tickets[0]!
      expect(first.flags).to.include('renewable')
      expect(Date.parse(first.renewTill!) - Date.parse(first.start)).to.be.within(2 * 86400_000 - 5000, 2 * 86400_000 + 5000)
      const r = await runKauth(['renew'], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.match(/^renewed; ticket valid until \S+Z\n$/)
      const j = await listJson()
      expect(j.tickets).to.have.length(1)
      const renewed = j.tickets[0]!
      expect(renewed.service).to.equal(TGT)
      expect(renewed.flags).to.include('renewable')
      expect(renewed.renewTill).to.equal(first.renewTill)
      expect(Date.parse(renewed.end)).to.be.at.least(Date.parse(first.end))
      // The renewed TGT still works for the TGS.
      const t = await runKauth(['ticket', SERVICE], env)
      expect(t.code, t.stderr).to.equal(Exit.OK)
    })

    it('fails (non-zero, no stack) to renew a TGT that is not renewable', async () => {
      await login()
      const r = await runKauth(['renew'], env)
      expect(r.code).to.equal(Exit.FAILURE)
      expect(r.stderr).to.match(/^kauth: [^\n]+\n$/)
    })
  })

  describe('logout', () => {
    it('destroys the cache; list then exits 6 with "no credentials cache"', async () => {
      await login()
      const r = await runKauth(['logout'], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      expect(r.stdout).to.equal('')
      let gone = false
      await stat(ccache).catch(() => {
        gone = true
      })
      expect(gone, 'cache file removed').to.equal(true)
      const l = await runKauth(['list'], env)
      expect(l.code).to.equal(Exit.NO_CREDENTIALS)
      expect(l.stderr).to.contain('no credentials cache')
    })

    it('exits 6 when there is nothing to destroy', async () => {
      const r = await runKauth(['logout'], env)
      expect(r.code).to.equal(Exit.NO_CREDENTIALS)
      expect(r.stderr).to.contain('no credentials cache to destroy')
    })
  })

  describe('failover', () => {
    it('logs in through the second KDC when the first refuses connections', async () => {
      const dead = await closedPort()
      const rf = { ...k.kdc.realmFile, kdcs: [allPorts(dead), ...k.kdc.realmFile.kdcs] }
      const realm = await writeRealm(k.dir, rf, 'failover.json')
      const e = { ...env, TESSERA_REALM_FILE: realm }
      const r = await runKauth(['login', 'alice', '--password-file', alicePw, '--connect-timeout', '1'], e)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      const t = await runKauth(['ticket', SERVICE, '--connect-timeout', '1'], e)
      expect(t.code, t.stderr).to.equal(Exit.OK)
    })

    it('logs in through the second KDC when the first never answers', async () => {
      const hole = await new BlackHole().listen()
      try {
        const rf = { ...k.kdc.realmFile, kdcs: [allPorts(hole.port), ...k.kdc.realmFile.kdcs] }
        const realm = await writeRealm(k.dir, rf, 'failover-hole.json')
        const r = await runKauth(['login', 'alice', '--password-file', alicePw, '--connect-timeout', '1'], {
          ...env,
          TESSERA_REALM_FILE: realm,
        })
        expect(r.code, r.stderr).to.equal(Exit.OK)
        expect(hole.accepted).to.be.greaterThan(0)
        expect(r.ms).to.be.below(5000)
      } finally {
        await hole.close()
      }
    })

    it('exits 4 quickly when no KDC is reachable', async () => {
      const hole = await new BlackHole().listen()
      try {
        const rf = { ...k.kdc.realmFile, kdcs: [allPorts(await closedPort()), allPorts(hole.port)] }
        const realm = await writeRealm(k.dir, rf, 'unreachable.json')
        const r = await runKauth(['login', 'alice', '--password-file', alicePw, '--connect-timeout', '1'], {
          ...env,
          TESSERA_REALM_FILE: realm,
        })
        expect(r.code).to.equal(Exit.UNREACHABLE)
        expect(r.stderr).to.contain(`cannot reach any KDC of ${CLI_REALM}`)
        expect(r.stderr).to.not.match(STACK_LINE)
        expect(r.ms).to.be.below(5000)
      } finally {
        await hole.close()
      }
    })
  })

  describe('usage', () => {
    it('exits 2 on an unknown command', async () => {
      const r = await runKauth(['frobnicate'], env)
      expect(r.code).to.equal(Exit.USAGE)
      expect(r.stderr).to.contain('frobnicate')
      expect(r.stderr).to.contain('kauth --help')
    })

    it('exits 2 on an extra argument and does not run the command', async () => {
      const r = await runKauth(['login', 'alice', 'extra'], env, pipedStdin(`${PASSWORDS.alice}\n`))
      expect(r.code).to.equal(Exit.USAGE)
      expect(r.stdout).to.equal('')
      expect((await runKauth(['list'], env)).code).to.equal(Exit.NO_CREDENTIALS)
    })

    it('exits 2 once on a missing positional', async () => {
      const r = await runKauth(['ticket'], env)
      expect(r.code).to.equal(Exit.USAGE)
      expect(r.stderr.match(/Run kauth --help/g)).to.have.length(1)
    })

    it('writes --help to its own stdout', async () => {
      const r = await runKauth(['--help'], env)
      expect(r.stdout).to.contain('kauth login')
    })

    it('exits 2 without a command', async () => {
      const r = await runKauth([], env)
      expect(r.code).to.equal(Exit.USAGE)
      expect(r.stderr).to.contain('name a command')
    })

    it('exits 0 on --help and shows the commands', async () => {
      // yargs writes help with console.log unless given a parse callback: capture both.
      const logged: string[] = []
      const orig = console.log
      console.log = (...a: unknown[]) => {
        logged.push(a.join(' '))
      }
      let r: Awaited<ReturnType<typeof runKauth>>
      try {
        r = await runKauth(['--help'], env)
      } finally {
        console.log = orig
      }
      expect(r.code).to.equal(Exit.OK)
      const help = r.stdout + logged.join('\n')
      for (const cmd of ['login', 'list', 'logout', 'ticket', 'renew', 'time']) expect(help).to.contain(`kauth ${cmd}`)
    })

    it('prints a stack trace on error with --debug, and only then', async () => {
      const plain = await runKauth(['login', 'alice'], env, pipedStdin('wrong\n'))
      expect(plain.stderr).to.not.match(STACK_LINE)
      const r = await runKauth(['login', 'alice', '--debug'], env, pipedStdin('wrong\n'))
      expect(r.code).to.equal(Exit.AUTH)
      expect(r.stderr).to.contain('wrong password')
      expect(r.stderr).to.match(STACK_LINE)
    })
  })
})
