/** keys.ts: KDF parameter bounds, password -> key, usage subkeys, HKDF, SHA-256, constant-time compare. */
import { createHmac, hkdfSync } from 'node:crypto'
import { allBackends, backend, useBackend } from '../../src/crypto/backend.js'
import { hkdf as hkdfFn, hmacSha256, randomBytes as rb } from '../../src/crypto/index.js'
import { expect } from 'chai'
import { KeyUsage } from '../../proto/key-usage.js'
import {
  checkKdfParams,
  constantTimeEqual,
  DEFAULT_KDF_PARAMS,
  defaultSalt,
  hkdf,
  KDF_LIMITS,
  type KdfParams,
  passwordToKey,
  sha256,
  usageKey,
  wipe,
} from '../../src/crypto/keys.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const small: KdfParams = { alg: 'scrypt', N: 1024, r: 8, p: 1 }

describe('constantTimeEqual', () => {
  it('is true for equal byte strings, including empty ones', () => {
    expect(constantTimeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 3]))).to.equal(true)
    expect(constantTimeEqual(new Uint8Array(0), new Uint8Array(0))).to.equal(true)
  })

  it('is false when any byte differs', () => {
    const a = new Uint8Array(32).fill(5)
    for (const i of [0, 15, 31]) {
      const b = new Uint8Array(a)
      b[i] = 6
      expect(constantTimeEqual(a, b), `byte ${i}`).to.equal(false)
    }
  })

  it('is false (and does not throw) for different lengths', () => {
    expect(constantTimeEqual(new Uint8Array(32), new Uint8Array(31))).to.equal(false)
    expect(constantTimeEqual(new Uint8Array(0), new Uint8Array(1))).to.equal(false)
  })

  it('compares views by their content only', () => {
    const buf = new Uint8Array([9, 1, 2, 3, 9])
    expect(constantTimeEqual(buf.subarray(1, 4), new Uint8Array([1, 2, 3]))).to.equal(true)
  })
})

describe('checkKdfParams', () => {
  const ok = (p: Partial<KdfParams>) => () => checkKdfParams({ ...DEFAULT_KDF_PARAMS, ...p } as KdfParams)

  it('accepts the defaults N=32768 r=8 p=1 and the bounds themselves', () => {
    expect(DEFAULT_KDF_PARAMS).to.deep.equal({ alg: 'scrypt', N: 32768, r: 8, p: 1 })
    expect(KDF_LIMITS).to.deep.equal({ minN: 1024, maxN: 1 << 20, maxR: 32, maxP: 16 })
    for (const p of [{}, { N: 1024 }, { N: 1 << 20 }, { r: 1 }, { r: 32 }, { p: 1 }, { p: 16 }]) expect(ok(p), JSON.stringify(p)).to.not.throw()
  })

  it('refuses N below 1024, above 2^20, or not a power of two', () => {
    for (const N of [0, 1, 2, 512, 1 << 21, 3000, 32767, 1024.5, Number.NaN, -1024]) expect(ok({ N }), String(N)).to.throw(RangeError)
  })

  it('refuses r outside 1..32 and p outside 1..16, or not integers', () => {
    for (const r of [0, 33, 1.5, -1, Number.NaN]) expect(ok({ r }), `r=${r}`).to.throw(RangeError)
    for (const p of [0, 17, 1.5, -1, Number.NaN]) expect(ok({ p }), `p=${p}`).to.throw(RangeError)
  })

  it('refuses another algorithm', () => {
    expect(ok({ alg: 'argon2id' as 'scrypt' })).to.throw(RangeError)
  })
})

describe('passwordToKey', () => {
  it('derives 32 bytes, deterministically', async () => {
    const a = await passwordToKey('secret', 'EXAMPLE.COMalice', small)
    const b = await passwordToKey('secret', 'EXAMPLE.COMalice', small)
    expect(a.length).to.equal(32)
    expect(hex(a)).to.equal(hex(b))
  })

  it('depends on the password, the salt and each parameter', async () => {
    const base = hex(await passwordToKey('secret', 'EXAMPLE.COMalice', small))
    const others = await Promise.all([
      passwordToKey('secreT', 'EXAMPLE.COMalice', small),
      passwordToKey('secret', 'EXAMPLE.COMbob', small),
      passwordToKey('secret', 'EXAMPLE.COMalice', { ...small, N: 2048 }),
      passwordToKey('secret', 'EXAMPLE.COMalice', { ...small, r: 4 }),
      passwordToKey('secret', 'EXAMPLE.COMalice', { ...small, p: 2 }),
    ])
    for (const o of others) expect(hex(o)).to.not.equal(base)
  })

  it('normalises the password to NFC (composed and decomposed spellings give one key)', async () => {
    const nfc = await passwordToKey('\u00e9t\u00e9', 'R' + 'x', small)
    const nfd = await passwordToKey('e\u0301te\u0301', 'R' + 'x', small)
    expect(hex(nfc)).to.equal(hex(nfd))
  })

  it('does not normalise the salt (it is used as given)', async () => {
    const a = await passwordToKey('pw', 'R\u00e9', small)
    const b = await passwordToKey('pw', 'Re\u0301', small)
    expect(hex(a)).to.not.equal(hex(b))
  })

  it('rejects with RangeError (never throws synchronously) on out-of-range parameters', async () => {
    let p: Promise<Uint8Array> | undefined
    expect(() => {
      p = passwordToKey('pw', 'salt', { ...small, N: 512 })
    }).to.not.throw()
    const err = await p!.then(() => undefined, (e: unknown) => e)
    expect(err).to.be.instanceOf(RangeError)
  })
})

describe('defaultSalt', () => {
  it('is the realm followed by the canonical principal name', () => {
    expect(defaultSalt('EXAMPLE.COM', 'alice')).to.equal('EXAMPLE.COMalice')
    expect(defaultSalt('EXAMPLE.COM', 'host/db.example.com')).to.equal('EXAMPLE.COMhost/db.example.com')
  })
})

describe('usageKey', () => {
  const key = new Uint8Array(32).map((_, i) => i)

  it('gives a distinct 32-byte subkey per usage, none equal to the key', () => {
    const seen = new Set<string>()
    for (const u of Object.values(KeyUsage)) {
      const k = usageKey(key, u)
      expect(k.length).to.equal(32)
      seen.add(hex(k))
    }
    expect(seen.size).to.equal(Object.values(KeyUsage).length)
    expect(seen.has(hex(key))).to.equal(false)
  })

  it('leaves the key untouched', () => {
    const k = new Uint8Array(key)
    usageKey(k, 3)
    expect(hex(k)).to.equal(hex(key))
  })

  it('encodes the usage as uint32 BE (usage 2^32 wraps to 0)', () => {
    expect(hex(usageKey(key, 2 ** 32))).to.equal(hex(usageKey(key, 0)))
  })
})

describe('hkdf and sha256', () => {
  it('sha256 matches FIPS 180-2 "abc"', () => {
    expect(hex(sha256(new TextEncoder().encode('abc')))).to.equal('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  })

  it('sha256 hashes the concatenation of its parts', () => {
    const e = new TextEncoder()
    expect(hex(sha256(e.encode('a'), e.encode('bc')))).to.equal(hex(sha256(e.encode('abc'))))
  })

  it('hkdf matches RFC 5869 test case 3 (empty salt and info)', () => {
    const okm = hkdf(new Uint8Array(22).fill(0x0b), new Uint8Array(0), '', 42)
    expect(hex(okm)).to.equal('8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8')
  })
})

describe('wipe', () => {
  it('zeroes every key given and skips undefined', () => {
    const a = new Uint8Array(4).fill(1)
    const b = new Uint8Array(2).fill(2)
    wipe(a, undefined, b)
    expect([...a, ...b]).to.deep.equal([0, 0, 0, 0, 0, 0])
  })
})

describe('hmacSha256 and hkdf', () => {
  it('equal node:crypto HMAC-SHA256 and hkdfSync for keys of every length, in every backend', () => {
    for (const b of allBackends) {
      const prev = backend().name
      useBackend(b.name)
      try {
        for (const keyLen of [0, 1, 32, 63, 64, 65, 200]) {
          const key = rb(keyLen)
          const data = rb(keyLen % 7 === 0 ? 0 : 100)
          expect(Buffer.from(hmacSha256(key, data)).toString('hex'), `${b.name} key ${keyLen}`).to.equal(
            createHmac('sha256', key).update(data).digest('hex'),
          )
          const salt = rb(keyLen % 40)
          expect(Buffer.from(hkdfFn(data, salt, 'tessera test', 96)).toString('hex')).to.equal(
            Buffer.from(hkdfSync('sha256', data, salt, 'tessera test', 96)).toString('hex'),
          )
        }
      } finally {
        useBackend(prev)
      }
    }
  })
})
