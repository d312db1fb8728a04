/**
 * Codec microbenchmark: the per-request work of the transport minus the network,
 * broken into its steps, so the transport figures can be explained.
 *
 *   tessera codec op=decode_message msg=TIME_REQ ns_per_op=... ops_per_s=...
 *   tessera codec op=principal_miss msg=on_disk_20000 ns_per_op=...   (one PrincipalDb read, cache off)
 *
 * exchange = one request/reply through real SealedCodecs on both ends, no sockets:
 * client seal, FrameReader.push, server open (secretbox open, scan, unpack, validate),
 * server seal (encode, secretbox, frame), client open. About twice a server's share.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { Packr } from 'msgpackr'
import type { Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { validateMessage } from '../../proto/validate.js'
import { backend, DEFAULT_KDF_PARAMS, openFrame, randomKey, sealFrame, serverHandshake, x25519KeyPair } from '../../src/crypto/index.js'
import { LruCache } from '../../src/db/lru.js'
import { PrincipalDb } from '../../src/db/principal-db.js'
import type { PrincipalId } from '../../src/db/types.js'
import { newPrincipalRecord } from '../../src/kdc/realm.js'
import { decodeMessage, SealedCodec } from '../../src/wire/channel.js'
import { decode, encode } from '../../src/wire/codec.js'
import { FrameReader, frame } from '../../src/wire/frame-reader.js'
import { type BenchOptions, machineNote, note, optionsFromEnv, report, timeSync, waitQuiet, wanted } from './common.js'

const TIME_REQ: Message = { v: PROTOCOL_VERSION, t: MsgType.TIME_REQ, nonce: new Uint8Array(32).fill(5) }
const TIME_REP: Message = {
  v: PROTOCOL_VERSION,
  t: MsgType.TIME_REP,
  nonce: new Uint8Array(32).fill(7),
  recv: 1_760_000_000_000_000,
  xmit: 1_760_000_000_000_050,
  radius: 1000,
  sig: new Uint8Array(64).fill(9),
}

/** Run the codec microbenchmarks. */
export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  note(`codec: backend=${backend().name}, fastest of 5 samples per op`)
  await waitQuiet('codec')
  const t = { sampleMs: Math.min(60, Math.max(10, opts.seconds * 20)) }
  const emit = (op: string, msg: string, fn: (i: number) => unknown) => {
    if (!wanted(opts, { op, msg })) return
    const r = timeSync(fn, t)
    report('codec', {
      op,
      msg,
      ns_per_op: Math.round(r.nsPerOp),
      ops_per_s: Math.round(1e9 / r.nsPerOp),
      iters: r.iters,
      ...(Number.isNaN(r.bg) ? {} : { bg_cpu_util: r.bg }),
    })
  }

  const reqBody = encode(TIME_REQ)
  const repBody = encode(TIME_REP)
  note(`codec: TIME_REQ body=${reqBody.length}B, TIME_REP body=${repBody.length}B (+16 B tag, +4 B length when sealed)`)
  // A plain Packr as a reference point for our encode (which first rewrites large integers as BigInt).
  const plainPackr = new Packr({ useRecords: false, variableMapSize: true, mapsAsObjects: true, bundleStrings: false })

  emit('encode', 'TIME_REP', () => encode(TIME_REP))
  emit('msgpackr_pack', 'TIME_REP', () => plainPackr.pack(TIME_REP))
  emit('decode', 'TIME_REQ', () => decode(reqBody)) // scan + unpack
  emit('msgpackr_unpack', 'TIME_REQ', () => plainPackr.unpack(reqBody))
  const decoded = decode(reqBody)
  emit('validate', 'TIME_REQ', () => validateMessage(decoded))
  emit('decode_message', 'TIME_REQ', () => decodeMessage(reqBody)) // scan + unpack + validate
  emit('decode_message', 'TIME_REP', () => decodeMessage(repBody))

  const key = new Uint8Array(32).fill(3)
  emit('seal_frame', 'TIME_REP', (i) => sealFrame(key, i, repBody))
  const sealedReq = sealFrame(key, 0, reqBody)
  emit('open_frame', 'TIME_REQ', () => openFrame(key, 0, sealedReq))

  // One full exchange with real SealedCodecs on both ends.
  if (wanted(opts, { op: 'exchange', msg: 'TIME_REQ' })) {
    const staticKey = x25519KeyPair()
    const eph = x25519KeyPair()
    const hs = serverHandshake(staticKey, eph.publicKey)
    const mkKeys = () => ({ c2s: hs.keys.c2s.slice(), s2c: hs.keys.s2c.slice(), h: hs.keys.h })
    const client = new SealedCodec(mkKeys(), 'client')
    const server = new SealedCodec(mkKeys(), 'server')
    const reader = new FrameReader()
    emit('exchange', 'TIME_REQ', () => {
      const wire = client.seal(TIME_REQ)
      for (const body of reader.push(wire)) {
        server.open(body)
        client.open(new FrameReader().push(server.seal(TIME_REP))[0]!)
      }
    })
  }
  emit('frame', 'TIME_REP', () => frame(repBody))
  // The principal cache's hit: a full cache of 42,000 records (the size a 64 MiB byte bound
  // holds), one hot key (krbtgt) and a stream of others, as the TGS sees them. A Map-only LRU
  // that re-inserts on every hit cost ~95 µs here (src/db/lru.ts).
  const lru = new LruCache<string, number>(200_000, 42_000 * 1600)
  const lruKey = (i: number) => `BENCH.TEST\u0000host\u0000n${i}.scale.bench`
  for (let i = 0; i < 42_000; i++) lru.set(lruKey(i), i, 1600)
  lru.set('BENCH.TEST\u0000krbtgt\u0000BENCH.TEST', -1, 1600)
  let lruNext = 42_000
  emit('lru_hit_full', 'krbtgt', () => lru.get('BENCH.TEST\u0000krbtgt\u0000BENCH.TEST'))
  emit('lru_miss_insert_full', 'service', () => lru.set(lruKey(lruNext++), lruNext, 1600))

  // What a principal cache miss costs the KDC: a synchronous LevelDB read, the record's
  // decode, its keys unsealed, the frozen copy (cache off, so every read misses).
  if (wanted(opts, { op: 'principal_miss', msg: 'on_disk_20000' })) {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-bench-miss-'))
    const db = await PrincipalDb.open({ location: path.join(dir, 'db'), masterKey: randomKey(), cacheSize: 0 })
    try {
      const n = 20_000
      const ids: PrincipalId[] = []
      for (let i = 0; i < n; i += 2000) {
        const batch = await Promise.all(
          Array.from({ length: 2000 }, (_, k) => {
            const components = ['host', `n${i + k}.miss.bench`]
            ids.push({ realm: 'MISS.BENCH', components })
            return newPrincipalRecord({ realm: 'MISS.BENCH', components, kdf: DEFAULT_KDF_PARAMS, attributes: {}, maxLife: 36e6, maxRenewableLife: 6e8, by: 'bench', now: Date.now() })
          }),
        )
        await db.createMany(batch)
      }
      // A fixed scattered order (7919 is prime, coprime with n).
      emit('principal_miss', 'on_disk_20000', (i) => db.getNow(ids[(i * 7919) % n]!))
    } finally {
      await db.close()
      await rm(dir, { recursive: true, force: true })
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await run(optionsFromEnv(process.argv.slice(2)))
}
