/** Shared plumbing of the benchmarks: options, output lines, timing loops, machine load. */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import os from 'node:os'
import { repoRoot } from './build.js'

/** What every benchmark module receives from run.ts. */
export interface BenchOptions {
  /** Upper bound on the measured time of one case, seconds (env BENCH_SECONDS). @default 3 */
  seconds: number
  /** Upper bound on the requests of one case (env BENCH_N). @default 20000 */
  n: number
  /**
   * Case filters (`key=value` words from the command line, e.g. `c=16`, `conn=new`,
   * `backend=sodium-native`): a case runs only if every filter whose key it has matches.
   */
  filters: readonly string[]
}

/** A benchmark module: run.ts imports it and awaits run(). */
export interface BenchModule {
  run(opts: BenchOptions): Promise<void>
}

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const v = Number(raw)
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number, got ${raw}`)
  return v
}

/** Options from the environment (BENCH_SECONDS, BENCH_N) and `key=value` filter words. */
export function optionsFromEnv(filters: readonly string[] = []): BenchOptions {
  return { seconds: envNumber('BENCH_SECONDS', 3), n: Math.floor(envNumber('BENCH_N', 20000)), filters }
}

/** True unless a filter names one of the case's keys with another value. */
export function wanted(opts: BenchOptions, labels: Record<string, string | number>): boolean {
  for (const f of opts.filters) {
    const i = f.indexOf('=')
    if (i < 0) continue
    const key = f.slice(0, i)
    if (key in labels && String(labels[key]) !== f.slice(i + 1)) return false
  }
  return true
}

function fmt(v: string | number): string {
  if (typeof v === 'string') return v
  if (!Number.isFinite(v)) return String(v)
  if (Number.isInteger(v)) return String(v)
  const a = Math.abs(v)
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(3)
}

/** Print one machine-readable line: `tessera <kind> k=v k=v ...`. */
export function report(kind: string, fields: Record<string, string | number>): void {
  const parts = Object.entries(fields).map(([k, v]) => `${k}=${fmt(v)}`)
  console.log(`tessera ${kind} ${parts.join(' ')}`)
}

/** A comment line (ignored by parsers: starts with '#'). */
export function note(text: string): void {
  console.log(`# ${text}`)
}

/** How the code under benchmark runs: `js` (plain-JS build, see build.ts) or `tsx` (on-the-fly transform). */
export function runtime(): 'js' | 'tsx' {
  return import.meta.url.endsWith('.js') ? 'js' : 'tsx'
}

/** Node version, CPU model, cores, load and runtime, as a comment line. */
export function machineNote(): void {
  const cpus = os.cpus()
  const [l1, l5] = os.loadavg()
  note(
    `node=${process.version} cpu="${cpus[0]?.model ?? '?'}" cores=${cpus.length} load1=${l1!.toFixed(2)} load5=${l5!.toFixed(2)} runtime=${runtime()} date=${new Date().toISOString()}`,
  )
}

/**
 * Which code is measured, as a comment line: the commit, and either BENCH_SRC's revision
 * (see build.ts) or the working tree with the src/ and proto/ files it changes.
 */
export function sourceNote(): void {
  const git = (...args: string[]) => {
    try {
      // Not trimmed: `git status --porcelain` lines start with a space.
      return execFileSync('git', args, { cwd: repoRoot(), encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).replace(/\n$/, '')
    } catch {
      return '?'
    }
  }
  const rev = process.env.BENCH_SRC
  if (rev) {
    note(`src: src/ and proto/ from ${rev} = ${git('rev-parse', '--short', rev)} (BENCH_SRC)`)
    return
  }
  const dirty = git('status', '--porcelain', '--', 'src', 'proto')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => l.slice(3))
  note(`src: working tree at ${git('rev-parse', '--short', 'HEAD')}${dirty.length ? `, uncommitted changes in ${dirty.join(' ')}` : ', clean'}`)
}

/** Monotonic time in nanoseconds. */
export function nowNs(): bigint {
  return process.hrtime.bigint()
}

/** Monotonic time in milliseconds (fractional). */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6
}

/** The q-quantile (0..1) of an ascending-sorted array, nearest-rank. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[i]!
}

/** Median of some numbers. */
export function median(xs: readonly number[]): number {
  return quantile([...xs].sort((a, b) => a - b), 0.5)
}

/**
 * Time a synchronous operation: a short warm-up, then `samples` samples of about
 * `sampleMs` each (batches doubled until the sample is long enough, and never more
 * than `maxIters` calls in one sample). Returns the *fastest* sample's ns per call
 * (on a shared machine other processes only ever add time, so the minimum is the best
 * estimate of the operation's own cost), the calls made, and the cores other processes
 * kept busy meanwhile.
 */
export function timeSync(
  fn: (i: number) => unknown,
  o: { sampleMs?: number; samples?: number; maxIters?: number; warmupMs?: number } = {},
): { nsPerOp: number; iters: number; bg: number } {
  const sampleNs = BigInt(Math.round((o.sampleMs ?? 60) * 1e6))
  const warmupNs = BigInt(Math.round((o.warmupMs ?? 30) * 1e6))
  const maxIters = o.maxIters ?? 1e7
  let i = 0
  const w0 = nowNs()
  while (nowNs() - w0 < warmupNs && i < maxIters) fn(i++)
  const load = new MachineLoad()
  const cpu0 = process.cpuUsage()
  let best = Number.POSITIVE_INFINITY
  let total = 0
  for (let s = 0; s < (o.samples ?? 5); s++) {
    let batch = 1
    let done = 0
    const t0 = nowNs()
    let elapsed = 0n
    while (elapsed < sampleNs && done < maxIters) {
      const b = Math.min(batch, maxIters - done)
      for (let k = 0; k < b; k++) fn(i++)
      done += b
      batch *= 2
      elapsed = nowNs() - t0
    }
    best = Math.min(best, Number(elapsed) / done)
    total += done
  }
  const bg = load.coresBusy() - cpuMsSince(cpu0) / load.elapsedMs()
  return { nsPerOp: best, iters: total, bg: Math.max(0, bg) }
}

/** Time an asynchronous operation run one at a time, `iters` times. Returns the fastest call's ns (see timeSync). */
export async function timeAsync(fn: () => Promise<unknown>, iters: number): Promise<{ nsPerOp: number; iters: number }> {
  await fn() // warm-up
  const results: number[] = []
  for (let k = 0; k < iters; k++) {
    const t0 = nowNs()
    await fn()
    results.push(Number(nowNs() - t0))
  }
  return { nsPerOp: Math.min(...results), iters }
}

/** Busy and total jiffies of the whole machine (Linux /proc/stat), or undefined elsewhere. */
function machineJiffies(): { busy: number; total: number } | undefined {
  try {
    const first = readFileSync('/proc/stat', 'latin1').split('\n', 1)[0]!
    const f = first.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal ...
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f
    const busy = user + nice + system + irq + softirq
    return { busy, total: busy + idle + iowait + steal }
  } catch {
    return undefined
  }
}

/**
 * Measures, over an interval, how many cores the whole machine kept busy, so that a
 * result can say how much CPU *other* processes took (the machine is shared).
 */
export class MachineLoad {
  private readonly start = machineJiffies()
  private readonly t0 = nowMs()

  /** Cores busy on average since construction (all processes), or NaN off Linux. */
  coresBusy(): number {
    const end = machineJiffies()
    if (!end || !this.start) return Number.NaN
    const total = end.total - this.start.total
    if (total <= 0) return Number.NaN
    return ((end.busy - this.start.busy) / total) * os.cpus().length
  }

  /** Milliseconds since construction. */
  elapsedMs(): number {
    return nowMs() - this.t0
  }
}

/** CPU time used by this process since `since` (a process.cpuUsage() value), ms. */
export function cpuMsSince(since: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(since)
  return (d.user + d.system) / 1000
}

/**
 * Wait until other processes leave the machine mostly idle: cores busy over 1 s below
 * BENCH_QUIET_MAX (default 0.3 cores), for at most BENCH_QUIET_WAIT_S (default 10 s).
 * Returns the last busy figure. Call it while this benchmark itself is idle.
 */
export async function waitQuiet(what: string): Promise<number> {
  const max = envNumber('BENCH_QUIET_MAX', 0.3)
  const waitMs = envNumber('BENCH_QUIET_WAIT_S', 10) * 1000
  const t0 = nowMs()
  for (;;) {
    const load = new MachineLoad()
    await new Promise((r) => setTimeout(r, 1000))
    const busy = load.coresBusy()
    if (Number.isNaN(busy) || busy < max) return busy
    if (nowMs() - t0 >= waitMs) {
      note(`${what}: machine still busy (${busy.toFixed(2)} cores used by others), measuring anyway`)
      return busy
    }
  }
}
