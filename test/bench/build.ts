/**
 * Plain-JS build of the code under benchmark, so benchmarks measure what ships
 * (tsc output) and not tsx's on-the-fly transform.
 *
 * Why: tsx compiles with esbuild's keepNames, which wraps every nested function in a
 * `__name(fn, "name")` call (an Object.defineProperty) each time the enclosing function
 * runs. Code that creates closures per call runs several times slower under tsx than as
 * compiled JS: the MessagePack scan of src/wire/codec.ts, before it was made closure-free,
 * took 16 us per 47-byte TIME_REQ under tsx and 1.5 us compiled. Benchmarks should not
 * depend on whether someone remembered that. Type-only transpiling with the project's
 * own TypeScript (no type check) takes one to three seconds.
 *
 * Output: node_modules/.cache/tessera-bench-ID/{src,proto,test/bench} (ID: a hash of the
 * checkout's path), with a package.json saying "type": "module" and the checkout it was
 * built from; bare imports resolve to the repo's node_modules from there.
 *
 * BENCH_SRC=REV (e.g. HEAD) takes src/ and proto/ from that commit instead of the working
 * tree (test/bench/ always comes from the working tree), so a benchmark can measure what is
 * committed while someone edits src/ in the same checkout.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

/** The repository root (two levels above this file in the source tree; in the build, the checkout it was made from). */
export function repoRoot(): string {
  const here = path.dirname(fileURLToPath(import.meta.url))
  const marker = `${path.sep}node_modules${path.sep}.cache${path.sep}tessera-bench`
  const i = here.indexOf(marker)
  if (i < 0) return path.resolve(here, '..', '..')
  try {
    const root = (JSON.parse(readFileSync(path.join(here, '..', '..', 'package.json'), 'utf8')) as { root?: unknown }).root
    if (typeof root === 'string') return root
  } catch {}
  return here.slice(0, i)
}

/**
 * Where the build goes: one directory per checkout, since git worktrees may share one
 * node_modules (a symlink), and two checkouts benchmarking at once must not measure each other's build.
 */
export function buildDir(root: string = repoRoot()): string {
  return path.join(root, 'node_modules', '.cache', `tessera-bench-${createHash('sha256').update(root).digest('hex').slice(0, 12)}`)
}

/** True when this module is running from the plain-JS build (not under tsx). */
export function isCompiled(): boolean {
  return import.meta.url.endsWith('.js')
}

/** Transpile src/, proto/ and test/bench/ to plain JS (no type check). Returns the build directory. */
export async function buildForBench(): Promise<string> {
  const ts = (await import('typescript')).default
  const root = repoRoot()
  const out = buildDir(root)
  rmSync(out, { recursive: true, force: true })
  const options = {
    module: ts.ModuleKind.ESNext,
    target: ts.ScriptTarget.ES2023,
    verbatimModuleSyntax: true,
    sourceMap: false,
  }
  const walk = (rel: string, from: string = root): void => {
    let entries: import('node:fs').Dirent[]
    try {
      entries = readdirSync(path.join(from, rel), { withFileTypes: true })
    } catch {
      return
    }
    for (const e of entries) {
      const p = path.join(rel, e.name)
      if (e.isDirectory()) walk(p, from)
      else if (p.endsWith('.ts') && !p.endsWith('.d.ts') && !p.endsWith('.test.ts')) {
        const src = readFileSync(path.join(from, p), 'utf8')
        const js = ts.transpileModule(src, { compilerOptions: options, fileName: p }).outputText
        const dest = path.join(out, p.replace(/\.ts$/, '.js'))
        mkdirSync(path.dirname(dest), { recursive: true })
        writeFileSync(dest, js)
      }
    }
  }
  const rev = process.env.BENCH_SRC
  if (rev) {
    // The committed tree: `git archive REV src proto`, unpacked into a temporary directory.
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-src-'))
    try {
      const tar = execFileSync('git', ['archive', '--format=tar', rev, 'src', 'proto'], { cwd: root, maxBuffer: 256 * 1024 * 1024 })
      execFileSync('tar', ['-x', '-C', tmp], { input: tar })
      for (const dir of ['src', 'proto']) walk(dir, tmp)
    } finally {
      rmSync(tmp, { recursive: true, force: true })
    }
  } else for (const dir of ['src', 'proto']) walk(dir)
  walk(path.join('test', 'bench'))
  writeFileSync(path.join(out, 'package.json'), `${JSON.stringify({ type: 'module', private: true, root })}\n`)
  return out
}
