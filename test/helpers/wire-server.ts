/**
 * A SecureServer on 127.0.0.1 port 0 with a scriptable TIME_REQ handler, and the
 * "an honest client is still served" check the hostile tests end with.
 *
 * The first nonce byte of a TIME_REQ picks what the handler does (Cmd).
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message, TimeRep, TimeReq } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { type KeyPair, x25519KeyPair } from '../../src/crypto/index.js'
import { KrbProtocolError } from '../../src/errors.js'
import { connectChannel } from '../../src/wire/client.js'
import { SecureServer, type SecureServerOptions } from '../../src/wire/server.js'

/** What the test handler does with a TIME_REQ, chosen by nonce[0]. */
export const Cmd = {
  /** Reply TIME_REP echoing the nonce. */
  ECHO: 0,
  /** Throw a plain Error whose message must not reach the peer. */
  THROW: 1,
  /** Throw KrbProtocolError(KDC_ERR_POLICY). */
  REFUSE: 2,
  /** Wait nonce[1] * 10 ms, then echo. */
  SLOW: 3,
  /** Reply with a large (60000-byte) ADMIN_REP. */
  BIG: 4,
  /** Return something that is not a valid message. */
  INVALID: 5,
} as const

/** The text of the plain Error thrown for Cmd.THROW: it must never reach the wire. */
export const SECRET_DETAIL = 'secret-detail-7f3a: db password hunter2'

/** A TIME_REQ whose nonce starts with cmd, arg. */
export function timeReq(cmd: number = Cmd.ECHO, arg = 0, tag = 0): TimeReq {
  const nonce = new Uint8Array(32)
  nonce[0] = cmd
  nonce[1] = arg
  nonce[2] = tag
  return { v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce }
}

function echo(nonce: Uint8Array): TimeRep {
  return { v: PROTOCOL_VERSION, t: MsgType.TIME_REP, nonce, recv: 1, xmit: 2, radius: 0, sig: new Uint8Array(64) }
}

const BIG_ENC = new Uint8Array(60000).fill(7)

/** A running test server. */
export interface TestServer {
  server: SecureServer
  port: number
  key: KeyPair
  /** Requests the handler has started. */
  handled(): number
  close(): Promise<void>
}

/** Start a SecureServer with the scripted handler; short timeouts unless overridden. */
export async function startTestServer(opts: Partial<SecureServerOptions> = {}): Promise<TestServer> {
  const key = x25519KeyPair()
  let handled = 0
  const handler = async (msg: Message): Promise<Message> => {
    handled++
    if (msg.t !== MsgType.TIME_REQ) throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE')
    const nonce = Uint8Array.from(msg.nonce)
    switch (nonce[0]) {
      case Cmd.THROW:
        throw new Error(SECRET_DETAIL)
      case Cmd.REFUSE:
        throw new KrbProtocolError(ErrorCode.KDC_ERR_POLICY, 'POLICY', { message: 'refused by policy' })
      case Cmd.SLOW:
        await new Promise((r) => setTimeout(r, (nonce[1] ?? 0) * 10))
        return echo(nonce)
      case Cmd.BIG:
        return { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REP, enc: BIG_ENC }
      case Cmd.INVALID:
        return { v: PROTOCOL_VERSION, t: 999 } as unknown as Message
      default:
        return echo(nonce)
    }
  }
  const server = new SecureServer(
    {
      staticKey: key,
      host: '127.0.0.1',
      port: 0,
      handshakeTimeoutMs: 1000,
      idleTimeoutMs: 3000,
      closeGraceMs: 1000,
      ...opts,
    },
    handler,
  )
  const { port } = await server.listen()
  return { server, port, key, handled: () => handled, close: () => server.close() }
}

/** An honest client connects, gets a TIME_REQ answered, and disconnects. */
export async function expectServed(ts: TestServer): Promise<void> {
  const ch = await connectChannel({ host: '127.0.0.1', port: ts.port, serverKey: ts.key.publicKey, handshakeTimeoutMs: 2000 })
  try {
    const req = timeReq(Cmd.ECHO, 0, 0xaa)
    const rep = await ch.request(req, { timeoutMs: 2000 })
    expect(rep.t).to.equal(MsgType.TIME_REP)
    if (rep.t === MsgType.TIME_REP) expect(Buffer.from(rep.nonce)).to.deep.equal(Buffer.from(req.nonce))
  } finally {
    ch.close()
  }
}

/** Poll `cond` every 10 ms until it holds or `timeoutMs` passes; returns whether it held. */
export async function waitFor(cond: () => boolean, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (cond()) return true
    await new Promise((r) => setTimeout(r, 10))
  }
  return cond()
}

/** Await a promise expected to reject; returns the error. */
export async function rejectionOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection, got a value')
}
