/** X25519 and Ed25519 in every backend: low-order points, cross-backend agreement, verify never throws. */
import { expect } from 'chai'
import { LOW_ORDER_POINTS } from '../../proto/vectors/generate.js'
import { allBackends, backend, useBackend } from '../../src/crypto/backend.js'
import { ed25519KeyPair, sign, verify, x25519, x25519KeyPair } from '../../src/crypto/sign.js'

const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'))
const eq = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b))
const secret = new Uint8Array(32).map((_, i) => i + 1)
const seed = new Uint8Array(32).map((_, i) => 0x33 + i)
const msg = new TextEncoder().encode('tessera')

describe('X25519', () => {
  const initial = backend().name
  after(() => useBackend(initial))

  it('knows all backends: sodium-native, node and tweetnacl', () => {
    expect(allBackends.map((b) => b.name)).to.include.members(['node', 'tweetnacl'])
  })

  it('useBackend refuses an unknown name with RangeError', () => {
    const before = backend().name
    expect(() => useBackend('openssl' as never)).to.throw(RangeError)
    expect(backend().name).to.equal(before)
  })

  it('lists the RFC 7748 low-order points with and without the top bit', () => {
    expect(LOW_ORDER_POINTS.map(([, p]) => p)).to.include.members([
      '0000000000000000000000000000000000000000000000000000000000000000',
      '0100000000000000000000000000000000000000000000000000000000000000',
      'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
      '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
      'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
    ])
  })

  for (const b of allBackends) {
    describe(`with the ${b.name} backend`, () => {
      before(() => useBackend(b.name))

      for (const [name, point] of LOW_ORDER_POINTS) {
        it(`rejects the low-order point ${name} with RangeError`, () => {
          expect(() => x25519(secret, unhex(point))).to.throw(RangeError)
          expect(() => b.x25519(x25519KeyPair().secretKey, unhex(point))).to.throw(RangeError)
        })
      }

      it('throws on a public key of the wrong length (RangeError, except tweetnacl: its own Error)', () => {
        for (const n of [0, 31, 33]) {
          const pk = new Uint8Array(n).fill(9)
          if (b.name === 'tweetnacl') expect(() => x25519(secret, pk), `${n}`).to.throw(Error)
          else expect(() => x25519(secret, pk), `${n}`).to.throw(RangeError)
        }
      })

      it('agrees on the shared secret from both sides', () => {
        const a = x25519KeyPair()
        const c = x25519KeyPair()
        expect(eq(x25519(a.secretKey, c.publicKey), x25519(c.secretKey, a.publicKey))).to.equal(true)
        expect(a.publicKey.length).to.equal(32)
      })

      it('ignores the top bit of the public key (RFC 7748 §5)', () => {
        const peer = x25519KeyPair().publicKey
        const high = new Uint8Array(peer)
        high[31] = high[31]! | 0x80
        expect(eq(x25519(secret, peer), x25519(secret, high))).to.equal(true)
      })
    })
  }

  it('gives the same public key and shared secret in every backend', () => {
    const peer = new Uint8Array(32).map((_, i) => 200 - i)
    const results = allBackends.map((b) => {
      useBackend(b.name)
      return Buffer.concat([b.x25519Base(secret), x25519(secret, b.x25519Base(peer))]).toString('hex')
    })
    useBackend(initial)
    expect(new Set(results).size).to.equal(1)
  })
})

describe('Ed25519', () => {
  const initial = backend().name
  after(() => useBackend(initial))

  it('signs identically and verifies across every pair of backends', () => {
    const sigs = allBackends.map((a) => {
      useBackend(a.name)
      const kp = ed25519KeyPair(seed)
      const sig = sign(msg, seed)
      for (const c of allBackends) {
        useBackend(c.name)
        expect(verify(msg, sig, kp.publicKey), `${a.name} -> ${c.name}`).to.equal(true)
        expect(c.ed25519Verify(msg, sig, kp.publicKey), `${a.name} -> ${c.name}`).to.equal(true)
      }
      return Buffer.from(sig).toString('hex')
    })
    useBackend(initial)
    expect(new Set(sigs).size).to.equal(1)
  })

  for (const b of allBackends) {
    describe(`with the ${b.name} backend`, () => {
      before(() => useBackend(b.name))
      const pk = () => ed25519KeyPair(seed).publicKey

      it('returns false, never throws, on a signature of the wrong length', () => {
        const sig = sign(msg, seed)
        for (const n of [0, 1, 63, 65, 128]) {
          const s = new Uint8Array(n)
          s.set(sig.subarray(0, Math.min(n, 64)))
          expect(verify(msg, s, pk()), `sig ${n}`).to.equal(false)
        }
      })

      it('returns false, never throws, on a public key of the wrong length', () => {
        const sig = sign(msg, seed)
        for (const n of [0, 31, 33, 64]) {
          const k = new Uint8Array(n)
          k.set(pk().subarray(0, Math.min(n, 32)))
          expect(verify(msg, sig, k), `key ${n}`).to.equal(false)
        }
      })

      it('returns false, never throws, on a public key that is not a curve point or is small-order', () => {
        const sig = sign(msg, seed)
        for (const k of [new Uint8Array(32).fill(0xff), new Uint8Array(32), unhex(`01${'00'.repeat(31)}`)])
          expect(verify(msg, sig, k)).to.equal(false)
      })

      it('returns false on a modified message, signature or key', () => {
        const sig = sign(msg, seed)
        const m2 = new Uint8Array(msg)
        m2[0] = m2[0]! ^ 1
        expect(verify(m2, sig, pk())).to.equal(false)
        for (const i of [0, 31, 32, 63]) {
          const s2 = new Uint8Array(sig)
          s2[i] = s2[i]! ^ 0x10
          expect(verify(msg, s2, pk()), `sig byte ${i}`).to.equal(false)
        }
        expect(verify(msg, sig, ed25519KeyPair(new Uint8Array(32)).publicKey)).to.equal(false)
      })

      it('signs an empty message and a 64 KiB one', () => {
        for (const m of [new Uint8Array(0), new Uint8Array(65536).fill(7)]) {
          const sig = sign(m, seed)
          expect(sig.length).to.equal(64)
          expect(verify(m, sig, pk())).to.equal(true)
        }
      })
    })
  }
})
