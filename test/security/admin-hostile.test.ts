/**
 * The admin listener under hostile input (PROTOCOL.md §8.5): malformed, oversized and
 * truncated ADMIN_REQs, forged and misused tickets (non-initial, another service, another
 * realm, unknown kvno, expired, not yet valid), wrong session keys, authenticators for
 * another client, skewed and replayed authenticators, hostile `args` (`__proto__`,
 * `constructor`, too many, too big, too deep) and wrong types for every operation's fields.
 * Each gets its documented code, nothing changes, and an honest AdminClient is served
 * after every case.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { AdminBody, AdminResult, EncTicketPart, type Message, type Ticket } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { ADMIN_ARGS } from '../../src/admin/listener.js'
import { startKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { randomKey, seal } from '../../src/crypto/index.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { openPart, sealPart } from '../../src/krb/parts.js'
import { type ClientChannel, connectChannel } from '../../src/wire/client.js'
import { encode } from '../../src/wire/codec.js'
import { ADMIN_PASSWORD, expectKrb, expectKrbError, expectType, FAST_CONFIG, REALM, SealedPeer } from '../helpers/kdc-helpers.js'
import { expectAdminError } from '../helpers/refusals.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { refEncode } from '../proto/msgpack-ref.js'

const MIN = 60_000
const HOUR = 60 * MIN

interface Forged {
  ticket: Ticket
  sessionKey: Uint8Array
}

describe('admin listener under hostile input (security)', function () {
  this.timeout(60_000)
  useProcessGuards()
  let kdc: RunningKdc
  let kc: KdcClient
  let admin: AdminClient
  let kadminKey: Uint8Array
  let kadminKvno: number
  let ch: ClientChannel
  const channels: ClientChannel[] = []

  const now = () => kdc.context.now()

  async function channel(): Promise<ClientChannel> {
    const c = await connectChannel({
      host: kdc.addresses.admin.host,
      port: kdc.addresses.admin.port,
      serverKey: kdc.realmFile.transportKey,
      connectTimeoutMs: 2000,
      handshakeTimeoutMs: 2000,
    })
    channels.push(c)
    return c
  }

  /** A kadmin ticket sealed by hand with the kadmin/admin key read from the database. */
  function forge(over: Partial<EncTicketPart> = {}, t: Partial<Ticket> = {}, key = kadminKey): Forged {
    const sessionKey = randomKey()
    const n = now()
    const part: EncTicketPart = {
      flags: TicketFlag.INITIAL | TicketFlag.PRE_AUTHENT,
      key: sessionKey,
      crealm: REALM,
      cname: ['admin'],
      authtime: n,
      starttime: n,
      endtime: n + HOUR,
      ...over,
    }
    const enc = sealPart(key, KeyUsage.KDC_REP_TICKET, EncTicketPart, part)
    return { ticket: { realm: REALM, sname: ['kadmin', 'admin'], kvno: kadminKvno, enc, ...t }, sessionKey: part.key }
  }

  let cusec = 0
  function body(_f: Forged, op: string, args: Record<string, unknown> = {}, over: Partial<AdminBody> = {}): AdminBody {
    return { crealm: REALM, cname: ['admin'], ctime: now(), cusec: cusec++ % 1000, op, args, ...over }
  }
  const sealBody = (f: Forged, b: AdminBody, key = f.sessionKey) => sealPart(key, KeyUsage.ADMIN_REQ_BODY, AdminBody, b)
  const req = (f: Forged, auth: Uint8Array): Message => ({ v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: f.ticket, auth })

  /** Send an ADMIN_REQ with a hand-built body and open the AdminResult. */
  async function result(f: Forged, b: AdminBody): Promise<AdminResult> {
    const rep = expectType(await ch.request(req(f, sealBody(f, b))), MsgType.ADMIN_REP)
    const r = openPart(f.sessionKey, KeyUsage.ADMIN_REP_BODY, AdminResult, rep.enc)
    expect([r.ctime, r.cusec], 'the reply names the request').to.deep.equal([b.ctime, b.cusec])
    return r
  }

  before(async () => {
    kdc = await startKdc({ realm: REALM, adminPassword: ADMIN_PASSWORD, config: FAST_CONFIG })
    kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    const rec = (await kdc.db.get({ realm: REALM, components: ['kadmin', 'admin'] }))!
    const k = rec.keys[rec.keys.length - 1]!
    kadminKey = new Uint8Array(k.key)
    kadminKvno = k.kvno
    await admin.call('addprinc', { name: 'bob', password: 'tulip-Gravel-41' })
    await admin.call('addprinc', { name: 'svc/app', randkey: true })
    await admin.call('addpol', { name: 'strict', minLength: 12 })
    ch = await channel()
  })
  after(async () => {
    for (const c of channels) c.close()
    kc.close()
    await kdc.close()
  })

  // After every case: the listener still serves an honest client, on a new connection and on the raw one.
  afterEach(async () => {
    const view = (await admin.call('getprinc', { name: 'admin' })) as { name: string }
    expect(view.name).to.equal(`admin@${REALM}`)
    if (ch.closed) ch = await channel()
    const r = await result(forge(), body(forge(), 'listpols'))
    expect(r.ok).to.equal(true)
  })

  describe('the envelope', () => {
    it('closes on a malformed ADMIN_REQ with 100 (missing auth, extra field, auth of the wrong type)', async () => {
      const f = forge()
      for (const bad of [
        { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: f.ticket },
        { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: f.ticket, auth: sealBody(f, body(f, 'listpols')), extra: 1 },
        { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: f.ticket, auth: 'not bytes' },
        { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: { ...f.ticket, sname: 'kadmin/admin' }, auth: sealBody(f, body(f, 'listpols')) },
      ]) {
        const peer = await SealedPeer.open(kdc.addresses.admin.port, kdc.realmFile.transportKey)
        try {
          peer.sendValue(bad)
          const m = await peer.next()
          expect(m, JSON.stringify(Object.keys(bad))).to.not.equal(undefined)
          expectKrbError(m!, ErrorCode.TSR_ERR_MALFORMED)
          expect(await peer.waitClosed()).to.equal(true)
        } finally {
          peer.destroy()
        }
      }
    })

    it('closes on an auth above 16384 bytes (100) and on a frame above the cap (61)', async () => {
      const f = forge()
      const peer = await SealedPeer.open(kdc.addresses.admin.port, kdc.realmFile.transportKey)
      try {
        const big = seal(f.sessionKey, KeyUsage.ADMIN_REQ_BODY, encode(body(f, 'getprinc', { name: 'x'.repeat(17_000) })))
        peer.sendValue({ v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: f.ticket, auth: big })
        expectKrbError((await peer.next())!, ErrorCode.TSR_ERR_MALFORMED)
        expect(await peer.waitClosed()).to.equal(true)
      } finally {
        peer.destroy()
      }
      const peer2 = await SealedPeer.open(kdc.addresses.admin.port, kdc.realmFile.transportKey)
      try {
        const header = Buffer.alloc(4)
        header.writeUInt32BE(70_000)
        peer2.write(header)
        expectKrbError((await peer2.next())!, ErrorCode.KRB_ERR_FIELD_TOOLONG)
        expect(await peer2.waitClosed()).to.equal(true)
      } finally {
        peer2.destroy()
      }
    })

    it('answers a truncated auth or ticket with 31 and keeps the connection; a frame cut short gets no reply and harms no one', async () => {
      const f = forge()
      const auth = sealBody(f, body(f, 'listpols'))
      expectKrbError(await ch.request(req(f, auth.subarray(0, auth.length - 7))), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
      const cut: Forged = { ...f, ticket: { ...f.ticket, enc: f.ticket.enc.subarray(0, f.ticket.enc.length - 1) } }
      expectKrbError(await ch.request(req(cut, sealBody(f, body(f, 'listpols')))), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
      expect(ch.closed).to.equal(false)
      const peer = await SealedPeer.open(kdc.addresses.admin.port, kdc.realmFile.transportKey)
      const whole = peer.codec.seal(req(f, sealBody(f, body(f, 'listpols'))))
      peer.write(whole.subarray(0, whole.length - 10))
      expect(await peer.next(300)).to.equal(undefined)
      peer.destroy()
    })

    it('refuses a kadmin ticket without INITIAL (as from a TGT) with 12', async () => {
      const f = forge({ flags: TicketFlag.PRE_AUTHENT })
      const e = expectKrbError(await ch.request(req(f, sealBody(f, body(f, 'addprinc', { name: 'via-tgt', randkey: true })))), ErrorCode.KDC_ERR_POLICY)
      expect(e.text).to.match(/password/)
      await expectAdminError(admin.call('getprinc', { name: 'via-tgt' }), ErrorCode.ADM_ERR_NOT_FOUND)
    })

    it('refuses a ticket for another service (35), another realm (68), an unknown kvno (44) and a ticket sealed with another key (31)', async () => {
      const tgt = await kc.login('admin', ADMIN_PASSWORD)
      const viaTgt: Forged = { ticket: tgt.ticket, sessionKey: tgt.sessionKey }
      expectKrbError(await ch.request(req(viaTgt, sealBody(viaTgt, body(viaTgt, 'listpols')))), ErrorCode.KRB_AP_ERR_NOT_US)
      const svc = forge({}, { sname: ['svc', 'app'] })
      expectKrbError(await ch.request(req(svc, sealBody(svc, body(svc, 'listpols')))), ErrorCode.KRB_AP_ERR_NOT_US)
      const other = forge({}, { sname: ['kadmin', 'history'] })
      expectKrbError(await ch.request(req(other, sealBody(other, body(other, 'listpols')))), ErrorCode.KRB_AP_ERR_NOT_US)
      const realm = forge({}, { realm: 'OTHER.TEST' })
      expectKrbError(await ch.request(req(realm, sealBody(realm, body(realm, 'listpols')))), ErrorCode.KDC_ERR_WRONG_REALM)
      const kvno = forge({}, { kvno: kadminKvno + 7 })
      expectKrbError(await ch.request(req(kvno, sealBody(kvno, body(kvno, 'listpols')))), ErrorCode.KRB_AP_ERR_BADKEYVER)
      const wrongKey = forge({}, {}, randomKey())
      expectKrbError(await ch.request(req(wrongKey, sealBody(wrongKey, body(wrongKey, 'listpols')))), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    })

    it('refuses an authenticator sealed with another session key (31) or under another usage (31)', async () => {
      const f = forge()
      expectKrbError(await ch.request(req(f, sealBody(f, body(f, 'listpols'), randomKey()))), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
      const otherUsage = sealPart(f.sessionKey, KeyUsage.TGS_REQ_AUTH, AdminBody, body(f, 'listpols'))
      expectKrbError(await ch.request(req(f, otherUsage)), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    })

    it('refuses an authenticator for another client with 36 BADMATCH (and does not act as either)', async () => {
      const f = forge()
      const e = await ch.request(req(f, sealBody(f, body(f, 'delprinc', { name: 'bob' }, { cname: ['bob'] }))))
      expectKrbError(e, ErrorCode.KRB_AP_ERR_BADMATCH)
      const f2 = forge()
      expectKrbError(await ch.request(req(f2, sealBody(f2, body(f2, 'listpols', {}, { crealm: 'OTHER.TEST' })))), ErrorCode.KRB_AP_ERR_BADMATCH)
      expect(((await admin.call('getprinc', { name: 'bob' })) as { name: string }).name).to.equal(`bob@${REALM}`)
    })

    it('refuses a skewed ctime with 37 and the KDC time in stime, both ways', async () => {
      for (const d of [-10 * MIN, 10 * MIN]) {
        const f = forge()
        const before = now()
        const e = expectKrbError(await ch.request(req(f, sealBody(f, body(f, 'listpols', {}, { ctime: now() + d })))), ErrorCode.KRB_AP_ERR_SKEW)
        expect(e.stime).to.be.within(before - 1000, now() + 1000)
      }
    })

    it('refuses a replayed ADMIN_REQ with 34, even on another connection, and acts on it once', async () => {
      const f = forge()
      const auth = sealBody(f, body(f, 'addprinc', { name: 'once', randkey: true }))
      expectType(await ch.request(req(f, auth)), MsgType.ADMIN_REP)
      expectKrbError(await ch.request(req(f, auth)), ErrorCode.KRB_AP_ERR_REPEAT)
      const ch2 = await channel()
      expectKrbError(await ch2.request(req(f, auth)), ErrorCode.KRB_AP_ERR_REPEAT)
      const view = (await admin.call('getprinc', { name: 'once' })) as { kvno: number }
      expect(view.kvno).to.equal(1)
    })

    it('refuses an expired ticket (32) and one not yet valid (33)', async () => {
      const n = now()
      const old = forge({ authtime: n - 2 * HOUR, starttime: n - 2 * HOUR, endtime: n - MIN })
      expectKrbError(await ch.request(req(old, sealBody(old, body(old, 'listpols')))), ErrorCode.KRB_AP_ERR_TKT_EXPIRED)
      const later = forge({ starttime: n + HOUR, endtime: n + 2 * HOUR })
      expectKrbError(await ch.request(req(later, sealBody(later, body(later, 'listpols')))), ErrorCode.KRB_AP_ERR_TKT_NYV)
    })

    it('refuses a ticket of a client from another realm (12), a deleted client and a disabled one (18)', async () => {
      const foreign = forge({ crealm: 'OTHER.TEST' })
      const fb = body(foreign, 'listpols', {}, { crealm: 'OTHER.TEST' })
      expectKrbError(await ch.request(req(foreign, sealBody(foreign, fb))), ErrorCode.KDC_ERR_POLICY)
      const ghost = forge({ cname: ['ghost'] })
      expectKrbError(await ch.request(req(ghost, sealBody(ghost, body(ghost, 'getprinc', { name: 'ghost' }, { cname: ['ghost'] })))), ErrorCode.KDC_ERR_CLIENT_REVOKED)
      await admin.call('addprinc', { name: 'dora', password: 'quartz-Field-33' })
      const dora = await AdminClient.login(kc, 'dora', 'quartz-Field-33')
      await admin.call('modprinc', { name: 'dora', attributes: { disabled: true } })
      try {
        await dora.call('getprinc', { name: 'dora' })
        expect.fail('a disabled client was served')
      } catch (err) {
        expect((err as { code?: number }).code).to.equal(ErrorCode.KDC_ERR_CLIENT_REVOKED)
      }
    })
  })

  describe('hostile args', () => {
    it('answers a "__proto__" key anywhere in args with 41 (the inner decoder refuses it)', async () => {
      for (const json of ['{"__proto__":{"admin":true}}', '{"name":"p1","randkey":true,"attributes":{"__proto__":{"disabled":false}}}']) {
        const f = forge()
        const b = { ...body(f, 'addprinc'), args: JSON.parse(json) }
        const auth = seal(f.sessionKey, KeyUsage.ADMIN_REQ_BODY, refEncode(b))
        expectKrbError(await ch.request(req(f, auth)), ErrorCode.KRB_AP_ERR_MODIFIED)
      }
      await expectAdminError(admin.call('getprinc', { name: 'p1' }), ErrorCode.ADM_ERR_NOT_FOUND)
      expect(({} as Record<string, unknown>).admin).to.equal(undefined)
    })

    it('answers "constructor", "toString" and "hasOwnProperty" keys with 109 and changes nothing', async () => {
      for (const k of ['constructor', 'toString', 'hasOwnProperty', 'prototype']) {
        await expectAdminError(admin.call('addprinc', { name: 'p2', randkey: true, [k]: { polluted: true } }), ErrorCode.ADM_ERR_BAD_REQUEST)
        await expectAdminError(admin.call('modprinc', { name: 'bob', attributes: { [k]: true } }), ErrorCode.ADM_ERR_BAD_REQUEST)
      }
      await expectAdminError(admin.call('constructor', {}), ErrorCode.ADM_ERR_BAD_REQUEST)
      await expectAdminError(admin.call('__proto__', {}), ErrorCode.ADM_ERR_BAD_REQUEST)
      await expectAdminError(admin.call('hasOwnProperty', {}), ErrorCode.ADM_ERR_BAD_REQUEST)
      await expectAdminError(admin.call('getprinc', { name: 'p2' }), ErrorCode.ADM_ERR_NOT_FOUND)
    })

    it('answers more than 32 args (41), too deep a value (41) and a huge name (109)', async () => {
      const f = forge()
      const many = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i]))
      const b = { ...body(f, 'listpols'), args: many }
      expectKrbError(await ch.request(req(f, seal(f.sessionKey, KeyUsage.ADMIN_REQ_BODY, refEncode(b)))), ErrorCode.KRB_AP_ERR_MODIFIED)
      let deep: unknown = 1
      for (let i = 0; i < 40; i++) deep = [deep]
      const f2 = forge()
      const b2 = { ...body(f2, 'getprinc'), args: { name: deep } }
      expectKrbError(await ch.request(req(f2, seal(f2.sessionKey, KeyUsage.ADMIN_REQ_BODY, refEncode(b2)))), ErrorCode.KRB_AP_ERR_MODIFIED)
      await expectAdminError(admin.call('getprinc', { name: 'x'.repeat(12_000) }), ErrorCode.ADM_ERR_BAD_REQUEST)
      await expectAdminError(admin.call('addprinc', { name: 'big', randkey: true, policy: 'p'.repeat(12_000) }), ErrorCode.ADM_ERR_BAD_REQUEST)
      // No protocol field is a float: the inner decoder refuses one (41) before any operation sees it.
      await expectKrb(admin.call('addprinc', { name: 'big', randkey: true, maxLife: 1.5 }), ErrorCode.KRB_AP_ERR_MODIFIED)
      const nested = { a: { b: { c: { d: [1, 2, { e: 'f' }] } } } }
      await expectAdminError(admin.call('modprinc', { name: 'bob', attributes: nested }), ErrorCode.ADM_ERR_BAD_REQUEST)
      await expectAdminError(admin.call('getprinc', { name: 'big' }), ErrorCode.ADM_ERR_NOT_FOUND)
    })

    it('answers a result too large for one ADMIN_REP with 109, not an internal error, and serves the same request with a limit', async () => {
      // Enough audit records that the whole log no longer fits in 60000 bytes.
      for (let i = 0; i < 40; i++) await Promise.all(Array.from({ length: 8 }, () => admin.call('getprinc', { name: 'bob' })))
      const e = await expectAdminError(admin.call('audit', {}), ErrorCode.ADM_ERR_BAD_REQUEST)
      expect(e.message).to.match(/too large/)
      const some = (await admin.call('audit', { limit: 20 })) as { records: unknown[] }
      expect(some.records).to.have.length(20)
    })
  })

  describe('wrong types for every field of every operation', () => {
    /** op -> bad args; each is refused with 109 (or 113 for a field the KDC keeps). */
    const BAD: Record<string, Record<string, unknown>[]> = {
      addprinc: [
        { name: 42, randkey: true },
        { name: 'w1', password: 42 },
        { name: 'w1', randkey: 'yes' },
        { name: 'w1', randkey: 1 },
        { name: 'w1', password: 'Valid-Passw0rd', randkey: 'yes' },
        { name: 'w1', randkey: true, policy: 5 },
        { name: 'w1', randkey: true, policy: null },
        { name: 'w1', randkey: true, maxLife: '1h' },
        { name: 'w1', randkey: true, maxLife: -1 },
        { name: 'w1', randkey: true, maxRenewableLife: [1] },
        { name: 'w1', randkey: true, expiresAt: 'tomorrow' },
        { name: 'w1', randkey: true, passwordExpiresAt: -5 },
        { name: 'w1', randkey: true, attributes: 'x' },
        { name: 'w1', randkey: true, attributes: { disabled: 'yes' } },
        { name: 'w1', randkey: true, attributes: [true] },
        { name: 'w1', randkey: true, attributes: null },
        { name: 'w1' },
        { randkey: true },
      ],
      delprinc: [{ name: [] }, { name: null }, {}],
      renprinc: [{ name: 'bob', newName: 5 }, { name: 5, newName: 'bob2' }, { name: 'bob' }],
      modprinc: [
        { name: 'bob', attributes: [1] },
        { name: 'bob', unlock: 'yes' },
        { name: 'bob', policy: 7 },
        { name: 'bob', maxLife: 0 },
        { name: 'bob', maxRenewableLife: '7d' },
        { name: 'bob', expiresAt: true },
        { name: 'bob', passwordExpiresAt: {} },
        { name: { first: 'bob' } },
      ],
      getprinc: [{ name: {} }, { name: true }, {}],
      listprincs: [{ glob: 5 }, { glob: ['*'] }],
      cpw: [
        { name: 'bob', password: 5 },
        { name: 'bob', randkey: 1 },
        { name: 'bob', randkey: true, keepold: 'yes' },
        { name: 'bob', password: 'Another-Passw0rd', randkey: 'no' },
        { name: 5, randkey: true },
      ],
      ktadd: [{ name: null }, { name: 'svc/app', randkey: 'yes' }, { name: 'svc/app', keepold: 1 }],
      addpol: [
        { name: 5 },
        { name: 'w-pol', minLength: '8' },
        { name: 'w-pol', history: -1 },
        { name: 'w-pol', minClasses: 9 },
        { name: 'w-pol', maxFailures: false },
        { name: 'w-pol', minPasswordLifeMs: 'soon' },
        { name: 'w-pol', maxPasswordLifeMs: null },
        { name: 'w-pol', failureCountIntervalMs: [] },
        { name: 'w-pol', lockoutDurationMs: true },
      ],
      modpol: [{ name: 'strict', minLength: '8' }, { name: 'strict', history: {} }, { name: 7 }],
      delpol: [{ name: 5 }, {}],
      getpol: [{ name: 5 }, {}],
      listpols: [{ glob: '*' }],
      aclcheck: [{ actor: 5, op: 'getprinc' }, { actor: 'bob', op: 5 }, { actor: 'bob', op: 'getprinc', target: 5 }, { actor: 'bob', op: 'nope' }, { actor: 'bob', op: 'ktadd', target: 'svc/app', randkey: 'yes' }],
      audit: [{ since: 'yesterday' }, { limit: 'ten' }, { limit: -1 }, { verify: 'yes' }, { since: -1 }, { after: 'x' }],
      rotate: [{ name: 5 }, {}, { name: 'svc/app', grace: '1d' }, { name: 'svc/app', stageAhead: -1 }, { name: 'svc/app', emergency: 'yes' }],
      purgekeys: [{ name: 5 }, {}, { name: 'svc/app', keepkvno: 'one' }, { name: 'svc/app', allOld: 1 }, { name: 'svc/app', force: 'true' }],
      dump: [{ session: 5 }, { offset: 'zero' }, { session: 'x', offset: -1 }],
      fetchkeys: [{ name: 5 }, {}, { name: null }, { name: ['svc/app'] }],
      watch: [{ after: -1 }, { after: 'now' }, { glob: 5 }, { waitMs: '1s' }, { waitMs: 30_001 }, { limit: 0 }, { limit: 501 }],
      'rotate-identity': [{ which: 5 }, { which: 'all' }, { stageAhead: -1 }, { stageAhead: '1d' }, { name: 'x' }],
      'activate-identity': [{ force: 'yes' }, { name: 'x' }],
      'retire-identity': [{ name: 'x' }],
      'get-identity': [],
    }

    it('covers every operation the listener serves', () => {
      expect(Object.keys(BAD)).to.have.members(Object.keys(ADMIN_ARGS))
    })

    for (const [op, cases] of Object.entries(BAD)) {
      it(`${op}: every wrong type is 109 ADM_ERR_BAD_REQUEST, and nothing changes`, async () => {
        const before = JSON.stringify([await admin.call('listprincs', {}), await admin.call('listpols', {}), await admin.call('getprinc', { name: 'bob' })])
        for (const args of cases) {
          const e = await expectAdminError(admin.call(op, args), ErrorCode.ADM_ERR_BAD_REQUEST).catch((err: Error) => {
            throw new Error(`${op} ${JSON.stringify(args)}: ${err.message}`)
          })
          expect(e.message, `${op} ${JSON.stringify(args)}`).to.not.match(/internal|TypeError|undefined is not|of null/)
        }
        const after = JSON.stringify([await admin.call('listprincs', {}), await admin.call('listpols', {}), await admin.call('getprinc', { name: 'bob' })])
        expect(after).to.equal(before)
      })
    }

    it('answers a field the KDC keeps with 113, whatever its type', async () => {
      for (const k of ['failureCount', 'keys', 'createdBy', 'lastSuccess', 'kvno'])
        await expectAdminError(admin.call('modprinc', { name: 'bob', [k]: 0 }), ErrorCode.ADM_ERR_PROTECTED)
    })

    it('audits the refusals of wrong types and unknown operations', async () => {
      await expectAdminError(admin.call('getprinc', { name: 77 }), ErrorCode.ADM_ERR_BAD_REQUEST)
      await expectAdminError(admin.call('format_disk', { name: 'x' }), ErrorCode.ADM_ERR_BAD_REQUEST)
      const { records } = (await admin.call('audit', { limit: 5 })) as { records: { op: string; outcome: string; code?: string }[] }
      const last = records.slice(-2)
      expect(last.map((r) => [r.op, r.outcome, r.code])).to.deep.equal([
        ['getprinc', 'error', 'TESSERA_VALIDATION'],
        ['format_disk', 'error', 'TESSERA_VALIDATION'],
      ])
    })
  })

  describe('afterwards', () => {
    it('keeps serving many honest requests on one connection', async () => {
      for (let i = 0; i < 20; i++) await admin.call('getprinc', { name: 'bob' })
    })
  })
})
