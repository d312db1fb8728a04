/** The transport handshake key schedule and counter-nonce frames, in and across every backend. */
import { expect } from 'chai'
import { LOW_ORDER_POINTS } from '../../proto/vectors/generate.js'
import { allBackends, backend, useBackend } from '../../src/crypto/backend.js'
import {
  clientHandshakeFinish,
  counterNonce,
  openFrame,
  sealFrame,
  serverHandshake,
  transcriptHash,
} from '../../src/crypto/handshake.js'
import { type KeyPair, x25519KeyPair } from '../../src/crypto/sign.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'))
const copyPair = (k: KeyPair): KeyPair => ({ publicKey: new Uint8Array(k.publicKey), secretKey: new Uint8Array(k.secretKey) })

/** One handshake: returns both sides' results. */
function run(serverStatic: KeyPair, clientKnows: Uint8Array = serverStatic.publicKey) {
  const ce = x25519KeyPair()
  const srv = serverHandshake(copyPair(serverStatic), ce.publicKey)
  const cli = clientHandshakeFinish(clientKnows, ce, srv.e, srv.confirm)
  return { ce, srv, cli }
}

describe('transport handshake', () => {
  const initial = backend().name
  after(() => useBackend(initial))

  for (const b of allBackends) {
    describe(`with the ${b.name} backend`, () => {
      before(() => useBackend(b.name))
      const S = x25519KeyPair()

      it('gives both sides the same c2s, s2c and h', () => {
        const { srv, cli } = run(S)
        expect(cli).to.not.equal(null)
        expect([hex(cli!.c2s), hex(cli!.s2c), hex(cli!.h)]).to.deep.equal([hex(srv.keys.c2s), hex(srv.keys.s2c), hex(srv.keys.h)])
      })

      it('uses a different key per direction, and none equals h', () => {
        const { cli } = run(S)
        expect(hex(cli!.c2s)).to.not.equal(hex(cli!.s2c))
        expect(cli!.c2s.length).to.equal(32)
        expect(cli!.s2c.length).to.equal(32)
        expect([hex(cli!.c2s), hex(cli!.s2c)]).to.not.include(hex(cli!.h))
      })

      it('gives every connection fresh keys', () => {
        const a = run(S).cli!
        const c = run(S).cli!
        expect(hex(a.c2s)).to.not.equal(hex(c.c2s))
        expect(hex(a.h)).to.not.equal(hex(c.h))
      })

      it('binds h to the server static key and both ephemerals', () => {
        const { ce, srv, cli } = run(S)
        expect(hex(cli!.h)).to.equal(hex(transcriptHash(S.publicKey, ce.publicKey, srv.e)))
      })

      it('client finish returns null when the client expects another server static key', () => {
        const wrong = x25519KeyPair().publicKey
        expect(run(S, wrong).cli).to.equal(null)
      })

      it('client finish returns null on a modified confirmation or server ephemeral key', () => {
        const ce = x25519KeyPair()
        const srv = serverHandshake(copyPair(S), ce.publicKey)
        for (const i of [0, 16, 47]) {
          const c = new Uint8Array(srv.confirm)
          c[i] = c[i]! ^ 1
          expect(clientHandshakeFinish(S.publicKey, copyPair(ce), srv.e, c), `confirm byte ${i}`).to.equal(null)
        }
        const e = new Uint8Array(srv.e)
        e[3] = e[3]! ^ 1
        expect(clientHandshakeFinish(S.publicKey, copyPair(ce), e, srv.confirm)).to.equal(null)
        expect(clientHandshakeFinish(S.publicKey, copyPair(ce), x25519KeyPair().publicKey, srv.confirm)).to.equal(null)
        expect(clientHandshakeFinish(S.publicKey, copyPair(ce), srv.e, srv.confirm.subarray(0, 47))).to.equal(null)
        // and the untouched reply still verifies
        expect(clientHandshakeFinish(S.publicKey, copyPair(ce), srv.e, srv.confirm)).to.not.equal(null)
      })

      it('client finish returns null (never throws) on a low-order or short server ephemeral key', () => {
        const ce = x25519KeyPair()
        const srv = serverHandshake(copyPair(S), ce.publicKey)
        for (const [name, p] of LOW_ORDER_POINTS)
          expect(clientHandshakeFinish(S.publicKey, copyPair(ce), unhex(p), srv.confirm), name).to.equal(null)
        expect(clientHandshakeFinish(S.publicKey, copyPair(ce), new Uint8Array(31), srv.confirm)).to.equal(null)
      })

      it('client finish returns null when realm.json holds a low-order server static key', () => {
        const ce = x25519KeyPair()
        const srv = serverHandshake(copyPair(S), ce.publicKey)
        expect(clientHandshakeFinish(new Uint8Array(32), copyPair(ce), srv.e, srv.confirm)).to.equal(null)
      })

      it('server handshake throws RangeError on a low-order or wrong-length client key share', () => {
        for (const [name, p] of LOW_ORDER_POINTS) expect(() => serverHandshake(copyPair(S), unhex(p)), name).to.throw(RangeError)
        for (const n of [0, 31, 33]) expect(() => serverHandshake(copyPair(S), new Uint8Array(n)), `${n}`).to.throw(RangeError)
      })

      it('wipes the ephemeral secrets once used (server always, client on success)', () => {
        const ce = x25519KeyPair()
        const se = x25519KeyPair()
        const srv = serverHandshake(copyPair(S), ce.publicKey, se)
        expect(se.secretKey.every((x) => x === 0)).to.equal(true)
        expect(clientHandshakeFinish(S.publicKey, ce, srv.e, srv.confirm)).to.not.equal(null)
        expect(ce.secretKey.every((x) => x === 0)).to.equal(true)
      })
    })
  }

  it('completes across every pair of backends (server in one, client in another)', () => {
    for (const sb of allBackends) {
      for (const cb of allBackends) {
        useBackend(sb.name)
        const S = x25519KeyPair()
        const ce = x25519KeyPair()
        const srv = serverHandshake(copyPair(S), ce.publicKey)
        useBackend(cb.name)
        const cli = clientHandshakeFinish(S.publicKey, ce, srv.e, srv.confirm)
        expect(cli, `${sb.name} -> ${cb.name}`).to.not.equal(null)
        expect(hex(cli!.s2c)).to.equal(hex(srv.keys.s2c))
      }
    }
    useBackend(initial)
  })
})

describe('counter-nonce frames', () => {
  const initial = backend().name
  after(() => useBackend(initial))
  const key = new Uint8Array(32).fill(7)
  const body = new TextEncoder().encode('frame body')

  it('builds the nonce as uint64be(counter) || 16 zero bytes', () => {
    expect(hex(counterNonce(0))).to.equal('00'.repeat(24))
    expect(hex(counterNonce(1))).to.equal(`0000000000000001${'00'.repeat(16)}`)
    expect(hex(counterNonce(0x1_0000_0000))).to.equal(`0000000100000000${'00'.repeat(16)}`)
    expect(hex(counterNonce(Number.MAX_SAFE_INTEGER))).to.equal(`001fffffffffffff${'00'.repeat(16)}`)
  })

  for (const b of allBackends) {
    it(`opens only under the same key and counter (${b.name})`, () => {
      useBackend(b.name)
      const f = sealFrame(key, 5, body)
      expect(f.length).to.equal(body.length + 16)
      expect(Buffer.from(openFrame(key, 5, f)!).toString()).to.equal('frame body')
      expect(openFrame(key, 4, f)).to.equal(null)
      expect(openFrame(key, 6, f)).to.equal(null)
      expect(openFrame(new Uint8Array(32).fill(8), 5, f)).to.equal(null)
      const t = new Uint8Array(f)
      t[t.length - 1] = t[t.length - 1]! ^ 1
      expect(openFrame(key, 5, t)).to.equal(null)
      expect(openFrame(key, 5, f.subarray(0, 15))).to.equal(null)
      expect(openFrame(key, 5, new Uint8Array(0))).to.equal(null)
    })
  }
})
