/**
 * Statements of proto/PROTOCOL.md that a client can observe, each checked over the wire on a
 * running KDC (127.0.0.1, port 0): listener precedence, early data, impossible names, name
 * length, pipelining and fatal errors, lifetimes, renewability, the replay identity, lockout,
 * and the idle timeout's view of a partial frame.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { KdcOption, TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { EncKdcRepPart, type Message, TgsAuthenticator } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import type { Credentials } from '../../src/client/kdc-client.js'
import { randomBytes, randomKey } from '../../src/crypto/index.js'
import { DEFAULT_POLICY } from '../../src/db/policy.js'
import { openPart, sealPart } from '../../src/krb/parts.js'
import { connectAndRequest } from '../../src/wire/client.js'
import { frame } from '../../src/wire/frame-reader.js'
import { ResumptionStore } from '../../src/wire/resumption.js'
import {
  asReq,
  DAY,
  expectKrbError,
  expectType,
  HOUR,
  preauth,
  REALM,
  SealedPeer,
  tgsReq,
  useTestKdc,
} from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'
import { RawPeer, resumeHello } from '../helpers/wire-raw.js'

const SERVICE = ['HTTP', 'www.example.test']
const timeReq = (): Message => ({ v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce: randomBytes(32) })

/** The sealed part of a TGS_REP, opened with the presented ticket's session key. */
function tgsRepPart(creds: Credentials, m: Message) {
  return openPart(creds.sessionKey, KeyUsage.TGS_REP_ENCPART_SESSKEY, EncKdcRepPart, expectType(m, MsgType.TGS_REP).enc)
}

describe('PROTOCOL.md statements, observed on a running KDC', function () {
  this.timeout(20000)
  useProcessGuards()
  const t = useTestKdc()
  const port = (l: 'as' | 'tgs' | 'time' | 'admin') => t.kdc.addresses[l].port
  let userKey: Uint8Array

  before(async () => {
    await t.kdc.addPrincipal(SERVICE.join('/'))
    userKey = randomKey()
    await t.kdc.addPrincipal('keyed', { key: userKey })
    await t.kdc.addPrincipal('pw-user', { password: 'pw-user-secret' })
  })

  describe('§1 listeners', () => {
    it('answers a message type of another listener with 40 on every listener, the admin one included, and stays open', async () => {
      const admin = await t.channel('admin')
      expectKrbError(await admin.request(timeReq()), ErrorCode.KRB_AP_ERR_MSG_TYPE)
      expectKrbError(await admin.request(asReq(['keyed'])), ErrorCode.KRB_AP_ERR_MSG_TYPE)
      const time = await t.channel('time')
      expectKrbError(await time.request(asReq(['keyed'])), ErrorCode.KRB_AP_ERR_MSG_TYPE)
      expectType(await time.request(timeReq()), MsgType.TIME_REP)
      // The admin listener's own message is not a "wrong listener" (104 while it is not implemented).
      const ticket = { realm: REALM, sname: ['kadmin', 'admin'], kvno: 1, enc: randomBytes(64) }
      const m = await admin.request({ v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket, auth: randomBytes(64) })
      if (m.t === MsgType.KRB_ERROR) expect(m.code, m.text).to.not.equal(ErrorCode.KRB_AP_ERR_MSG_TYPE)
    })
  })

  describe('§3.6 early data', () => {
    async function ticketFor(listener: 'tgs' | 'time') {
      const store = new ResumptionStore()
      const opts = { host: '127.0.0.1', port: port(listener), serverKey: t.kdc.realmFile.transportKey, resumption: store }
      const { channel } = await connectAndRequest(opts, timeReq(), { timeoutMs: 3000 })
      channel.close()
      const ticket = store.get(ResumptionStore.id(opts.host, opts.port, opts.serverKey))
      if (!ticket) throw new Error('the KDC handed out no resumption ticket')
      return ticket
    }

    it('answers a handshake message sent as early data with 101 (sealed, frame 0) and closes', async () => {
      const ticket = await ticketFor('time')
      const hello = resumeHello(t.kdc.realmFile.transportKey, ticket, {
        early: { v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: randomBytes(32) },
      })
      const peer = await RawPeer.connect(port('time'))
      try {
        await peer.send(hello.frame)
        const codec = await peer.resumed(hello)
        expectKrbError(await peer.nextSealed(codec), ErrorCode.TSR_ERR_HANDSHAKE)
        await peer.closedWithin()
      } finally {
        peer.destroy()
      }
    })

    it('answers an ADMIN_REQ sent as early data with 40 (sealed, frame 0) and keeps the connection', async () => {
      const ticket = await ticketFor('tgs')
      const admin: Message = {
        v: PROTOCOL_VERSION,
        t: MsgType.ADMIN_REQ,
        ticket: { realm: REALM, sname: ['kadmin', 'admin'], kvno: 1, enc: randomBytes(64) },
        auth: randomBytes(64),
      }
      const hello = resumeHello(t.kdc.realmFile.transportKey, ticket, { early: admin })
      const peer = await RawPeer.connect(port('tgs'))
      try {
        await peer.send(hello.frame)
        const codec = await peer.resumed(hello)
        expectKrbError(await peer.nextSealed(codec), ErrorCode.KRB_AP_ERR_MSG_TYPE)
        await peer.send(codec.seal(asReq(['keyed'])))
        expectKrbError(await peer.nextSealed(codec), ErrorCode.KRB_AP_ERR_MSG_TYPE)
      } finally {
        peer.destroy()
      }
    })
  })

  describe('§7.4 principal names', () => {
    it('answers a first AS_REQ for a name no principal can have (not NFC) with 6, and with padata with 24, staying open', async () => {
      const ch = await t.channel('as')
      const nfd = ['jose\u0301']
      expectKrbError(await ch.request(asReq(nfd)), ErrorCode.KDC_ERR_C_PRINCIPAL_UNKNOWN)
      expectKrbError(await ch.request(asReq(nfd, { padata: preauth(randomKey()) })), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      // A well-formed unknown name is not told apart: PREAUTH_REQUIRED, like an existing one.
      expectKrbError(await ch.request(asReq(['nobody-here'])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    })

    it('gives 127 and 128 emoji (508 and 512 UTF-8 bytes) one answer: 100 naming the 255-byte limit, then close', async () => {
      const answers: string[] = []
      for (const n of [127, 128]) {
        const peer = await SealedPeer.open(port('as'), t.kdc.realmFile.transportKey)
        try {
          peer.sendValue(asReq(['\u{1F600}'.repeat(n)]))
          const m = expectKrbError((await peer.next())!, ErrorCode.TSR_ERR_MALFORMED)
          expect(m.text).to.match(/255 UTF-8 bytes/)
          answers.push(m.text)
          expect(await peer.waitClosed(), 'the connection is closed').to.equal(true)
        } finally {
          peer.destroy()
        }
      }
      expect(answers[0]).to.equal(answers[1])
    })

    it('takes a component of exactly 255 UTF-8 bytes as a name (85 three-byte characters)', async () => {
      const ch = await t.channel('as')
      expectKrbError(await ch.request(asReq(['\u4e00'.repeat(85)])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    })
  })

  describe('§8.1 / §8.2 lifetimes and renewability', () => {
    it('refuses a till in the past with 11 KDC_ERR_NEVER_VALID in the AS and the TGS, and the connection stays open', async () => {
      const now = t.kdc.context.now()
      const as = await t.channel('as')
      expectKrbError(await as.request(asReq(['keyed'], { till: now - 60_000, padata: preauth(userKey) })), ErrorCode.KDC_ERR_NEVER_VALID)
      expectType(await as.request(asReq(['keyed'], { till: 0, padata: preauth(userKey) })), MsgType.AS_REP)
      const tgt = await t.client().login('pw-user', 'pw-user-secret')
      const tgs = await t.channel('tgs')
      expectKrbError(await tgs.request(tgsReq(tgt, SERVICE, { till: now - 60_000 })), ErrorCode.KDC_ERR_NEVER_VALID)
      expectType(await tgs.request(tgsReq(tgt, SERVICE)), MsgType.TGS_REP)
    })

    it('caps a 48 h request at the principals’ default maximum life, 10 h; kadmin/admin tickets at 3 h, kadmin/changepw at 5 min', async () => {
      const c = t.client()
      const tgt = await c.login('pw-user', 'pw-user-secret', { lifetimeMs: 48 * HOUR })
      expect(tgt.endtime - tgt.starttime).to.equal(10 * HOUR)
      const kadmin = await c.login('pw-user', 'pw-user-secret', { lifetimeMs: 48 * HOUR, service: 'kadmin/admin' })
      expect(kadmin.sname).to.deep.equal(['kadmin', 'admin'])
      expect(kadmin.flags & TicketFlag.INITIAL).to.not.equal(0)
      expect(kadmin.endtime - kadmin.starttime).to.equal(3 * HOUR)
      const changepw = await c.login('pw-user', 'pw-user-secret', { lifetimeMs: 48 * HOUR, service: 'kadmin/changepw' })
      expect(changepw.endtime - changepw.starttime).to.equal(5 * 60_000)
    })

    it('makes a service ticket renewable only when the TGT is renewable and RENEWABLE is asked for', async () => {
      const c = t.client()
      const renewableTgt = await c.login('pw-user', 'pw-user-secret', { renewableLifeMs: DAY })
      const plainTgt = await c.login('pw-user', 'pw-user-secret')
      expect(renewableTgt.flags & TicketFlag.RENEWABLE).to.not.equal(0)
      expect(plainTgt.flags & TicketFlag.RENEWABLE).to.equal(0)
      const tgs = await t.channel('tgs')
      const flagsOf = async (tgt: Credentials, options: number) => tgsRepPart(tgt, await tgs.request(tgsReq(tgt, SERVICE, { options }))).flags
      expect((await flagsOf(renewableTgt, KdcOption.RENEWABLE)) & TicketFlag.RENEWABLE).to.not.equal(0)
      expect((await flagsOf(renewableTgt, 0)) & TicketFlag.RENEWABLE).to.equal(0)
      expect((await flagsOf(plainTgt, KdcOption.RENEWABLE)) & TicketFlag.RENEWABLE).to.equal(0)
    })
  })

  describe('§8.2 replay identity', () => {
    it('refuses the same sealed authenticator twice (34) and takes the same content sealed anew', async () => {
      const tgt = await t.client().login('pw-user', 'pw-user-secret')
      const tgs = await t.channel('tgs')
      const req = tgsReq(tgt, SERVICE)
      expectType(await tgs.request(req), MsgType.TGS_REP)
      expectKrbError(await tgs.request(req), ErrorCode.KRB_AP_ERR_REPEAT)
      // The very same authenticator content (ctime, cusec, nonce...) under a new seal nonce.
      const content = openPart(tgt.sessionKey, KeyUsage.TGS_REQ_AUTH, TgsAuthenticator, req.auth)
      const resealed = { ...req, auth: sealPart(tgt.sessionKey, KeyUsage.TGS_REQ_AUTH, TgsAuthenticator, content) }
      expect(Buffer.from(resealed.auth).equals(Buffer.from(req.auth))).to.equal(false)
      expectType(await tgs.request(resealed), MsgType.TGS_REP)
    })
  })

  describe('§8.1 lockout', () => {
    it('refuses even the right password with 18 once maxFailures wrong ones were tried, and the first round too', async () => {
      await t.kdc.db.putPolicy({ ...DEFAULT_POLICY, name: 'lock-after-2', maxFailures: 2 })
      await t.kdc.addPrincipal('lockme', { password: 'lockme-secret', policy: 'lock-after-2' })
      const c = t.client()
      for (let i = 0; i < 2; i++) {
        const err = await c.login('lockme', 'wrong-password').catch((e: unknown) => e)
        expect((err as { code?: number }).code).to.equal(ErrorCode.KDC_ERR_PREAUTH_FAILED)
      }
      const locked = await c.login('lockme', 'lockme-secret').catch((e: unknown) => e)
      expect((locked as { code?: number }).code).to.equal(ErrorCode.KDC_ERR_CLIENT_REVOKED)
      const ch = await t.channel('as')
      const first = expectKrbError(await ch.request(asReq(['lockme'])), ErrorCode.KDC_ERR_CLIENT_REVOKED)
      expect(first.text).to.match(/locked/)
    })
  })

  describe('§9.2 fatal errors and pipelining', () => {
    it('sends a fatal error in the reply slot of the first request still outstanding, then closes without answering it', async () => {
      const peer = await SealedPeer.open(port('as'), t.kdc.realmFile.transportKey)
      try {
        // A request and, in the same segment, a frame that does not open: the request (a wrong
        // password, answered after the failure floor) is still being handled when the bad frame
        // is read. (A login answered in the same turn would be answered before it.)
        peer.write(Buffer.concat([peer.codec.seal(asReq(['keyed'], { padata: preauth(randomBytes(32)) })), frame(randomBytes(64))]))
        expectKrbError((await peer.next())!, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
        expect(await peer.next(1000), 'no reply to the outstanding request').to.equal(undefined)
        expect(peer.closed).to.equal(true)
      } finally {
        peer.destroy()
      }
      // The KDC still serves (and the handler of the unanswered request has finished).
      const ch = await t.channel('as')
      expectType(await ch.request(asReq(['keyed'], { padata: preauth(userKey) })), MsgType.AS_REP)
    })
  })
})

describe('PROTOCOL.md §10: the idle timeout and a partial frame', function () {
  this.timeout(20000)
  useProcessGuards()
  const IDLE_MS = 400
  const t = useTestKdc({ config: { limits: { idleTimeoutMs: IDLE_MS } } })

  it('closes with 102 a connection that sends a frame one byte at a time, never completing it', async () => {
    const peer = await SealedPeer.open(t.kdc.addresses.as.port, t.kdc.realmFile.transportKey)
    try {
      const header = Buffer.alloc(4)
      header.writeUInt32BE(1000)
      peer.write(header)
      // Far more bytes, far more often, than the idle timeout: each would reset it if it counted.
      for (let i = 0; i < 100 && !peer.closed; i++) {
        peer.write(Buffer.from([i]))
        await new Promise((r) => setTimeout(r, IDLE_MS / 8))
      }
      expect(peer.closed, 'closed while bytes were still arriving').to.equal(true)
      expectKrbError((await peer.next())!, ErrorCode.TSR_ERR_TIMEOUT)
    } finally {
      peer.destroy()
    }
  })
})
