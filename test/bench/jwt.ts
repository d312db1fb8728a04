/**
 * JWT bridge benchmark (PROTOCOL.md §15):
 *
 *   tessera jwt-issue kind=tgs c=16 reqs_per_s=... p50_ms=... p99_ms=... errors=0        TGS_REQ without a token (the baseline)
 *   tessera jwt-issue kind=tgs-token c=16 reqs_per_s=... p50_ms=... p99_ms=... errors=0  TGS_REQ with jwtKey: ticket + signed token
 *   tessera jwt-verify op=token+proof ops_per_s=... ns_per_op=...    ServiceTokenVerifier.verify: token (jose) + DPoP proof + replay cache
 *   tessera jwt-verify op=jose-jwtVerify ops_per_s=... ns_per_op=... jose's bare jwtVerify of the same token, same key (the floor)
 *   tessera jwt-verify op=sign-proof ops_per_s=... ns_per_op=...     the client's createDpopProof, for reference
 *
 * Issue: an in-memory KDC (startKdc) in this process, one KdcClient (one reused TGS
 * connection) driven by c concurrent callers for at most BENCH_N requests or BENCH_SECONDS;
 * client and KDC share the process and its cores, so the figures are lower bounds for the
 * KDC. The token case makes a fresh client key pair once and reuses it (the key generation
 * is the client's cost, not the KDC's), so the KDC work per request is: the TGS exchange, a
 * thumbprint, one Ed25519 signature (jose / WebCrypto) and one more seal.
 *
 * Verify: one token, min(BENCH_N, 5000) proofs signed beforehand (each proof is accepted
 * once: the replay cache refuses a second use), verified one at a time; jose-jwtVerify
 * verifies the same token with the same imported key as many times. Async WebCrypto calls:
 * the figure is the mean over the run, not a fastest sample.
 */
import { pathToFileURL } from 'node:url'
import { importJWK, jwtVerify } from 'jose'
import { createDpopProof } from '../../src/client/dpop.js'
import { generateDpopKeyPair } from '../../src/client/jwt.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { startKdc } from '../../src/kdc/kdc.js'
import { realmJwks } from '../../src/krb/jwks.js'
import { ServiceTokenVerifier } from '../../src/service/jwt-verifier.js'
import { type BenchOptions, machineNote, note, nowMs, optionsFromEnv, quantile, report, sourceNote, wanted } from './common.js'
import { drive } from './load.js'

const SERVICE = 'HTTP/jwt.bench'
const URL_ = 'https://jwt.bench/api'

export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  sourceNote()
  note('jwt: in-memory KDC and its client in this process; verification in this process')
  const kdc = await startKdc({ config: { kdf: { N: 1024 }, log: { console: false }, replayCacheMaxEntries: 10_000_000 } })
  const client = new KdcClient(kdc.realmFile, { timeoutMs: 60_000 })
  try {
    await kdc.addPrincipal('alice', { password: 'bench password 1' })
    await kdc.addPrincipal(SERVICE, { attributes: { allowJwt: true } })
    const tgt = await client.login('alice', 'bench password 1')
    const keyPair = await generateDpopKeyPair()
    for (const kind of ['tgs', 'tgs-token'] as const)
      for (const c of [1, 16]) {
        if (!wanted(opts, { kind, c })) continue
        const once = kind === 'tgs' ? () => client.getServiceTicket(tgt, SERVICE) : () => client.getServiceToken(tgt, SERVICE, { keyPair })
        for (let i = 0; i < 20; i++) await once() // warm-up
        const r = await drive({ open: async () => {}, once: async () => void (await once()), close: () => {} }, c, opts.n, opts.seconds * 1000)
        report('jwt-issue', {
          kind,
          c,
          reqs_per_s: Math.round((r.completed / r.wallMs) * 1000),
          p50_ms: quantile(r.latMs, 0.5),
          p99_ms: quantile(r.latMs, 0.99),
          completed: r.completed,
          errors: r.errors,
        })
        if (r.firstError) note(`first error: ${r.firstError}`)
      }

    const t = await client.getServiceToken(tgt, SERVICE, { keyPair })
    const verifier = new ServiceTokenVerifier({ realm: kdc.realmFile, audience: `${SERVICE}@${kdc.realm}`, replayCacheMaxEntries: 1_000_000 })
    const count = Math.min(opts.n, 5000)
    const mean = async (op: string, fn: (i: number) => Promise<unknown>) => {
      if (!wanted(opts, { op })) return
      await fn(-1)
      const t0 = nowMs()
      let i = 0
      for (; i < count && nowMs() - t0 < opts.seconds * 1000; i++) await fn(i)
      const ms = nowMs() - t0
      report('jwt-verify', { op, ops_per_s: Math.round((i / ms) * 1000), ns_per_op: Math.round((ms * 1e6) / i), iters: i })
    }
    const proofs: string[] = []
    for (let i = 0; i <= count; i++) proofs.push(await createDpopProof(t.keyPair, { method: 'GET', url: URL_, token: t.token }))
    await mean('token+proof', (i) => verifier.verify({ method: 'GET', url: URL_, authorization: `DPoP ${t.token}`, dpop: proofs[i + 1]! }))
    const key = await importJWK((await realmJwks(kdc.realmFile)).keys[0]!, 'EdDSA')
    await mean('jose-jwtVerify', () => jwtVerify(t.token, key, { algorithms: ['EdDSA'], typ: 'at+jwt', audience: `${SERVICE}@${kdc.realm}` }))
    await mean('sign-proof', () => createDpopProof(t.keyPair, { method: 'GET', url: URL_, token: t.token }))
  } finally {
    client.close()
    await kdc.close()
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await run(optionsFromEnv(process.argv.slice(2)))
}
