/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4): it throws on
 * anything a Prometheus server would reject, and on what the format's rules forbid that a
 * lax parser lets through (a sample before its TYPE, a family split in two, a duplicate
 * series, histogram buckets that are not cumulative or whose +Inf bucket is not _count).
 */

/** One sample line. */
export interface PromSample {
  name: string
  labels: Record<string, string>
  value: number
}

/** One metric family (a TYPE line and its samples). */
export interface PromFamily {
  name: string
  type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped'
  help?: string
  samples: PromSample[]
}

/** A parsed exposition. */
export interface PromText {
  families: Map<string, PromFamily>
  /** The value of the series `name` with exactly these labels; undefined if absent. */
  value(name: string, labels?: Record<string, string>): number | undefined
  /** Sum of every series of `name` whose labels include `labels`. */
  sum(name: string, labels?: Record<string, string>): number
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped'])

/**
 * A sample value as Prometheus reads it: its text parser hands the field to Go's
 * strconv.ParseFloat, which takes NaN and Inf in any case (prom-client writes "Nan").
 */
function parseValue(text: string, line: number): number {
  const lower = text.toLowerCase()
  if (lower === 'nan') return Number.NaN
  if (lower === '+inf' || lower === 'inf' || lower === '+infinity' || lower === 'infinity') return Number.POSITIVE_INFINITY
  if (lower === '-inf' || lower === '-infinity') return Number.NEGATIVE_INFINITY
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`line ${line}: bad value ${JSON.stringify(text)}`)
  return Number(text)
}

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {}
  let i = 0
  while (i < text.length) {
    const eq = text.indexOf('=', i)
    if (eq < 0) throw new Error(`line ${line}: label without "="`)
    const name = text.slice(i, eq)
    if (!LABEL_NAME.test(name)) throw new Error(`line ${line}: bad label name ${JSON.stringify(name)}`)
    if (name in labels) throw new Error(`line ${line}: label ${name} given twice`)
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label value not quoted`)
    let j = eq + 2
    let value = ''
    for (;;) {
      const ch = text[j]
      if (ch === undefined) throw new Error(`line ${line}: unterminated label value`)
      if (ch === '"') break
      if (ch === '\\') {
        const next = text[j + 1]
        if (next === '\\') value += '\\'
        else if (next === '"') value += '"'
        else if (next === 'n') value += '\n'
        else throw new Error(`line ${line}: bad escape \\${next}`)
        j += 2
        continue
      }
      value += ch
      j++
    }
    labels[name] = value
    i = j + 1
    if (text[i] === ',') i++
    else if (i !== text.length) throw new Error(`line ${line}: expected "," between labels`)
  }
  return labels
}

/** The family a sample name belongs to (histogram and summary samples carry suffixes). */
function familyOf(sample: string, families: Map<string, PromFamily>): PromFamily | undefined {
  const f = families.get(sample)
  if (f) return f
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!sample.endsWith(suffix)) continue
    const base = families.get(sample.slice(0, -suffix.length))
    if (base && (base.type === 'histogram' || (base.type === 'summary' && suffix !== '_bucket'))) return base
  }
  return undefined
}

const seriesKey = (name: string, labels: Record<string, string>) =>
  `${name}{${Object.keys(labels)
    .sort()
    .map((k) => `${k}=${JSON.stringify(labels[k])}`)
    .join(',')}}`

/** Parse `text`; throws an Error naming the line on the first violation. */
export function parsePromText(text: string): PromText {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a newline')
  const families = new Map<string, PromFamily>()
  const seen = new Set<string>()
  const closed = new Set<string>()
  let current: PromFamily | undefined
  const lines = text.slice(0, -1).split('\n')
  lines.forEach((raw, idx) => {
    const line = idx + 1
    if (raw === '') return
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(raw)
      if (!m) return // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string | undefined]
      if (!METRIC_NAME.test(name)) throw new Error(`line ${line}: bad metric name ${name}`)
      let f = families.get(name)
      if (f && closed.has(name)) throw new Error(`line ${line}: ${name} described again after other families`)
      if (current && current.name !== name) closed.add(current.name)
      if (!f) {
        f = { name, type: 'untyped', samples: [] }
        families.set(name, f)
      }
      if (kind === 'TYPE') {
        if (!rest || !TYPES.has(rest)) throw new Error(`line ${line}: bad type ${rest}`)
        if (f.samples.length > 0) throw new Error(`line ${line}: TYPE of ${name} after its samples`)
        f.type = rest as PromFamily['type']
      } else f.help = rest ?? ''
      current = f
      return
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$/.exec(raw)
    if (!m) throw new Error(`line ${line}: not a sample: ${JSON.stringify(raw)}`)
    const [, name, labelText, valueText] = m as unknown as [string, string, string | undefined, string]
    const labels = labelText ? parseLabels(labelText, line) : {}
    const value = parseValue(valueText, line)
    let f = familyOf(name, families)
    if (!f) {
      f = { name, type: 'untyped', samples: [] }
      families.set(name, f)
    }
    if (closed.has(f.name)) throw new Error(`line ${line}: samples of ${f.name} are not contiguous`)
    if (current && current !== f) closed.add(current.name)
    current = f
    const key = seriesKey(name, labels)
    if (seen.has(key)) throw new Error(`line ${line}: duplicate series ${key}`)
    seen.add(key)
    if (f.type === 'counter' && !(value >= 0)) throw new Error(`line ${line}: counter ${name} is ${value}`)
    if (f.type === 'histogram' && name.endsWith('_bucket') && labels.le === undefined) throw new Error(`line ${line}: bucket without le`)
    f.samples.push({ name, labels, value })
  })
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f)
  const matches = (s: PromSample, labels: Record<string, string>) => Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  const all = () => [...families.values()].flatMap((f) => f.samples)
  return {
    families,
    value(name, labels = {}) {
      const want = seriesKey(name, labels)
      return all().find((s) => seriesKey(s.name, s.labels) === want)?.value
    },
    sum(name, labels = {}) {
      return all()
        .filter((s) => s.name === name && matches(s, labels))
        .reduce((n, s) => n + s.value, 0)
    },
  }
}

/** Per label set: buckets non-decreasing in le and in count, +Inf present and equal to _count. */
function checkHistogram(f: PromFamily): void {
  const groups = new Map<string, { buckets: [number, number][]; count?: number; sum?: number }>()
  for (const s of f.samples) {
    const { le, ...rest } = s.labels
    const key = seriesKey('', rest)
    let g = groups.get(key)
    if (!g) {
      g = { buckets: [] }
      groups.set(key, g)
    }
    if (s.name === `${f.name}_bucket`) g.buckets.push([parseValue(le!, 0), s.value])
    else if (s.name === `${f.name}_count`) g.count = s.value
    else if (s.name === `${f.name}_sum`) g.sum = s.value
    else throw new Error(`histogram ${f.name} has a sample ${s.name}`)
  }
  for (const [key, g] of groups) {
    if (g.count === undefined || g.sum === undefined) throw new Error(`histogram ${f.name}${key} lacks _count or _sum`)
    for (let i = 1; i < g.buckets.length; i++) {
      if (!(g.buckets[i]![0] > g.buckets[i - 1]![0])) throw new Error(`histogram ${f.name}${key}: le not increasing`)
      if (g.buckets[i]![1] < g.buckets[i - 1]![1]) throw new Error(`histogram ${f.name}${key}: buckets not cumulative`)
    }
    const last = g.buckets[g.buckets.length - 1]
    if (!last || last[0] !== Number.POSITIVE_INFINITY) throw new Error(`histogram ${f.name}${key} has no +Inf bucket`)
    if (last[1] !== g.count) throw new Error(`histogram ${f.name}${key}: +Inf bucket ${last[1]} != _count ${g.count}`)
  }
}
