/**
 * proto/vectors/*.json: every vector recomputed with every NaCl backend, byte for byte.
 * The inputs are read from the JSON files, the outputs recomputed with src/ and compared.
 */
import { spawnSync } from 'node:child_process'
import { createHash, createHmac, hkdfSync } from 'node:crypto'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { PaType } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { AdminBody, AdminResult, type AsReq, InnerSchemas, type Message, PaEncTs } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { validate, validateMessage } from '../../proto/validate.js'
import { fromJsonValue, generateAll, renderVectorFile, T0, toJsonValue } from '../../proto/vectors/generate.js'
import { startKdc as startAdminKdc } from '../../src/admin/start.js'
import { AdminClient } from '../../src/client/admin-client.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { allBackends, backend, type NaclBackend, useBackend } from '../../src/crypto/backend.js'
import {
  checkConfirm,
  clientHandshakeFinish,
  confirmBox,
  counterNonce,
  defaultSalt,
  earlyDataHash,
  hkdf,
  open,
  openEarly,
  openFrame,
  openTicketBox,
  passwordToKey,
  randomKey,
  resumeEarly,
  resumeKeys,
  seal,
  sealEarly,
  sealFrame,
  sealTicketBox,
  identityKeyId,
  serverHandshake,
  sign,
  transcriptHash,
  tryOpen,
  usageKey,
  verify,
  x25519,
} from '../../src/crypto/index.js'
import { DEFAULT_POLICY } from '../../src/db/policy.js'
import { isTesseraError, KrbProtocolError, TesseraError } from '../../src/errors.js'
import type { RunningKdc } from '../../src/kdc/kdc.js'
import { processTimeReq, ServedClock } from '../../src/kdc/time-req.js'
import { openPart, sealPart } from '../../src/krb/parts.js'
import { timeSignatureInput } from '../../src/krb/time-sig.js'
import { decodeMessage, plainFrame, SealedCodec } from '../../src/wire/channel.js'
import { connectChannel } from '../../src/wire/client.js'
import { decode, encode } from '../../src/wire/codec.js'
import { FrameReader, frame } from '../../src/wire/frame-reader.js'
import type { TicketIssuer } from '../../src/wire/resumption.js'
import { SecureServer } from '../../src/wire/server.js'
import { ADMIN_PASSWORD, expectKrbError, expectType, FAST_CONFIG, tgsReq, useTestKdc } from '../helpers/kdc-helpers.js'
import { refEncode } from './msgpack-ref.js'
import { importJWK, jwtVerify } from 'jose'
import { clientKeyThumbprint, signServiceToken } from '../../src/kdc/jwt.js'
import { signingKeyId } from '../../src/krb/jwks.js'

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
  'resumption.json',
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
const res = load('resumption.json')
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
      ['HS_RESP with nt', hs.hsRespWithNt.message, hs.hsRespWithNt.msgpack],
      ...hs.frames.map((f: J) => [`frame ${f.direction} ${f.counter}`, f.message, f.msgpack]),
      ['early request', res.early.message, res.early.msgpack],
      ['HS_RESUME', res.hsResume.message, res.hsResume.msgpack],
      ['HS_RESUMED', res.hsResumed.message, res.hsResumed.msgpack],
      ...res.frames.map((f: J) => [`resumed frame ${f.direction} ${f.counter}`, f.message, f.msgpack]),
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
          expect(hex(hkdf(unhex(hs.ikm), unhex(hs.h), 'tessera-nk-v1 keys', 160))).to.equal(hs.okm)
          expect(hs.okm).to.have.length(320)
          expect(hs.okm).to.equal(hs.k_c2s + hs.k_s2c + hs.k_confirm + hs.k_res + hs.rms)
          // A client that ignores tickets may stop at L = 96: the prefix does not depend on L.
          expect(hex(hkdf(unhex(hs.ikm), unhex(hs.h), 'tessera-nk-v1 keys', 96))).to.equal(hs.okm.slice(0, 192))
          expect(hex(nacl.secretbox(unhex(hs.h), new Uint8Array(24), unhex(hs.k_confirm)))).to.equal(hs.confirm)
        })

        it('produces the HS_INIT and HS_RESP frames, and both sides agree on the keys', () => {
          const Sp = unhex(hs.serverStatic.publicKey)
          expect(plainFrame(fromJsonValue(hs.hsInit.message) as never).toString('hex')).to.equal(hs.hsInit.frame)
          expect(hs.hsInit.frame.slice(8)).to.equal(hs.hsInit.msgpack)
          expect(plainFrame(fromJsonValue(hs.hsInitWithKeyId.message) as never).toString('hex')).to.equal(hs.hsInitWithKeyId.frame)
          expect(hex(identityKeyId(Sp))).to.equal(hs.transport_kid)
          expect(hs.hsInitWithKeyId.message.k.$bin).to.equal(hs.transport_kid)
          expect(hex(identityKeyId(unhex(timeSig.signingKey)))).to.equal(hs.signing_kid)
          const srv = serverHandshake(
            { secretKey: copy(S), publicKey: Sp },
            unhex(hs.clientEphemeral.publicKey),
            { secretKey: copy(Es), publicKey: unhex(hs.serverEphemeral.publicKey) },
          )
          expect(hex(srv.e)).to.equal(hs.serverEphemeral.publicKey)
          expect(hex(srv.confirm)).to.equal(hs.confirm)
          expect([hex(srv.keys.c2s), hex(srv.keys.s2c), hex(srv.keys.h)]).to.deep.equal([hs.k_c2s, hs.k_s2c, hs.h])
          expect([hex(srv.keys.res!), hex(srv.keys.rms!)]).to.deep.equal([hs.k_res, hs.rms])
          const resp = { v: 1, t: 2, e: srv.e, confirm: srv.confirm }
          expect(plainFrame(resp as never).toString('hex')).to.equal(hs.hsResp.frame)
          expect(hex(encode(fromJsonValue(hs.hsResp.message)))).to.equal(hs.hsResp.msgpack)
          const cli = clientHandshakeFinish(Sp, { secretKey: copy(Ec), publicKey: unhex(hs.clientEphemeral.publicKey) }, srv.e, srv.confirm)
          expect(cli).to.not.equal(null)
          expect([hex(cli!.c2s), hex(cli!.s2c), hex(cli!.h)]).to.deep.equal([hs.k_c2s, hs.k_s2c, hs.h])
          expect([hex(cli!.res!), hex(cli!.rms!)]).to.deep.equal([hs.k_res, hs.rms])
        })

        it('seals the resumption ticket box of HS_RESP, and the client opens it with k_res', () => {
          const { nt } = hs
          expect(nt.plaintext).to.equal(nt.lifetime_s.toString(16).padStart(8, '0') + nt.tk)
          expect(hex(nacl.secretbox(unhex(nt.plaintext), new Uint8Array(24), unhex(hs.k_res)))).to.equal(nt.box)
          expect(hex(sealTicketBox(unhex(hs.k_res), nt.lifetime_s, unhex(nt.tk)))).to.equal(nt.box)
          const opened = openTicketBox(unhex(hs.k_res), unhex(nt.box))
          expect(opened).to.not.equal(null)
          expect([opened!.lifetimeS, hex(opened!.tk)]).to.deep.equal([nt.lifetime_s, nt.tk])
          expect(openTicketBox(unhex(hs.k_confirm), unhex(nt.box))).to.equal(null)
          const resp = { v: 1, t: 2, e: unhex(hs.serverEphemeral.publicKey), confirm: unhex(hs.confirm), nt: unhex(nt.box) }
          expect(plainFrame(resp as never).toString('hex')).to.equal(hs.hsRespWithNt.frame)
          expect(hs.hsRespWithNt.frame.slice(8)).to.equal(hs.hsRespWithNt.msgpack)
          expect(toJsonValue(decodeMessage(unhex(hs.hsRespWithNt.msgpack)))).to.deep.equal(hs.hsRespWithNt.message)
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

      describe('transport resumption', () => {
        const Sp = () => unhex(hs.serverStatic.publicKey)
        const sha = (...parts: string[]) => createHash('sha256').update(Buffer.from(parts.join(''), 'hex')).digest('hex')
        const hkdfHex = (ikm: string, salt: string, info: string, len: number) =>
          Buffer.from(hkdfSync('sha256', unhex(ikm), unhex(salt), info, len)).toString('hex')

        it('starts from the rms and the ticket of handshake.json', () => {
          expect(res.serverStaticPublicKey).to.equal(hs.serverStatic.publicKey)
          expect(res.rms).to.equal(hs.rms)
          expect([res.tk, res.lifetime_s]).to.deep.equal([hs.nt.tk, hs.nt.lifetime_s])
        })

        it('derives h, k_early, h2, okm and the keys as documented (node:crypto) and as resumeEarly/resumeKeys do', () => {
          const age = res.age.toString(16).padStart(8, '0')
          expect(res.h_input).to.equal(Buffer.from('tessera-resume-v1').toString('hex') + res.serverStaticPublicKey + res.cr + age + res.tk)
          expect(sha(res.h_input)).to.equal(res.h)
          expect(hkdfHex(res.rms, res.h, 'tessera-resume-v1 early', 32)).to.equal(res.k_early)
          expect(res.xh_input).to.equal(`${Buffer.from('tessera-resume-v1 x').toString('hex')}01${res.x}`)
          expect(sha(res.xh_input)).to.equal(res.xh)
          expect(hex(earlyDataHash(unhex(res.x)))).to.equal(res.xh)
          expect(sha(res.h, res.xh, res.ns)).to.equal(res.h2)
          expect(hkdfHex(res.rms, res.h2, 'tessera-resume-v1 keys', 160)).to.equal(res.okm)
          expect(res.okm).to.equal(res.k_c2s + res.k_s2c + res.k_confirm + res.k_res + res.rms_next)
          const early = resumeEarly(Sp(), unhex(res.cr), res.age, unhex(res.tk), unhex(res.rms))
          expect([hex(early.h), hex(early.earlyKey)]).to.deep.equal([res.h, res.k_early])
          const { confirmKey, keys } = resumeKeys(unhex(res.h), unhex(res.x), unhex(res.ns), unhex(res.rms))
          expect([hex(keys.h), hex(keys.c2s), hex(keys.s2c), hex(confirmKey), hex(keys.res!), hex(keys.rms!)]).to.deep.equal([
            res.h2,
            res.k_c2s,
            res.k_s2c,
            res.k_confirm,
            res.k_res,
            res.rms_next,
          ])
          expect(hex(nacl.secretbox(unhex(res.h2), new Uint8Array(24), unhex(res.k_confirm)))).to.equal(res.confirm)
          expect(hex(confirmBox(confirmKey, keys.h))).to.equal(res.confirm)
        })

        it('derives the keys of the same resumption without early data from xh = SHA-256("tessera-resume-v1 x" || 0x00)', () => {
          const w = res.withoutEarlyData
          expect(w.xh_input).to.equal(`${Buffer.from('tessera-resume-v1 x').toString('hex')}00`)
          expect(sha(w.xh_input)).to.equal(w.xh)
          expect(hex(earlyDataHash(undefined))).to.equal(w.xh)
          expect(sha(res.h, w.xh, res.ns)).to.equal(w.h2)
          expect(hkdfHex(res.rms, w.h2, 'tessera-resume-v1 keys', 160)).to.equal(w.okm)
          const { confirmKey, keys } = resumeKeys(unhex(res.h), undefined, unhex(res.ns), unhex(res.rms))
          expect([hex(keys.h), hex(keys.c2s)]).to.deep.equal([w.h2, w.okm.slice(0, 64)])
          expect(hex(confirmBox(confirmKey, keys.h))).to.equal(w.confirm)
          expect(w.confirm).to.not.equal(res.confirm)
        })

        it('client side: seals the early request and frames HS_RESUME', () => {
          expect(hex(encode(fromJsonValue(res.early.message)))).to.equal(res.early.msgpack)
          expect(hex(sealEarly(unhex(res.k_early), unhex(res.early.msgpack)))).to.equal(res.x)
          expect(hex(nacl.secretbox(unhex(res.early.msgpack), new Uint8Array(24), unhex(res.k_early)))).to.equal(res.x)
          const m = { v: 1, t: 3, tk: unhex(res.tk), cr: unhex(res.cr), age: res.age, x: unhex(res.x) }
          expect(toJsonValue(m)).to.deep.equal(res.hsResume.message)
          expect(plainFrame(m as never).toString('hex')).to.equal(res.hsResume.frame)
          expect(res.hsResume.frame.slice(8)).to.equal(res.hsResume.msgpack)
        })

        it('server side: accepts HS_RESUME, answers HS_RESUMED with the next ticket, and opens x', () => {
          const msg = decodeMessage(unhex(res.hsResume.frame).subarray(4))
          expect(msg.t).to.equal(MsgType.HS_RESUME)
          if (msg.t !== MsgType.HS_RESUME) return
          const { h, earlyKey } = resumeEarly(Sp(), msg.cr, msg.age, msg.tk, unhex(res.rms))
          const { confirmKey, keys } = resumeKeys(h, msg.x, unhex(res.ns), unhex(res.rms))
          const resp = {
            v: 1,
            t: 4,
            n: unhex(res.ns),
            confirm: confirmBox(confirmKey, keys.h),
            nt: sealTicketBox(keys.res!, res.nt.lifetime_s, unhex(res.nt.tk)),
          }
          expect(plainFrame(resp as never).toString('hex')).to.equal(res.hsResumed.frame)
          expect(res.hsResumed.frame.slice(8)).to.equal(res.hsResumed.msgpack)
          expect(hex(keys.rms!)).to.equal(res.rms_next)
          const plain = openEarly(earlyKey, msg.x!)
          expect(plain).to.not.equal(null)
          expect(toJsonValue(decodeMessage(plain!))).to.deep.equal(res.early.message)
          // x is bound to this resumption: another client random (or ticket) gives another k_early.
          const other = resumeEarly(Sp(), unhex(res.ns), msg.age, msg.tk, unhex(res.rms))
          expect(openEarly(other.earlyKey, msg.x!)).to.equal(null)
          // ...and so does another age: a replay with a rewritten age cannot open x.
          const otherAge = resumeEarly(Sp(), msg.cr, msg.age + 1, msg.tk, unhex(res.rms))
          expect(openEarly(otherAge.earlyKey, msg.x!)).to.equal(null)
        })

        it('client side: checks confirm and opens the next ticket, to resume again with (tk, rms_next)', () => {
          const msg = decodeMessage(unhex(res.hsResumed.frame).subarray(4))
          expect(msg.t).to.equal(MsgType.HS_RESUMED)
          if (msg.t !== MsgType.HS_RESUMED) return
          const { confirmKey, keys } = resumeKeys(unhex(res.h), unhex(res.x), msg.n, unhex(res.rms))
          expect(checkConfirm(confirmKey, keys.h, msg.confirm)).to.equal(true)
          const wrong = resumeKeys(unhex(res.h), unhex(res.x), unhex(res.cr), unhex(res.rms))
          expect(checkConfirm(wrong.confirmKey, wrong.keys.h, msg.confirm)).to.equal(false)
          // x is bound into h2: a client whose x was stripped on the way (the server saw none), or
          // that sent none while one was added, does not accept this HS_RESUMED.
          const stripped = resumeKeys(unhex(res.h), undefined, msg.n, unhex(res.rms))
          expect(checkConfirm(stripped.confirmKey, stripped.keys.h, msg.confirm)).to.equal(false)
          expect(hex(msg.nt!)).to.equal(res.nt.box)
          expect(res.nt.plaintext).to.equal(res.nt.lifetime_s.toString(16).padStart(8, '0') + res.nt.tk)
          expect(hex(nacl.secretbox(unhex(res.nt.plaintext), new Uint8Array(24), unhex(res.k_res)))).to.equal(res.nt.box)
          const opened = openTicketBox(keys.res!, msg.nt!)
          expect(opened).to.not.equal(null)
          expect([opened!.lifetimeS, hex(opened!.tk)]).to.deep.equal([res.nt.lifetime_s, res.nt.tk])
          expect(hex(keys.rms!)).to.equal(res.rms_next)
          expect(openTicketBox(unhex(hs.k_res), msg.nt!)).to.equal(null)
        })

        it('seals the reply to the early request as s2c frame 0 and the next request as c2s frame 0', () => {
          expect(res.frames.map((f: J) => `${f.direction} ${f.counter}`)).to.deep.equal(['s2c 0', 'c2s 0'])
          const keys = () => ({ c2s: unhex(res.k_c2s), s2c: unhex(res.k_s2c), h: unhex(res.h2) })
          const client = new SealedCodec(keys(), 'client')
          const server = new SealedCodec(keys(), 'server')
          for (const f of res.frames as J[]) {
            const key = unhex(f.direction === 'c2s' ? res.k_c2s : res.k_s2c)
            expect(hex(counterNonce(f.counter))).to.equal(f.nonce)
            expect(hex(encode(fromJsonValue(f.message)))).to.equal(f.msgpack)
            expect(hex(sealFrame(key, f.counter, unhex(f.msgpack)))).to.equal(f.sealed)
            expect(hex(frame(unhex(f.sealed)))).to.equal(f.frame)
            const [sender, receiver] = f.direction === 'c2s' ? [client, server] : [server, client]
            expect(sender.seal(fromJsonValue(f.message) as never).toString('hex'), `${f.direction} ${f.counter}`).to.equal(f.frame)
            expect(toJsonValue(receiver.open(unhex(f.frame).subarray(4)))).to.deep.equal(f.message)
          }
          // The reply answers the early request.
          expect(res.frames[0].message.t).to.equal(MsgType.TIME_REP)
          expect(res.frames[0].message.nonce).to.deep.equal(res.early.message.nonce)
        })

        /**
         * Send one HS_RESUME frame to a real SecureServer whose issuer knows only the vector's ticket
         * (Tessera's own TicketIssuer seals tickets under random keys); collect the frame bodies it
         * sends until it has sent `want` of them or closes.
         */
        async function resumeAgainstServer(hsResumeFrame: Uint8Array, want: number) {
          const redeemed: [string, string, number][] = []
          const issuer = {
            lifetimeS: res.nt.lifetime_s,
            redeem(tk: Uint8Array, cr: Uint8Array, age: number) {
              redeemed.push([hex(tk), hex(cr), age])
              return hex(tk) === res.tk ? { rms: unhex(res.rms), renew: true } : { refused: 'bad-ticket' as const }
            },
            issue: (rms: Uint8Array) => {
              expect(hex(rms)).to.not.equal(res.rms) // the next ticket carries this connection's rms'
              return unhex(res.nt.tk)
            },
          } as unknown as TicketIssuer
          const handled: Message[] = []
          const server = new SecureServer(
            { staticKey: { secretKey: unhex(hs.serverStatic.secretKey), publicKey: Sp() }, resumption: issuer, handshakeTimeoutMs: 2000 },
            (msg) => {
              handled.push(msg)
              return fromJsonValue(res.frames[0].message) as Message
            },
          )
          const { port } = await server.listen()
          const socket = net.connect({ host: '127.0.0.1', port })
          const bodies: Buffer[] = []
          try {
            const reader = new FrameReader()
            await new Promise<void>((resolve, reject) => {
              socket.on('error', reject)
              socket.on('data', (chunk: Buffer) => {
                bodies.push(...reader.push(chunk))
                if (bodies.length >= want) resolve()
              })
              socket.on('end', () => resolve())
              socket.write(hsResumeFrame)
            })
          } finally {
            socket.destroy()
            await server.close()
          }
          return { redeemed, handled, bodies }
        }

        /** The keys a client derives from the server's HS_RESUMED (whose ns is the server's own random). */
        function keysFromResumed(body: Uint8Array, x: Uint8Array | undefined = unhex(res.x)) {
          const resumed = decodeMessage(body)
          expect(resumed.t).to.equal(MsgType.HS_RESUMED)
          if (resumed.t !== MsgType.HS_RESUMED) throw new Error('not HS_RESUMED')
          const { confirmKey, keys } = resumeKeys(unhex(res.h), x, resumed.n, unhex(res.rms))
          expect(checkConfirm(confirmKey, keys.h, resumed.confirm)).to.equal(true)
          return { resumed, keys }
        }

        it("a SecureServer holding the vector's rms takes the HS_RESUME frame, runs x and answers it as s2c frame 0", async () => {
          const { redeemed, handled, bodies } = await resumeAgainstServer(unhex(res.hsResume.frame), 2)
          expect(redeemed).to.deep.equal([[res.tk, res.cr, res.age]])
          expect(toJsonValue(handled)).to.deep.equal([res.early.message])
          expect(bodies).to.have.length(2)
          const { resumed, keys } = keysFromResumed(bodies[0]!)
          const opened = openTicketBox(keys.res!, resumed.nt!)
          expect([opened?.lifetimeS, opened && hex(opened.tk)]).to.deep.equal([res.nt.lifetime_s, res.nt.tk])
          const client = new SealedCodec({ c2s: keys.c2s, s2c: keys.s2c, h: keys.h }, 'client')
          expect(toJsonValue(client.open(bodies[1]!))).to.deep.equal(res.frames[0].message)
        })

        it('the SecureServer refuses an unknown ticket with TSR_ERR_RESUME in clear, without running x', async () => {
          const m = fromJsonValue(res.hsResume.message) as J
          m.tk = unhex(res.nt.tk)
          const { redeemed, handled, bodies } = await resumeAgainstServer(plainFrame(m), 2)
          expect(redeemed).to.have.length(1)
          expect(handled).to.deep.equal([])
          expect(bodies).to.have.length(1)
          const err = decodeMessage(bodies[0]!) as J
          expect([err.t, err.code]).to.deep.equal([MsgType.KRB_ERROR, ErrorCode.TSR_ERR_RESUME])
        })

        for (const [what, plain, code] of [
          ['x that does not open: TSR_ERR_TRANSPORT_INTEGRITY', null, ErrorCode.TSR_ERR_TRANSPORT_INTEGRITY],
          ['x that opens but does not decode: TSR_ERR_MALFORMED', unhex('c1'), ErrorCode.TSR_ERR_MALFORMED],
        ] as const) {
          it(`the SecureServer answers HS_RESUMED, then an ${what}, sealed as s2c frame 0`, async () => {
            const m = fromJsonValue(res.hsResume.message) as J
            if (plain) m.x = sealEarly(unhex(res.k_early), plain)
            else m.x[m.x.length - 1] ^= 1
            const { handled, bodies } = await resumeAgainstServer(plainFrame(m), 3)
            expect(handled).to.deep.equal([])
            expect(bodies).to.have.length(2)
            const { keys } = keysFromResumed(bodies[0]!, m.x)
            const err = new SealedCodec({ c2s: keys.c2s, s2c: keys.s2c, h: keys.h }, 'client').open(bodies[1]!) as J
            expect([err.t, err.code]).to.deep.equal([MsgType.KRB_ERROR, code])
          })
        }
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

  it('pins the JWT of the worked TGS exchange: EdDSA at+jwt under the vectors signing key, bound to jwtKey (§15.1)', async () => {
    const step = (name: string) => (exchanges.steps as J[]).find((s) => s.name === name)!
    const token = (fromJsonValue(step('TGS_REP EncJwtPart').inner) as { token: string }).token
    const jwtKey = (fromJsonValue(step('TGS_REQ TgsAuthenticator with jwtKey').inner) as { jwtKey: Uint8Array }).jwtKey
    const signingKey = unhex(load('time-signature.json').signingKey)
    const pub = await importJWK({ kty: 'OKP', crv: 'Ed25519', x: Buffer.from(signingKey).toString('base64url') }, 'EdDSA')
    const { payload, protectedHeader } = await jwtVerify(token, pub, { algorithms: ['EdDSA'], typ: 'at+jwt', currentDate: new Date(T0 + 2000) })
    expect(protectedHeader).to.deep.equal({ alg: 'EdDSA', typ: 'at+jwt', kid: await signingKeyId(signingKey) })
    expect((payload.cnf as { jkt: string }).jkt).to.equal(await clientKeyThumbprint(jwtKey))
    // the KDC's own signing function gives these bytes from these claims
    const again = await signServiceToken({ secretKey: unhex(load('time-signature.json').signingSeed), publicKey: signingKey }, payload)
    expect(again).to.equal(token)
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

/** Every KRB_ERROR example in the vector files, with where it is. */
function exampleErrors(): [string, J][] {
  const out: [string, J][] = []
  for (const m of codec.messages as J[]) if (m.value.t === MsgType.KRB_ERROR) out.push([`codec.json ${m.name}`, m.value])
  for (const f of hs.frames as J[]) if (f.message.t === MsgType.KRB_ERROR) out.push([`handshake.json frame ${f.direction} ${f.counter}`, f.message])
  for (const s of exchanges.steps as J[]) if (s.kind === 'message' && s.message.t === MsgType.KRB_ERROR) out.push([`exchanges.json ${s.name}`, s.message])
  return out
}

const exchangeMessage = (name: string): J => (exchanges.steps as J[]).find((s) => s.kind === 'message' && s.name === name)!.message

describe('proto/vectors against a running KDC (what the daemon sends has the shape of the examples)', function () {
  this.timeout(20000)
  // The realm, principal, password and KDF of exchanges.json.
  const t = useTestKdc({ realm: 'EXAMPLE.COM' })
  const alice = ['alice']
  let clientKey: Uint8Array

  before(async () => {
    await t.kdc.addPrincipal('alice', { password: 'password' })
    clientKey = unhex(exchanges.keys.client)
  })

  const asReqFor = (cname: string[], over: Partial<AsReq> = {}): AsReq => ({
    v: 1,
    t: MsgType.AS_REQ,
    cname,
    realm: 'EXAMPLE.COM',
    sname: ['krbtgt', 'EXAMPLE.COM'],
    till: 0,
    nonce: 7,
    options: 0,
    padata: [],
    ...over,
  })
  const encTs = (ts: number) => [
    { type: PaType.PA_ENC_TIMESTAMP, value: sealPart(clientKey, KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, PaEncTs, { ts, us: 0 }) },
  ]

  it('covers KRB_ERROR examples in codec.json, handshake.json and exchanges.json', () => {
    const files = new Set(exampleErrors().map(([where]) => where.split(' ')[0]))
    expect([...files]).to.have.members(['codec.json', 'handshake.json', 'exchanges.json'])
  })

  it('answers PREAUTH_REQUIRED with the edata of the examples: salt and kdf, no kvno (§8.1), for a known and an unknown principal', async () => {
    const ch = await t.channel('as')
    const vector = exchangeMessage('KRB_ERROR KDC_ERR_PREAUTH_REQUIRED with pre-auth hints')
    const known = expectKrbError(await ch.request(asReqFor(alice)), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    expect(toJsonValue(known.edata)).to.deep.equal(vector.edata)
    const unknown = expectKrbError(await ch.request(asReqFor(['nobody'])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED)
    expect(Object.keys(unknown.edata ?? {})).to.have.members(Object.keys(vector.edata))
    for (const [where, m] of exampleErrors())
      if (m.code === ErrorCode.KDC_ERR_PREAUTH_REQUIRED) {
        expect(m.edata, where).to.not.have.property('kvno')
        expect(Object.keys(m.edata), where).to.have.members(['salt', 'kdf'])
      }
  })

  it('sends an AS_REP for a password-derived key with the fields of the AS_REP example, salt and kdf included (§6)', async () => {
    const ch = await t.channel('as')
    const rep = expectType(await ch.request(asReqFor(alice, { padata: encTs(t.kdc.context.now()) })), MsgType.AS_REP)
    const vector = exchangeMessage('AS_REP')
    expect(Object.keys(rep)).to.have.members(Object.keys(vector))
    expect(rep.salt).to.equal(vector.salt)
    expect(toJsonValue(rep.kdf)).to.deep.equal(vector.kdf)
  })

  it('uses the example texts for PREAUTH_REQUIRED and SKEW (texts are informative only, §9)', async () => {
    const ch = await t.channel('as')
    const seen = new Map<number, string>()
    seen.set(ErrorCode.KDC_ERR_PREAUTH_REQUIRED, expectKrbError(await ch.request(asReqFor(alice)), ErrorCode.KDC_ERR_PREAUTH_REQUIRED).text)
    const skewed = await ch.request(asReqFor(alice, { padata: encTs(t.kdc.context.now() - 3600_000) }))
    seen.set(ErrorCode.KRB_AP_ERR_SKEW, expectKrbError(skewed, ErrorCode.KRB_AP_ERR_SKEW).text)
    // The TGS words its skew refusal the same way.
    const tgt = await t.client().login('alice', 'password')
    const tgs = await t.channel('tgs')
    const tgsSkew = await tgs.request(tgsReq(tgt, ['krbtgt', 'EXAMPLE.COM'], { ctime: t.kdc.context.now() - 3600_000 }))
    expect(expectKrbError(tgsSkew, ErrorCode.KRB_AP_ERR_SKEW).text).to.equal(seen.get(ErrorCode.KRB_AP_ERR_SKEW))
    const examples = exampleErrors()
    expect(examples.length).to.be.at.least(4)
    for (const [where, m] of examples) expect(m.text, where).to.equal(seen.get(m.code))
  })

  it('sends the texts that PROTOCOL.md §9.3 quotes', async () => {
    const doc = readFileSync(new URL('../../proto/PROTOCOL.md', import.meta.url), 'utf8')
    const section = doc.slice(doc.indexOf('\n### 9.3'), doc.indexOf('\n## 10.'))
    const quoted = [...section.matchAll(/^\| (\d+) \| `([^`]+)`/gm)].map((m) => [Number(m[1]), m[2]!] as const)
    expect(quoted.map(([code]) => code)).to.have.members([25, 37, 24, 18, 100])
    await t.kdc.db.putPolicy({ ...DEFAULT_POLICY, name: 'one-try', maxFailures: 1 })
    await t.kdc.addPrincipal('locked-out', { password: 'the-password', policy: 'one-try' })
    const ch = await t.channel('as')
    const wrongKey = [{ type: PaType.PA_ENC_TIMESTAMP, value: sealPart(randomKey(), KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, PaEncTs, { ts: 1, us: 0 }) }]
    const texts = new Map<number, string>([
      [25, expectKrbError(await ch.request(asReqFor(alice)), 25).text],
      [37, expectKrbError(await ch.request(asReqFor(alice, { padata: encTs(t.kdc.context.now() - 3600_000) })), 37).text],
      [24, expectKrbError(await ch.request(asReqFor(['locked-out'], { padata: wrongKey })), 24).text],
      [18, expectKrbError(await ch.request(asReqFor(['locked-out'])), 18).text],
    ])
    for (const [code, text] of quoted) if (code !== 100) expect(texts.get(code), `§9.3 text of ${code}`).to.equal(text)
    // 100 closes the connection: on its own channel.
    const bad = await t.channel('as')
    const malformed = expectKrbError(await bad.request(asReqFor(['\u{1F600}'.repeat(128)])), ErrorCode.TSR_ERR_MALFORMED)
    expect(malformed.text.startsWith(quoted.find(([c]) => c === 100)![1])).to.equal(true)
    expect(section).to.include(malformed.text.slice('invalid message: '.length))
  })
})

/** The AdminResult inner part of a step of exchanges.json. */
const exchangeInner = (name: string): J => (exchanges.steps as J[]).find((s) => s.kind === 'sealed' && s.name === name)!.inner

describe('proto/vectors against a running admin service (the admin examples of exchanges.json, §8.5)', function () {
  this.timeout(20000)
  let kdc: RunningKdc
  let kc: KdcClient

  before(async () => {
    kdc = await startAdminKdc({ realm: 'EXAMPLE.COM', adminPassword: ADMIN_PASSWORD, config: FAST_CONFIG })
    kc = new KdcClient(kdc.realmFile, { connectTimeoutMs: 2000, timeoutMs: 10_000 })
    const admin = await AdminClient.login(kc, 'admin', ADMIN_PASSWORD)
    await admin.call('addprinc', { name: 'alice', password: 'password' })
    await admin.call('addprinc', { name: 'bob', password: 'another password' })
  })
  after(async () => {
    kc.close()
    await kdc.close()
  })

  /** Send one AdminBody as the vectors do (op, args from the example) and open the AdminResult. */
  async function exchange(who: string, password: string, bodyStep: string): Promise<J> {
    const creds = (await AdminClient.login(kc, who, password)).creds
    const example = exchangeInner(bodyStep)
    const ch = await connectChannel({
      host: kdc.addresses.admin.host,
      port: kdc.addresses.admin.port,
      serverKey: kdc.realmFile.transportKey,
      connectTimeoutMs: 2000,
      handshakeTimeoutMs: 2000,
    })
    try {
      const body = { crealm: creds.crealm, cname: creds.cname, ctime: kdc.context.now(), cusec: example.cusec, op: example.op, args: fromJsonValue(example.args) }
      expect(Object.keys(body)).to.deep.equal(Object.keys(example))
      const auth = sealPart(creds.sessionKey, KeyUsage.ADMIN_REQ_BODY, AdminBody, body as AdminBody)
      const rep = expectType(await ch.request({ v: 1, t: MsgType.ADMIN_REQ, ticket: creds.ticket, auth }), MsgType.ADMIN_REP)
      expect(Object.keys(rep)).to.deep.equal(Object.keys(exchangeMessage('ADMIN_REP')))
      return openPart(creds.sessionKey, KeyUsage.ADMIN_REP_BODY, AdminResult, rep.enc)
    } finally {
      ch.close()
    }
  }

  it('refuses getprinc to alice inside the AdminResult with 107 and the example text, the fields in the example order', async () => {
    const example = exchangeInner('ADMIN_REP AdminResult')
    const r = await exchange('alice', 'password', 'ADMIN_REQ AdminBody')
    expect(Object.keys(r)).to.deep.equal(Object.keys(example))
    expect(r.ok).to.equal(false)
    expect(r.code).to.equal(example.code)
    expect(r.text).to.equal(example.text)
  })

  it('answers addprinc --randkey with the result of the example: the name, kvno 1 and the one new key, shaped as in the example', async () => {
    const example = exchangeInner('ADMIN_REP AdminResult addprinc randkey')
    const r = await exchange('admin', ADMIN_PASSWORD, 'ADMIN_REQ AdminBody addprinc randkey')
    expect(Object.keys(r)).to.deep.equal(Object.keys(example))
    expect(r.ok).to.equal(true)
    expect(Object.keys(r.result)).to.deep.equal(Object.keys(example.result))
    expect(r.result.name).to.equal(example.result.name)
    expect(r.result.kvno).to.equal(example.result.kvno)
    expect(r.result.keys).to.have.length(1)
    expect(Object.keys(r.result.keys[0])).to.deep.equal(Object.keys(example.result.keys[0]))
    const { key, createdAt, ...rest } = r.result.keys[0]
    const { key: exKey, createdAt: _t, ...exRest } = fromJsonValue(example.result.keys[0]) as J
    expect(rest).to.deep.equal(exRest)
    expect(key).to.be.instanceOf(Uint8Array)
    expect(key.length).to.equal(exKey.length)
    expect(createdAt).to.be.a('number')
  })
})
