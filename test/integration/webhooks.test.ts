/**
 * Webhooks (issue 12) over the real daemon on an on-disk realm, received by
 * docs/examples/webhook-receiver.ts: every event arrives signed, at least once, in order,
 * also when the receiver is down for a while and the KDC restarts in between; a body whose
 * signature does not verify is refused.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { createReceiver, type ReceivedEvent } from '../../docs/examples/webhook-receiver.js'
import { adminService } from '../../src/admin/listener.js'
import { startKdc } from '../../src/admin/start.js'
import { signWebhookBody, type WebhookOutbox } from '../../src/admin/webhooks.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { randomBytes } from '../../src/crypto/index.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { initRealmDir } from '../../src/kdc/realm.js'
import { ADMIN_PASSWORD, FAST_CONFIG, REALM } from '../helpers/kdc-helpers.js'

const PORTS = { as: 0, tgs: 0, time: 0, admin: 0 }

async function until(cond: () => boolean, what: string, tries = 300): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (cond()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`gave up waiting for ${what}`)
}

describe('webhooks (integration)', function () {
  this.timeout(60_000)
  let tmp: string
  let dir: string
  let kdc: RunningKdc | undefined
  let outbox: WebhookOutbox | undefined
  let front: http.Server
  let url: string
  /** Whether the receiver takes requests (else the front answers 503, as a receiver that is down). */
  let up = true
  const received: ReceivedEvent[] = []
  const posts: number[] = []
  const refused: string[] = []
  let receiver: http.Server

  async function start(): Promise<{ kc: KdcClient; admin: AdminClient }> {
    kdc = await startKdc({
      dir,
      config: { ...FAST_CONFIG, ports: PORTS, webhooks: [{ url, maxAttempts: 1000 }] },
      log: false,
      admin: adminService({ webhookBackoff: { backoffMs: 20, maxBackoffMs: 200 }, onWebhooks: (w) => (outbox = w) }),
    })
    const kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    return { kc, admin: await AdminClient.login(kc, 'admin', ADMIN_PASSWORD) }
  }

  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'tessera-webhooks-'))
    dir = path.join(tmp, 'realm')
    // The realm file clients get: its signingKey is what the receiver verifies with.
    const rf = await initRealmDir({ dir, realm: REALM, adminPassword: ADMIN_PASSWORD, config: resolveKdcConfig({ ...FAST_CONFIG, ports: PORTS }) })
    // The example receiver behind a front that can play "down" (503) and counts every POST.
    receiver = createReceiver({
      publicKey: rf.signingKey,
      realm: REALM,
      onEvent: (e) => received.push(e),
      onRefused: (why) => refused.push(why),
    })
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r))
    const inner = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`
    front = http.createServer((req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        const body = Buffer.concat(chunks)
        try {
          posts.push((JSON.parse(body.toString()) as { seq: number }).seq)
        } catch {
          posts.push(-1)
        }
        if (!up) return void res.writeHead(503).end()
        const fwd = http.request(`${inner}${req.url}`, { method: 'POST', headers: req.headers }, (r) => {
          res.writeHead(r.statusCode ?? 502)
          r.pipe(res)
        })
        fwd.end(body)
      })
    })
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(front.address() as AddressInfo).port}/tessera`
  })
  after(async () => {
    await kdc?.close()
    await new Promise((r) => front?.close(r))
    await new Promise((r) => receiver?.close(r))
    await rm(tmp, { recursive: true, force: true })
  })

  it('delivers every event at least once, in order and signed, across a receiver outage and a KDC restart', async () => {
    let { kc, admin } = await start()
    await admin.call('addprinc', { name: 'HTTP/w1.example.test', randkey: true })
    await admin.call('rotate', { name: 'HTTP/w1.example.test', stageAhead: 60_000 })
    await until(() => received.length >= 2, 'the first two events')
    // The receiver goes down; events keep happening (the admin operations do not wait for it).
    up = false
    await admin.call('addprinc', { name: 'HTTP/w2.example.test', randkey: true })
    await admin.call('cpw', { name: 'HTTP/w2.example.test', randkey: true })
    await until(() => posts.filter((s) => s === 3).length >= 2, 'retries of event 3')
    expect(outbox!.stats().total.failures).to.be.greaterThan(0)
    // The KDC stops with events 3 and 4 undelivered, and starts again.
    kc.close()
    await kdc!.close()
    kdc = undefined
    ;({ kc, admin } = await start())
    await admin.call('delprinc', { name: 'HTTP/w2.example.test' })
    up = true
    await until(() => received.length >= 5, 'every event')
    kc.close()
    // The receiver dedups on seq: exactly the five events, in order; the KDC sent some more than once.
    expect(received.map((e) => [e.seq, e.event.type, e.event.principal])).to.deep.equal([
      [1, 'created', `HTTP/w1.example.test@${REALM}`],
      [2, 'staged', `HTTP/w1.example.test@${REALM}`],
      [3, 'created', `HTTP/w2.example.test@${REALM}`],
      [4, 'changed', `HTTP/w2.example.test@${REALM}`],
      [5, 'deleted', `HTTP/w2.example.test@${REALM}`],
    ])
    expect(new Set(posts)).to.deep.equal(new Set([1, 2, 3, 4, 5]))
    expect(refused).to.deep.equal([])
  })

  it('the receiver refuses a body whose signature does not verify (altered body, another key, none)', async () => {
    const body = Buffer.from(JSON.stringify({ v: 1, realm: REALM, seq: 99, event: { seq: 99, type: 'deleted', principal: `x@${REALM}`, time: 1, actor: 'me' } }))
    const post = (b: Buffer, sig?: string) =>
      new Promise<number>((resolve, reject) => {
        const headers: Record<string, string> = { 'content-type': 'application/json' }
        if (sig !== undefined) headers['tessera-signature'] = sig
        const r = http.request(url, { method: 'POST', headers }, (res) => {
          res.resume()
          resolve(res.statusCode ?? 0)
        })
        r.on('error', reject)
        r.end(b)
      })
    refused.length = 0
    const realmKey = kdc!.context.realm.signingKey.secretKey
    // A body changed after signing (one digit of the sequence number).
    const altered = Buffer.from(body.toString().replace('"seq":99', '"seq":98'))
    expect(await post(altered, signWebhookBody(body, realmKey))).to.equal(401)
    expect(await post(body, signWebhookBody(body, randomBytes(32)))).to.equal(401)
    expect(await post(body)).to.equal(401)
    expect(refused).to.deep.equal(['bad signature', 'bad signature', 'bad signature'])
    expect(received.map((e) => e.seq)).to.not.include.members([98, 99])
    // The same body with the realm's signature is taken.
    expect(await post(body, signWebhookBody(body, realmKey))).to.equal(204)
    expect(received.map((e) => e.seq)).to.include(99)
  })
})
