/** startKdc / RunningKdc.close() with clients in flight. */
import { expect } from 'chai'
import { KrbProtocolError, TesseraError } from '../../src/errors.js'
import { ADMIN_PASSWORD, closedPort, startTestKdc } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import net from 'node:net'

function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port })
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', () => resolve(true))
  })
}

describe('RunningKdc lifecycle (integration)', function () {
  this.timeout(20000)
  useProcessGuards()

  it('binds four distinct ports on 127.0.0.1 and writes them into its realm file', async () => {
    const t = await startTestKdc()
    try {
      const a = t.kdc.addresses
      expect(new Set([a.as.port, a.tgs.port, a.time.port, a.admin.port]).size).to.equal(4)
      for (const l of ['as', 'tgs', 'time', 'admin'] as const) {
        expect(a[l].host).to.equal('127.0.0.1')
        expect(t.kdc.realmFile.kdcs[0]![l]).to.equal(a[l].port)
      }
      expect(t.kdc.realmFile.realm).to.equal(t.kdc.realm)
      expect(t.kdc.adminPassword).to.equal(ADMIN_PASSWORD)
    } finally {
      await t.close()
    }
  })

  it('closes with logins in flight: each settles with a typed outcome, and every port is released', async () => {
    const t = await startTestKdc()
    const ports = Object.values(t.kdc.addresses).map((a) => a.port)
    const clients = Array.from({ length: 8 }, () => t.client())
    const logins = Promise.allSettled(clients.map((c, i) => c.login('admin', i % 2 ? ADMIN_PASSWORD : 'wrong')))
    await new Promise((r) => setTimeout(r, 5))
    await t.kdc.close()
    const settled = await logins
    for (const s of settled) {
      if (s.status === 'rejected')
        expect(s.reason instanceof KrbProtocolError || s.reason instanceof TesseraError, String(s.reason)).to.equal(true)
    }
    for (const p of ports) expect(await portClosed(p), `port ${p}`).to.equal(true)
    await t.close() // idempotent
  })

  it('refuses to start on a port that is taken, and leaves nothing bound', async () => {
    const busy = net.createServer()
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
    const taken = (busy.address() as net.AddressInfo).port
    const free = await closedPort()
    try {
      const err = await startTestKdc({ config: { ports: { as: free, tgs: taken } } }).then(
        async (t) => {
          await t.close()
          throw new Error('started on a taken port')
        },
        (e: unknown) => e,
      )
      expect(err).to.be.instanceOf(TesseraError)
      expect((err as TesseraError).code).to.equal('TESSERA_NETWORK')
      expect(await portClosed(free), 'the AS port bound before the failure is released').to.equal(true)
    } finally {
      await new Promise<void>((resolve) => busy.close(() => resolve()))
    }
  })
})
