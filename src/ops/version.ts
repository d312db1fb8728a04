/** The running Tessera's version, from its package.json (the same file under src/ and dist/src/). */
import { readFileSync } from 'node:fs'

let cached: string | undefined

/** The version in Tessera's package.json, or "unknown" if it cannot be read. */
export function tesseraVersion(): string {
  if (cached !== undefined) return cached
  cached = 'unknown'
  // src/ops/version.ts under tsx, dist/src/ops/version.js once built: one or two levels more.
  for (const up of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown }
      if (pkg.name === 'tessera' && typeof pkg.version === 'string') {
        cached = pkg.version
        break
      }
    } catch {
      // not this level
    }
  }
  return cached
}
