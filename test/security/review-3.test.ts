/**
 * Security review 3: KdcClient sending its AS/TGS/time request as early data on a resumed
 * connection (openFor / openWithRequest), kauth keeping transport resumption tickets in the
 * credential cache (ResumptionStore export/import), the default cache path, and the nested
 * unknown-key check of the KDC config.
 *
 * Tests headed "Fixed (found in review 3)" failed on the code reviewed and describe the bug they caught.
 * The others pin properties the review verified and that were not tested yet.
 */
import { chmod, mkdtemp, open, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import type { Message } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { CredentialCache, defaultCcachePath } from '../../src/client/ccache.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { Exit } from '../../src/cli/common.js'
import { randomBytes } from '../../src/crypto/index.js'
import { TesseraError } from '../../src/errors.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import type { RealmFile } from '../../src/krb/realm-file.js'
import { type ChannelOptions, connectAndRequest, openWithRequest } from '../../src/wire/client.js'
import { encode } from '../../src/wire/codec.js'
import { ResumptionStore, type StoredTicket, TicketIssuer } from '../../src/wire/resumption.js'
import { fakeCreds } from '../helpers/cli-creds.js'
import { type CliKdc, closedPort, PASSWORDS, runKauth, startCliKdc } from '../helpers/cli-kdc.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { Cmd, rejectionOf, startTestServer, type TestServer, timeReq, waitFor } from '../helpers/wire-server.js'

function tagOf(reply: Message): number {
  expect(reply.t, `got t=${reply.t}`).to.equal(MsgType.TIME_REP)
  return reply.t === MsgType.TIME_REP ? reply.nonce[2]! : -1
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

describe('security review 3: KdcClient early data on shared connections', function () {
  this.timeout(20000)
  useProcessGuards()

  const cleanups: (() => unknown)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  async function resumingServer(): Promise<TestServer> {
    const issuer = new TicketIssuer({ windowMs: 60_000 })
    const ts = await startTestServer({ resumption: issuer, idleTimeoutMs: 10_000 })
    cleanups.push(() => issuer.close())
    cleanups.push(() => ts.close())
    return ts
  }
  function realmOf(ts: TestServer): RealmFile {
    const p = ts.port
    return {
      realm: 'REVIEW3.TEST',
      kdcs: [{ host: '127.0.0.1', as: p, tgs: p, time: p, admin: p }],
      transportKey: ts.key.publicKey,
      signingKey: randomBytes(32),
      maxClockSkewMs: 300_000,
    }
  }
  function client(ts: TestServer, store: ResumptionStore): KdcClient {
    const c = new KdcClient(realmOf(ts), { resumption: store, timeoutMs: 5000, connectTimeoutMs: 2000 })
    cleanups.push(() => c.close())
    return c
  }
  /** A store holding a ticket for ts (from a first client, closed since), so the next client's first connection resumes. */
  async function primedStore(ts: TestServer): Promise<ResumptionStore> {
    const store = new ResumptionStore()
    const c0 = new KdcClient(realmOf(ts), { resumption: store, timeoutMs: 5000 })
    try {
      tagOf(await c0.send('time', () => timeReq(Cmd.ECHO, 0, 0), AbortSignal.timeout(5000)))
    } finally {
      c0.close()
    }
    expect(store.size).to.equal(1)
    return store
  }
  const send = (c: KdcClient, msg: () => Message, signal: AbortSignal = AbortSignal.timeout(5000)) => c.send('time', msg, signal)

  it('two callers racing on one listener with a ticket: one resumed connection, each answered once with its own reply', async () => {
    const ts = await resumingServer()
    const store = await primedStore(ts)
    const before = ts.handled()
    const c = client(ts, store)
    let builtA = 0
    const a = send(c, () => {
      builtA++
      return timeReq(Cmd.SLOW, 10, 1)
    })
    const b = send(c, () => timeReq(Cmd.ECHO, 0, 2))
    const [ra, rb] = await Promise.all([a, b])
    expect(tagOf(ra)).to.equal(1)
    expect(tagOf(rb)).to.equal(2)
    expect(builtA, 'the early request is built once').to.equal(1)
    expect(ts.handled() - before, 'each request handled once').to.equal(2)
    expect(store.resumed, 'one resumed connection, shared').to.equal(1)
  })

  it('a refused ticket with a second caller waiting: the first request is rebuilt and sent once after the full handshake, replies go to their callers', async () => {
    const ts = await resumingServer()
    const store = await primedStore(ts)
    // Replace the ticket with one the server cannot open: it answers TSR_ERR_RESUME in clear.
    const id = ResumptionStore.id('127.0.0.1', ts.port, ts.key.publicKey)
    store.set(id, randomBytes(84), randomBytes(32), 600)
    const before = ts.handled()
    const c = client(ts, store)
    let builtA = 0
    const a = send(c, () => timeReq(Cmd.SLOW, 5, ++builtA === 1 ? 1 : 3))
    const b = send(c, () => timeReq(Cmd.ECHO, 0, 2))
    const [ra, rb] = await Promise.all([a, b])
    expect(tagOf(ra), 'the rebuilt request\'s answer').to.equal(3)
    expect(tagOf(rb)).to.equal(2)
    expect(store.refused).to.equal(1)
    expect(ts.handled() - before, 'the refused early request was not acted on').to.equal(2)
  })

  // Fixed (found in review 3): src/wire/client.ts attempt queues the early request's reply slot with
  // ch.expectReply(reqOpts), and expectReply (line 158) returns a rejection WITHOUT queueing a
  // slot when reqOpts.signal is already aborted. The server still answers the early request
  // as sealed frame 0. KdcClient shares the connection (openFor registers it in `channels`):
  // caller A aborts while the resumption handshake is in flight (raceSignal rejects A at
  // once), caller B joined the same connection and queues its request first, so B receives
  // A's reply, and B's own reply then arrives "unsolicited" and kills the channel.
  // Impact: a reply delivered to the wrong caller (A's AS_REP/TGS_REP/TIME_REP to B; B's
  // nonce check may turn it into a bad-reply error, a TIME_REP is taken as is), plus a
  // dropped shared connection. Fix: never skip the early slot — queue it without the
  // caller's signal (or shut the channel down) when the signal has already fired; also do not
  // send early data at all when reqOpts.signal is aborted before HS_RESUME is written.
  it('a caller aborting during the resumption handshake does not hand its early reply to the next caller on that connection', async () => {
    const ts = await resumingServer()
    const store = await primedStore(ts)
    const c = client(ts, store)
    const ac = new AbortController()
    const a = send(c, () => timeReq(Cmd.SLOW, 20, 1), ac.signal)
    const b = send(c, () => timeReq(Cmd.ECHO, 0, 2))
    ac.abort()
    expect((await rejectionOf(a)) as TesseraError).to.have.property('code', 'TESSERA_ABORTED')
    const rb = await b
    expect(tagOf(rb), 'B must get the answer to its own request, not A\'s').to.equal(2)
  })

  // Same cause as above, at the wire level: openWithRequest with an already-aborted
  // signal once sealed the request into HS_RESUME (the server acted on it) and queued no
  // slot for its reply, so the next request on the channel got it. Now nothing is sent.
  it('openWithRequest with an aborted signal neither sends the early request nor shifts the replies of the channel', async () => {
    const ts = await resumingServer()
    const store = new ResumptionStore()
    const opts: ChannelOptions = { host: '127.0.0.1', port: ts.port, serverKey: ts.key.publicKey, resumption: store }
    const first = await connectAndRequest(opts, timeReq(Cmd.ECHO, 0, 0), { timeoutMs: 2000 })
    first.channel.close()
    const before = ts.handled()
    const o = openWithRequest(opts, timeReq(Cmd.SLOW, 10, 1), { signal: AbortSignal.abort(), timeoutMs: 2000 })
    expect((await rejectionOf(o.reply)) as TesseraError).to.have.property('code', 'TESSERA_ABORTED')
    // Given up before anything was sent: no connection is opened at all.
    expect((await rejectionOf(o.channel)) as TesseraError).to.have.property('code', 'TESSERA_ABORTED')
    const { channel: ch, reply: r } = await connectAndRequest(opts, timeReq(Cmd.ECHO, 0, 2), { timeoutMs: 2000 })
    cleanups.push(() => ch.close())
    expect(tagOf(r), 'the answer to this request, not the aborted one').to.equal(2)
    expect(ts.handled() - before, 'the aborted request was not sent').to.equal(1)
  })

  // Fixed (found in review 3): src/client/kdc-client.ts send checks `this.closed` only on entry. With
  // early data the request is already on the wire when close() (line 526) closes the
  // connection being opened; the early reply then fails with TESSERA_CHANNEL_CLOSED, the
  // attempt loop (line 413) `continue`s, and openFor opens a NEW connection (registered in
  // the `channels` map close() has just cleared) and sends the request again.
  // Impact: after close() the request is handled twice by the KDC (the early copy was
  // acted on), the call succeeds instead of failing, and the closed client leaks a
  // connection nobody will close (keeps the process alive until the KDC's idle timeout).
  // Before this change the request was sent only after the handshake, so it went out once.
  // Fix: re-check `this.closed` in the attempt loop (before openFor and before a retry) and
  // throw TESSERA_CHANNEL_CLOSED "client is closed"; do not register channels once closed.
  it('close() while an early-data request is in flight: the request is not sent again and no connection outlives the client', async () => {
    const ts = await resumingServer()
    const store = await primedStore(ts)
    const before = ts.handled()
    const c = client(ts, store)
    const a = send(c, () => timeReq(Cmd.SLOW, 5, 1))
    c.close()
    const err = await rejectionOf(a).catch((e: unknown) => e)
    await sleep(150)
    expect(ts.handled() - before, 'the request is handled at most once').to.equal(1)
    expect(err, 'the call fails: the client was closed').to.be.instanceOf(TesseraError)
    expect((c as unknown as { channels: Map<string, unknown> }).channels.size, 'no connection registered after close').to.equal(0)
  })

  // Fixed (found in review 3): src/wire/client.ts — a request's signal aborting shuts the whole channel down
  // with that caller's ABORTED error, and every other request queued on the shared
  // connection is rejected with it. KdcClient.send (src/client/kdc-client.ts:413-415) only
  // retries CHANNEL_CLOSED and connect failures, so caller B, whose own signal never fired,
  // fails with "operation aborted". (Predates this change for requests sent after the
  // handshake; openFor now also hands the caller's signal to the early slot of a shared
  // connection.) Impact: one caller's AbortSignal/timeout fails unrelated concurrent
  // calls of the same client. Fix: reject the other pending requests with
  // TESSERA_CHANNEL_CLOSED (retryable) rather than the aborting caller's error, or let
  // send() treat an ABORTED it did not cause (its own signal not aborted) as a closed channel.
  it('one caller aborting does not fail another caller of the same client with "operation aborted"', async () => {
    const ts = await resumingServer()
    const store = await primedStore(ts)
    const c = client(ts, store)
    const ac = new AbortController()
    const a = send(c, () => timeReq(Cmd.SLOW, 30, 1), ac.signal)
    const b = send(c, () => timeReq(Cmd.ECHO, 0, 2))
    // A is being handled (1 request went to prime the store), B is queued behind it.
    await waitFor(() => ts.handled() >= 2)
    await sleep(30)
    ac.abort()
    await rejectionOf(a)
    const rb = await b.catch((e: unknown) => e)
    expect(rb instanceof Error ? `${(rb as TesseraError).code}: ${rb.message}` : tagOf(rb as Message)).to.equal(2)
  })

  it('a ticket for a KDC that refuses connections is no obstacle: the call fails over without an unhandled rejection, and a closed client refuses calls', async () => {
    const ts = await resumingServer()
    const store = await primedStore(ts)
    const t = store.get(ResumptionStore.id('127.0.0.1', ts.port, ts.key.publicKey))!
    const dead = await closedPort()
    store.set(ResumptionStore.id('127.0.0.1', dead, ts.key.publicKey), t.tk, t.rms, 600)
    const rf = realmOf(ts)
    rf.kdcs.unshift({ host: '127.0.0.1', as: dead, tgs: dead, time: dead, admin: dead })
    const c = new KdcClient(rf, { resumption: store, timeoutMs: 5000, connectTimeoutMs: 1000 })
    cleanups.push(() => c.close())
    expect(tagOf(await send(c, () => timeReq(Cmd.ECHO, 0, 7)))).to.equal(7)
    c.close()
    const err = await rejectionOf(send(c, () => timeReq()))
    expect(err).to.have.property('code', 'TESSERA_CHANNEL_CLOSED')
  })
})

describe('security review 3: resumption tickets in the credential cache', function () {
  this.timeout(20000)
  useProcessGuards()
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'tessera-review3-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  function stored(id: string, over: Partial<StoredTicket> = {}): StoredTicket {
    return { id, tk: randomBytes(84), rms: randomBytes(32), receivedAtMs: Date.now() - 1000, lifetimeS: 600, ...over }
  }

  /** A cache file written by hand (as an attacker or a bug would), mode `mode`. */
  async function writeRawCache(file: string, body: unknown, mode = 0o600): Promise<void> {
    const fh = await open(file, 'w', mode)
    try {
      await fh.write(Buffer.concat([Buffer.from('TSCC'), Buffer.from([1]), Buffer.from(encode(body))]))
    } finally {
      await fh.close()
    }
    await chmod(file, mode)
  }

  it('export/import keep a ticket\'s age across processes on the wall clock, and drop tickets from the future or past their life', () => {
    const wall = 1_800_000_000_000
    let mono = 5_000
    const a = new ResumptionStore(64, () => mono)
    a.set('k1', randomBytes(84), randomBytes(32), 600)
    mono += 30_000
    const out = a.export(wall)
    expect(out).to.have.length(1)
    expect(out[0]!.receivedAtMs).to.equal(wall - 30_000)
    const mono2 = 100
    const b = new ResumptionStore(64, () => mono2)
    b.import(out, wall + 10_000)
    expect(b.age(b.get('k1')!), 'age continues where it was, plus the time between').to.equal(40_000)
    // clock went back: the age would be negative
    const c = new ResumptionStore(64, () => mono2)
    c.import(out, wall - 60_000)
    expect(c.size).to.equal(0)
    // past its lifetime (minus the 1 s margin)
    c.import(out, out[0]!.receivedAtMs + 600_000)
    expect(c.size).to.equal(0)
    // the exported copies are independent of the store's secrets
    a.clear()
    expect(out[0]!.rms.some((x) => x !== 0), 'export copied rms, clear() wiped only the store').to.equal(true)
  })

  it('a cache whose resume list is malformed still loads: bad entries are dropped, good ones kept', async () => {
    const file = path.join(dir, 'cc')
    const tgt = fakeCreds()
    const cc = new CredentialCache(file)
    await cc.initialize(tgt)
    const raw = await cc.load()
    const good = stored('good')
    await writeRawCache(file, {
      crealm: raw!.crealm,
      cname: raw!.cname,
      entries: raw!.entries,
      resume: [
        good,
        'junk',
        null,
        { ...stored('short-rms'), rms: randomBytes(31) },
        { ...stored('tk-too-long'), tk: randomBytes(257) },
        { ...stored('no-id'), id: 5 },
        { ...stored('expired'), receivedAtMs: Date.now() - 700_000 },
        { ...stored('str-rms'), rms: 'x'.repeat(32) },
      ],
    })
    const got = await cc.load()
    expect(got!.entries).to.have.length(1)
    expect(got!.resume!.map((t) => t.id)).to.deep.equal(['good'])
    // Not a list at all: no tickets, no error.
    await writeRawCache(file, { crealm: raw!.crealm, cname: raw!.cname, entries: raw!.entries, resume: { a: 1 } })
    expect((await cc.load())!.resume).to.equal(undefined)
  })

  it('store() without tickets keeps the cache\'s tickets; with an empty list drops them', async () => {
    const file = path.join(dir, 'cc')
    const cc = new CredentialCache(file)
    await cc.initialize(fakeCreds(), [stored('a')])
    await cc.store(fakeCreds({ service: ['HTTP', 'x'] }))
    expect((await cc.load())!.resume!.map((t) => t.id)).to.deep.equal(['a'])
    await cc.store(fakeCreds({ service: ['HTTP', 'y'] }), [])
    expect((await cc.load())!.resume).to.equal(undefined)
  })

  it('the default cache path is ~/.cache/tessera/ccache without XDG_RUNTIME_DIR; its directory is made 0700 and the cache 0600', async () => {
    const home = path.join(dir, 'home')
    expect(defaultCcachePath({ HOME: home })).to.equal(path.join(home, '.cache', 'tessera', 'ccache'))
    expect(defaultCcachePath({ HOME: home, XDG_CACHE_HOME: path.join(dir, 'xdg') })).to.equal(path.join(dir, 'xdg', 'tessera', 'ccache'))
    expect(defaultCcachePath({ HOME: home, XDG_RUNTIME_DIR: '/run/user/1' })).to.equal('/run/user/1/tessera_ccache')
    const file = defaultCcachePath({ HOME: home })
    const cc = new CredentialCache(file)
    expect(await cc.load(), 'no directory yet: simply no cache').to.equal(undefined)
    await cc.initialize(fakeCreds(), [stored('a')])
    expect((await stat(path.dirname(file))).mode & 0o777).to.equal(0o700)
    expect((await stat(file)).mode & 0o777).to.equal(0o600)
  })

  describe('kauth', () => {
    let k: CliKdc
    let pw: string
    before(async () => {
      k = await startCliKdc()
      pw = path.join(k.dir, 'alice.pw')
      const fh = await open(pw, 'w', 0o600)
      await fh.write(`${PASSWORDS.alice}\n`)
      await fh.close()
      await k.kdc.addPrincipal('HTTP/www.example.test', {})
    })
    after(async () => {
      await k?.close()
    })

    it('login does not import tickets from a cache it refuses (readable by others): planted resumption secrets are not used or carried over', async () => {
      const cc = path.join(dir, 'cc')
      const env = k.env(cc)
      const asId = ResumptionStore.id('127.0.0.1', k.kdc.addresses.as.port, k.kdc.realmFile.transportKey)
      const planted = stored(asId)
      const other = stored('evil|1|00')
      await writeRawCache(cc, { crealm: 'X', cname: ['mallory'], entries: [], resume: [planted, other] }, 0o644)
      const r = await runKauth(['login', 'alice', '--password-file', pw], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
      const got = (await new CredentialCache(cc).load())!
      expect(got.cname).to.deep.equal(['alice'])
      const ids = (got.resume ?? []).map((t) => t.id)
      expect(ids).to.not.include('evil|1|00')
      expect(ids).to.include(asId)
      const mine = got.resume!.find((t) => t.id === asId)!
      expect(Buffer.from(mine.rms).equals(Buffer.from(planted.rms)), 'a fresh ticket, not the planted secret').to.equal(false)
      expect((await stat(cc)).mode & 0o777).to.equal(0o600)
    })

    it('a failed login leaves the previous cache and its tickets untouched; a malformed resume list does not break kauth', async () => {
      const cc = path.join(dir, 'cc')
      const env = k.env(cc)
      expect((await runKauth(['login', 'alice', '--password-file', pw], env)).code).to.equal(Exit.OK)
      const before = (await new CredentialCache(cc).load())!
      const bad = path.join(dir, 'bad.pw')
      const fh = await open(bad, 'w', 0o600)
      await fh.write('wrong password\n')
      await fh.close()
      expect((await runKauth(['login', 'alice', '--password-file', bad], env)).code).to.not.equal(Exit.OK)
      const after = (await new CredentialCache(cc).load())!
      expect(after.resume!.map((t) => Buffer.from(t.tk).toString('hex'))).to.deep.equal(
        before.resume!.map((t) => Buffer.from(t.tk).toString('hex')),
      )
      // Garbage in the resume field: ticket still works, garbage is gone afterwards.
      await writeRawCache(cc, { crealm: before.crealm, cname: before.cname, entries: before.entries, resume: [1, 'x', { id: 3 }] })
      const r = await runKauth(['ticket', 'HTTP/www.example.test'], env)
      expect(r.code, r.stderr).to.equal(Exit.OK)
    })
  })
})

describe('security review 3: KDC config nested keys', () => {
  it('accepts every documented nested setting (log.dir, kdf.*, resumption.*, limits.*, ports.*) and refuses a typo in any group', () => {
    const c = resolveKdcConfig({
      ports: { as: 1, tgs: 2, time: 3, admin: 4 },
      limits: { maxFrameBytes: 65536, handshakeTimeoutMs: 100, idleTimeoutMs: 100, maxConnections: 10, maxConnectionsPerPeer: 5 },
      resumption: { enabled: false, lifetimeS: 60, windowMs: 1000, maxRecent: 5000 },
      log: { dir: '/var/log/tessera', level: 'debug', console: false },
      kdf: { alg: 'scrypt', N: 1024, r: 8, p: 1 },
    })
    expect(c.log.dir).to.equal('/var/log/tessera')
    expect(c.kdf.N).to.equal(1024)
    for (const [group, key] of [
      ['ports', 'kadmin'],
      ['limits', 'maxConection'],
      ['resumption', 'lifetime'],
      ['log', 'file'],
      ['kdf', 'n'],
    ] as const)
      expect(() => resolveKdcConfig({ [group]: { [key]: 1 } } as never), `${group}.${key}`).to.throw(`unknown setting "${group}.${key}"`)
    expect(() => resolveKdcConfig({ log: null } as never)).to.throw('log must be an object')
    expect(() => resolveKdcConfig({ kdf: ['scrypt'] } as never)).to.throw('kdf must be an object')
  })
})
