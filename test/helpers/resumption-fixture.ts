/** Shared fixtures of the resumption tests: a resuming test server, channel options, one echo request, a held ticket, cleanups. */
import { expect } from 'chai'
import type { Message } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { type ChannelOptions, connectAndRequest } from '../../src/wire/client.js'
import { type ClientTicket, ResumptionStore, TicketIssuer } from '../../src/wire/resumption.js'
import { Cmd, startTestServer, type TestServer, timeReq } from './wire-server.js'

/** The reply is the test server's echo of request `tag`. */
export function expectEcho(reply: Message, tag: number): void {
  expect(reply.t, `got t=${reply.t}`).to.equal(MsgType.TIME_REP)
  if (reply.t === MsgType.TIME_REP) expect(reply.nonce[2]).to.equal(tag)
}

/** Mocha hooks and helpers for one describe block; everything made through it is closed after each test, last first. */
export function useResumptionFixture() {
  const cleanups: (() => unknown)[] = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })
  return {
    cleanups,
    defer<T extends { close(): unknown }>(x: T): T {
      cleanups.push(() => x.close())
      return x
    },
    /** A test server offering resumption; closed before its issuer, as the KDC does. */
    async resumingServer(issuer = new TicketIssuer({ windowMs: 60_000 })): Promise<{ ts: TestServer; issuer: TicketIssuer }> {
      const ts = await startTestServer({ resumption: issuer })
      cleanups.push(() => issuer.close())
      cleanups.push(() => ts.close())
      return { ts, issuer }
    },
    channelOpts(ts: TestServer, store?: ResumptionStore, port = ts.port): ChannelOptions {
      return { host: '127.0.0.1', port, serverKey: ts.key.publicKey, handshakeTimeoutMs: 2000, ...(store ? { resumption: store } : {}) }
    },
    /** One echo request on a new connection (resumed when the store allows), checked. */
    async ask(opts: ChannelOptions, tag: number): Promise<void> {
      const { channel, reply } = await connectAndRequest(opts, timeReq(Cmd.ECHO, 0, tag), { timeoutMs: 2000 })
      channel.close()
      expectEcho(reply, tag)
    },
    ticketOf(store: ResumptionStore, opts: ChannelOptions): ClientTicket {
      const t = store.get(ResumptionStore.id(opts.host, opts.port, opts.serverKey))
      if (!t) throw new Error('the store holds no ticket for this server')
      return t
    },
  }
}
