/** Transport resumption through KdcClient against a real in-memory KDC (PROTOCOL.md §3.6). */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { randomBytes } from '../../src/crypto/index.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { type RunningKdc, startKdc } from '../../src/kdc/kdc.js'
import { initRealmDir } from '../../src/kdc/realm.js'
import type { SecurityEvent } from '../../src/log/logger.js'
import { decodeMessage } from '../../src/wire/channel.js'
import { connectAndRequest } from '../../src/wire/client.js'
import { ResumptionStore } from '../../src/wire/resumption.js'
import { closedPort, startTestKdc, type TestKdc, withKdcs } from '../helpers/kdc-helpers.js'
import { framesOf, startRecordingProxy } from '../helpers/wire-raw.js'
import { waitFor } from '../helpers/wire-server.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const SERVICE = 'HTTP/www.example.test'

describe('transport resumption (integration)', function () {
  this.timeout(20000)
  useProcessGuards()
  let t: TestKdc | undefined
  afterEach(async () => {
    await t?.close()
    t = undefined
  })

  it('a client that reconnects resumes: no second full handshake, tickets still issued', async () => {
    t = await startTestKdc()
    await t.kdc.addPrincipal(SERVICE)
    await t.kdc.addPrincipal('alice', { password: 'pw-alice' })
    const store = new ResumptionStore()
    const first = t.client({ resumption: store })
    const tgt = await first.login('alice', 'pw-alice')
    expect(store.size, 'a ticket from the AS listener').to.equal(1)
    first.close()
    // A new client (a new process, say) sharing the store: its connections resume.
    const second = t.client({ resumption: store })
    const st = await second.getServiceTicket(tgt, SERVICE)
    expect(st.sname).to.deep.equal(['HTTP', 'www.example.test'])
    expect(store.resumed, 'TGS connection: first contact, full handshake').to.equal(0)
    second.close()
    const third = t.client({ resumption: store })
    await third.getServiceTicket(tgt, SERVICE)
    await third.login('alice', 'pw-alice')
    expect(store.resumed, 'TGS and AS connections resumed').to.equal(2)
    expect(store.refused).to.equal(0)
  })

  it('a KdcClient reconnecting with a ticket sends its request in the first flight (early data), one frame each way', async () => {
    t = await startTestKdc()
    await t.kdc.addPrincipal(SERVICE)
    await t.kdc.addPrincipal('alice', { password: 'pw-alice' })
    const a = t.kdc.addresses
    const asProxy = await startRecordingProxy(a.as.port)
    const tgsProxy = await startRecordingProxy(a.tgs.port)
    try {
      const realm = withKdcs(t.kdc.realmFile, [{ host: '127.0.0.1', as: asProxy.port, tgs: tgsProxy.port, time: a.time.port, admin: a.admin.port }])
      const store = new ResumptionStore()
      const c1 = t.client({ resumption: store }, realm)
      const tgt = await c1.login('alice', 'pw-alice')
      await c1.getServiceTicket(tgt, SERVICE)
      c1.close()
      // A second client process (same store): both connections resume, the request inside.
      const c2 = t.client({ resumption: store }, realm)
      await c2.getServiceTicket(tgt, SERVICE)
      await c2.login('alice', 'pw-alice')
      c2.close()
      // TGS: one request. AS: a password login asks twice (PREAUTH_REQUIRED tells the salt),
      // the second request sealed on the resumed channel.
      for (const [name, proxy, requests] of [
        ['tgs', tgsProxy, 1],
        ['as', asProxy, 2],
      ] as const) {
        await waitFor(() => proxy.connections.length === 2 && framesOf(proxy.connections[1]!.s2c).length > requests)
        const second = proxy.connections[1]!
        const sent = framesOf(second.c2s)
        const hello = decodeMessage(sent[0]!)
        expect(hello.t, name).to.equal(MsgType.HS_RESUME)
        expect((hello as { x?: Uint8Array }).x, `${name}: the request travels as early data`).to.be.instanceOf(Uint8Array)
        expect(sent, `${name}: no request besides the early one but the login's second`).to.have.length(requests)
        const got = framesOf(second.s2c)
        expect(decodeMessage(got[0]!).t, name).to.equal(MsgType.HS_RESUMED)
        expect(got, `${name}: HS_RESUMED and the sealed replies`).to.have.length(1 + requests)
      }
      expect(store.resumed).to.equal(2)
    } finally {
      await asProxy.close()
      await tgsProxy.close()
    }
  })

  it('fails over from a KDC that holds our ticket but is down, with no unhandled rejection', async () => {
    t = await startTestKdc()
    await t.kdc.addPrincipal('alice', { password: 'pw-alice' })
    const dead = await closedPort()
    const live = t.kdc.addresses
    const realm = withKdcs(t.kdc.realmFile, [
      { host: '127.0.0.1', as: dead, tgs: dead, time: dead, admin: dead },
      { host: '127.0.0.1', as: live.as.port, tgs: live.tgs.port, time: live.time.port, admin: live.admin.port },
    ])
    const store = new ResumptionStore()
    // A ticket for the dead address (as if that KDC had served us before it went away).
    store.set(ResumptionStore.id('127.0.0.1', dead, realm.transportKey), randomBytes(84), randomBytes(32), 600)
    const c = t.client({ resumption: store }, realm)
    const tgt = await c.login('alice', 'pw-alice')
    expect(tgt.cname).to.deep.equal(['alice'])
    c.close()
  })

  it('after a KDC restart the old tickets are refused; the client does a full handshake and is answered once', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tessera-resume-'))
    const kdcs: RunningKdc[] = []
    try {
      await initRealmDir({ dir, realm: 'RESUME.TEST', adminPassword: 'admin-pw-1234', config: resolveKdcConfig({ kdf: { N: 1024 } }) })
      const sink: SecurityEvent[] = []
      const start = async (asPort: number) => {
        const k = await startKdc({ dir, securitySink: sink, config: { host: '127.0.0.1', ports: { as: asPort, tgs: 0, time: 0, admin: 0 }, log: { console: false } } })
        kdcs.push(k)
        return k
      }
      const k1 = await start(0)
      const port = k1.addresses.as.port
      const store = new ResumptionStore()
      const c1 = new KdcClient(k1.realmFile, { resumption: store })
      await c1.login('admin', 'admin-pw-1234')
      c1.close()
      expect(store.size).to.equal(1)
      await k1.close()
      // Same realm keys, same port, a new process state: the ticket key died with k1.
      sink.length = 0
      const k2 = await start(port)
      const c2 = new KdcClient(k2.realmFile, { resumption: store })
      const tgt = await c2.login('admin', 'admin-pw-1234')
      c2.close()
      expect(tgt.cname).to.deep.equal(['admin'])
      expect(sink.filter((e) => e.event.startsWith('as')).map((e) => e.outcome), 'one AS exchange, not two').to.deep.equal(['ok'])
      expect(store.refused, 'the old ticket was refused').to.equal(1)
      expect(store.resumed).to.equal(0)
      expect(store.size, 'and replaced by a ticket from the new process').to.equal(1)
      const c3 = new KdcClient(k2.realmFile, { resumption: store })
      await c3.login('admin', 'admin-pw-1234')
      c3.close()
      expect(store.resumed, 'the new ticket works').to.equal(1)
    } finally {
      for (const k of kdcs) await k.close()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('resumption can be turned off on the KDC: HS_RESUME is refused and clients do full handshakes', async () => {
    t = await startTestKdc({ config: { resumption: { enabled: false } } })
    await t.kdc.addPrincipal('alice', { password: 'pw-alice' })
    const store = new ResumptionStore()
    const c = t.client({ resumption: store })
    await c.login('alice', 'pw-alice')
    expect(store.size, 'no ticket offered').to.equal(0)
    // Present a made-up ticket anyway: refused in clear, then a full handshake.
    const a = t.kdc.addresses.time
    const id = ResumptionStore.id(a.host, a.port, t.kdc.realmFile.transportKey)
    store.set(id, randomBytes(84), randomBytes(32), 3600)
    const { channel, reply } = await connectAndRequest(
      { host: a.host, port: a.port, serverKey: t.kdc.realmFile.transportKey, resumption: store },
      { v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce: randomBytes(32) },
    )
    channel.close()
    expect(reply.t).to.equal(MsgType.TIME_REP)
    expect(store.refused).to.equal(1)
    expect(channel.resumed).to.equal(false)
  })
})
