/** The HTTP ops listener of a real in-memory KDC: /metrics, /healthz, /readyz, and reload(). */
import { mkdtemp, readFile, rename, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { MsgType } from '../../proto/msg-types.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { startKdc } from '../../src/kdc/kdc.js'
import { ResumptionStore } from '../../src/wire/resumption.js'
import {
  ADMIN_PASSWORD,
  expectKrb,
  expectKrbError,
  expectTessera,
  expectType,
  FAST_CONFIG,
  REALM,
  startTestKdc,
  TestClock,
  type TestKdc,
  type TestKdcOptions,
  tgsReq,
} from '../helpers/kdc-helpers.js'
import { opsRequest, readyz, scrape } from '../helpers/ops-http.js'
import type { PromText } from '../helpers/prom-text.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const SERVICE = 'HTTP/www.example.test'
const HTTP_ON = { http: { port: 0 } }

/** A test KDC with its ops listener on (127.0.0.1, any free port), alice and a service. */
async function opsKdc(o: TestKdcOptions = {}): Promise<TestKdc & { port: number }> {
  const t = await startTestKdc({ ...o, config: { ...HTTP_ON, ...o.config } })
  await t.kdc.addPrincipal('alice', { password: 'pw-alice' })
  await t.kdc.addPrincipal(SERVICE)
  return Object.assign(t, { port: t.kdc.opsAddress!.port })
}

/** Scrape until `ok` holds (values computed in the background: census, principal count). */
async function scrapeUntil(port: number, ok: (m: PromText) => boolean, tries = 50): Promise<PromText> {
  for (let i = 0; ; i++) {
    const m = await scrape(port)
    if (ok(m) || i >= tries) return m
    await new Promise((r) => setTimeout(r, 20))
  }
}

const req = (listener: string, type: string, outcome: string) => ({ listener, type, outcome })

/** One named check of a /readyz body. */
function checkOf(body: Record<string, unknown>, name: string): { name: string; status: string; detail?: string } {
  const c = (body.checks as { name: string; status: string; detail?: string }[]).find((x) => x.name === name)
  if (!c) throw new Error(`no check ${name} in ${JSON.stringify(body)}`)
  return c
}

describe('ops listener (integration)', function () {
  this.timeout(20000)
  useProcessGuards()
  let t: (TestKdc & { port?: number }) | undefined
  afterEach(async () => {
    await t?.close()
    t = undefined
  })

  it('is off by default: no ops address and no metrics', async () => {
    t = await startTestKdc()
    expect(t.kdc.opsAddress).to.equal(undefined)
    expect(t.kdc.metrics).to.equal(undefined)
    expect(t.kdc.context.metrics).to.equal(undefined)
  })

  it('binds 127.0.0.1 on a port of its own and answers /healthz', async () => {
    t = await opsKdc()
    const a = t.kdc.opsAddress!
    expect(a.host).to.equal('127.0.0.1')
    expect(Object.values(t.kdc.addresses).map((x) => x.port)).to.not.include(a.port)
    const r = await opsRequest(a.port, '/healthz')
    expect(r.status).to.equal(200)
    expect(JSON.parse(r.body)).to.deep.equal({ status: 'UP', checks: [] })
    expect(r.headers['cache-control']).to.equal('no-store')
  })

  it('is read-only: every method but GET and HEAD gets 405 with Allow, an unknown path 404', async () => {
    t = await opsKdc()
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      const r = await opsRequest(t.port!, '/metrics', method)
      expect(r.status, method).to.equal(405)
      expect(r.headers.allow).to.equal('GET, HEAD')
    }
    expect((await opsRequest(t.port!, '/admin')).status).to.equal(404)
    const head = await opsRequest(t.port!, '/readyz', 'HEAD')
    expect(head.status).to.equal(200)
    expect(head.body).to.equal('')
  })

  it('serves /metrics as strict Prometheus text: tessera_ families, process defaults, no principal name in any label', async () => {
    t = await opsKdc()
    const c = t.client()
    const tgt = await c.login('alice', 'pw-alice')
    await c.getServiceTicket(tgt, SERVICE)
    await expectKrb(t.client().login('alice', 'wrong'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    const r = await opsRequest(t.port!, '/metrics')
    expect(r.headers['content-type']).to.match(/^text\/plain; version=0\.0\.4/)
    const m = await scrape(t.port!)
    const names = [...m.families.keys()]
    for (const n of [
      'tessera_requests_total',
      'tessera_request_duration_seconds',
      'tessera_preauth_failures_total',
      'tessera_lockouts_total',
      'tessera_connections_open',
      'tessera_connections_accepted_total',
      'tessera_connections_refused_total',
      'tessera_handshakes_total',
      'tessera_resumptions_refused_total',
      'tessera_replay_cache_entries',
      'tessera_replay_cache_fill_ratio',
      'tessera_time_radius_seconds',
      'tessera_time_offset_seconds',
      'tessera_principals',
      'tessera_principal_cache_hit_ratio',
      'tessera_admin_operations_total',
      'tessera_krbtgt_key_age_seconds',
      'tessera_service_key_oldest_age_seconds',
      'process_cpu_seconds_total',
      'nodejs_heap_size_used_bytes',
    ])
      expect(names, n).to.include(n)
    for (const n of names) expect(n, 'prefix').to.match(/^(tessera_|process_|nodejs_)/)
    for (const f of m.families.values()) {
      if (f.type === 'counter') expect(f.name, 'counters end in _total').to.match(/_total$/)
      for (const s of f.samples)
        for (const v of Object.values(s.labels)) expect(v, `${s.name} label`).to.not.match(/alice|www\.example|admin@|EXAMPLE\.TEST/)
    }
    expect(m.value('tessera_time_radius_seconds')).to.be.greaterThan(0)
  })

  it('counts a login, a failed login and a TGS request by listener, type and outcome, and times each exchange', async () => {
    t = await opsKdc()
    const before = await scrape(t.port!)
    const c = t.client()
    const tgt = await c.login('alice', 'pw-alice')
    const mid = await scrape(t.port!)
    expect(mid.sum('tessera_requests_total', req('as', 'AS_REQ', 'OK')) - before.sum('tessera_requests_total', req('as', 'AS_REQ', 'OK'))).to.equal(1)
    await expectKrb(t.client().login('alice', 'wrong'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    await c.getServiceTicket(tgt, SERVICE)
    const after = await scrape(t.port!)
    const delta = (name: string, labels: Record<string, string> = {}) => after.sum(name, labels) - before.sum(name, labels)
    expect(delta('tessera_requests_total', req('as', 'AS_REQ', 'OK'))).to.equal(1)
    expect(delta('tessera_requests_total', req('as', 'AS_REQ', 'KDC_ERR_PREAUTH_FAILED'))).to.equal(1)
    expect(delta('tessera_preauth_failures_total')).to.equal(1)
    expect(delta('tessera_requests_total', req('tgs', 'TGS_REQ', 'OK'))).to.equal(1)
    // Every answered request is in its exchange's histogram.
    expect(after.value('tessera_request_duration_seconds_count', { exchange: 'tgs' })).to.equal(
      after.sum('tessera_requests_total', { listener: 'tgs' }),
    )
    expect(after.value('tessera_request_duration_seconds_count', { exchange: 'as' })).to.equal(
      after.sum('tessera_requests_total', { listener: 'as' }),
    )
    // The failed login waited for the pre-auth floor: the AS histogram saw at least that long.
    expect(after.value('tessera_request_duration_seconds_sum', { exchange: 'as' })).to.be.greaterThan(0.04)
    expect(delta('tessera_connections_accepted_total', { listener: 'tgs' })).to.be.greaterThan(0)
    expect(delta('tessera_handshakes_total', { listener: 'as', kind: 'full' })).to.be.greaterThan(0)
    expect(after.value('tessera_principal_cache_lookups_total', { result: 'hit' })).to.be.greaterThan(0)
  })

  it('counts a lockout once, and each refusal of the locked account', async () => {
    t = await opsKdc()
    await t.kdc.db.putPolicy({
      name: 'strict',
      maxFailures: 2,
      failureCountIntervalMs: 60000,
      lockoutDurationMs: 60000,
      minLength: 1,
      minClasses: 1,
      maxPasswordLifeMs: 0,
    })
    await t.kdc.addPrincipal('locky', { password: 'pw-locky', policy: 'strict' })
    const before = await scrape(t.port!)
    for (const pw of ['bad-1', 'bad-2']) await expectKrb(t.client().login('locky', pw), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    await expectKrb(t.client().login('locky', 'pw-locky'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    await expectKrb(t.client().login('locky', 'bad-3'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    const after = await scrape(t.port!)
    expect(after.sum('tessera_lockouts_total') - before.sum('tessera_lockouts_total')).to.equal(1)
    expect(after.sum('tessera_locked_refusals_total') - before.sum('tessera_locked_refusals_total')).to.equal(2)
    expect(after.sum('tessera_preauth_failures_total') - before.sum('tessera_preauth_failures_total')).to.equal(2)
    expect(after.sum('tessera_requests_total', req('as', 'AS_REQ', 'KDC_ERR_CLIENT_REVOKED'))).to.equal(2)
  })

  it('counts a replayed TGS request and shows the replay cache filling', async () => {
    t = await opsKdc()
    const tgt = await t.client().login('alice', 'pw-alice')
    const ch = await t.channel('tgs')
    const r = tgsReq(tgt, SERVICE.split('/'))
    expectType(await ch.request(r), MsgType.TGS_REP)
    const before = await scrape(t.port!)
    expectKrbError(await ch.request(r), ErrorCode.KRB_AP_ERR_REPEAT)
    const after = await scrape(t.port!)
    expect(after.sum('tessera_replays_total', { listener: 'tgs' }) - before.sum('tessera_replays_total', { listener: 'tgs' })).to.equal(1)
    expect(after.sum('tessera_requests_total', req('tgs', 'TGS_REQ', 'KRB_AP_ERR_REPEAT'))).to.equal(1)
    expect(after.value('tessera_replay_cache_entries')).to.be.at.least(1)
    expect(after.value('tessera_replay_cache_fill_ratio')).to.be.greaterThan(0)
  })

  it('counts a connection refused over maxConnectionsPerPeer, by reason', async () => {
    t = await opsKdc({ config: { limits: { maxConnectionsPerPeer: 1 } } })
    const port = t.kdc.addresses.as.port
    const first = net.connect({ host: '127.0.0.1', port })
    first.on('error', () => {})
    try {
      await scrapeUntil(t.port!, (m) => m.value('tessera_connections_open', { listener: 'as' }) === 1)
      const second = net.connect({ host: '127.0.0.1', port })
      second.on('error', () => {})
      second.resume()
      await new Promise((resolve) => second.once('close', resolve))
      const m = await scrape(t.port!)
      expect(m.value('tessera_connections_refused_total', { listener: 'as', reason: 'peer_limit' })).to.equal(1)
      expect(m.value('tessera_connections_refused_total', { listener: 'as', reason: 'busy' })).to.equal(0)
      expect(m.value('tessera_connections_open', { listener: 'as' })).to.equal(1)
      expect(m.value('tessera_connections_accepted_total', { listener: 'as' })).to.equal(1)
    } finally {
      first.destroy()
    }
  })

  it('counts resumed handshakes apart from full ones', async () => {
    t = await opsKdc()
    const store = new ResumptionStore()
    const first = t.client({ resumption: store })
    const tgt = await first.login('alice', 'pw-alice')
    first.close()
    const second = t.client({ resumption: store })
    await second.login('alice', 'pw-alice')
    await second.getServiceTicket(tgt, SERVICE)
    const m = await scrape(t.port!)
    expect(m.value('tessera_handshakes_total', { listener: 'as', kind: 'resumed' })).to.equal(1)
    expect(m.value('tessera_handshakes_total', { listener: 'as', kind: 'full' })).to.equal(1)
    expect(m.value('tessera_handshakes_total', { listener: 'tgs', kind: 'full' })).to.equal(1)
  })

  it('reports principals without scanning, and key ages as aggregates that follow the clock', async () => {
    const clock = new TestClock()
    t = await opsKdc({ now: clock.now })
    const m0 = await scrapeUntil(t.port!, (m) => !Number.isNaN(m.value('tessera_service_key_oldest_age_seconds') ?? Number.NaN))
    // krbtgt, kadmin/admin, kadmin/changepw, admin, alice, the service
    expect(m0.value('tessera_principals')).to.equal(6)
    await t.kdc.addPrincipal('bob', { password: 'pw-bob' })
    expect((await scrape(t.port!)).value('tessera_principals')).to.equal(7)
    clock.offset = 3600_000
    const m1 = await scrape(t.port!)
    expect(m1.value('tessera_krbtgt_key_age_seconds')).to.be.within(3600, 3660)
    expect(m1.value('tessera_service_key_oldest_age_seconds')).to.be.within(3600, 3660)
    for (const f of m1.families.values())
      if (/key_age/.test(f.name)) for (const s of f.samples) expect(s.labels, `${f.name} has no per-principal label`).to.deep.equal({})
  })

  it('counts admin operations reported through the adminOp hook, with bounded labels', async () => {
    t = await opsKdc()
    const hook = t.kdc.context.metrics!
    hook.adminOp('add-principal', 'ok')
    hook.adminOp('add-principal', 'ok')
    hook.adminOp('delete-principal', 'TSR_ERR_NOT_AUTHORIZED')
    hook.adminOp('alice@EXAMPLE.TEST', 'ok')
    const m = await scrape(t.port!)
    expect(m.value('tessera_admin_operations_total', { op: 'add-principal', outcome: 'ok' })).to.equal(2)
    expect(m.value('tessera_admin_operations_total', { op: 'delete-principal', outcome: 'TSR_ERR_NOT_AUTHORIZED' })).to.equal(1)
    expect(m.value('tessera_admin_operations_total', { op: 'other', outcome: 'ok' })).to.equal(1)
  })

  describe('/readyz', () => {
    it('is 200 with every check ok, and the facts kdc status shows', async () => {
      t = await opsKdc()
      const r = await readyz(t.port!)
      expect(r.status).to.equal(200)
      expect(r.body.status).to.equal('UP')
      expect(r.body.failing).to.deep.equal([])
      expect(r.body.checks).to.deep.equal([
        { name: 'database', status: 'UP' },
        { name: 'listeners', status: 'UP' },
        { name: 'draining', status: 'UP' },
      ])
      expect(r.body.realm).to.equal(REALM)
      expect(r.body.version).to.match(/^\d+\.\d+\.\d+/)
      expect(r.body.uptimeS).to.be.a('number')
      expect((r.body.listeners as Record<string, { port: number }>).tgs!.port).to.equal(t.kdc.addresses.tgs.port)
    })

    it('turns 503 naming "draining" while close() waits for a request in flight', async () => {
      t = await opsKdc({ config: { preauthFailureFloorMs: 1500 } })
      const port = t.port!
      const failing = t.client().login('alice', 'wrong')
      failing.catch(() => {})
      // The failure is decided (and logged) at once, then answered after the floor.
      for (let i = 0; i < 100 && !t.sink.some((e) => e.event === 'as' && e.outcome === 'fail'); i++)
        await new Promise((r) => setTimeout(r, 10))
      const closing = t.kdc.close()
      const r = await readyz(port)
      expect(r.status).to.equal(503)
      expect(r.body.status).to.equal('DOWN')
      expect(r.body.failing).to.include('draining')
      expect(checkOf(r.body, 'draining')).to.deep.include({ status: 'DOWN' })
      expect(checkOf(r.body, 'draining').detail).to.match(/draining/)
      await closing
      await failing.catch(() => {})
    })

    it('turns 503 naming "database" once the database is closed', async () => {
      t = await opsKdc()
      await t.kdc.db.close()
      const r = await readyz(t.port!)
      expect(r.status).to.equal(503)
      expect(r.body.failing).to.deep.equal(['database'])
      expect(checkOf(r.body, 'database')).to.deep.equal({ name: 'database', status: 'DOWN', detail: 'closed' })
      expect(checkOf(r.body, 'listeners').status).to.equal('UP')
      // /healthz is liveness: the process still answers.
      expect((await opsRequest(t.port!, '/healthz')).status).to.equal(200)
    })
  })

  describe('reload()', () => {
    it('applies live settings, names those that need a restart, runs the reloaders and reports a failing one', async () => {
      t = await opsKdc()
      const seen: number[] = []
      t.kdc.onReload('acl', (c) => {
        seen.push(c.limits.maxConnectionsPerPeer)
      })
      const off = t.kdc.onReload('broken', () => {
        throw new Error('ACL file has a syntax error')
      })
      const report = await t.kdc.reload({
        ...FAST_CONFIG,
        ...HTTP_ON,
        log: { console: false, level: 'debug' },
        limits: { maxConnectionsPerPeer: 1 },
        replayCacheMaxEntries: 5000,
      })
      expect(report.applied).to.include.members(['limits', 'log.level'])
      expect(report.restartNeeded).to.deep.equal(['replayCacheMaxEntries'])
      expect(report.failed).to.deep.equal([{ name: 'broken', error: 'ACL file has a syntax error' }])
      expect(seen).to.deep.equal([1])
      expect(t.kdc.context.log.ops.level).to.equal('debug')
      expect(t.kdc.config.replayCacheMaxEntries).to.not.equal(5000)
      // The new per-peer cap is in force for new connections.
      const port = t.kdc.addresses.as.port
      const a = net.connect({ host: '127.0.0.1', port })
      a.on('error', () => {})
      try {
        await scrapeUntil(t.port!, (m) => m.value('tessera_connections_open', { listener: 'as' }) === 1)
        const b = net.connect({ host: '127.0.0.1', port })
        b.on('error', () => {})
        b.resume()
        await new Promise((resolve) => b.once('close', resolve))
        expect((await scrape(t.port!)).value('tessera_connections_refused_total', { listener: 'as', reason: 'peer_limit' })).to.equal(1)
      } finally {
        a.destroy()
      }
      off()
      expect((await t.kdc.reload()).failed).to.deep.equal([])
      expect(seen).to.deep.equal([1, 1])
    })

    it('refuses an invalid configuration with TESSERA_CONFIG and keeps the running one', async () => {
      t = await opsKdc()
      const before = JSON.stringify(t.kdc.config)
      await expectTessera(t.kdc.reload({ ...FAST_CONFIG, limits: { maxConnections: 0 } }), 'TESSERA_CONFIG')
      expect(JSON.stringify(t.kdc.config)).to.equal(before)
    })

    it('reopens the log files: after a rename, the next lines go to a new file at the old path', async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-ops-log-'))
      const kdc = await startKdc({
        realm: REALM,
        adminPassword: ADMIN_PASSWORD,
        config: { ...FAST_CONFIG, log: { console: false, dir } },
      })
      try {
        const c = new KdcClient(kdc.realmFile)
        try {
          await c.login('admin', ADMIN_PASSWORD)
          await new Promise((r) => setTimeout(r, 20))
          await rename(path.join(dir, 'security.log'), path.join(dir, 'security.log.1'))
          await rename(path.join(dir, 'kdc.log'), path.join(dir, 'kdc.log.1'))
          await kdc.reload()
          await expectKrb(c.login('admin', 'wrong'), ErrorCode.KDC_ERR_PREAUTH_FAILED)
        } finally {
          c.close()
        }
      } finally {
        await kdc.close()
      }
      const rotated = await readFile(path.join(dir, 'security.log.1'), 'utf8')
      const fresh = await readFile(path.join(dir, 'security.log'), 'utf8')
      expect(rotated).to.contain('"outcome":"ok"')
      expect(rotated, 'the rotated file gets nothing after the reopen').to.not.contain('"outcome":"fail"')
      expect(fresh).to.contain('"outcome":"fail"')
      expect(await readFile(path.join(dir, 'kdc.log'), 'utf8')).to.contain('kdc stopped')
      expect(await readFile(path.join(dir, 'kdc.log.1'), 'utf8')).to.contain('kdc started')
      await rm(dir, { recursive: true, force: true })
    })
  })
})
