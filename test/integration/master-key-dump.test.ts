/**
 * `kadmin dump` and `kadmin load` of a realm whose master key is being rotated (the stash
 * holds kvno 1 and 2, records sealed under either) and of one rotated (the stash holds kvno 2
 * alone): the loaded realm opens with the source's stash, serves logins and its audit log verifies.
 */
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { runMasterKeyStep } from '../../src/admin/master-rotation.js'
import { startKdc } from '../../src/admin/start.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { readStashKeys } from '../../src/db/master-key.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { realmFileJson } from '../../src/krb/realm-file.js'
import { runKadminCli } from '../helpers/kdc-cli-run.js'

const REALM = 'MKDUMP.TEST'
const CONFIG = { kdf: { N: 1024 }, ports: { as: 0, tgs: 0, time: 0, admin: 0 }, log: { console: false } }
const ADMIN_PW = 'admin password 1'

const kadmin = runKadminCli

/** Load `dump` into a new directory with `stash`, start it, log in as each of `logins`; the audit log verifies. */
async function loadAndServe(tmp: string, name: string, dump: string, stash: string, logins: [string, string][]): Promise<void> {
  const dir = path.join(tmp, name)
  const env = { HOME: tmp, USER: 'op' }
  const l = await kadmin(['load', dump, '--dir', dir, '--stash', stash, '--json'], env)
  expect(l.code, l.err).to.equal(0)
  expect(JSON.parse(l.out)).to.deep.include({ realm: REALM })
  expect((await stat(path.join(dir, REALM_FILES.stash))).mode & 0o777).to.equal(0o600)
  expect((await readStashKeys(path.join(dir, REALM_FILES.stash))).map((k) => k.kvno)).to.deep.equal(
    (await readStashKeys(stash)).map((k) => k.kvno),
  )
  const k = await startKdc({ dir, config: CONFIG, log: false })
  const c = new KdcClient(k.realmFile)
  try {
    for (const [u, pw] of logins) await c.getServiceTicket(await c.login(u, pw), 'host/app.mkdump.test')
    const rf = path.join(tmp, `${name}.realm.json`)
    await writeFile(rf, JSON.stringify(realmFileJson(k.realmFile)))
    const pwFile = path.join(tmp, 'admin.pw')
    const v = await kadmin(['-p', 'admin', '--password-file', pwFile, 'audit', '--verify', '--json'], {
      ...env,
      TESSERA_REALM_FILE: rf,
      TESSERA_CCACHE: path.join(tmp, `${name}.cc`),
    })
    expect(v.code, v.err).to.equal(0)
    expect(JSON.parse(v.out)).to.deep.include({ ok: true })
  } finally {
    c.close()
    await k.close()
  }
}

describe('dump and load across a master-key rotation (integration)', function () {
  this.timeout(60000)
  let tmp: string

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-mkdump-'))
    await writeFile(path.join(tmp, 'admin.pw'), `${ADMIN_PW}\n`, { mode: 0o600 })
  })
  after(async () => {
    await rm(tmp, { recursive: true, force: true })
  })

  it('dumps a realm mid-rotation (stash kvno 1 and 2) through the KDC, and after retire (kvno 2 alone) locally; each loads and serves', async () => {
    const dir = path.join(tmp, 'src')
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PW, config: resolveKdcConfig(CONFIG) })
    const stash = path.join(dir, REALM_FILES.stash)
    let k = await startKdc({ dir, config: CONFIG, log: false })
    try {
      await k.addPrincipal('alice', { password: 'alice horse 1' })
      await k.addPrincipal('host/app.mkdump.test')
      expect((await runMasterKeyStep({ dir, step: 'add', user: 'op' })).stash).to.deep.equal([1, 2])
      await runMasterKeyStep({ dir, step: 'use', user: 'op' })
      // Sealed under kvno 2 while alice's keys are still under kvno 1.
      await k.addPrincipal('bob', { password: 'bob horse 2' })
      const rf = path.join(tmp, 'src.realm.json')
      await writeFile(rf, JSON.stringify(realmFileJson(k.realmFile)))
      const d = await kadmin(['-p', 'admin', '--password-file', path.join(tmp, 'admin.pw'), 'dump', path.join(tmp, 'mid.dump'), '--json'], {
        HOME: tmp,
        TESSERA_REALM_FILE: rf,
        TESSERA_CCACHE: path.join(tmp, 'src.cc'),
      })
      expect(d.code, d.err).to.equal(0)
    } finally {
      await k.close()
    }
    await loadAndServe(tmp, 'mid', path.join(tmp, 'mid.dump'), stash, [
      ['alice', 'alice horse 1'],
      ['bob', 'bob horse 2'],
    ])

    // Finish the rotation, with the KDC stopped this time: the stash holds kvno 2 alone.
    await runMasterKeyStep({ dir, step: 'reseal', user: 'op' })
    expect((await runMasterKeyStep({ dir, step: 'retire', user: 'op' })).stash).to.deep.equal([2])
    const local = await kadmin(['--local', '--dir', dir, 'dump', path.join(tmp, 'done.dump'), '--json'], { HOME: tmp, USER: 'op' })
    expect(local.code, local.err).to.equal(0)
    await loadAndServe(tmp, 'done', path.join(tmp, 'done.dump'), stash, [
      ['alice', 'alice horse 1'],
      ['bob', 'bob horse 2'],
    ])
    // The realm itself still serves.
    k = await startKdc({ dir, config: CONFIG, log: false })
    const c = new KdcClient(k.realmFile)
    try {
      await c.login('alice', 'alice horse 1')
    } finally {
      c.close()
      await k.close()
    }
  })

  it('refuses to load with a stash that lacks a key the dump uses, and leaves nothing behind', async () => {
    const dir = path.join(tmp, 'src2')
    await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PW, config: resolveKdcConfig(CONFIG) })
    await runMasterKeyStep({ dir, step: 'add', user: 'op' })
    await runMasterKeyStep({ dir, step: 'use', user: 'op' })
    const dump = path.join(tmp, 'src2.dump')
    expect((await kadmin(['--local', '--dir', dir, 'dump', dump], { HOME: tmp, USER: 'op' })).code).to.equal(0)
    // Another realm's stash (kvno 1 only): the dump's database does not open with it.
    const other = path.join(tmp, 'other')
    await initRealmDir({ dir: other, realm: 'OTHER.TEST', adminPassword: ADMIN_PW, config: resolveKdcConfig(CONFIG) })
    const target = path.join(tmp, 'nowhere')
    const r = await kadmin(['load', dump, '--dir', target, '--stash', path.join(other, REALM_FILES.stash)], { HOME: tmp, USER: 'op' })
    expect(r.code).to.not.equal(0)
    expect(r.err).to.match(/stash|master key/)
    for (const f of [REALM_FILES.db, REALM_FILES.stash, REALM_FILES.audit])
      expect(
        await stat(path.join(target, f)).then(
          () => true,
          () => false,
        ),
        f,
      ).to.equal(false)
  })
})
