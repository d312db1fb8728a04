/**
 * proto/vectors/*.json: every vector recomputed with every NaCl backend, byte for byte.
 * The inputs are read from the JSON files, the outputs recomputed with src/ and compared.
 */
import { spawnSync } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { InnerSchemas } from '../../proto/messages.js'
import { validate, validateMessage } from '../../proto/validate.js'
import { fromJsonValue, generateAll, renderVectorFile, toJsonValue } from '../../proto/vectors/generate.js'
import { allBackends, backend, type NaclBackend, useBackend } from '../../src/crypto/backend.js'
import {
  clientHandshakeFinish,
  counterNonce,
  defaultSalt,
  hkdf,
  open,
  openFrame,
  passwordToKey,
  seal,
  sealFrame,
  serverHandshake,
  sign,
  transcriptHash,
  tryOpen,
  usageKey,
  verify,
  x25519,
} from '../../src/crypto/index.js'
import { isTesseraError, KrbProtocolError, TesseraError } from '../../src/errors.js'
import { decodeMessage, plainFrame, SealedCodec } from '../../src/wire/channel.js'
import { decode, encode } from '../../src/wire/codec.js'
import { FrameReader, frame } from '../../src/wire/frame-reader.js'
import { ServedClock, processTimeReq } from '../../src/kdc/time-req.js'
import { timeSignatureInput } from '../../src/krb/time-sig.js'
import { refEncode } from './msgpack-ref.js'

// biome-ignore lint/suspicious/noExplicitAny: vector files are free-form JSON
type J = any

const VECTOR_FILES = [
  'framing.json',
  'codec.json',
  'usage-keys.json',
  'seal.json',
  'password-keys.json',
  'x25519.json',
  'ed25519.json',
  'handshake.json',
  'time-signature.json',
  'exchanges.json',
] as const

function load(name: (typeof VECTOR_FILES)[number]): J {
  return JSON.parse(readFileSync(new URL(`../../proto/vectors/${name}`, import.meta.url), 'utf8'))
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex')
const unhex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, 'hex'))
const copy = (b: Uint8Array): Uint8Array => new Uint8Array(b)

const framing = load('framing.json')
const codec = load('codec.json')
const usageKeys = load('usage-keys.json')
const sealing = load('seal.json')
const passwordKeys = load('password-keys.json')
const x25519v = load('x25519.json')
const ed25519v = load('ed25519.json')
const hs = load('handshake.json')
const timeSig = load('time-signature.json')
const exchanges = load('exchanges.json')

/** Independent statement of the TIME_REP signed input (PROTOCOL.md §8.4). */
function timeInput(nonce: Uint8Array, recv: number, xmit: number, radius: number): Uint8Array {
  const b = Buffer.alloc(15 + 32 + 8 + 8 + 4)
  b.write('tessera-time-v1', 0, 'ascii')
  b.set(nonce, 15)
  b.writeBigUInt64BE(BigInt(recv), 47)
  b.writeBigUInt64BE(BigInt(xmit), 55)
  b.writeUInt32BE(radius, 63)
  return new Uint8Array(b)
}

describe('proto/vectors', () => {
  const initial = backend().name

  it('are reproduced exactly by proto/vectors/generate.ts (run `npx tsx proto/vectors/generate.ts`)', async () => {
    const files = await generateAll()
    expect(Object.keys(files)).to.have.members([...VECTOR_FILES])
    for (const [name, content] of Object.entries(files)) {
      const committed = readFileSync(new URL(`../../proto/vectors/${name}`, import.meta.url), 'utf8')
      expect(committed, name).to.equal(renderVectorFile(content))
    }
  })

  it('every value/msgpack pair is plain MessagePack (an independent encoder gives the same bytes)', () => {
    const pairs: [string, J, string][] = [
      ...codec.values.map((x: J) => [x.name, x.value, x.msgpack]),
      ...codec.messages.map((x: J) => [x.name, x.value, x.msgpack]),
      ['HS_INIT', hs.hsInit.message, hs.hsInit.msgpack],
      ['HS_RESP', hs.hsResp.message, hs.hsResp.msgpack],
      ...hs.frames.map((f: J) => [`frame ${f.direction} ${f.counter}`, f.message, f.msgpack]),
      ['TIME_REP', timeSig.timeRep.message, timeSig.timeRep.msgpack],
      ...exchanges.steps.map((s: J) => [s.name, s.kind === 'sealed' ? s.inner : s.message, s.msgpack]),
    ]
    expect(pairs.length).to.be.greaterThan(50)
    for (const [name, value, msgpack] of pairs) expect(hex(refEncode(fromJsonValue(value))), name).to.equal(msgpack)
  })

  describe('password -> key (scrypt; independent of the NaCl backend)', () => {
    for (const vec of passwordKeys.vectors as J[]) {
      it(`derives the key: ${vec.name}`, async function () {
        if (vec.kdf.N > 4096) this.timeout(10000)
        expect(defaultSalt(vec.realm, vec.principal)).to.equal(vec.salt)
        expect(hex(Buffer.from(vec.salt, 'utf8'))).to.equal(vec.saltUtf8)
        expect(hex(Buffer.from(vec.password.normalize('NFC'), 'utf8'))).to.equal(vec.passwordNfcUtf8)
        expect(hex(await passwordToKey(vec.password, vec.salt, vec.kdf))).to.equal(vec.key)
      })
    }

    it('gives the same key for the NFD and NFC spellings of a password', () => {
      const nonAscii = (passwordKeys.vectors as J[]).filter((x) => /non-ASCII/.test(x.name))
      expect(nonAscii).to.have.length(2)
      expect(nonAscii[0].password).to.not.equal(nonAscii[1].password)
      expect(nonAscii[0].key).to.equal(nonAscii[1].key)
    })

    it('covers the default parameters N=32768 r=8 p=1', () => {
      expect((passwordKeys.vectors as J[]).some((x) => x.kdf.N === 32768 && x.kdf.r === 8 && x.kdf.p === 1)).to.equal(true)
    })
  })

  describe('framing (independent of the NaCl backend)', () => {
    for (const f of framing.frames as J[]) {
      it(`frames and reads back: ${f.name}`, () => {
        expect(hex(frame(unhex(f.body)))).to.equal(f.frame)
        const bodies = new FrameReader().push(unhex(f.frame))
        expect(bodies.map(hex)).to.deep.equal([f.body])
      })
    }
    for (const h of framing.headers as J[]) {
      it(`${h.accepted ? 'accepts' : 'refuses'} a header on sight: ${h.name}`, () => {
        expect(Buffer.from(h.header, 'hex').readUInt32BE(0)).to.equal(h.length)
        const reader = new FrameReader(h.maxFrameBytes)
        if (h.accepted) {
          expect(reader.push(unhex(h.header))).to.deep.equal([])
        } else {
          let err: unknown
          try {
            reader.push(unhex(h.header))
          } catch (e) {
            err = e
          }
          expect(isTesseraError(err, h.error), String(err)).to.equal(true)
        }
      })
    }
  })

  describe('codec (independent of the NaCl backend)', () => {
    for (const x of codec.values as J[]) {
      it(`encodes and decodes value: ${x.name}`, () => {
        expect(hex(encode(fromJsonValue(x.value)))).to.equal(x.msgpack)
        expect(toJsonValue(decode(unhex(x.msgpack)))).to.deep.equal(x.value)
      })
    }
    for (const x of codec.messages as J[]) {
      it(`encodes and decodes message: ${x.name}`, () => {
        expect(hex(encode(fromJsonValue(x.value)))).to.equal(x.msgpack)
        expect(toJsonValue(decodeMessage(unhex(x.msgpack)))).to.deep.equal(x.value)
      })
    }
    it('shows a time above 2^32 as int64, never float', () => {
      const m = (codec.messages as J[]).find((x) => /stime > 2\^32/.test(x.name))
      expect(m.value.stime).to.be.greaterThan(2 ** 32)
      expect(m.msgpack).to.include(`a57374696d65d3${m.value.stime.toString(16).padStart(16, '0')}`)
    })
    for (const x of [...codec.accepted, ...codec.lenient] as J[]) {
      it(`accepts another encoding: ${x.name}`, () => {
        expect(x.msgpack).to.not.equal(hex(encode(fromJsonValue(x.value))))
        expect(toJsonValue(decodeMessage(unhex(x.msgpack)))).to.deep.equal(x.value)
      })
    }
    for (const x of codec.rejected as J[]) {
      it(`rejects with ${x.error}: ${x.name}`, () => {
        let err: unknown
        try {
          decodeMessage(unhex(x.msgpack))
        } catch (e) {
          err = e
        }
        expect(err, 'should have thrown').to.be.instanceOf(TesseraError)
        expect((err as TesseraError).code).to.equal(x.error)
      })
    }
  })

  for (const b of allBackends) {
    describe(`with the ${b.name} backend`, () => {
      let nacl: NaclBackend
      before(() => {
        nacl = useBackend(b.name)
      })
      after(() => {
        useBackend(initial)
      })

      it('derives every usage subkey', () => {
        for (const x of usageKeys.vectors as J[]) {
          expect(hex(usageKey(unhex(x.key), x.usage)), x.name).to.equal(x.subkey)
          const u = Buffer.alloc(4)
          u.writeUInt32BE(x.usage)
          const mac = createHmac('sha256', unhex(x.key)).update('tessera/usage/v1').update(u).digest()
          expect(hex(mac), x.name).to.equal(x.subkey)
        }
      })

      it('seals every seal vector exactly and opens it back', () => {
        for (const x of sealing.vectors as J[]) {
          const key = unhex(x.key)
          expect(hex(usageKey(key, x.usage)), x.name).to.equal(x.subkey)
          expect(hex(seal(key, x.usage, unhex(x.plaintext), unhex(x.nonce))), x.name).to.equal(x.sealed)
          const box = nacl.secretbox(unhex(x.plaintext), unhex(x.nonce), unhex(x.subkey))
          expect(x.nonce + hex(box), x.name).to.equal(x.sealed)
          expect(hex(open(key, x.usage, unhex(x.sealed))), x.name).to.equal(x.plaintext)
          expect(tryOpen(key, x.usage + 1, unhex(x.sealed)), x.name).to.equal(null)
          expect(() => open(key, x.usage + 1, unhex(x.sealed))).to.throw(KrbProtocolError)
        }
      })

      it('computes every X25519 public key and shared secret', () => {
        for (const x of x25519v.publicKeys as J[]) expect(hex(nacl.x25519Base(unhex(x.secretKey))), x.name).to.equal(x.publicKey)
        for (const x of x25519v.shared as J[]) expect(hex(x25519(unhex(x.secretKey), unhex(x.publicKey))), x.name).to.equal(x.shared)
      })

      it('matches the RFC 7748 §6.1 values themselves', () => {
        const [alice, bob] = x25519v.publicKeys as J[]
        expect(alice.publicKey).to.equal('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a')
        expect(bob.publicKey).to.equal('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f')
        expect(x25519v.shared[0].shared).to.equal('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742')
        expect(x25519v.shared[2].shared).to.equal('c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552')
      })

      it('refuses every low-order X25519 point with RangeError', () => {
        const sk = unhex(x25519v.publicKeys[0].secretKey)
        expect(x25519v.lowOrder).to.have.length(14)
        for (const x of x25519v.lowOrder as J[]) expect(() => x25519(sk, unhex(x.publicKey)), x.name).to.throw(RangeError)
      })

      it('computes every Ed25519 public key and signature, and verifies them', () => {
        for (const x of ed25519v.vectors as J[]) {
          expect(hex(nacl.ed25519PublicKey(unhex(x.seed))), x.name).to.equal(x.publicKey)
          expect(hex(sign(unhex(x.message), unhex(x.seed))), x.name).to.equal(x.signature)
          expect(verify(unhex(x.message), unhex(x.signature), unhex(x.publicKey)), x.name).to.equal(true)
        }
      })

      it('matches the RFC 8032 §7.1 TEST 1 and TEST 2 values themselves', () => {
        const [t1, t2] = ed25519v.vectors as J[]
        expect(t1.publicKey).to.equal('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a')
        expect(t1.signature).to.equal(
          'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
        )
        expect(t2.publicKey).to.equal('3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c')
        expect(t2.signature).to.equal(
          '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
        )
      })

      describe('transport handshake', () => {
        const S = unhex(hs.serverStatic.secretKey)
        const Ec = unhex(hs.clientEphemeral.secretKey)
        const Es = unhex(hs.serverEphemeral.secretKey)

        it('derives the public keys, h, es, ee and the HKDF output', () => {
          expect(hex(nacl.x25519Base(S))).to.equal(hs.serverStatic.publicKey)
          expect(hex(nacl.x25519Base(Ec))).to.equal(hs.clientEphemeral.publicKey)
          expect(hex(nacl.x25519Base(Es))).to.equal(hs.serverEphemeral.publicKey)
          const [Sp, Ecp, Esp] = [hs.serverStatic.publicKey, hs.clientEphemeral.publicKey, hs.serverEphemeral.publicKey].map(unhex) as [
            Uint8Array,
            Uint8Array,
            Uint8Array,
          ]
          expect(hex(transcriptHash(Sp, Ecp, Esp))).to.equal(hs.h)
          expect(hex(x25519(Ec, Sp))).to.equal(hs.es)
          expect(hex(x25519(S, Ecp))).to.equal(hs.es)
          expect(hex(x25519(Ec, Esp))).to.equal(hs.ee)
          expect(hex(x25519(Es, Ecp))).to.equal(hs.ee)
          expect(hs.ikm).to.equal(hs.es + hs.ee)
          expect(hex(hkdf(unhex(hs.ikm), unhex(hs.h), 'tessera-nk-v1 keys', 96))).to.equal(hs.okm)
          expect(hs.okm).to.equal(hs.k_c2s + hs.k_s2c + hs.k_confirm)
          expect(hex(nacl.secretbox(unhex(hs.h), new Uint8Array(24), unhex(hs.k_confirm)))).to.equal(hs.confirm)
        })

        it('produces the HS_INIT and HS_RESP frames, and both sides agree on the keys', () => {
          const Sp = unhex(hs.serverStatic.publicKey)
          expect(plainFrame(fromJsonValue(hs.hsInit.message) as never).toString('hex')).to.equal(hs.hsInit.frame)
          expect(hs.hsInit.frame.slice(8)).to.equal(hs.hsInit.msgpack)
          const srv = serverHandshake(
            { secretKey: copy(S), publicKey: Sp },
            unhex(hs.clientEphemeral.publicKey),
            { secretKey: copy(Es), publicKey: unhex(hs.serverEphemeral.publicKey) },
          )
          expect(hex(srv.e)).to.equal(hs.serverEphemeral.publicKey)
          expect(hex(srv.confirm)).to.equal(hs.confirm)
          expect([hex(srv.keys.c2s), hex(srv.keys.s2c), hex(srv.keys.h)]).to.deep.equal([hs.k_c2s, hs.k_s2c, hs.h])
          const resp = { v: 1, t: 2, e: srv.e, confirm: srv.confirm }
          expect(plainFrame(resp as never).toString('hex')).to.equal(hs.hsResp.frame)
          expect(hex(encode(fromJsonValue(hs.hsResp.message)))).to.equal(hs.hsResp.msgpack)
          const cli = clientHandshakeFinish(Sp, { secretKey: copy(Ec), publicKey: unhex(hs.clientEphemeral.publicKey) }, srv.e, srv.confirm)
          expect(cli).to.not.equal(null)
          expect([hex(cli!.c2s), hex(cli!.s2c), hex(cli!.h)]).to.deep.equal([hs.k_c2s, hs.k_s2c, hs.h])
        })

        it('seals the first two frames in each direction with counter nonces', () => {
          for (const f of hs.frames as J[]) {
            const key = unhex(f.direction === 'c2s' ? hs.k_c2s : hs.k_s2c)
            expect(hex(counterNonce(f.counter))).to.equal(f.nonce)
            expect(hex(encode(fromJsonValue(f.message)))).to.equal(f.msgpack)
            expect(hex(sealFrame(key, f.counter, unhex(f.msgpack)))).to.equal(f.sealed)
            expect(hex(nacl.secretbox(unhex(f.msgpack), unhex(f.nonce), key))).to.equal(f.sealed)
            expect(hex(frame(unhex(f.sealed)))).to.equal(f.frame)
            expect(hex(openFrame(key, f.counter, unhex(f.sealed))!)).to.equal(f.msgpack)
            expect(openFrame(key, f.counter + 1, unhex(f.sealed))).to.equal(null)
          }
        })

        it('matches what SealedCodec sends and accepts on each side', () => {
          const keys = () => ({ c2s: unhex(hs.k_c2s), s2c: unhex(hs.k_s2c), h: unhex(hs.h) })
          const client = new SealedCodec(keys(), 'client')
          const server = new SealedCodec(keys(), 'server')
          for (const f of hs.frames as J[]) {
            const [sender, receiver] = f.direction === 'c2s' ? [client, server] : [server, client]
            const msg = fromJsonValue(f.message) as never
            expect(sender.seal(msg).toString('hex'), `${f.direction} ${f.counter}`).to.equal(f.frame)
            const body = unhex(f.frame).subarray(4)
            expect(toJsonValue(receiver.open(body))).to.deep.equal(f.message)
          }
        })
      })

      it('signs the TIME_REP input laid out as documented', () => {
        const nonce = unhex(timeSig.nonce)
        const input = timeInput(nonce, timeSig.recv, timeSig.xmit, timeSig.radius)
        expect(hex(input)).to.equal(timeSig.input)
        expect(hex(nacl.ed25519PublicKey(unhex(timeSig.signingSeed)))).to.equal(timeSig.signingKey)
        expect(hex(sign(input, unhex(timeSig.signingSeed)))).to.equal(timeSig.sig)
        expect(verify(input, unhex(timeSig.sig), unhex(timeSig.signingKey))).to.equal(true)
        const m = validateMessage(fromJsonValue(timeSig.timeRep.message)) as J
        expect(hex(m.sig)).to.equal(timeSig.sig)
        expect(hex(encode(m))).to.equal(timeSig.timeRep.msgpack)
        const tampered = timeInput(nonce, timeSig.recv + 1, timeSig.xmit, timeSig.radius)
        expect(verify(tampered, unhex(timeSig.sig), unhex(timeSig.signingKey))).to.equal(false)
      })

      it('is what the time service answers (src/kdc/time-req.ts, with its clock pinned)', () => {
        const nonce = unhex(timeSig.nonce)
        expect(hex(timeSignatureInput(nonce, timeSig.recv, timeSig.xmit, timeSig.radius))).to.equal(timeSig.input)
        const monos = [0n, 0n, BigInt(timeSig.xmit - timeSig.recv) * 1000n]
        const clock = new ServedClock({ hostNowUs: () => timeSig.recv, monoNs: () => monos.shift() ?? 0n, baseRadiusUs: timeSig.radius })
        const rep = processTimeReq(clock, unhex(timeSig.signingSeed), { v: 1, t: 40, nonce })
        expect(toJsonValue(rep)).to.deep.equal(timeSig.timeRep.message)
        expect(hex(encode(rep))).to.equal(timeSig.timeRep.msgpack)
      })

      it('recomputes every sealed part and message of the worked exchanges', () => {
        const keys = exchanges.keys as Record<string, string>
        for (const s of exchanges.steps as J[]) {
          if (s.kind === 'sealed') {
            const inner = fromJsonValue(s.inner)
            validate(InnerSchemas[s.schema as keyof typeof InnerSchemas], inner)
            expect(hex(encode(inner)), s.name).to.equal(s.msgpack)
            const key = unhex(keys[s.key]!)
            expect(hex(seal(key, s.usage, unhex(s.msgpack), unhex(s.nonce))), s.name).to.equal(s.sealed)
            expect(hex(open(key, s.usage, unhex(s.sealed))), s.name).to.equal(s.msgpack)
          } else {
            expect(hex(encode(fromJsonValue(s.message))), s.name).to.equal(s.msgpack)
            expect(toJsonValue(decodeMessage(unhex(s.msgpack))), s.name).to.deep.equal(s.message)
          }
        }
      })
    })
  }

  it('derives keys.client of the worked exchanges from the password', async () => {
    const key = await passwordToKey('password', 'EXAMPLE.COMalice', { alg: 'scrypt', N: 1024, r: 8, p: 1 })
    expect(hex(key)).to.equal(exchanges.keys.client)
  })

  it('are reproduced by the independent stdlib-only Python check (proto/vectors/check.py)', function () {
    const r = spawnSync('python3', [fileURLToPath(new URL('../../proto/vectors/check.py', import.meta.url))], { encoding: 'utf8', timeout: 20000 })
    if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') this.skip() // no python3 on this machine
    expect(r.status, r.stderr).to.equal(0)
    expect(r.stdout).to.match(/^\d+ passed, 0 failed$/m)
  })

  it('leaves the initially active backend in place', () => {
    expect(backend().name).to.equal(initial)
  })
})
