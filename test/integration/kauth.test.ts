/** bin/kauth.ts as a real child process against an in-memory KDC: login from piped stdin, list --json, logout. */
import { spawn } from 'node:child_process'
import { stat } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { Exit } from '../../src/cli/common.js'
import { CLI_REALM, type CliKdc, PASSWORDS, startCliKdc } from '../helpers/cli-kdc.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const BIN = path.join(ROOT, 'bin', 'kauth.ts')

interface ChildRun {
  code: number | null
  stdout: string
  stderr: string
}

/** Run `node --import tsx bin/kauth.ts ...args` with `input` on stdin; killed after 15 s. */
function kauth(args: string[], env: NodeJS.ProcessEnv, input = ''): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', BIN, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString()
    })
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), 15000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
    child.stdin.end(input)
  })
}

describe('kauth (child process)', function () {
  this.timeout(30000)
  let k: CliKdc
  let env: NodeJS.ProcessEnv
  let ccache: string

  before(async () => {
    k = await startCliKdc()
    ccache = path.join(k.dir, 'ccache')
    env = k.env(ccache)
  })
  after(async () => {
    await k?.close()
  })

  it('logs in with the password piped to stdin, lists as JSON, then logs out', async () => {
    const login = await kauth(['login', 'alice'], env, `${PASSWORDS.alice}\n`)
    expect(login.code, login.stderr).to.equal(Exit.OK)
    expect(login.stdout).to.match(/^logged in as alice@TESSERA\.TEST; ticket valid until \S+Z\n$/)
    expect(login.stderr).to.equal('')
    expect((await stat(ccache)).mode & 0o777).to.equal(0o600)

    const list = await kauth(['list', '--json'], env)
    expect(list.code, list.stderr).to.equal(Exit.OK)
    const j = JSON.parse(list.stdout) as { cache: string; client: string; tickets: { service: string; flags: string[] }[] }
    expect(j.cache).to.equal(ccache)
    expect(j.client).to.equal(`alice@${CLI_REALM}`)
    expect(j.tickets.map((t) => t.service)).to.deep.equal([`krbtgt/${CLI_REALM}@${CLI_REALM}`])
    expect(j.tickets[0]!.flags).to.include('initial')

    const logout = await kauth(['logout'], env)
    expect(logout.code, logout.stderr).to.equal(Exit.OK)
    const after = await kauth(['list'], env)
    expect(after.code).to.equal(Exit.NO_CREDENTIALS)
    expect(after.stderr).to.contain('no credentials cache')
  })

  it('exits 3 on a wrong password piped to stdin, without a stack trace', async () => {
    const r = await kauth(['login', 'alice'], env, 'wrong\n')
    expect(r.code).to.equal(Exit.AUTH)
    expect(r.stderr).to.contain('wrong password')
    expect(r.stderr).to.not.match(/^\s+at /m)
  })
})
