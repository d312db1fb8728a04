/** `kdc init` must not leave a half-made realm behind when it fails. */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { expect } from 'chai'
import { main } from '../../src/cli/kdc.js'
import { FAST_CONFIG } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

function sink(): Writable & { text: string } {
  const w = new Writable({
    write(chunk, _enc, cb) {
      w.text += chunk.toString()
      cb()
    },
  }) as Writable & { text: string }
  w.text = ''
  return w
}

async function kdc(argv: string[]): Promise<{ code: number; err: string }> {
  const err = sink()
  const code = await main(argv, { env: {}, stdout: sink(), stderr: err })
  return { code, err: err.text }
}

describe('kdc init failures (integration)', function () {
  this.timeout(20000)
  useProcessGuards()
  let tmp: string
  let cfg: string
  let pw: string
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-kdc-init-'))
    cfg = path.join(tmp, 'cfg.json')
    await writeFile(cfg, JSON.stringify(FAST_CONFIG))
    pw = path.join(tmp, 'pw')
    await writeFile(pw, 'a good password\n', { mode: 0o600 })
  })
  after(() => rm(tmp, { recursive: true, force: true }))

  for (const [label, flags] of [
    ['an invalid realm name', ['--realm', 'bad realm!']],
    ['an invalid admin name', ['--realm', 'EXAMPLE.TEST', '--admin', 'bad@admin@name']],
  ] as const) {
    it(`leaves nothing behind on ${label}, so a corrected init succeeds`, async () => {
      const dir = path.join(tmp, label.replace(/\W+/g, '-'))
      const bad = await kdc(['init', ...flags, '--dir', dir, '--config', cfg, '--admin-password-file', pw])
      expect(bad.code).to.not.equal(0)
      const left = await readdir(dir).catch(() => [] as string[])
      expect(left.filter((f) => f === 'stash' || f === 'db' || f === 'realm.json'), `left in ${dir}`).to.deep.equal([])
      const good = await kdc(['init', '--realm', 'EXAMPLE.TEST', '--dir', dir, '--config', cfg, '--admin-password-file', pw])
      expect(good.code, good.err).to.equal(0)
    })
  }
})
