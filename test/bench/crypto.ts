/**
 * Crypto microbenchmark: every NaCl primitive Tessera uses, on every backend in
 * allBackends, plus the derived operations (usage keys, seal/open, scrypt) and the
 * two halves of the transport handshake.
 *
 *   tessera crypto backend=sodium-native op=x25519 ns_per_op=31000 ops_per_s=32258 iters=...
 *
 * Ops whose cost does not depend on the backend (usageKey: HMAC-SHA256 from
 * node:crypto; scrypt) are printed once with backend=any.
 */
import { pathToFileURL } from 'node:url'
import { KeyUsage } from '../../proto/key-usage.js'
import {
  allBackends,
  backend,
  clientHandshakeFinish,
  DEFAULT_KDF_PARAMS,
  open,
  passwordToKey,
  seal,
  serverHandshake,
  usageKey,
  useBackend,
  x25519KeyPair,
} from '../../src/crypto/index.js'
import type { KeyPair } from '../../src/crypto/sign.js'
import { type BenchOptions, machineNote, note, optionsFromEnv, report, timeAsync, timeSync, waitQuiet, wanted } from './common.js'

/** Size of the secretbox / seal payload, bytes (a typical ticket or reply part). */
const PAYLOAD_BYTES = 200

function fixed(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (seed + i * 31) & 0xff
  return b
}

function emit(
  name: string,
  op: string,
  r: { nsPerOp: number; iters: number; bg?: number },
  extra: Record<string, string | number> = {},
) {
  report('crypto', {
    backend: name,
    op,
    ns_per_op: Math.round(r.nsPerOp),
    ops_per_s: Math.round(1e9 / r.nsPerOp),
    iters: r.iters,
    ...extra,
    ...(r.bg === undefined || Number.isNaN(r.bg) ? {} : { bg_cpu_util: r.bg }),
  })
}

/** Run the crypto microbenchmarks. */
export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  note(`crypto: payload=${PAYLOAD_BYTES}B, fastest of 5 samples per op; backends=${allBackends.map((b) => b.name).join(',')}`)
  const previous = backend().name
  // 5 samples of ~60 ms per op keep the full matrix around 30 s; BENCH_SECONDS < 1 shortens it.
  const sampleMs = Math.min(60, Math.max(10, opts.seconds * 20))
  const t = { sampleMs }
  const msg = fixed(PAYLOAD_BYTES, 1)
  const key = fixed(32, 2)
  const nonce = fixed(24, 3)
  try {
    for (const b of allBackends) {
      const name = b.name
      if (!wanted(opts, { backend: name })) continue
      useBackend(name)
      await waitQuiet(`crypto backend=${name}`)
      const box = b.secretbox(msg, nonce, key)
      const want = (op: string) => wanted(opts, { backend: name, op })

      if (want('secretbox_seal')) emit(name, 'secretbox_seal', timeSync(() => b.secretbox(msg, nonce, key), t), { bytes: PAYLOAD_BYTES })
      if (want('secretbox_open'))
        emit(
          name,
          'secretbox_open',
          timeSync(() => {
            if (b.secretboxOpen(box, nonce, key) === null) throw new Error('secretbox open failed')
          }, t),
          { bytes: PAYLOAD_BYTES },
        )

      const a = fixed(32, 4)
      const peer = b.x25519Base(fixed(32, 5))
      if (want('x25519')) emit(name, 'x25519', timeSync(() => b.x25519(a, peer), t))
      if (want('x25519_base')) emit(name, 'x25519_base', timeSync((i) => b.x25519Base(fixed(32, i)), t))

      const seed = fixed(32, 6)
      const pub = b.ed25519PublicKey(seed)
      const sig = b.ed25519Sign(msg, seed)
      if (want('ed25519_sign')) emit(name, 'ed25519_sign', timeSync(() => b.ed25519Sign(msg, seed), t), { bytes: PAYLOAD_BYTES })
      if (want('ed25519_verify'))
        emit(
          name,
          'ed25519_verify',
          timeSync(() => {
            if (!b.ed25519Verify(msg, sig, pub)) throw new Error('verify failed')
          }, t),
          { bytes: PAYLOAD_BYTES },
        )

      // seal()/open() from src/crypto/seal.ts: usage subkey + secretbox (+ a random nonce for seal).
      // usageKey() caches subkeys per key object, so a long-lived key (krbtgt, a service key)
      // pays the HMAC once: seal/open. A fresh key object (a new session key) pays it each
      // time: seal_fresh_key/open_fresh_key (the key copy itself costs ~50 ns).
      const sealed = seal(key, KeyUsage.KDC_REP_TICKET, msg)
      if (want('seal')) emit(name, 'seal', timeSync(() => seal(key, KeyUsage.KDC_REP_TICKET, msg), t), { bytes: PAYLOAD_BYTES })
      if (want('open')) emit(name, 'open', timeSync(() => open(key, KeyUsage.KDC_REP_TICKET, sealed), t), { bytes: PAYLOAD_BYTES })
      if (want('seal_fresh_key'))
        emit(name, 'seal_fresh_key', timeSync(() => seal(key.slice(), KeyUsage.KDC_REP_TICKET, msg), t), { bytes: PAYLOAD_BYTES })
      if (want('open_fresh_key'))
        emit(name, 'open_fresh_key', timeSync(() => open(key.slice(), KeyUsage.KDC_REP_TICKET, sealed), t), { bytes: PAYLOAD_BYTES })

      // The transport handshake (src/crypto/handshake.ts). Server: ephemeral keygen,
      // es + ee X25519, SHA-256 transcript, HKDF, confirmation secretbox.
      const staticKey = x25519KeyPair(fixed(32, 7))
      if (want('handshake_server')) {
        const clientEph = x25519KeyPair(fixed(32, 8)).publicKey
        emit(name, 'handshake_server', timeSync(() => serverHandshake(staticKey, clientEph), t))
      }
      // Client: ephemeral keygen, es + ee, the same schedule, open + compare the confirmation.
      // Server replies are made beforehand (a pool), so only the client's work is timed.
      if (want('handshake_client')) {
        const pool: { eph: KeyPair; e: Uint8Array; confirm: Uint8Array }[] = []
        const poolSize = b.name === 'sodium-native' ? 1500 : b.name === 'node' ? 300 : 150
        for (let i = 0; i < poolSize; i++) {
          const eph = x25519KeyPair()
          const { e, confirm } = serverHandshake(staticKey, eph.publicKey)
          pool.push({ eph, e, confirm })
        }
        emit(
          name,
          'handshake_client',
          timeSync(
            (i) => {
              const p = pool[i]
              if (!p) throw new Error('handshake pool exhausted')
              // keygen of the client ephemeral is part of the client's cost.
              x25519KeyPair(fixed(32, i))
              if (!clientHandshakeFinish(staticKey.publicKey, p.eph, p.e, p.confirm)) throw new Error('handshake failed')
            },
            { ...t, maxIters: Math.floor(poolSize / 6), warmupMs: 0 },
          ),
        )
      }
    }

    // usage_key: a cached subkey (same key object, one of a few usages); usage_key_derive:
    // the HMAC-SHA256 derivation itself (a fresh key object each time).
    if (wanted(opts, { backend: 'any', op: 'usage_key' }))
      emit('any', 'usage_key', timeSync((i) => usageKey(key, i & 7), t), { impl: 'cached' })
    if (wanted(opts, { backend: 'any', op: 'usage_key_derive' }))
      emit('any', 'usage_key_derive', timeSync((i) => usageKey(key.slice(), i & 0xffff), t), { impl: 'node:crypto-hmac-sha256' })

    if (wanted(opts, { backend: 'any', op: 'scrypt' })) {
      const p = DEFAULT_KDF_PARAMS
      const iters = opts.seconds < 1 ? 2 : 5
      const r = await timeAsync(() => passwordToKey('correct horse battery staple', 'EXAMPLE.COMalice'), iters)
      emit('any', 'scrypt', r, { N: p.N, r: p.r, p: p.p, impl: 'node:crypto' })
    }
  } finally {
    useBackend(previous)
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await run(optionsFromEnv(process.argv.slice(2)))
}
