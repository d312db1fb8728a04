/** Shared setup of the service suites: an in-memory KDC, a user, a service with its keytab, and a frame-level proxy. */
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { type Credentials, KdcClient } from '../../src/client/kdc-client.js'
import type { KeyVersion } from '../../src/db/types.js'
import { type RunningKdc, startKdc } from '../../src/kdc/kdc.js'
import { Keytab, type KeytabEntry, writeKeytab } from '../../src/krb/keytab.js'
import { FrameReader, frame } from '../../src/wire/frame-reader.js'

export const USER = 'alice'
export const PASSWORD = 'correct horse battery staple 7'
export const SERVICE = 'echo/localhost'

/** A running realm with alice and echo/localhost, a client, and a temp dir. */
export interface Realm {
  kdc: RunningKdc
  client: KdcClient
  dir: string
  serviceKey: KeyVersion
  /** alice's TGT. */
  tgt: Credentials
  /** A fresh service ticket for `service` (default echo/localhost). */
  ticket(service?: string): Promise<Credentials>
  /** A keytab entry for echo/localhost from a key version. */
  entry(k: KeyVersion, name?: string): KeytabEntry
  /** A keytab holding the echo/localhost key, written to dir/name. */
  keytabFile(name?: string): Promise<string>
  close(): Promise<void>
}

/** Start an in-memory KDC on 127.0.0.1 port 0 with a fast KDF. */
export async function startRealm(opts: { now?: () => number } = {}): Promise<Realm> {
  const kdc = await startKdc({
    config: { kdf: { N: 1024 }, log: { console: false } },
    ...(opts.now ? { now: opts.now } : {}),
  })
  await kdc.addPrincipal(USER, { password: PASSWORD })
  const serviceKey = await kdc.addPrincipal(SERVICE)
  const client = new KdcClient(kdc.realmFile)
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-service-'))
  const tgt = await client.login(USER, PASSWORD)
  const entry = (k: KeyVersion, name = SERVICE): KeytabEntry => {
    const e: KeytabEntry = { realm: kdc.realm, name: name.split('/'), kvno: k.kvno, key: k.key, createdAt: k.createdAt }
    if (k.kdf) e.kdf = k.kdf
    if (k.salt !== undefined) e.salt = k.salt
    return e
  }
  return {
    kdc,
    client,
    dir,
    serviceKey,
    tgt,
    ticket: (service = SERVICE) => client.getServiceTicket(tgt, service),
    entry,
    async keytabFile(name = 'echo.keytab') {
      const file = path.join(dir, name)
      await writeKeytab(file, new Keytab([entry(serviceKey)]))
      return file
    },
    async close() {
      client.close()
      await kdc.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** What a proxy hook may do with one client -> server frame. */
export interface ProxyControl {
  /** Send a frame body on to the server. */
  forward(body: Uint8Array): void
  /** Send raw bytes on to the server. */
  raw(bytes: Uint8Array): void
  /** End the connection to the server (FIN, no close message). */
  end(): void
}

/**
 * A TCP proxy in front of `port` that splits the client -> server direction into frames and
 * hands each (index 0 = the AP_REQ) to `hook`; server -> client bytes pass untouched.
 */
export async function frameProxy(
  port: number,
  hook: (index: number, body: Buffer, ctl: ProxyControl) => void,
): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>()
  // Half-open both ways, as a plain TCP path is: a FIN from one end must not cut the other direction.
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    const up = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    sockets.add(down).add(up)
    for (const s of [down, up]) {
      s.on('error', () => {})
      s.on('close', () => sockets.delete(s))
    }
    up.pipe(down)
    const reader = new FrameReader(0xffffffff)
    let index = 0
    const ctl: ProxyControl = {
      forward: (body) => up.write(frame(body)),
      raw: (bytes) => up.write(bytes),
      end: () => up.end(),
    }
    down.on('data', (chunk: Buffer) => {
      for (const body of reader.push(chunk)) hook(index++, Buffer.from(body), ctl)
    })
    down.on('end', () => up.end())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

/** Connect a TCP socket and wait for the connection. */
export function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', noDelay: true })
    s.once('connect', () => {
      s.off('error', reject)
      resolve(s)
    })
    s.once('error', reject)
  })
}

/** The rejection of `p` (fails if it resolves). */
export async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a rejection, got a value')
}

/** The error thrown by `fn` (fails if it returns). */
export function thrown(fn: () => unknown): Error {
  try {
    fn()
  } catch (err) {
    return err as Error
  }
  throw new Error('expected a throw, got a value')
}
