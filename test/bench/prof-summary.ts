/**
 * Summarise a V8 .cpuprofile (from `node --cpu-prof`): the functions with the most
 * self time, and the most inclusive time, as plain text.
 *
 *   node --import tsx test/bench/prof-summary.ts FILE.cpuprofile [TOP=25]
 *
 * Used to profile the transport server: BENCH_CPU_PROF=/tmp/prof npm run bench -- transport
 * writes the server process's profile to /tmp/prof.
 */
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

interface CallFrame {
  functionName: string
  url: string
  lineNumber: number
}
interface ProfileNode {
  id: number
  callFrame: CallFrame
  children?: number[]
  hitCount?: number
}
interface Profile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

function label(f: CallFrame): string {
  const file = f.url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules\/)/, '$1').replace(/^.*\/work\/[^/]+\//, '')
  return `${f.functionName || '(anonymous)'} ${file ? `${file}:${f.lineNumber + 1}` : ''}`.trim()
}

/** Self and inclusive time per function label, in ms, sorted. */
export function summarise(p: Profile): { totalMs: number; self: [string, number][]; total: [string, number][] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const selfUs = new Map<number, number>()
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0))
  }
  const self = new Map<string, number>()
  const total = new Map<string, number>()
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!
    const l = label(n.callFrame)
    self.set(l, (self.get(l) ?? 0) + us)
    // Inclusive: every distinct label on the stack gets the sample once.
    const seen = new Set<string>()
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cl = label(byId.get(cur)!.callFrame)
      if (seen.has(cl)) continue
      seen.add(cl)
      total.set(cl, (total.get(cl) ?? 0) + us)
    }
  }
  const sorted = (m: Map<string, number>) => [...m].map(([k, v]) => [k, v / 1000] as [string, number]).sort((a, b) => b[1] - a[1])
  return { totalMs: (p.endTime - p.startTime) / 1000, self: sorted(self), total: sorted(total) }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const file = process.argv[2]
  if (!file) throw new TypeError('usage: prof-summary.ts FILE.cpuprofile [TOP]')
  const top = Number(process.argv[3] ?? 25)
  const s = summarise(JSON.parse(readFileSync(file, 'utf8')) as Profile)
  const pct = (ms: number) => ((ms / s.totalMs) * 100).toFixed(1).padStart(5)
  console.log(`profile ${file}: ${s.totalMs.toFixed(0)} ms`)
  console.log('--- self time')
  for (const [l, ms] of s.self.slice(0, top)) console.log(`${pct(ms)}%  ${ms.toFixed(1).padStart(8)} ms  ${l}`)
  console.log('--- inclusive time')
  for (const [l, ms] of s.total.slice(0, top)) console.log(`${pct(ms)}%  ${ms.toFixed(1).padStart(8)} ms  ${l}`)
}
