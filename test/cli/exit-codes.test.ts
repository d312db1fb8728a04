/** One exit-code scheme for kdc, kadmin and kauth, listed in each --help and in docs/cli.md (issue 10, item 9). */
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { PassThrough } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { EXIT_MEANINGS, Exit } from '../../src/cli/common.js'
import { main as kadmin } from '../../src/cli/kadmin.js'
import { main as kdc } from '../../src/cli/kdc.js'
import { runKauth } from '../helpers/cli-kdc.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

async function capture(fn: (io: { stdout: PassThrough; stderr: PassThrough }) => Promise<number>) {
  const stdout = new PassThrough()
  const stderr = new PassThrough()
  let out = ''
  let err = ''
  stdout.on('data', (d: Buffer) => {
    out += d.toString()
  })
  stderr.on('data', (d: Buffer) => {
    err += d.toString()
  })
  const code = await fn({ stdout, stderr })
  await new Promise((r) => setImmediate(r))
  return { code, stdout: out, stderr: err }
}

/** The exit table lines of a --help text, as [code, meaning] pairs. */
function helpTable(help: string): [number, string][] {
  const at = help.indexOf('Exit status:')
  expect(at, help).to.be.greaterThan(-1)
  return [...help.slice(at).matchAll(/^ +(\d+) {2}(.+)$/gm)].map((m) => [Number(m[1]), m[2]!.trim()])
}

describe('exit codes', () => {
  const table = () => EXIT_MEANINGS.map(([c, m]) => [c, m])

  it('are the documented scheme: 0 ok, 1 failure, 2 usage, 3 authentication, 4 unreachable, 5 configuration, 6 no credentials', () => {
    expect(Exit).to.deep.include({ OK: 0, FAILURE: 1, USAGE: 2, AUTH: 3, UNREACHABLE: 4, CONFIG: 5, NO_CREDENTIALS: 6 })
    expect(EXIT_MEANINGS.map(([c]) => c)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 141])
  })

  it("are listed at the end of each CLI's --help", async () => {
    const env = { HOME: os.tmpdir() }
    const helps = {
      kauth: (await runKauth(['--help'], env)).stdout,
      kdc: (await capture((io) => kdc(['--help'], { env, ...io }))).stdout,
      kadmin: (await capture((io) => kadmin(['--help'], io))).stdout,
    }
    for (const [cli, help] of Object.entries(helps)) expect(helpTable(help), cli).to.deep.equal(table())
  })

  it('are listed in docs/cli.md, the same table', async () => {
    const doc = await readFile(path.join(ROOT, 'docs', 'cli.md'), 'utf8')
    const at = doc.indexOf('<!-- exit-codes')
    expect(at).to.be.greaterThan(-1)
    const rows = [...doc.slice(at).matchAll(/^\| (\d+) \| (.+) \|$/gm)].map((m) => [Number(m[1]), m[2]!.trim()])
    expect(rows.slice(0, table().length)).to.deep.equal(table())
  })

  it('kadmin uses the scheme: an unknown command 2, no realm file 5', async () => {
    const u = await capture((io) => kadmin(['add-principal', 'alice'], io))
    expect(u.code).to.equal(Exit.USAGE)
    expect((await capture((io) => kadmin(['--bogus'], io))).code).to.equal(Exit.USAGE)
    const env = { TESSERA_REALM_FILE: path.join(os.tmpdir(), 'tessera-no-such-realm.json') }
    const r = await capture((io) => kadmin(['listprincs'], { env, ...io }))
    expect(r.code).to.equal(Exit.CONFIG)
    expect(r.stderr).to.contain('no realm file at')
  })

  it('kdc uses the scheme: a bad config 5, a realm that exists 5, a usage error 2', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-exit-'))
    try {
      const env = { TESSERA_ADMIN_PASSWORD: 'pw-exit-1' }
      const init = (extra: string[] = []) =>
        capture((io) => kdc(['init', '--realm', 'EXIT.TEST', '--dir', dir, '--config', cfg, ...extra], { env, ...io }))
      const cfg = path.join(dir, 'fast.json')
      await (await import('node:fs/promises')).writeFile(cfg, JSON.stringify({ kdf: { N: 1024 }, log: { console: false } }))
      expect((await init()).code).to.equal(Exit.OK)
      expect((await init()).code).to.equal(Exit.CONFIG)
      expect((await init(['--as-port', 'x'])).code).to.equal(Exit.USAGE)
      expect((await capture((io) => kdc(['start', '--dir', dir, '--config', path.join(dir, 'nope.json')], { env, ...io }))).code).to.equal(
        Exit.CONFIG,
      )
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
