/**
 * A KDC host clock stepped back (security review 4, item 3): the time service never goes
 * back and slews, the AS/TGS follow the host clock. A client that syncs must end up within
 * the skew of the clock the exchanges judge by, and log in again at once.
 */
import { expect } from 'chai'
import { KdcClient } from '../../src/client/kdc-client.js'
import { syncTime } from '../../src/client/time-sync.js'
import { type RunningKdc, startKdc } from '../../src/kdc/kdc.js'
import { ADMIN_PASSWORD, FAST_CONFIG, HOUR } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('KDC host clock stepped back by 1 h (security)', function () {
  this.timeout(20_000)
  useProcessGuards()
  let hostOffset = 0
  let kdc: RunningKdc
  const clients: KdcClient[] = []
  const client = () => {
    const c = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    clients.push(c)
    return c
  }

  beforeEach(async () => {
    // The host clock ran 1 h fast when the KDC started.
    hostOffset = HOUR
    kdc = await startKdc({ realm: 'EXAMPLE.TEST', adminPassword: ADMIN_PASSWORD, config: FAST_CONFIG, now: () => Date.now() + hostOffset })
    await kdc.addPrincipal('svc/host')
  })
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close()
    await kdc.close()
  })

  it('a client synced before the step logs in and gets service tickets again right after it', async () => {
    const c = client()
    const before = await syncTime(c)
    expect(before.offsetMs).to.be.closeTo(HOUR, 2000)
    await c.login('admin', ADMIN_PASSWORD)
    // NTP corrects the host clock: one step back of 1 h.
    hostOffset = 0
    const tgt = await c.login('admin', ADMIN_PASSWORD)
    expect(Math.abs(c.clockOffsetMs), 'the client follows the clock the AS judges by').to.be.below(2000)
    const st = await c.getServiceTicket(tgt, 'svc/host')
    expect(st.sname).to.deep.equal(['svc', 'host'])
  })

  it('a client that syncs after the step takes the exchanges’ clock, not the slewing time service', async () => {
    const c0 = client()
    await syncTime(c0) // the time service has served the fast clock
    hostOffset = 0
    const c = client()
    const s = await syncTime(c)
    expect(s.radiusMs, 'the time service says how far it is from the host clock').to.be.greaterThan(HOUR / 2)
    expect(s.source).to.equal('exchange')
    expect(Math.abs(s.offsetMs)).to.be.below(2000)
    const tgt = await c.login('admin', ADMIN_PASSWORD)
    await c.getServiceTicket(tgt, 'svc/host')
  })

  it('keeps the time service’s offset while it agrees with the exchanges', async () => {
    const c = client()
    const s = await syncTime(c)
    expect(s.source).to.equal('time')
    expect(s.offsetMs).to.be.closeTo(HOUR, 2000)
    await c.login('admin', ADMIN_PASSWORD)
  })
})
