/** seal / open / tryOpen: XSalsa20-Poly1305 under per-usage subkeys, in every backend. */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { allBackends, backend, useBackend } from '../../src/crypto/backend.js'
import { NONCE_BYTES, open, SEAL_OVERHEAD, seal, TAG_BYTES, tryOpen } from '../../src/crypto/seal.js'
import { KrbProtocolError } from '../../src/errors.js'

const key = new Uint8Array(32).map((_, i) => i)
const otherKey = new Uint8Array(32).map((_, i) => 255 - i)
const plain = new TextEncoder().encode('a sealed object')

function expectBadIntegrity(fn: () => unknown): void {
  let err: unknown
  try {
    fn()
  } catch (e) {
    err = e
  }
  expect(err, 'should have thrown').to.be.instanceOf(KrbProtocolError)
  expect((err as KrbProtocolError).code).to.equal(ErrorCode.KRB_AP_ERR_BAD_INTEGRITY)
  expect((err as KrbProtocolError).code).to.equal(31)
}

describe('seal', () => {
  const initial = backend().name
  after(() => useBackend(initial))

  it('has a 40-byte overhead: nonce(24) || tag(16)', () => {
    expect([NONCE_BYTES, TAG_BYTES, SEAL_OVERHEAD]).to.deep.equal([24, 16, 40])
  })

  for (const b of allBackends) {
    describe(`with the ${b.name} backend`, () => {
      before(() => useBackend(b.name))

      it('round-trips plaintexts of 0, 1, 15, 16, 17, 1000 and 65536 bytes', () => {
        for (const n of [0, 1, 15, 16, 17, 1000, 65536]) {
          const p = new Uint8Array(n).map((_, i) => i * 7)
          const s = seal(key, KeyUsage.KDC_REP_TICKET, p)
          expect(s.length).to.equal(n + SEAL_OVERHEAD)
          expect(Buffer.from(open(key, KeyUsage.KDC_REP_TICKET, s)).equals(Buffer.from(p)), `n=${n}`).to.equal(true)
        }
      })

      it('puts the given nonce first', () => {
        const nonce = new Uint8Array(24).fill(9)
        expect(Buffer.from(seal(key, 1, plain, nonce).subarray(0, 24)).equals(Buffer.from(nonce))).to.equal(true)
      })

      it('draws a fresh random nonce per call', () => {
        const a = seal(key, 1, plain)
        const c = seal(key, 1, plain)
        expect(Buffer.from(a.subarray(0, 24)).equals(Buffer.from(c.subarray(0, 24)))).to.equal(false)
      })

      it('fails with KRB_AP_ERR_BAD_INTEGRITY (31) under another usage', () => {
        const s = seal(key, KeyUsage.AS_REP_ENCPART, plain)
        for (const u of Object.values(KeyUsage).filter((u) => u !== KeyUsage.AS_REP_ENCPART))
          expectBadIntegrity(() => open(key, u, s))
      })

      it('fails with KRB_AP_ERR_BAD_INTEGRITY under another key', () => {
        expectBadIntegrity(() => open(otherKey, 1, seal(key, 1, plain)))
      })

      it('fails on every single flipped bit (nonce, tag and ciphertext)', () => {
        const s = seal(key, KeyUsage.TGS_REQ_AUTH, plain)
        for (let i = 0; i < s.length * 8; i++) {
          const t = new Uint8Array(s)
          t[i >> 3] = t[i >> 3]! ^ (1 << (i & 7))
          expect(tryOpen(key, KeyUsage.TGS_REQ_AUTH, t), `bit ${i}`).to.equal(null)
        }
        expectBadIntegrity(() => {
          const t = new Uint8Array(s)
          t[s.length - 1] = t[s.length - 1]! ^ 1
          open(key, KeyUsage.TGS_REQ_AUTH, t)
        })
      })

      it('fails on every truncation and on an appended byte', () => {
        const s = seal(key, 1, plain)
        for (let n = 0; n < s.length; n++) expect(tryOpen(key, 1, s.subarray(0, n)), `length ${n}`).to.equal(null)
        expectBadIntegrity(() => open(key, 1, s.subarray(0, SEAL_OVERHEAD - 1)))
        const longer = new Uint8Array(s.length + 1)
        longer.set(s)
        expect(tryOpen(key, 1, longer)).to.equal(null)
      })

      it('tryOpen returns null (never throws) on bad input, including a key of the wrong length', () => {
        const s = seal(key, 1, plain)
        expect(tryOpen(otherKey, 1, s)).to.equal(null)
        expect(tryOpen(key, 2, s)).to.equal(null)
        expect(tryOpen(key, 1, new Uint8Array(0))).to.equal(null)
        expect(tryOpen(key.subarray(0, 31), 1, s)).to.equal(null)
        expect(tryOpen(new Uint8Array(33), 1, s)).to.equal(null)
      })

      it('opens an empty plaintext sealed in exactly 40 bytes', () => {
        const s = seal(key, 3, new Uint8Array(0))
        expect(s.length).to.equal(40)
        expect(open(key, 3, s).length).to.equal(0)
      })

      it('opens a sealed object that is a view into a larger buffer', () => {
        const s = seal(key, 1, plain)
        const big = new Uint8Array(s.length + 10)
        big.set(s, 5)
        expect(Buffer.from(open(key, 1, big.subarray(5, 5 + s.length))).toString()).to.equal('a sealed object')
      })

      it('refuses a key or nonce of the wrong length with RangeError', () => {
        expect(() => seal(key.subarray(0, 31), 1, plain)).to.throw(RangeError)
        expect(() => seal(new Uint8Array(33), 1, plain)).to.throw(RangeError)
        expect(() => seal(key, 1, plain, new Uint8Array(23))).to.throw(RangeError)
        expect(() => seal(key, 1, plain, new Uint8Array(25))).to.throw(RangeError)
      })

      it('does not modify the key, the plaintext or the sealed bytes', () => {
        const k = new Uint8Array(key)
        const p = new Uint8Array(plain)
        const s = seal(k, 1, p)
        const s2 = new Uint8Array(s)
        open(k, 1, s)
        expect([Buffer.from(k).equals(Buffer.from(key)), Buffer.from(p).equals(Buffer.from(plain)), Buffer.from(s).equals(Buffer.from(s2))]).to.deep.equal([true, true, true])
      })
    })
  }

  it('opens in every backend what any backend sealed', () => {
    for (const a of allBackends) {
      useBackend(a.name)
      const s = seal(key, KeyUsage.AP_REQ_AUTH, plain)
      for (const b of allBackends) {
        useBackend(b.name)
        expect(Buffer.from(open(key, KeyUsage.AP_REQ_AUTH, s)).toString(), `${a.name} -> ${b.name}`).to.equal('a sealed object')
      }
    }
    useBackend(initial)
  })
})
