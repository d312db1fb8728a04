/** KdcClient.ticketFromCache: an app running under a user's existing login. */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { CredentialCache } from '../../src/client/ccache.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { type RunningKdc, startKdc } from '../../src/kdc/kdc.js'

describe('KdcClient.ticketFromCache', () => {
  let kdc: RunningKdc
  let dir: string
  before(async () => {
    kdc = await startKdc({ config: { kdf: { N: 1024 }, log: { console: false } } })
    await kdc.addPrincipal('alice', { password: 'pw-alice' })
    await kdc.addPrincipal('HTTP/app.example.test')
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-tfc-'))
  })
  after(async () => {
    await kdc.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('gets a service ticket with the cached TGT, stores it, then serves it from the cache', async () => {
    const cache = new CredentialCache(path.join(dir, 'cc1'))
    const login = new KdcClient(kdc.realmFile)
    await cache.initialize(await login.login('alice', 'pw-alice'))
    login.close()

    const app = new KdcClient(kdc.realmFile)
    try {
      const first = await app.ticketFromCache(cache, 'HTTP/app.example.test')
      expect(first.sname).to.deep.equal(['HTTP', 'app.example.test'])
      expect(first.cname).to.deep.equal(['alice'])
      const stored = await cache.find(['HTTP', 'app.example.test'])
      expect(Buffer.from(stored!.ticket.enc).equals(Buffer.from(first.ticket.enc))).to.equal(true)
      const again = await app.ticketFromCache(cache, 'HTTP/app.example.test')
      expect(Buffer.from(again.ticket.enc).equals(Buffer.from(first.ticket.enc))).to.equal(true)
    } finally {
      app.close()
    }
  })

  it('says TESSERA_NO_CREDENTIALS when the cache holds no TGT', async () => {
    const app = new KdcClient(kdc.realmFile)
    try {
      const err = await app.ticketFromCache(new CredentialCache(path.join(dir, 'none')), 'HTTP/app.example.test').then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).to.be.instanceOf(TesseraError)
      expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_NO_CREDENTIALS)
    } finally {
      app.close()
    }
  })
})
