/**
 * The side-by-side table of one compare-mit.sh run: MIT's summary lines and Tessera's kdc
 * lines from one log, medians over repetitions, each Tessera case as a ratio to its MIT
 * reference and its goal (issue 15), as markdown.
 *
 *   node --import tsx test/bench/compare.ts LOG
 */
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

/** One output line as its fields. */
export type Fields = Record<string, string>

/** `kind` and fields of a `mit ...` or `tessera ...` line. */
export function parseLine(line: string): { who: 'mit' | 'tessera'; kind: string; f: Fields } | undefined {
  const m = /^(mit|tessera) (\S+) (.*)$/.exec(line.trim())
  if (!m) return undefined
  const f: Fields = {}
  for (const w of m[3]!.split(' ')) {
    const i = w.indexOf('=')
    if (i > 0) f[w.slice(0, i)] = w.slice(i + 1)
  }
  return { who: m[1] as 'mit' | 'tessera', kind: m[2]!, f }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const n = s.length
  return n === 0 ? Number.NaN : n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2
}

/** A Tessera case, the MIT line it is compared with, and the goal (ratio). */
interface Row {
  label: string
  kind: string
  conn: string
  mit: 'tgs' | 'askt' | undefined
  goal: number | undefined
}

const ROWS: Row[] = [
  { label: 'TGS, new connection per request, resumed', kind: 'tgs', conn: 'resumed', mit: 'tgs', goal: 1.2 },
  { label: 'TGS, new connection, full handshake', kind: 'tgs', conn: 'new', mit: 'tgs', goal: 0.8 },
  { label: 'AS from a key, new connection, resumed', kind: 'as', conn: 'resumed', mit: 'askt', goal: 2.5 },
  { label: 'AS from a key, new connection, full handshake', kind: 'as', conn: 'new', mit: 'askt', goal: undefined },
  { label: 'TGS, reused connection', kind: 'tgs', conn: 'reused', mit: 'tgs', goal: 6 },
  { label: 'AS, reused connection', kind: 'as', conn: 'reused', mit: 'askt', goal: undefined },
]

/** The markdown table for the lines of one log. */
export function table(lines: readonly string[]): string {
  const parsed = lines.map(parseLine).filter((p) => p !== undefined)
  // MIT: the summary lines (no rep=), one per mode at c=16 with kdc=w1.
  const mit = new Map<string, Fields>()
  for (const p of parsed) if (p.who === 'mit' && p.f.rep === undefined && p.f.kdc === 'w1' && p.f.c === '16') mit.set(p.kind, p.f)
  const num = (f: Fields | undefined, k: string) => Number(f?.[k] ?? Number.NaN)
  const out: string[] = []
  out.push('| case | MIT krb5kdc | Tessera | ratio | goal | KDC CPU per request (MIT / Tessera) | bg_cpu_util (MIT / Tessera, max) |')
  out.push('|---|--:|--:|--:|--:|---|---|')
  for (const r of ROWS) {
    const runs = parsed.filter((p) => p.who === 'tessera' && p.kind === r.kind && p.f.conn === r.conn && p.f.c === '16')
    if (runs.length === 0) continue
    const rate = median(runs.map((p) => Number(p.f.reqs_per_s)))
    const cpu = median(runs.map((p) => Number(p.f.server_cpu_ms_per_req)))
    const bg = Math.max(...runs.map((p) => Number(p.f.bg_cpu_util ?? 0)))
    const m = r.mit ? mit.get(r.mit) : undefined
    const mrate = num(m, 'reqs_per_s')
    const ratio = rate / mrate
    const goal = r.goal === undefined ? '' : `≥ ${r.goal}× ${Number.isFinite(ratio) ? (ratio >= r.goal ? '(met)' : '(not met)') : ''}`
    out.push(
      `| ${r.label} | ${Number.isFinite(mrate) ? `${Math.round(mrate).toLocaleString('en')}/s (${r.mit})` : '—'} | ${Math.round(rate).toLocaleString('en')}/s (${runs.length} runs) | ${Number.isFinite(ratio) ? `**${ratio.toFixed(2)}×**` : '—'} | ${goal} | ${num(m, 'kdc_cpu_ms_per_req').toFixed(3)} / ${cpu.toFixed(3)} ms | ${num(m, 'bg_cpu_util_max').toFixed(2)} / ${bg.toFixed(2)} |`,
    )
  }
  const scale = parsed.filter((p) => p.who === 'tessera' && (p.kind === 'tgs-scale' || p.kind === 'kdc-rss' || p.kind === 'kdc-setup'))
  if (scale.length > 0) {
    out.push('')
    for (const p of scale) out.push(`    tessera ${p.kind} ${Object.entries(p.f).map(([k, v]) => `${k}=${v}`).join(' ')}`)
  }
  return out.join('\n')
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const file = process.argv[2]
  if (!file) {
    console.error('usage: compare.ts LOG')
    process.exit(2)
  }
  console.log(table(readFileSync(file, 'utf8').split('\n')))
}
