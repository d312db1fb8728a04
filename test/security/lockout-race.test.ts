/**
 * Lockout under concurrency (security review 4, item 1): however many wrong guesses arrive
 * at once, over however many connections, at most the policy's maxFailures passwords are
 * tried per counting window; once locked the right password is refused too; the counters
 * survive a restart. Real daemon, on-disk LevelDB, over the wire.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { MsgType } from '../../proto/msg-types.js'
import { defaultSalt, passwordToKey, randomKey } from '../../src/crypto/index.js'
import { readStash } from '../../src/db/master-key.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { type RunningKdc, startKdc } from '../../src/kdc/kdc.js'
import { initRealmDir, REALM_FILES } from '../../src/kdc/realm.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { type ClientChannel, connectChannel } from '../../src/wire/client.js'
import { asReq, expectKrb, FAST_CONFIG, preauth, REALM } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const POLICY = {
  name: 'three',
  minLength: 0,
  minClasses: 0,
  maxFailures: 3,
  failureCountIntervalMs: 10 * 60_000,
  lockoutDurationMs: 10 * 60_000,
  maxPasswordLifeMs: 0,
}
const CONNECTIONS = 20
const GUESSES = 240

describe('lockout under concurrent guessing (security, on-disk database)', function () {
  this.timeout(60_000)
  useProcessGuards()
  let dir: string
  let kdc: RunningKdc | undefined
  const channels: ClientChannel[] = []

  async function start(): Promise<RunningKdc> {
    kdc = await startKdc({ dir, config: { ...FAST_CONFIG, ports: { as: 0, tgs: 0, time: 0, admin: 0 } }, log: false })
    return kdc
  }

  async function stop(): Promise<void> {
    for (const ch of channels.splice(0)) ch.close()
    await kdc?.close()
    kdc = undefined
  }

  async function storedCounters(name: string) {
    const masterKey = await readStash(path.join(dir, REALM_FILES.stash))
    const db = await PrincipalDb.open({ location: path.join(dir, REALM_FILES.db), masterKey })
    try {
      return await db.get({ realm: REALM, components: [name] })
    } finally {
      await db.close()
    }
  }

  async function openChannels(k: RunningKdc): Promise<ClientChannel[]> {
    const out: ClientChannel[] = []
    for (let i = 0; i < CONNECTIONS; i++) {
      const ch = await connectChannel({
        host: k.addresses.as.host,
        port: k.addresses.as.port,
        serverKey: k.realmFile.transportKey,
        connectTimeoutMs: 2000,
        handshakeTimeoutMs: 2000,
      })
      channels.push(ch)
      out.push(ch)
    }
    return out
  }

  /** Send GUESSES wrong passwords spread over CONNECTIONS connections, the right one at `rightAt`; every reply's code. */
  async function burst(k: RunningKdc, name: string, rightKey: Uint8Array, rightAt: number) {
    const chs = await openChannels(k)
    const pending: Promise<{ right: boolean; code: number }>[] = []
    for (let i = 0; i < GUESSES; i++) {
      const right = i === rightAt
      const req = asReq([name], { padata: preauth(right ? rightKey : randomKey()) })
      pending.push(
        chs[i % CONNECTIONS]!.request(req).then((m) => ({ right, code: m.t === MsgType.KRB_ERROR ? m.code : 0 })),
      )
    }
    return Promise.all(pending)
  }

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-lockout-'))
    await initRealmDir({ dir: path.join(dir), realm: REALM, adminPassword: 'admin pw', config: resolveKdcConfig(FAST_CONFIG) })
  })

  afterEach(async () => {
    await stop()
    await rm(dir, { recursive: true, force: true })
  })

  async function victim(k: RunningKdc, name: string, password: string): Promise<Uint8Array> {
    await k.db.putPolicy(POLICY)
    await k.addPrincipal(name, { password, policy: POLICY.name })
    return passwordToKey(password, defaultSalt(REALM, name), k.config.kdf)
  }

  it(`tries at most maxFailures of ${GUESSES} concurrent wrong guesses over ${CONNECTIONS} connections, refuses the right password sent after them, and keeps the count across a restart`, async () => {
    const k = await start()
    const key = await victim(k, 'victim', 'the right password')
    const replies = await burst(k, 'victim', key, GUESSES - 1)
    const failed = replies.filter((r) => r.code === ErrorCode.KDC_ERR_PREAUTH_FAILED).length
    const revoked = replies.filter((r) => r.code === ErrorCode.KDC_ERR_CLIENT_REVOKED).length
    expect(failed, 'wrong passwords actually tried').to.equal(POLICY.maxFailures)
    expect(revoked).to.equal(GUESSES - POLICY.maxFailures)
    expect(replies.find((r) => r.right)!.code, 'the right password, sent inside the burst after the limit').to.equal(
      ErrorCode.KDC_ERR_CLIENT_REVOKED,
    )
    await stop()
    const stored = await storedCounters('victim')
    expect(stored!.failureCount).to.equal(POLICY.maxFailures)
    expect(stored!.lockedUntil).to.be.a('number')
    // Counted across the restart: the right password is still refused.
    const k2 = await start()
    const c = new KdcClient(k2.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    try {
      await expectKrb(c.login('victim', 'the right password'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    } finally {
      c.close()
    }
  })

  it('never tries more than maxFailures wrong passwords per window whatever the right password in the middle of the burst does', async () => {
    const k = await start()
    const key = await victim(k, 'middle', 'middle password')
    const replies = await burst(k, 'middle', key, Math.floor(GUESSES / 2))
    const failed = replies.filter((r) => r.code === ErrorCode.KDC_ERR_PREAUTH_FAILED).length
    const right = replies.find((r) => r.right)!
    // A right password decided before the limit clears the counters (a new window): at most
    // maxFailures before it and maxFailures after it. Decided after the limit, it is refused.
    if (right.code === 0) expect(failed).to.be.at.most(2 * POLICY.maxFailures)
    else {
      expect(right.code).to.equal(ErrorCode.KDC_ERR_CLIENT_REVOKED)
      expect(failed).to.equal(POLICY.maxFailures)
    }
    await stop()
    const stored = await storedCounters('middle')
    expect(stored!.failureCount).to.equal(POLICY.maxFailures)
    expect(stored!.lockedUntil).to.be.a('number')
  })

  it('keeps serving an existing TGT of a principal locked by someone else’s guesses (as MIT does); a disabled one is refused', async () => {
    const k = await start()
    await victim(k, 'worker', 'worker password')
    await k.addPrincipal('svc/host')
    const c = new KdcClient(k.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    try {
      const tgt = await c.login('worker', 'worker password')
      for (let i = 0; i < POLICY.maxFailures; i++) await expectKrb(c.login('worker', `guess ${i}`), ErrorCode.KDC_ERR_PREAUTH_FAILED)
      await expectKrb(c.login('worker', 'worker password'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
      const st = await c.getServiceTicket(tgt, 'svc/host')
      expect(st.sname).to.deep.equal(['svc', 'host'])
      await k.db.update(
        { realm: REALM, components: ['worker'] },
        (r) => {
          r.attributes.disabled = true
        },
        'test',
      )
      await expectKrb(c.getServiceTicket(tgt, 'svc/host'), ErrorCode.KDC_ERR_CLIENT_REVOKED)
    } finally {
      c.close()
    }
  })
})
