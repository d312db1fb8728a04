/** Durations as administrators type them: `90s`, `10m`, `2h`, `30d`, `1w`, `1h30m`, `2:30:00`, or plain seconds (MIT deltat). */
import { TesseraError, TesseraErrorCode } from '../errors.js'

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }

/**
 * Parse a duration into milliseconds. Accepts a run of `<integer><unit>` parts (units s, m,
 * h, d, w; `1d12h`), `h:mm[:ss]`, or a bare integer taken as seconds as MIT's deltat does.
 * Throws TesseraError(TESSERA_VALIDATION) naming the text otherwise.
 */
export function parseDuration(text: string): number {
  const bad: () => never = () => {
    throw new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, `not a duration: ${JSON.stringify(text)} (examples: 90s, 10m, 2h, 30d, 1h30m)`)
  }
  if (typeof text !== 'string') bad()
  const t = text.trim().toLowerCase()
  if (t.length === 0 || t.length > 40) bad()
  let ms: number
  if (/^\d+$/.test(t)) ms = Number(t) * 1000
  else if (/^\d+:\d{2}(:\d{2})?$/.test(t)) {
    const [h, m, s] = t.split(':').map(Number) as [number, number, number | undefined]
    if (m > 59 || (s ?? 0) > 59) bad()
    ms = ((h * 60 + m) * 60 + (s ?? 0)) * 1000
  } else if (/^(\d+[smhdw])+$/.test(t)) {
    ms = 0
    for (const m of t.matchAll(/(\d+)([smhdw])/g)) ms += Number(m[1]) * UNIT_MS[m[2]!]!
  } else bad()
  if (!Number.isSafeInteger(ms)) bad()
  return ms
}

/** `90061000` -> `1d1h1m1s`; `0` -> `0s`. The inverse of {@link parseDuration} for display. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s'
  let rest = Math.round(ms / 1000)
  let out = ''
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    const n = Math.floor(rest / size)
    if (n > 0) out += `${n}${unit}`
    rest -= n * size
  }
  return out || '0s'
}
