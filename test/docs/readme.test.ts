/**
 * The README a new user reads first (issue 10, items 5 and 10): the quick start it shows is
 * docs/examples/quickstart.ts, which runs to a clean exit; its imports exist; it says how
 * to run the CLIs from a checkout and what collides with MIT Kerberos.
 */
import { execFile, spawn } from 'node:child_process'
import { readFile, rm } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { expect } from 'chai'
import { startDevRealm } from '../../docs/examples/dev-realm.js'
import * as api from '../../src/index.js'
import { tempDir } from '../helpers/cli-kdc.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const read = (f: string) => readFile(path.join(ROOT, f), 'utf8')

/** The ```ts block right after the `<!-- quickstart: … -->` marker. */
function quickstartBlock(readme: string): string {
  const at = readme.indexOf('<!-- quickstart: docs/examples/quickstart.ts')
  expect(at, 'quickstart marker in README.md').to.be.greaterThan(0)
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(at))
  expect(m, 'a ts block after the marker').to.not.equal(null)
  return m![1]!
}

describe('README.md', function () {
  this.timeout(30000)

  it("shows docs/examples/quickstart.ts's code verbatim", async () => {
    expect(quickstartBlock(await read('README.md'))).to.equal(await read('docs/examples/quickstart.ts'))
  })

  it('imports only names the library exports, in every ts block', async () => {
    const readme = await read('README.md')
    const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!)
    expect(blocks.length).to.be.greaterThan(1)
    for (const b of blocks)
      for (const imp of b.matchAll(/import \{([^}]*)\} from 'tessera'/g))
        for (const name of imp[1]!.split(',').map((n) => n.trim().replace(/^type /, '')).filter(Boolean))
          expect(Object.keys(api), `${name} is not exported by tessera`).to.include(name)
  })

  it('runs the quick start to a clean exit on its own, printing the echo and nothing on stderr', async () => {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'docs/examples/quickstart.ts'], {
      cwd: ROOT,
      timeout: 20000, // a program that hangs (open handles) fails here
      env: { PATH: process.env.PATH, HOME: process.env.HOME },
    })
    expect(stdout).to.equal('echo/localhost@TESSERA.TEST echoed: hello\n')
    expect(stderr).to.equal('')
  })

  it('says how to run kauth, kdc and kadmin from a checkout, and what collides with MIT Kerberos', async () => {
    const readme = await read('README.md')
    for (const cmd of ['npx kauth', 'npx kdc', 'npx kadmin']) expect(readme).to.contain(cmd)
    expect(readme).to.match(/npm link/)
    expect(readme).to.match(/MIT Kerberos[^.]*`kadmin`|`kadmin`[^.]*MIT/)
    expect(readme).to.contain('type -a kadmin')
  })

  it('`npx kauth --help` works in the checkout, as the README says', async function () {
    if (!(await readFile(path.join(ROOT, 'dist', 'bin', 'kauth.js')).catch(() => undefined))) this.skip() // built by npm install
    const child = spawn('npx', ['--no-install', 'kauth', '--help'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
    })
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve))
    expect(code).to.equal(0)
    expect(out).to.contain('kauth login')
  })
})

describe('docs/examples/dev-realm.ts', () => {
  it('creates its output folder', async () => {
    const base = await tempDir('tessera-dev-')
    const dir = path.join(base, 'not', 'there', 'yet')
    const kdc = await startDevRealm(dir, 'Example password 42')
    try {
      expect(JSON.parse(await readFile(path.join(dir, 'realm.json'), 'utf8')).realm).to.equal(kdc.realm)
    } finally {
      await kdc.close()
      await rm(base, { recursive: true, force: true })
    }
  })
})
