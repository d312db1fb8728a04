/**
 * Runs the benchmarks in sequence: `npm run bench [-- NAME... KEY=VALUE...]`.
 *
 *   npm run bench                          every benchmark
 *   npm run bench -- transport             only the benchmarks whose name contains "transport"
 *   npm run bench -- transport conn=reused c=16    ...and only the matching cases
 *   BENCH_SECONDS=2 BENCH_N=5000 npm run bench     shorter cases (defaults 3 s, 20000 requests)
 *   BENCH_RUNTIME=tsx npm run bench        measure under tsx instead of the plain-JS build
 *   BENCH_CPU_PROF=/tmp/prof npm run bench -- transport   also write the server's .cpuprofile
 *
 * By default the code under test is first transpiled to plain JS (build.ts) and the
 * benchmark modules are loaded from there, because tsx's keepNames transform slows
 * closure-heavy code several-fold and would distort the figures.
 *
 * To add a benchmark: a module in this folder exporting `run(opts: BenchOptions)`,
 * and one line in BENCHMARKS. Benchmarks print `tessera <kind> key=value...` lines
 * on stdout and comments starting with '#'.
 */
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { buildForBench } from './build.js'
import type { BenchModule } from './common.js'
import { optionsFromEnv } from './common.js'

/** Every benchmark, in the order they run: its name and its module file in this folder (without extension). */
export const BENCHMARKS: readonly { name: string; module: string }[] = [
  { name: 'crypto', module: 'crypto' },
  { name: 'codec', module: 'codec' },
  { name: 'transport', module: 'transport' },
  { name: 'kdc', module: 'kdc' },
  { name: 'app', module: 'app' },
  { name: 'time', module: 'time' },
  { name: 'jwt', module: 'jwt' },
  { name: 'enumeration', module: 'enumeration' },
  { name: 'admin', module: 'admin' },
  { name: 'events', module: 'events' },
]

const args = process.argv.slice(2)
const names = args.filter((a) => !a.includes('='))
const opts = optionsFromEnv(args.filter((a) => a.includes('=')))
const selected = BENCHMARKS.filter((b) => names.length === 0 || names.some((n) => b.name.includes(n)))
if (selected.length === 0) {
  console.error(`no benchmark matches ${names.join(' ')}; known: ${BENCHMARKS.map((b) => b.name).join(', ')}`)
  process.exit(2)
}

const t0 = Date.now()
const rt = process.env.BENCH_RUNTIME ?? 'js'
if (rt !== 'js' && rt !== 'tsx') throw new RangeError(`BENCH_RUNTIME must be js or tsx, got ${rt}`)
// Where the benchmark modules are loaded from: the plain-JS build, or this folder under tsx.
const moduleUrl =
  rt === 'js'
    ? (name: string, dir: string) => pathToFileURL(path.join(dir, 'test', 'bench', `${name}.js`)).href
    : (name: string) => new URL(`./${name}.ts`, import.meta.url).href
const dir = rt === 'js' ? await buildForBench() : ''
if (rt === 'js') console.log(`# built plain JS in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${dir}`)
for (const b of selected) {
  console.log(`# --- ${b.name}`)
  const mod = (await import(moduleUrl(b.module, dir))) as BenchModule
  await mod.run(opts)
}
console.log(`# done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
