/** Every CLI, as a real process, ends quietly when its standard output closes (`kauth list | head -1`; issue 10, item 3). */
import { spawn } from 'node:child_process'
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { CredentialCache } from '../../src/client/ccache.js'
import { Exit } from '../../src/cli/common.js'
import { fakeCreds } from '../helpers/cli-creds.js'
import { tempDir } from '../helpers/cli-kdc.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/** Run bin/<cli>.ts with its stdout pipe closed by the reader before the first write. */
function withClosedStdout(cli: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join('bin', `${cli}.ts`), ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stdout.destroy() // as `head -1` does once it has its line
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), 15000)
    child.once('error', reject)
    child.once('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stderr })
    })
  })
}

describe('CLIs with a closed standard output', function () {
  this.timeout(30000)
  let dir: string
  before(async () => {
    dir = await tempDir('tessera-pipes-')
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  const quiet = (r: { code: number | null; stderr: string }) => {
    expect([Exit.OK, Exit.OUTPUT_CLOSED], r.stderr).to.include(r.code)
    expect(r.stderr).to.not.match(/^\s+at /m)
    expect(r.stderr).to.not.contain('EPIPE')
    expect(r.stderr).to.equal('')
  }

  it('kauth list exits quietly', async () => {
    const cc = path.join(dir, 'cc')
    await new CredentialCache(cc).initialize(fakeCreds())
    quiet(await withClosedStdout('kauth', ['list'], { TESSERA_CCACHE: cc, HOME: dir }))
  })

  for (const cli of ['kauth', 'kdc', 'kadmin'])
    it(`${cli} --help exits quietly`, async () => {
      quiet(await withClosedStdout(cli, ['--help'], { HOME: dir }))
    })
})
