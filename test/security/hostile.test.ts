/**
 * The attack catalog against a running KDC: while an honest client logs in and gets
 * tickets, hostile peers send garbage, oversize and truncated frames, bad handshakes,
 * forged sealed frames, absurd but valid messages and messages for the wrong listener.
 * The honest client never fails, every hostile peer gets a typed error or a close, and
 * the process sees no unhandled rejection or uncaught exception.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { PaType, TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { EncKdcRepPart, type Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { randomBytes, randomKey, seal } from '../../src/crypto/index.js'
import { openPart } from '../../src/krb/parts.js'
import { decodeMessage, plainFrame } from '../../src/wire/channel.js'
import { encode } from '../../src/wire/codec.js'
import { frame } from '../../src/wire/frame-reader.js'
import {
  ADMIN_PASSWORD,
  asReq,
  DAY,
  expectKrbError,
  expectType,
  hostileSend,
  preauth,
  REALM,
  SealedPeer,
  tgsReq,
  useTestKdc,
} from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const SERVICE = 'HTTP/www.example.test'
const HANDSHAKE_TIMEOUT_MS = 400
const long8 = Array.from({ length: 8 }, (_, i) => String.fromCharCode(97 + i).repeat(255))

/** The first plain frame in `bytes`, decoded. */
function firstPlain(bytes: Buffer): Message | undefined {
  if (bytes.length < 4) return undefined
  const len = bytes.readUInt32BE(0)
  if (bytes.length < 4 + len) return undefined
  return decodeMessage(bytes.subarray(4, 4 + len))
}

function codeOf(m: Message | undefined): number | undefined {
  return m?.t === MsgType.KRB_ERROR ? m.code : undefined
}

describe('KDC under hostile peers (security)', function () {
  this.timeout(40000)
  useProcessGuards()
  const t = useTestKdc({ config: { limits: { handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS, idleTimeoutMs: 20000 } } })
  let honestKey: Uint8Array

  before(async () => {
    await t.kdc.addPrincipal(SERVICE)
    await t.kdc.addPrincipal('honest', { password: 'pw-honest' })
    honestKey = randomKey()
    await t.kdc.addPrincipal('keyed', { key: honestKey })
  })

  const port = (l: 'as' | 'tgs' | 'time' | 'admin') => t.kdc.addresses[l].port
  const serverKey = () => t.kdc.realmFile.transportKey

  // ------------------------------------------------------------ raw-socket attacks: each resolves or throws an assertion

  /** Random bytes: the server closes (decode error, oversize header or handshake timeout). */
  async function garbage(p: number): Promise<void> {
    const n = 1 + Math.floor(Math.random() * 512)
    const out = await hostileSend(p, [randomBytes(n)], { waitMs: 3000 })
    expect(out.closed, `garbage of ${n} bytes: connection left open`).to.equal(true)
  }

  /** A header announcing more than maxFrameBytes: a plain KRB_ERR_FIELD_TOOLONG, then close. */
  async function oversize(p: number): Promise<void> {
    const header = Buffer.alloc(4)
    header.writeUInt32BE(0xffffffff)
    const out = await hostileSend(p, [header, randomBytes(100)])
    expect(out.closed).to.equal(true)
    expect(codeOf(firstPlain(out.received))).to.equal(ErrorCode.KRB_ERR_FIELD_TOOLONG)
  }

  /** A frame cut short, then FIN: closed without a reply frame we could misread. */
  async function truncatedFin(p: number): Promise<void> {
    const header = Buffer.alloc(4)
    header.writeUInt32BE(100)
    const out = await hostileSend(p, [header, randomBytes(10)], { end: true })
    expect(out.closed).to.equal(true)
  }

  /** A frame cut short, then silence: closed by the handshake timeout with TSR_ERR_TIMEOUT. */
  async function truncatedSilent(p: number): Promise<void> {
    const header = Buffer.alloc(4)
    header.writeUInt32BE(100)
    const start = performance.now()
    const out = await hostileSend(p, [header, randomBytes(10)], { waitMs: HANDSHAKE_TIMEOUT_MS * 5 })
    expect(out.closed, 'closed by the handshake timeout').to.equal(true)
    expect(performance.now() - start).to.be.at.least(HANDSHAKE_TIMEOUT_MS - 50)
    expect(codeOf(firstPlain(out.received))).to.equal(ErrorCode.TSR_ERR_TIMEOUT)
  }

  /** HS_INIT with a low-order (all-zero) key share: TSR_ERR_HANDSHAKE in clear. */
  async function badKeyShare(p: number): Promise<void> {
    const out = await hostileSend(p, [plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: new Uint8Array(32) })])
    expect(out.closed).to.equal(true)
    expect(codeOf(firstPlain(out.received))).to.equal(ErrorCode.TSR_ERR_HANDSHAKE)
  }

  /** HS_INIT whose key share has the wrong length, or the wrong protocol version: TSR_ERR_MALFORMED. */
  async function malformedHsInit(p: number): Promise<void> {
    for (const body of [
      encode({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: new Uint8Array(31) }),
      encode({ v: 2, t: MsgType.HS_INIT, e: randomBytes(32) }),
      encode({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: randomBytes(32), extra: 1 }),
    ]) {
      const out = await hostileSend(p, [frame(body)])
      expect(out.closed).to.equal(true)
      expect(codeOf(firstPlain(out.received))).to.equal(ErrorCode.TSR_ERR_MALFORMED)
    }
  }

  /** A message other than HS_INIT before the handshake: TSR_ERR_HANDSHAKE. */
  async function requestBeforeHandshake(p: number): Promise<void> {
    const out = await hostileSend(p, [plainFrame(asReq(['honest']))])
    expect(out.closed).to.equal(true)
    expect(codeOf(firstPlain(out.received))).to.equal(ErrorCode.TSR_ERR_HANDSHAKE)
  }

  /** A valid handshake followed by frames that do not open: sealed TSR_ERR_TRANSPORT_INTEGRITY, then close. */
  async function garbageSealed(p: number): Promise<void> {
    const peer = await SealedPeer.open(p, serverKey())
    try {
      peer.write(frame(randomBytes(16 + Math.floor(Math.random() * 200))))
      expect(codeOf(await peer.next())).to.equal(ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY)
      expect(await peer.waitClosed()).to.equal(true)
    } finally {
      peer.destroy()
    }
  }

  /** Sealed frames that open but are not valid messages: TSR_ERR_MALFORMED, then close. */
  async function malformedSealed(p: number, value: unknown): Promise<void> {
    const peer = await SealedPeer.open(p, serverKey())
    try {
      peer.sendValue(value)
      expect(codeOf(await peer.next())).to.equal(ErrorCode.TSR_ERR_MALFORMED)
      expect(await peer.waitClosed()).to.equal(true)
    } finally {
      peer.destroy()
    }
  }

  /** A second HS_INIT inside the sealed channel: TSR_ERR_HANDSHAKE. */
  async function handshakeTwice(p: number): Promise<void> {
    const peer = await SealedPeer.open(p, serverKey())
    try {
      peer.sendValue({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: randomBytes(32) })
      expect(codeOf(await peer.next())).to.equal(ErrorCode.TSR_ERR_HANDSHAKE)
      expect(await peer.waitClosed()).to.equal(true)
    } finally {
      peer.destroy()
    }
  }

  /** A handshake and then nothing; the peer vanishes (RST) mid-way. */
  async function vanish(p: number): Promise<void> {
    const peer = await SealedPeer.open(p, serverKey())
    peer.write(Buffer.from([0, 0, 1]))
    peer.socket.resetAndDestroy()
  }

  function rawAttacks(p: number): Promise<void>[] {
    return [
      garbage(p),
      garbage(p),
      garbage(p),
      oversize(p),
      truncatedFin(p),
      truncatedSilent(p),
      badKeyShare(p),
      malformedHsInit(p),
      requestBeforeHandshake(p),
      garbageSealed(p),
      malformedSealed(p, { v: PROTOCOL_VERSION, t: MsgType.AS_REQ }),
      malformedSealed(p, { v: PROTOCOL_VERSION, t: 99 }),
      malformedSealed(p, JSON.parse('{"v":1,"t":10,"__proto__":{"admin":true}}')),
      malformedSealed(p, [1, 2, 3]),
      handshakeTwice(p),
      vanish(p),
    ]
  }

  // ------------------------------------------------------------ valid messages with hostile content

  /** AS_REQs with absurd but schema-valid values; every answer is a typed refusal or a bounded ticket. */
  async function absurdAsReqs(): Promise<void> {
    const ch = await t.channel('as')
    const max = Number.MAX_SAFE_INTEGER
    const now = Date.now()
    // till and rtill at 2^53-1 with every option bit: the ticket is bounded by the realm.
    const rep = expectType(
      await ch.request(
        asReq(['keyed'], { padata: preauth(honestKey), till: max, rtill: max, options: 0xffffffff, nonce: 0xffffffff }),
      ),
      MsgType.AS_REP,
    )
    const part = openPart(honestKey, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, rep.enc)
    expect(part.nonce).to.equal(0xffffffff)
    expect(part.endtime).to.be.at.most(now + t.kdc.config.maxTicketLifeMs + 5000)
    expect(part.renewTill).to.be.at.most(now + t.kdc.config.maxRenewableLifeMs + 5000)
    expect(part.flags & TicketFlag.RENEWABLE).to.not.equal(0)
    // 8 components of 255 characters, with pre-auth: the same PREAUTH_FAILED as any unknown principal.
    const big = preauth(randomKey())
    expectKrbError(await ch.request(asReq(long8, { padata: big })), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    // four padata entries of 1024 bytes each
    const padata = Array.from({ length: 4 }, () => ({ type: PaType.PA_ENC_TIMESTAMP, value: randomBytes(1024) }))
    expectKrbError(await ch.request(asReq(['honest'], { padata })), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    expectKrbError(await ch.request(asReq(long8, { padata })), ErrorCode.KDC_ERR_PREAUTH_FAILED)
    // an unknown pa type with the largest value
    expectKrbError(
      await ch.request(asReq(['honest'], { padata: [{ type: 0xffff, value: randomBytes(1024) }] })),
      ErrorCode.KDC_ERR_PREAUTH_FAILED,
    )
    // a 255-character realm
    expectKrbError(await ch.request(asReq(['honest'], { realm: 'R'.repeat(255) })), ErrorCode.KDC_ERR_WRONG_REALM)
    // a service name of 8 x 255 characters for a known client
    const svc = await ch.request(asReq(['keyed'], { sname: long8, padata: preauth(honestKey) }))
    expectKrbError(svc, ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN)
    // timestamps at both ends of the time range
    for (const ts of [0, max]) expectKrbError(await ch.request(asReq(['keyed'], { padata: preauth(honestKey, ts) })), ErrorCode.KRB_AP_ERR_SKEW)
  }

  /** TGS_REQs with random ticket bytes, keys and names. */
  async function randomTgsReqs(): Promise<void> {
    const ch = await t.channel('tgs')
    const tgtName = ['krbtgt', REALM]
    const req = (ticket: Partial<{ realm: string; sname: string[]; kvno: number; enc: Uint8Array }>, auth = randomBytes(200)) =>
      ({
        v: PROTOCOL_VERSION,
        t: MsgType.TGS_REQ,
        ticket: { realm: REALM, sname: tgtName, kvno: 1, enc: randomBytes(300), ...ticket },
        auth,
      }) as const
    expectKrbError(await ch.request(req({})), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    expectKrbError(await ch.request(req({ enc: randomBytes(4096) }, randomBytes(2048))), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    expectKrbError(await ch.request(req({ kvno: 0xffffffff })), ErrorCode.KRB_AP_ERR_BADKEYVER)
    expectKrbError(await ch.request(req({ kvno: 0 })), ErrorCode.KRB_AP_ERR_BADKEYVER)
    expectKrbError(await ch.request(req({ sname: long8 })), ErrorCode.KDC_ERR_S_PRINCIPAL_UNKNOWN)
    expectKrbError(await ch.request(req({ realm: 'EVIL.TEST' })), ErrorCode.KDC_ERR_WRONG_REALM)
    // a genuine TGT with a random authenticator, and with one that opens but is not an authenticator
    const tgt = await t.client().login('honest', 'pw-honest')
    expectKrbError(await ch.request(req(tgt.ticket)), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    const junk = seal(tgt.sessionKey, KeyUsage.TGS_REQ_AUTH, randomBytes(64))
    expectKrbError(await ch.request(req(tgt.ticket, junk)), ErrorCode.KRB_AP_ERR_MODIFIED)
    // an authenticator sealed for another usage (AP_REQ) does not open as a TGS authenticator
    const cross = seal(tgt.sessionKey, KeyUsage.AP_REQ_AUTH, encode({ crealm: REALM, cname: ['honest'], ctime: Date.now(), cusec: 0 }))
    expectKrbError(await ch.request(req(tgt.ticket, cross)), ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
    // absurd times and every option bit in a valid authenticator
    const absurd = tgsReq(tgt, SERVICE.split('/'), { till: Number.MAX_SAFE_INTEGER, options: 0xffffffff })
    const m = await ch.request(absurd)
    expect(m.t === MsgType.TGS_REP || m.t === MsgType.KRB_ERROR).to.equal(true)
    if (m.t === MsgType.KRB_ERROR) expect(m.code).to.not.equal(ErrorCode.KRB_ERR_GENERIC)
  }

  /** Each listener refuses the other listeners' message types with KRB_AP_ERR_MSG_TYPE and stays usable. */
  async function wrongListener(): Promise<void> {
    const tgt = await t.client().login('honest', 'pw-honest')
    const tgs = await t.channel('tgs')
    expectKrbError(await tgs.request(asReq(['honest'])), ErrorCode.KRB_AP_ERR_MSG_TYPE)
    expectType(await tgs.request(tgsReq(tgt, SERVICE.split('/'))), MsgType.TGS_REP)
    const as = await t.channel('as')
    expectKrbError(await as.request(tgsReq(tgt, SERVICE.split('/'))), ErrorCode.KRB_AP_ERR_MSG_TYPE)
    expectKrbError(await as.request({ v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce: randomBytes(32) }), ErrorCode.KRB_AP_ERR_MSG_TYPE)
    expectType(await as.request(asReq(['keyed'], { padata: preauth(honestKey) })), MsgType.AS_REP)
    // a reply type sent as a request
    expectKrbError(await as.request({ v: PROTOCOL_VERSION, t: MsgType.KRB_ERROR, code: 0, text: '', stime: 0 }), ErrorCode.KRB_AP_ERR_MSG_TYPE)
  }

  /** The time and admin listeners: a valid reply, or TSR_ERR_NOT_IMPLEMENTED while they are not implemented. */
  async function timeAndAdmin(): Promise<void> {
    const time = await t.channel('time')
    const nonce = randomBytes(32)
    const tr = await time.request({ v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce })
    if (tr.t === MsgType.TIME_REP) expect(Buffer.from(tr.nonce).equals(Buffer.from(nonce))).to.equal(true)
    else expectKrbError(tr, ErrorCode.TSR_ERR_NOT_IMPLEMENTED)
    expectKrbError(await time.request(asReq(['honest'])), tr.t === MsgType.TIME_REP ? ErrorCode.KRB_AP_ERR_MSG_TYPE : ErrorCode.TSR_ERR_NOT_IMPLEMENTED)
    const admin = await t.channel('admin')
    const tgt = await t.client().login('honest', 'pw-honest')
    const ar = await admin.request({ v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: tgt.ticket, auth: randomBytes(100) })
    expect(ar.t, 'admin listener answers with a reply or a typed error').to.be.oneOf([MsgType.KRB_ERROR, MsgType.ADMIN_REP])
    if (ar.t === MsgType.KRB_ERROR) expect(ar.code).to.not.equal(ErrorCode.KRB_ERR_GENERIC)
  }

  // ------------------------------------------------------------ the honest client

  async function honestLoop(rounds: number): Promise<number> {
    const c = t.client()
    let ok = 0
    for (let i = 0; i < rounds; i++) {
      const tgt = await c.login('honest', 'pw-honest', { renewableLifeMs: DAY })
      const st = await c.getServiceTicket(tgt, SERVICE)
      expect(st.cname).to.deep.equal(['honest'])
      const renewed = await c.renew(tgt)
      expect(renewed.renewTill).to.equal(tgt.renewTill)
      ok++
    }
    return ok
  }

  it('keeps serving an honest client while hostile peers attack the AS and TGS listeners', async () => {
    const hostile = (async () => {
      for (let round = 0; round < 3; round++) {
        await Promise.all([
          ...rawAttacks(port('as')),
          ...rawAttacks(port('tgs')),
          absurdAsReqs(),
          randomTgsReqs(),
          wrongListener(),
        ])
      }
    })()
    const [ok] = await Promise.all([honestLoop(15), hostile])
    expect(ok).to.equal(15)
  })

  it('answers the time and admin listeners with a valid reply or TSR_ERR_NOT_IMPLEMENTED', async () => {
    await Promise.all([timeAndAdmin(), ...rawAttacks(port('time')), ...rawAttacks(port('admin'))])
  })

  it('keeps serving after a burst of 60 hostile connections at once', async () => {
    await Promise.all(Array.from({ length: 30 }, () => [garbage(port('as')), garbageSealed(port('tgs'))]).flat())
    const c = t.client()
    const tgt = await c.login('honest', 'pw-honest')
    await c.getServiceTicket(tgt, SERVICE)
  })

  it('answers a pipelined burst of 200 requests on one connection in order', async () => {
    const ch = await t.channel('as')
    const reqs = Array.from({ length: 200 }, (_, i) =>
      i % 2 === 0 ? asReq(['keyed'], { padata: preauth(honestKey), nonce: i }) : asReq(['nobody'], { nonce: i }),
    )
    const replies = await Promise.all(reqs.map((r) => ch.request(r)))
    replies.forEach((m, i) => {
      if (i % 2 === 0) {
        const rep = expectType(m, MsgType.AS_REP)
        expect(openPart(honestKey, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, rep.enc).nonce).to.equal(i)
      } else expectKrbError(m, ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    })
  })

  it('logged no internal error and no invalid reply while under attack', () => {
    const bad = t.opsErrors.filter((l) => /internal error|not a valid message|handler failed|could not be/.test(l))
    expect(bad, bad.join('\n')).to.deep.equal([])
  })

  it('still serves a fresh client afterwards', async () => {
    const c = t.client()
    const tgt = await c.login('admin', ADMIN_PASSWORD, { forwardable: true })
    expect(tgt.flags & TicketFlag.FORWARDABLE).to.not.equal(0)
    const st = await c.getServiceTicket(tgt, SERVICE, { forwardable: true })
    expect(st.flags & TicketFlag.FORWARDABLE).to.not.equal(0)
  })
})


