/** KdcClient failover over realmFile.kdcs, timeouts, abort, and connection reuse, against a real KDC. */
import { expect } from 'chai'
import { KdcClient } from '../../src/client/kdc-client.js'
import { TesseraErrorCode } from '../../src/errors.js'
import type { KdcAddress } from '../../src/krb/realm-file.js'
import {
  ADMIN_PASSWORD,
  allPorts,
  BlackHole,
  closedPort,
  CountingProxy,
  expectTessera,
  useTestKdc,
  withKdcs,
} from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const SERVICE = 'HTTP/www.example.test'

describe('KdcClient failover (integration)', function () {
  this.timeout(20000)
  useProcessGuards()
  const t = useTestKdc()
  const cleanup: (() => Promise<void> | void)[] = []
  let real: KdcAddress

  before(async () => {
    await t.kdc.addPrincipal(SERVICE)
    real = t.kdc.realmFile.kdcs[0]!
  })
  afterEach(async () => {
    for (const fn of cleanup.splice(0).reverse()) await fn()
  })

  const client = (kdcs: KdcAddress[], opts: ConstructorParameters<typeof KdcClient>[1] = {}) => {
    const c = new KdcClient(withKdcs(t.kdc.realmFile, kdcs), opts)
    cleanup.push(() => c.close())
    return c
  }
  const blackHole = async () => {
    const b = await new BlackHole().listen()
    cleanup.push(() => b.close())
    return b
  }

  it('skips a KDC whose port is closed and logs in at the next one', async () => {
    const dead = await closedPort()
    const c = client([allPorts(dead), real])
    const start = performance.now()
    const tgt = await c.login('admin', ADMIN_PASSWORD)
    expect(tgt.cname).to.deep.equal(['admin'])
    const st = await c.getServiceTicket(tgt, SERVICE)
    expect(st.sname).to.deep.equal(SERVICE.split('/'))
    expect(performance.now() - start).to.be.below(2000)
  })

  it('fails over from a black hole after connectTimeoutMs', async () => {
    const hole = await blackHole()
    const c = client([allPorts(hole.port), real], { connectTimeoutMs: 300 })
    const start = performance.now()
    const tgt = await c.login('admin', ADMIN_PASSWORD)
    const ms = performance.now() - start
    expect(tgt.cname).to.deep.equal(['admin'])
    expect(hole.accepted, 'the black hole was tried first').to.be.at.least(1)
    expect(ms, 'waited for the connect timeout').to.be.at.least(290)
    expect(ms, 'but not much longer').to.be.below(3000)
  })

  it('tries a KDC that just timed out last on the next calls', async () => {
    const hole = await blackHole()
    const c = client([allPorts(hole.port), real], { connectTimeoutMs: 300 })
    const t0 = performance.now()
    const tgt = await c.login('admin', ADMIN_PASSWORD) // both AS round trips
    const loginMs = performance.now() - t0
    expect(loginMs, 'one connect timeout, not one per round trip').to.be.within(290, 590)
    const t1 = performance.now()
    await c.login('admin', ADMIN_PASSWORD)
    expect(performance.now() - t1, 'second login goes straight to the live KDC').to.be.below(250)
    await c.getServiceTicket(tgt, SERVICE) // the TGS port of the black hole is tried once
    const t2 = performance.now()
    await c.getServiceTicket(tgt, SERVICE)
    expect(performance.now() - t2).to.be.below(250)
  })

  it('fails with TESSERA_NETWORK quickly when no KDC is reachable', async () => {
    const c = client([allPorts(await closedPort()), allPorts(await closedPort())])
    const start = performance.now()
    const err = await expectTessera(c.login('admin', ADMIN_PASSWORD), TesseraErrorCode.TESSERA_NETWORK)
    expect(performance.now() - start).to.be.below(1000)
    expect(err.message).to.include(t.kdc.realm)
  })

  it('fails with TESSERA_NETWORK after trying every black hole in turn', async () => {
    const [a, b] = [await blackHole(), await blackHole()]
    const c = client([allPorts(a.port), allPorts(b.port)], { connectTimeoutMs: 200 })
    const start = performance.now()
    await expectTessera(c.login('admin', ADMIN_PASSWORD), TesseraErrorCode.TESSERA_NETWORK)
    const ms = performance.now() - start
    expect(a.accepted).to.be.at.least(1)
    expect(b.accepted).to.be.at.least(1)
    expect(ms).to.be.at.least(390)
    expect(ms).to.be.below(3000)
  })

  it('aborts a call with TESSERA_ABORTED when its signal fires', async () => {
    const hole = await blackHole()
    const c = client([allPorts(hole.port), real], { connectTimeoutMs: 5000 })
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 100)
    const start = performance.now()
    await expectTessera(c.login('admin', ADMIN_PASSWORD, { signal: ac.signal }), TesseraErrorCode.TESSERA_ABORTED)
    expect(performance.now() - start).to.be.below(1500)
  })

  it('rejects at once with TESSERA_ABORTED when the signal is already aborted', async () => {
    const c = client([real])
    await expectTessera(c.login('admin', ADMIN_PASSWORD, { signal: AbortSignal.abort() }), TesseraErrorCode.TESSERA_ABORTED)
  })

  it('aborts a TGS call too, and stays usable afterwards', async () => {
    const c = client([real])
    const tgt = await c.login('admin', ADMIN_PASSWORD)
    await expectTessera(c.getServiceTicket(tgt, SERVICE, { signal: AbortSignal.abort() }), TesseraErrorCode.TESSERA_ABORTED)
    const st = await c.getServiceTicket(tgt, SERVICE)
    expect(st.cname).to.deep.equal(['admin'])
  })

  it('times out with TESSERA_TIMEOUT when the whole call outlasts timeoutMs', async () => {
    const hole = await blackHole()
    const c = client([allPorts(hole.port)], { connectTimeoutMs: 5000, timeoutMs: 300 })
    const start = performance.now()
    await expectTessera(c.login('admin', ADMIN_PASSWORD), TesseraErrorCode.TESSERA_TIMEOUT)
    expect(performance.now() - start).to.be.below(2000)
  })

  it('reuses one connection per listener across calls', async () => {
    const as = await new CountingProxy(real.as).listen()
    const tgs = await new CountingProxy(real.tgs).listen()
    cleanup.push(() => as.close(), () => tgs.close())
    const c = client([{ ...real, as: as.port, tgs: tgs.port }])
    const tgt = await c.login('admin', ADMIN_PASSWORD) // two AS round trips (PREAUTH_REQUIRED first)
    await c.getServiceTicket(tgt, SERVICE)
    await c.getServiceTicket(tgt, SERVICE)
    await c.login('admin', ADMIN_PASSWORD)
    expect(as.accepted, 'AS connections').to.equal(1)
    expect(tgs.accepted, 'TGS connections').to.equal(1)
  })

  it('shares one connection among concurrent calls', async () => {
    const tgs = await new CountingProxy(real.tgs).listen()
    cleanup.push(() => tgs.close())
    const c = client([{ ...real, tgs: tgs.port }])
    const tgt = await c.login('admin', ADMIN_PASSWORD)
    const sts = await Promise.all(Array.from({ length: 8 }, () => c.getServiceTicket(tgt, SERVICE)))
    expect(sts).to.have.length(8)
    expect(tgs.accepted).to.equal(1)
  })

  it('reconnects once when the reused connection was closed by the server side', async () => {
    const tgs = await new CountingProxy(real.tgs).listen()
    cleanup.push(() => tgs.close())
    const c = client([{ ...real, tgs: tgs.port }])
    const tgt = await c.login('admin', ADMIN_PASSWORD)
    await c.getServiceTicket(tgt, SERVICE)
    for (const s of tgs.sockets) s.destroy()
    await new Promise((r) => setTimeout(r, 50))
    await c.getServiceTicket(tgt, SERVICE)
    expect(tgs.accepted).to.equal(2)
  })

  it('refuses calls after close() with TESSERA_CHANNEL_CLOSED', async () => {
    const c = client([real])
    c.close()
    await expectTessera(c.login('admin', ADMIN_PASSWORD), TesseraErrorCode.TESSERA_CHANNEL_CLOSED)
  })
})
