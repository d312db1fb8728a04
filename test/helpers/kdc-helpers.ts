/**
 * Shared setup of the KDC integration and security suites: an in-memory KDC on
 * 127.0.0.1 (ports 0, fast KDF, small pre-auth floor, security events captured),
 * raw encrypted channels for hand-built messages, and small TCP fixtures (closed
 * port, black hole, counting proxy, hostile raw socket).
 */
import net from 'node:net'
import { Writable } from 'node:stream'
import { expect } from 'chai'
import winston from 'winston'
import { PaType } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { type AsReq, type KrbError, type Message, PaEncTs, TgsAuthenticator, type TgsReq } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { type Credentials, KdcClient, type KdcClientOptions } from '../../src/client/kdc-client.js'
import { clientHandshakeFinish, randomUint32, x25519KeyPair } from '../../src/crypto/index.js'
import { KrbProtocolError, TesseraError } from '../../src/errors.js'
import type { KdcConfigInput } from '../../src/kdc/config.js'
import type { ListenerName } from '../../src/kdc/dispatch.js'
import { type RunningKdc, type StartKdcOptions, startKdc } from '../../src/kdc/kdc.js'
import { sealPart } from '../../src/krb/parts.js'
import type { KdcAddress, RealmFile } from '../../src/krb/realm-file.js'
import type { SecurityEvent } from '../../src/log/logger.js'
import { decodeMessage, plainFrame, SealedCodec } from '../../src/wire/channel.js'
import { type ClientChannel, connectChannel } from '../../src/wire/client.js'
import { FrameReader } from '../../src/wire/frame-reader.js'

export const REALM = 'EXAMPLE.TEST'
export const ADMIN_PASSWORD = 'correct horse battery staple'
/** Pre-auth failure floor used by the suites, ms (small, so the suites stay fast). */
export const FLOOR_MS = 50
export const MIN = 60_000
export const HOUR = 3600_000
export const DAY = 24 * HOUR

/** Config every test KDC starts from: fast scrypt, no console log, a small failure floor. */
export const FAST_CONFIG: KdcConfigInput = {
  kdf: { N: 1024 },
  log: { console: false },
  preauthFailureFloorMs: FLOOR_MS,
}

/** A test clock: follows the real clock plus `offset`, or stays at `frozen` when set. */
export class TestClock {
  offset = 0
  frozen: number | undefined
  readonly now = (): number => this.frozen ?? Date.now() + this.offset
  freeze(at: number = Date.now()): number {
    this.frozen = at
    return at
  }
  thaw(): void {
    this.frozen = undefined
  }
}

/** Options of startTestKdc. */
export interface TestKdcOptions {
  config?: KdcConfigInput
  now?: () => number
  realm?: string
}

/** A running in-memory KDC with its security log and clients that close with it. */
export interface TestKdc {
  kdc: RunningKdc
  /** Security events, in order. */
  sink: SecurityEvent[]
  /** Operational log lines at warn level or above (internal errors, invalid replies...). */
  opsErrors: string[]
  /** A KdcClient on this KDC's realm file (closed by close()). */
  client(opts?: KdcClientOptions, realm?: RealmFile): KdcClient
  /** A raw encrypted channel to one listener (closed by close()). */
  channel(listener: ListenerName): Promise<ClientChannel>
  close(): Promise<void>
}

function mergeConfig(extra: KdcConfigInput = {}): KdcConfigInput {
  return {
    ...FAST_CONFIG,
    ...extra,
    kdf: { ...FAST_CONFIG.kdf, ...extra.kdf },
    log: { ...FAST_CONFIG.log, ...extra.log },
    ...(extra.limits ? { limits: { ...extra.limits } } : {}),
  }
}

/** Start an in-memory KDC for realm EXAMPLE.TEST with admin@EXAMPLE.TEST / ADMIN_PASSWORD. */
export async function startTestKdc(o: TestKdcOptions = {}): Promise<TestKdc> {
  const sink: SecurityEvent[] = []
  const so: StartKdcOptions = {
    realm: o.realm ?? REALM,
    adminPassword: ADMIN_PASSWORD,
    config: mergeConfig(o.config),
    securitySink: sink,
  }
  if (o.now) so.now = o.now
  const kdc = await startKdc(so)
  const opsErrors: string[] = []
  kdc.context.log.ops.add(
    new winston.transports.Stream({
      level: 'warn',
      stream: new Writable({
        write(chunk: Buffer, _enc, cb) {
          opsErrors.push(chunk.toString('utf8').trim())
          cb()
        },
      }),
    }),
  )
  const clients: KdcClient[] = []
  const channels: ClientChannel[] = []
  return {
    kdc,
    sink,
    opsErrors,
    client(opts = {}, realm = kdc.realmFile) {
      const c = new KdcClient(realm, { connectTimeoutMs: 2000, timeoutMs: 10000, ...opts })
      clients.push(c)
      return c
    },
    async channel(listener) {
      const ch = await connectChannel({
        host: kdc.addresses[listener].host,
        port: kdc.addresses[listener].port,
        serverKey: kdc.realmFile.transportKey,
        connectTimeoutMs: 2000,
        handshakeTimeoutMs: 2000,
      })
      channels.push(ch)
      return ch
    },
    async close() {
      for (const c of clients) c.close()
      for (const ch of channels) ch.close()
      await kdc.close()
    },
  }
}

/** Mocha hooks: a KDC started before the suite and closed after it. */
export function useTestKdc(o: TestKdcOptions | (() => TestKdcOptions) = {}): TestKdc {
  let t: TestKdc | undefined
  before(async () => {
    t = await startTestKdc(typeof o === 'function' ? o() : o)
  })
  after(async () => {
    await t?.close()
  })
  const get = (): TestKdc => {
    if (!t) throw new Error('the test KDC is not started')
    return t
  }
  return {
    get kdc() {
      return get().kdc
    },
    get sink() {
      return get().sink
    },
    get opsErrors() {
      return get().opsErrors
    },
    client: (opts, realm) => get().client(opts, realm),
    channel: (l) => get().channel(l),
    close: () => get().close(),
  }
}

// ------------------------------------------------------------------ expectations

/** The rejection of `p`; fails if it resolves. */
export async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p
  } catch (err) {
    return err
  }
  throw new Error('expected a rejection, but the promise resolved')
}

/** Expect `p` to reject with KrbProtocolError `code`; returns the error. */
export async function expectKrb(p: Promise<unknown>, code: number): Promise<KrbProtocolError> {
  const err = await rejection(p)
  if (!(err instanceof KrbProtocolError)) throw new Error(`expected KrbProtocolError ${code}, got ${describeErr(err)}`)
  expect(err.code, `wire code (${err.codeName}: ${err.message})`).to.equal(code)
  return err
}

/** Expect `p` to reject with TesseraError `code`; returns the error. */
export async function expectTessera(p: Promise<unknown>, code: string): Promise<TesseraError> {
  const err = await rejection(p)
  if (!(err instanceof TesseraError)) throw new Error(`expected TesseraError ${code}, got ${describeErr(err)}`)
  expect(err.code, err.message).to.equal(code)
  return err
}

function describeErr(err: unknown): string {
  if (err instanceof KrbProtocolError) return `KrbProtocolError ${err.code} ${err.message}`
  if (err instanceof Error) return `${err.name}: ${err.message}`
  return String(err)
}

/** Narrow a reply to KRB_ERROR with `code`. */
export function expectKrbError(m: Message, code: number): KrbError {
  if (m.t !== MsgType.KRB_ERROR) throw new Error(`expected KRB_ERROR ${code}, got message type ${m.t}`)
  expect(m.code, `KRB_ERROR code (text: ${m.text})`).to.equal(code)
  return m
}

/** Narrow a reply to message type `t`. */
export function expectType<T extends Message['t']>(m: Message, t: T): Extract<Message, { t: T }> {
  if (m.t !== t) {
    const detail = m.t === MsgType.KRB_ERROR ? ` (KRB_ERROR ${m.code}: ${m.text})` : ''
    throw new Error(`expected message type ${t}, got ${m.t}${detail}`)
  }
  return m as Extract<Message, { t: T }>
}

/** Time one promise, ms. */
export async function timed<T>(p: Promise<T>): Promise<{ ms: number; result: PromiseSettledResult<T> }> {
  const start = performance.now()
  const [result] = await Promise.allSettled([p])
  return { ms: performance.now() - start, result: result! }
}

// ------------------------------------------------------------------ hand-built messages

/** An AS_REQ for `cname` (krbtgt by default) with no pre-auth, overridable field by field. */
export function asReq(cname: string[], over: Partial<AsReq> = {}): AsReq {
  return {
    v: PROTOCOL_VERSION,
    t: MsgType.AS_REQ,
    cname,
    realm: REALM,
    sname: ['krbtgt', REALM],
    till: 0,
    nonce: randomUint32(),
    options: 0,
    padata: [],
    ...over,
  }
}

/** A PA-ENC-TIMESTAMP value sealed with `key`. */
export function encTimestamp(key: Uint8Array, ts: number = Date.now()): Uint8Array {
  return sealPart(key, KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, PaEncTs, { ts: Math.floor(ts), us: 0 })
}

/** The padata list with one PA-ENC-TIMESTAMP. */
export function preauth(key: Uint8Array, ts?: number): AsReq['padata'] {
  return [{ type: PaType.PA_ENC_TIMESTAMP, value: encTimestamp(key, ts) }]
}

/** A TGS_REQ built by hand from credentials, overridable in the authenticator. */
export function tgsReq(
  creds: Credentials,
  sname: string[],
  over: Partial<{ ctime: number; options: number; nonce: number; till: number; cname: string[] }> = {},
): TgsReq {
  const ctime = over.ctime ?? Date.now()
  return {
    v: PROTOCOL_VERSION,
    t: MsgType.TGS_REQ,
    ticket: creds.ticket,
    auth: sealPart(creds.sessionKey, KeyUsage.TGS_REQ_AUTH, TgsAuthenticator, {
      crealm: creds.crealm,
      cname: over.cname ?? creds.cname,
      ctime,
      cusec: 0,
      sname,
      till: over.till ?? 0,
      nonce: over.nonce ?? randomUint32(),
      options: over.options ?? 0,
    }),
  }
}


// ------------------------------------------------------------------ TCP fixtures

/** A port on 127.0.0.1 that was just bound and closed (nothing listens there). */
export async function closedPort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const { port } = s.address() as net.AddressInfo
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

/** A server that accepts connections and never says anything. */
export class BlackHole {
  readonly server = net.createServer()
  readonly sockets = new Set<net.Socket>()
  accepted = 0
  port = 0
  async listen(): Promise<this> {
    this.server.on('connection', (s) => {
      this.accepted++
      this.sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => this.sockets.delete(s))
    })
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as net.AddressInfo).port
    return this
  }
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** A TCP proxy to 127.0.0.1:target that counts the connections it accepts. */
export class CountingProxy {
  readonly server = net.createServer()
  readonly sockets = new Set<net.Socket>()
  accepted = 0
  port = 0
  constructor(readonly target: number) {}
  async listen(): Promise<this> {
    this.server.on('connection', (down) => {
      this.accepted++
      const up = net.connect({ host: '127.0.0.1', port: this.target })
      for (const s of [down, up]) {
        this.sockets.add(s)
        s.on('error', () => {})
        s.on('close', () => {
          this.sockets.delete(s)
          down.destroy()
          up.destroy()
        })
      }
      down.pipe(up)
      up.pipe(down)
    })
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve))
    this.port = (this.server.address() as net.AddressInfo).port
    return this
  }
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** A KDC address entry whose every listener is `port`. */
export function allPorts(port: number, host = '127.0.0.1'): KdcAddress {
  return { host, as: port, tgs: port, time: port, admin: port }
}

/** A realm file like `base` with other KDC addresses. */
export function withKdcs(base: RealmFile, kdcs: KdcAddress[]): RealmFile {
  return { ...base, kdcs }
}

/** What a hostile raw connection saw. */
export interface RawOutcome {
  /** Bytes the server sent. */
  received: Buffer
  /** True when the server closed (or reset) the connection before the deadline. */
  closed: boolean
  error: string | undefined
}

/**
 * Connect to 127.0.0.1:port, send `chunks` (optionally half-closing after), and collect
 * what comes back until the server closes or `waitMs` passes. Never rejects.
 */
export function hostileSend(
  port: number,
  chunks: Uint8Array[],
  opts: { end?: boolean; waitMs?: number } = {},
): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const parts: Buffer[] = []
    let error: string | undefined
    let done = false
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true })
    const finish = (closed: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ received: Buffer.concat(parts), closed, error })
    }
    const timer = setTimeout(() => finish(false), opts.waitMs ?? 3000)
    socket.on('data', (d: Buffer) => parts.push(d))
    socket.on('error', (err) => {
      error = err.message
    })
    socket.on('close', () => finish(true))
    socket.once('connect', () => {
      for (const c of chunks) socket.write(c)
      if (opts.end) socket.end()
    })
  })
}

/**
 * A connection that completes the transport handshake by hand and then writes whatever
 * bytes it likes; it collects the frames the server sends until it closes.
 */
export class SealedPeer {
  private readonly reader = new FrameReader(1 << 20)
  private readonly frames: Buffer[] = []
  private waiters: (() => void)[] = []
  closed = false
  codec!: SealedCodec

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      try {
        for (const f of this.reader.push(d)) this.frames.push(f)
      } catch {
        socket.destroy()
      }
      this.wake()
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      this.closed = true
      this.wake()
    })
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  private async until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      const left = deadline - Date.now()
      if (left <= 0) return false
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    return true
  }

  /** Connect and run the handshake against `serverKey`. */
  static async open(port: number, serverKey: Uint8Array): Promise<SealedPeer> {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true })
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', () => resolve())
      socket.once('error', reject)
    })
    const peer = new SealedPeer(socket)
    const eph = x25519KeyPair()
    socket.write(plainFrame({ v: PROTOCOL_VERSION, t: MsgType.HS_INIT, e: eph.publicKey }))
    if (!(await peer.until(() => peer.frames.length > 0 || peer.closed, 3000)) || peer.frames.length === 0)
      throw new Error('no HS_RESP')
    const resp = decodeMessage(peer.frames.shift()!)
    if (resp.t !== MsgType.HS_RESP) throw new Error(`expected HS_RESP, got ${resp.t}`)
    const keys = clientHandshakeFinish(serverKey, eph, resp.e, resp.confirm)
    if (!keys) throw new Error('HS_RESP did not verify')
    peer.codec = new SealedCodec(keys, 'client')
    return peer
  }

  /** Write raw bytes. */
  write(bytes: Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(bytes)
  }

  /** Seal any value (valid message or not) as the next frame. */
  sendValue(value: unknown): void {
    this.write(this.codec.seal(value as Message))
  }

  /** The next server frame, opened, or undefined if the server closed / stayed silent. */
  async next(timeoutMs = 3000): Promise<Message | undefined> {
    await this.until(() => this.frames.length > 0 || this.closed, timeoutMs)
    const f = this.frames.shift()
    return f ? this.codec.open(f) : undefined
  }

  /** True once the server has closed the connection (waiting up to timeoutMs). */
  waitClosed(timeoutMs = 3000): Promise<boolean> {
    return this.until(() => this.closed, timeoutMs)
  }

  destroy(): void {
    this.socket.destroy()
  }
}

export { KrbProtocolError, TesseraError }
