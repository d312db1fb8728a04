/** Identity-key rotation steps are key events too (issue 12): the watch stream sees each, in order. */
import { expect } from 'chai'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { ADMIN_PASSWORD, FAST_CONFIG, REALM } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('identity-key rotation events (integration)', function () {
  this.timeout(20_000)
  useProcessGuards()
  let kdc: RunningKdc
  const clients: KdcClient[] = []

  before(async () => {
    kdc = await startKdc({ realm: REALM, adminPassword: ADMIN_PASSWORD, config: FAST_CONFIG })
  })
  after(async () => {
    for (const c of clients) c.close()
    await kdc.close()
  })

  it('publishes identity-staged, identity-activated and identity-retired, naming krbtgt/REALM', async () => {
    const kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    clients.push(kc)
    const admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    const start = (await admin.call('watch', {})) as { last: number }
    await admin.call('rotate-identity', { which: 'signing', stageAhead: 0 })
    await admin.call('activate-identity', {})
    await admin.call('retire-identity', {})
    const w = (await admin.call('watch', { after: start.last })) as { events: { type: string; principal: string; which?: string }[] }
    const ours = w.events.filter((e) => e.type.startsWith('identity-'))
    expect(ours.map((e) => e.type)).to.deep.equal(['identity-staged', 'identity-activated', 'identity-retired'])
    expect(ours.every((e) => e.principal === `krbtgt/${REALM}@${REALM}`)).to.equal(true)
    expect(ours[0]!.which).to.equal('signing')
  })
})
