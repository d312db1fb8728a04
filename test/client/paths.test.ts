/** One place decides the credential cache and the realm file, for kauth and for apps (issue 10, item 4). */
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { expect } from 'chai'
import { ccachePath, CredentialCache, defaultCcachePath, KdcClient, loadRealmFile, realmFilePath } from '../../src/index.js'
import { type CliKdc, PASSWORDS, runKauth, startCliKdc } from '../helpers/cli-kdc.js'
import { Exit } from '../../src/cli/common.js'

describe('ccachePath and realmFilePath', function () {
  this.timeout(20000)
  let k: CliKdc
  before(async () => {
    k = await startCliKdc()
    await k.kdc.addPrincipal('echo/localhost')
  })
  after(async () => {
    await k?.close()
  })

  it('ccachePath: TESSERA_CCACHE, then the default path', () => {
    expect(ccachePath({ TESSERA_CCACHE: '/run/me/cc', HOME: '/home/a' })).to.equal('/run/me/cc')
    expect(ccachePath({ HOME: '/home/a' })).to.equal(defaultCcachePath({ HOME: '/home/a' }))
    expect(ccachePath({ TESSERA_CCACHE: '', HOME: '/home/a' })).to.equal('/home/a/.cache/tessera/ccache')
  })

  it('an app finds the cache and realm file `kauth login` used under TESSERA_CCACHE and TESSERA_REALM_FILE', async () => {
    const env = k.env(path.join(k.dir, 'elsewhere', 'my-cache'))
    await mkdir(path.join(k.dir, 'elsewhere'), { recursive: true, mode: 0o700 })
    const pw = path.join(k.dir, 'pw')
    await writeFile(pw, `${PASSWORDS.alice}\n`, { mode: 0o600 })
    const r = await runKauth(['login', 'alice', '--password-file', pw], env)
    expect(r.code, r.stderr).to.equal(Exit.OK)
    // What an app writes (the README): the same two functions kauth uses.
    const kdc = new KdcClient(await loadRealmFile(realmFilePath(env)))
    try {
      const ticket = await kdc.ticketFromCache(new CredentialCache(ccachePath(env)), 'echo/localhost')
      expect(ticket.cname).to.deep.equal(['alice'])
      expect(ticket.sname).to.deep.equal(['echo', 'localhost'])
    } finally {
      kdc.close()
    }
    const list = await runKauth(['list', '--json'], env)
    expect(JSON.parse(list.stdout).tickets.map((t: { service: string }) => t.service)).to.include(`echo/localhost@${k.kdc.realm}`)
  })
})
