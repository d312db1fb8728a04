/**
 * Webhook delivery on /metrics: delivered, failed attempts and the outbox depth per webhook,
 * labelled by the webhook's index in the config (never its URL), scraped from the real
 * daemon's ops listener while one receiver is down and then back.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { expect } from 'chai'
import { adminService } from '../../src/admin/listener.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { FAST_CONFIG } from '../helpers/kdc-helpers.js'
import { opsRequest, scrape } from '../helpers/ops-http.js'
import type { PromText } from '../helpers/prom-text.js'

/** Scrape until `cond` holds (bounded: at most `tries` scrapes, 50 ms apart); the last scrape. */
async function scrapeUntil(port: number, cond: (m: PromText) => boolean, what: string, tries = 200): Promise<PromText> {
  for (let i = 0; i < tries; i++) {
    const m = await scrape(port)
    if (cond(m)) return m
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`gave up waiting for ${what}`)
}

describe('webhook metrics (integration)', function () {
  this.timeout(60_000)
  let kdc: RunningKdc | undefined
  const servers: http.Server[] = []
  let down = true

  /** A receiver that answers 503 while `isDown()` says so, else 200. */
  async function receiver(isDown: () => boolean): Promise<string> {
    const s = http.createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        res.statusCode = isDown() ? 503 : 200
        res.end()
      })
    })
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    servers.push(s)
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}/hook?token=s3cret-in-url`
  }

  after(async () => {
    await kdc?.close()
    for (const s of servers) await new Promise((r) => s.close(r))
  })

  it('counts delivered events, failed attempts and the queue of each webhook, without its URL', async () => {
    const flaky = await receiver(() => down)
    const steady = await receiver(() => false)
    kdc = await startKdc({
      config: { ...FAST_CONFIG, http: { port: 0 }, webhooks: [{ url: flaky, maxAttempts: 1000 }, { url: steady }] },
      log: false,
      admin: adminService({ webhookBackoff: { backoffMs: 20, maxBackoffMs: 100 } }),
    })
    const port = kdc.opsAddress!.port
    const c = new KdcClient(kdc.realmFile)
    try {
      const admin = await AdminClient.login(c, 'admin', kdc.adminPassword!)
      for (const u of ['wm1', 'wm2', 'wm3']) await admin.call('addprinc', { name: u, password: "purple horse staple 7" })

      // Receiver 0 down: its events wait in the outbox and its attempts fail; receiver 1 has them all.
      const m1 = await scrapeUntil(
        port,
        (m) => (m.value('tessera_webhook_failed_attempts_total', { webhook: '0' }) ?? 0) >= 2 && (m.value('tessera_webhook_events_total', { webhook: '1', result: 'delivered' }) ?? 0) >= 3,
        'failed attempts on webhook 0 and deliveries on webhook 1',
      )
      expect(m1.families.get('tessera_webhook_events_total')?.type).to.equal('counter')
      expect(m1.families.get('tessera_webhook_queued_events')?.type).to.equal('gauge')
      expect(m1.value('tessera_webhook_events_total', { webhook: '0', result: 'delivered' })).to.equal(0)
      expect(m1.value('tessera_webhook_queued_events', { webhook: '0' })).to.be.at.least(3)
      expect(m1.value('tessera_webhook_failed_attempts_total', { webhook: '1' })).to.equal(0)
      expect(m1.value('tessera_webhook_events_total', { webhook: '1', result: 'dropped' })).to.equal(0)

      // Back up: the outbox drains, everything is delivered, nothing dropped.
      down = false
      const m2 = await scrapeUntil(port, (m) => m.value('tessera_webhook_queued_events', { webhook: '0' }) === 0, 'the outbox of webhook 0 to drain')
      expect(m2.value('tessera_webhook_events_total', { webhook: '0', result: 'delivered' })).to.be.at.least(3)
      expect(m2.value('tessera_webhook_events_total', { webhook: '0', result: 'delivered' })).to.equal(
        m2.value('tessera_webhook_events_total', { webhook: '1', result: 'delivered' }),
      )
      expect(m2.value('tessera_webhook_events_total', { webhook: '0', result: 'dropped' })).to.equal(0)
      expect(m2.value('tessera_webhook_queued_events', { webhook: '1' })).to.equal(0)
      // Only the index names a webhook: no URL, host or token on /metrics.
      const text = (await opsRequest(port, '/metrics')).body
      expect(text).to.not.contain('s3cret-in-url')
      expect(text).to.not.contain('/hook')
      const labels = new Set(m2.families.get('tessera_webhook_events_total')!.samples.map((x) => x.labels.webhook))
      expect([...labels].sort()).to.deep.equal(['0', '1'])
    } finally {
      c.close()
    }
  })
})
