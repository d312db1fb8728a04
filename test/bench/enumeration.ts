/**
 * Security benchmark: can the AS's reply time tell an existing principal from a name that
 * does not exist? (security review 4, item 2.) A benchmark, not a test: it prints figures.
 *
 * A KDC on an on-disk LevelDB (as in production; default pre-auth failure floor, no lockout
 * policy) with KNOWN users; the same number of names that do not exist. For both rounds of
 * an AS exchange it times known and unknown names over the encrypted transport:
 *
 *   round=required  AS_REQ without pre-auth: the PREAUTH_REQUIRED hint
 *   round=failed    AS_REQ with a wrong encrypted timestamp: PREAUTH_FAILED
 *
 * each alone (one request at a time, populations interleaved) and under load: GUESSES
 * concurrent requests, one per connection, both populations mixed in each burst, spread
 * over all names (load=burst) or all for one known and one unknown name (load=burst-one,
 * the guessing attack). Lines:
 *
 *   tessera enum round=failed floor=100 load=burst pop=known n=... p50_ms=... p99_ms=...
 *   tessera enum-gap round=failed floor=100 load=burst p50_gap_ms=... auc=...
 *
 * round=failed also runs with floor=0 (preauthFailureFloorMs set to 0): what the lookup and
 * counting work itself shows, which the floor would otherwise hide while it stays under it.
 *
 * auc is the probability that a random known-name sample is slower than a random
 * unknown-name one (Mann-Whitney): 0.5 = no classifier can use the time; the target is
 * |p50_gap_ms| < 1 and auc near 0.5.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { PaType } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { type AsReq, PaEncTs } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { randomKey, randomUint32 } from '../../src/crypto/index.js'
import { resolveKdcConfig } from '../../src/kdc/config.js'
import { startKdc } from '../../src/kdc/kdc.js'
import { initRealmDir } from '../../src/kdc/realm.js'
import { sealPart } from '../../src/krb/parts.js'
import { type ClientChannel, connectChannel } from '../../src/wire/client.js'
import { type BenchOptions, machineNote, note, optionsFromEnv, report, wanted } from './common.js'

const REALM = 'BENCH.TEST'
const KNOWN = 100
const CONNECTIONS = 200
const GUESSES = 200

function asReq(name: string, padata: AsReq['padata']): AsReq {
  return {
    v: PROTOCOL_VERSION,
    t: MsgType.AS_REQ,
    cname: [name],
    realm: REALM,
    sname: ['krbtgt', REALM],
    till: 0,
    nonce: randomUint32(),
    options: 0,
    padata,
  }
}

function wrongGuess(): AsReq['padata'] {
  const value = sealPart(randomKey(), KeyUsage.AS_REQ_PA_ENC_TIMESTAMP, PaEncTs, { ts: Date.now(), us: 0 })
  return [{ type: PaType.PA_ENC_TIMESTAMP, value }]
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

/** P(a random sample of `a` > a random sample of `b`), ties counted half. */
function auc(a: number[], b: number[]): number {
  let wins = 0
  for (const x of a) for (const y of b) wins += x > y ? 1 : x === y ? 0.5 : 0
  return wins / (a.length * b.length)
}

async function timeOne(ch: ClientChannel, req: AsReq, expectCode: number): Promise<number> {
  const t0 = process.hrtime.bigint()
  const rep = await ch.request(req)
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  if (rep.t !== MsgType.KRB_ERROR || rep.code !== expectCode) throw new Error(`expected error ${expectCode}, got ${JSON.stringify(rep.t === MsgType.KRB_ERROR ? rep.code : rep.t)}`)
  return ms
}

export async function run(opts: BenchOptions): Promise<void> {
  machineNote()
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tessera-bench-enum-'))
  const config = { kdf: { N: 1024 }, log: { console: false }, ports: { as: 0, tgs: 0, time: 0, admin: 0 } }
  await initRealmDir({ dir, realm: REALM, adminPassword: 'bench admin', config: resolveKdcConfig(config) })
  const kdc = await startKdc({ dir, config, log: false })
  const chs: ClientChannel[] = []
  try {
    const known: string[] = []
    const unknown: string[] = []
    for (let i = 0; i < KNOWN; i++) {
      const name = `user${String(i).padStart(4, '0')}`
      await kdc.addPrincipal(name, { password: `pw ${name}` })
      known.push(name)
      unknown.push(`user${String(i + 5000).padStart(4, '0')}`)
    }
    for (let i = 0; i < CONNECTIONS; i++)
      chs.push(
        await connectChannel({ host: kdc.addresses.as.host, port: kdc.addresses.as.port, serverKey: kdc.realmFile.transportKey }),
      )
    note(`on-disk LevelDB, ${KNOWN} users, preauthFailureFloorMs=${kdc.config.preauthFailureFloorMs}, no lockout policy`)
    const floor = kdc.config.preauthFailureFloorMs
    const rounds = [
      { round: 'required', code: 25, padata: (): AsReq['padata'] => [], floor },
      { round: 'failed', code: 24, padata: wrongGuess, floor },
      // Without the floor: what the mechanism itself shows (the floor only hides what stays under it).
      { round: 'failed', code: 24, padata: wrongGuess, floor: 0 },
    ] as const
    for (const r of rounds) {
      kdc.config.preauthFailureFloorMs = r.floor
      for (const load of ['alone', 'burst', 'burst-one'] as const) {
        if (!wanted(opts, { round: r.round, load, floor: r.floor })) continue
        const samples = { known: [] as number[], unknown: [] as number[] }
        const deadline = Date.now() + Math.max(opts.seconds, 1) * 4000
        if (load === 'alone') {
          // Interleaved, one at a time; every name several times (first lookups and cached ones).
          const count = r.round === 'failed' ? 50 : 3 * KNOWN
          for (let i = 0; i < count && Date.now() < deadline; i++) {
            const k = known[i % KNOWN]!
            const u = unknown[i % KNOWN]!
            samples.known.push(await timeOne(chs[0]!, asReq(k, r.padata()), r.code))
            samples.unknown.push(await timeOne(chs[0]!, asReq(u, r.padata()), r.code))
          }
        } else {
          for (let b = 0; b < 6 && Date.now() < deadline; b++) {
            const jobs: Promise<void>[] = []
            for (let i = 0; i < GUESSES; i++) {
              // Which population goes first in each pair alternates between bursts.
              const pop = (i + b) % 2 === 0 ? 'known' : 'unknown'
              const name = (pop === 'known' ? known : unknown)[load === 'burst' ? (i >> 1) % KNOWN : 0]!
              jobs.push(timeOne(chs[i % CONNECTIONS]!, asReq(name, r.padata()), r.code).then((ms) => void samples[pop].push(ms)))
            }
            await Promise.all(jobs)
          }
        }
        for (const pop of ['known', 'unknown'] as const) {
          const s = [...samples[pop]].sort((a, b) => a - b)
          report('enum', { round: r.round, floor: r.floor, load, pop, n: s.length, p50_ms: quantile(s, 0.5), p99_ms: quantile(s, 0.99) })
        }
        const k = [...samples.known].sort((a, b) => a - b)
        const u = [...samples.unknown].sort((a, b) => a - b)
        report('enum-gap', {
          round: r.round,
          floor: r.floor,
          load,
          p50_gap_ms: quantile(k, 0.5) - quantile(u, 0.5),
          p99_gap_ms: quantile(k, 0.99) - quantile(u, 0.99),
          auc: auc(samples.known, samples.unknown),
        })
      }
    }
  } finally {
    for (const ch of chs) ch.close()
    await kdc.close()
    await rm(dir, { recursive: true, force: true })
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await run(optionsFromEnv(process.argv.slice(2)))
