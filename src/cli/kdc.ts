/** `kdc init` and `kdc start`: create a realm, run its listeners. */
import { randomBytes } from 'node:crypto'
import { access, readFile, rename, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import yargs from 'yargs'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { advertisedHost, type KdcConfig, type KdcConfigInput, resolveKdcConfig } from '../kdc/config.js'
import { startKdc } from '../admin/start.js'
import type { RunningKdc } from '../kdc/kdc.js'
import { initRealmDir, REALM_FILES, readListenSettings } from '../kdc/realm.js'
import { isUnspecifiedHost } from '../krb/realm-file.js'
import { tesseraVersion } from '../ops/version.js'
import { Exit, exitCodeFor, exitCodesEpilogue, formatError, promptHidden, readPasswordFile } from './common.js'

/** Environment and streams the CLI may use (tests pass their own). */
export interface CliEnv {
  env?: NodeJS.ProcessEnv
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
  /** Resolves when the daemon should stop (default: SIGINT/SIGTERM). */
  stopSignal?: Promise<void>
  /** Registers the daemon's reload; returns its removal (default: on SIGHUP). */
  onReloadSignal?: (reload: () => void) => () => void
}

/** What `kdc start` writes to DIR/run.json while it runs, for `kdc status`. */
export interface RunFile {
  pid: number
  version: string
  realm: string
  startedAt: string
  listeners: Record<string, { host: string; port: number }>
  http?: { host: string; port: number }
}

/** DIR/run.json: the running daemon's pid and addresses (removed when it stops). */
export const RUN_FILE = 'run.json'

async function readConfigFile(file: string | undefined): Promise<KdcConfigInput> {
  if (!file) return {}
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot read config file ${file}: ${(err as Error).message}`)
  }
  try {
    return JSON.parse(text) as KdcConfigInput
  } catch {
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `config file ${file} is not valid JSON`)
  }
}

interface NetFlags {
  host?: string | undefined
  'advertise-host'?: string | undefined
  'as-port'?: number | undefined
  'tgs-port'?: number | undefined
  'time-port'?: number | undefined
  'admin-port'?: number | undefined
}

const PORT_FLAGS = { as: 'as-port', tgs: 'tgs-port', time: 'time-port', admin: 'admin-port' } as const
const LISTENER_NAMES = { as: 'AS', tgs: 'TGS', time: 'time', admin: 'admin' } as const

function applyFlags(c: KdcConfigInput, f: NetFlags): KdcConfigInput {
  const out: KdcConfigInput = { ...c, ports: { ...c.ports } }
  if (f.host !== undefined) out.host = f.host
  if (f['advertise-host'] !== undefined) out.advertiseHost = f['advertise-host']
  for (const [l, flag] of Object.entries(PORT_FLAGS) as [keyof typeof PORT_FLAGS, (typeof PORT_FLAGS)[keyof typeof PORT_FLAGS]][])
    if (f[flag] !== undefined) out.ports![l] = f[flag]
  return out
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p)
    return true
  } catch {
    return false
  }
}

/**
 * A failure to listen, said once and with the flag to change: EADDRINUSE and EACCES name the
 * listener and its --*-port flag. Anything else is returned as it is.
 */
function explainListenFailure(e: unknown, config: KdcConfig): unknown {
  const cause = (e as { cause?: NodeJS.ErrnoException & { port?: number; address?: string } }).cause
  if (!(e instanceof TesseraError) || (cause?.code !== 'EADDRINUSE' && cause?.code !== 'EACCES')) return e
  const port = cause.port ?? -1
  const listeners = (Object.keys(PORT_FLAGS) as (keyof typeof PORT_FLAGS)[]).filter((l) => config.ports[l] === port)
  const isHttp = config.http !== undefined && config.http.port === port && listeners.length === 0
  const which = isHttp ? 'the HTTP ops listener' : listeners.map((l) => `the ${LISTENER_NAMES[l]} listener`).join(' and ') || 'a listener'
  const flags = isHttp
    ? '--http-port N'
    : listeners.map((l) => `--${PORT_FLAGS[l]} N`).join(' / ') || '--as-port N, --tgs-port N, --time-port N, --admin-port N'
  const host = isHttp ? config.http!.host : config.host
  const why =
    cause.code === 'EADDRINUSE'
      ? `port ${port} on ${host} (${which}) is already in use: stop what holds it, or choose another port with ${flags}`
      : `not allowed to listen on port ${port} on ${host} (${which}; ports below 1024 need root or CAP_NET_BIND_SERVICE): choose another with ${flags}`
  return new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `${why} (0 = any free port)`, { cause: e })
}

const netOptions = {
  host: { type: 'string', describe: 'address to bind (default 127.0.0.1; 0.0.0.0 = every interface)' },
  'advertise-host': {
    type: 'string',
    describe: 'host name clients connect to, written into realm.json (default: --host, or this machine\'s name for 0.0.0.0/::)',
  },
  'as-port': { type: 'number', describe: 'AS listener port (default 7701; 0 = any free port)' },
  'tgs-port': { type: 'number', describe: 'TGS listener port (default 7702)' },
  'time-port': { type: 'number', describe: 'time listener port (default 7703)' },
  'admin-port': { type: 'number', describe: 'admin listener port (default 7704)' },
  config: { type: 'string', describe: 'JSON config file (lifetimes, skew, limits, log paths)' },
  json: { type: 'boolean', describe: 'print the result as one JSON object (shapes: docs/cli.md)' },
} as const

/** Flags of `kdc start` only: the HTTP ops listener. */
const httpOptions = {
  'http-port': { type: 'number', describe: 'turn on the HTTP ops listener (/metrics, /healthz, /readyz) on this port (0 = any free port)' },
  'http-host': { type: 'string', describe: 'address of the HTTP ops listener (default 127.0.0.1, whatever --host is)' },
} as const

interface HttpFlags {
  'http-port'?: number | undefined
  'http-host'?: string | undefined
}

function applyHttpFlags(c: KdcConfigInput, f: HttpFlags): KdcConfigInput {
  if (f['http-port'] === undefined && f['http-host'] === undefined) return c
  const http = { ...c.http }
  if (f['http-port'] !== undefined) http.port = f['http-port']
  if (f['http-host'] !== undefined) http.host = f['http-host']
  return { ...c, http }
}

/** Write DIR/run.json atomically (a reader never sees half a file). */
async function writeRunFile(dir: string, rf: RunFile): Promise<void> {
  const file = path.join(dir, RUN_FILE)
  const tmp = `${file}.${process.pid}.tmp`
  await writeFile(tmp, `${JSON.stringify(rf, null, 2)}\n`, { mode: 0o644 })
  await rename(tmp, file)
}

/** Remove DIR/run.json if it is still this process's (a second kdc may have replaced it). */
async function removeRunFile(dir: string): Promise<void> {
  const file = path.join(dir, RUN_FILE)
  try {
    const rf = JSON.parse(await readFile(file, 'utf8')) as Partial<RunFile>
    if (rf.pid === process.pid) await rm(file, { force: true })
  } catch {
    // gone already, or not ours to judge
  }
}

/** Whether a process with this pid exists (EPERM: it does, under another user). */
function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** GET a JSON document from the ops listener: its HTTP status and body. */
function getJson(host: string, port: number, urlPath: string, timeoutMs = 3000): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path: urlPath, timeout: timeoutMs }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => {
        text += d
      })
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Record<string, unknown> })
        } catch {
          reject(new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `the ops listener on ${host}:${port} did not answer JSON`))
        }
      })
    })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', (e) =>
      reject(new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `the ops listener on ${host}:${port} does not answer: ${e.message}`, { cause: e })),
    )
  })
}

function formatUptime(s: number): string {
  const d = Math.floor(s / 86400)
  const h = Math.floor((s % 86400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  const pad = (n: number) => String(n).padStart(2, '0')
  return `${d > 0 ? `${d}d ` : ''}${h}h ${pad(m)}m ${pad(s % 60)}s`
}

/** What `kdc status` found: its exit code, its --json object and its text. */
interface StatusResult {
  code: number
  report: Record<string, unknown>
  text: string
}

/**
 * The state of the kdc of `dir`: DIR/run.json says which process and where; a live process
 * with an ops listener is asked /readyz for readiness, uptime and principal count.
 */
async function readStatus(dir: string): Promise<StatusResult> {
  const file = path.join(dir, RUN_FILE)
  let rf: RunFile | undefined
  try {
    rf = JSON.parse(await readFile(file, 'utf8')) as RunFile
  } catch {
    rf = undefined
  }
  if (!rf || !processAlive(rf.pid)) {
    const why = rf ? `not running (${file} is left from pid ${rf.pid}, which has exited)` : `not running (no ${file})`
    return { code: Exit.UNREACHABLE, report: { up: false, reason: why }, text: `kdc: ${why}\n` }
  }
  const report: Record<string, unknown> = {
    up: true,
    ready: null,
    pid: rf.pid,
    version: rf.version,
    realm: rf.realm,
    startedAt: rf.startedAt,
    uptimeS: Math.max(0, Math.floor((Date.now() - Date.parse(rf.startedAt)) / 1000)),
    listeners: rf.listeners,
    principals: null,
  }
  let problem: string | undefined
  if (rf.http) {
    report.http = rf.http
    const host = isUnspecifiedHost(rf.http.host) ? (rf.http.host.includes(':') ? '::1' : '127.0.0.1') : rf.http.host
    try {
      const r = await getJson(host, rf.http.port, '/readyz')
      for (const k of ['version', 'realm', 'startedAt', 'uptimeS', 'principals'] as const) if (k in r.body) report[k] = r.body[k]
      report.ready = r.status === 200
      if (r.status !== 200) report.failing = r.body.failing
    } catch (e) {
      report.ready = false
      problem = (e as Error).message
      report.error = problem
    }
  }
  const l = rf.listeners
  const state =
    report.ready === null
      ? 'up'
      : report.ready
        ? 'up, ready'
        : `up, NOT ready (${problem ?? (report.failing as string[] | undefined)?.join(', ')})`
  const text = [
    `kdc: ${state}`,
    `realm       ${String(report.realm)}`,
    `version     ${String(report.version)}`,
    `pid         ${rf.pid}`,
    `uptime      ${formatUptime(report.uptimeS as number)}`,
    `listeners   ${(['as', 'tgs', 'time', 'admin'] as const).map((n) => `${n}=${l[n] ? fmt(l[n]) : '?'}`).join(' ')}${rf.http ? ` http=${fmt(rf.http)}` : ''}`,
    `principals  ${report.principals ?? 'unknown (start the kdc with --http-port N to see it)'}`,
  ]
    .map((line) => `${line}\n`)
    .join('')
  return { code: report.ready === false ? Exit.FAILURE : Exit.OK, report, text }
}

/** A bad flag value found by a yargs check: reported like any usage error. */
class UsageError extends Error {}

/** A yargs check: every port flag given is a port number (else a usage error, exit 2). */
function checkPortFlags(a: NetFlags & HttpFlags): true {
  for (const flag of [...Object.values(PORT_FLAGS), 'http-port'] as const) {
    const v = a[flag]
    if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 65535))
      throw new UsageError(`--${flag} must be a port number (0-65535; 0 = any free port)`)
  }
  return true
}


const fmt = (x: { host: string; port: number }) => `${x.host.includes(':') ? `[${x.host}]` : x.host}:${x.port}`

/** Run `kdc` with argv; resolves with the exit code. */
export async function main(argv: string[], io: CliEnv = {}): Promise<number> {
  const env = io.env ?? process.env
  const out = io.stdout ?? process.stdout
  const err = io.stderr ?? process.stderr
  let code: number = Exit.OK
  let debug = false
  let usageError = false
  const run = async (fn: () => Promise<number>) => {
    if (usageError) return
    try {
      code = await fn()
    } catch (e) {
      err.write(`kdc: ${formatError(e, debug)}\n`)
      code = exitCodeFor(e)
    }
  }

  const adminPassword = async (file: string | undefined): Promise<string> => {
    if (file) return readPasswordFile(file, err, 'kdc')
    if (env.TESSERA_ADMIN_PASSWORD) return env.TESSERA_ADMIN_PASSWORD
    if (process.stdin.isTTY) {
      const a = await promptHidden('Admin password: ')
      const b = await promptHidden('Again: ')
      if (a !== b) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'passwords do not match')
      return a
    }
    throw new TesseraError(
      TesseraErrorCode.TESSERA_CONFIG,
      'no admin password: use --admin-password-file FILE, TESSERA_ADMIN_PASSWORD, or run on a terminal',
    )
  }

  /** What `kdc init` tells the operator about where clients will connect. */
  const initReport = (realm: string, dir: string, config: KdcConfig, asJson: boolean | undefined) => {
    const realmFile = path.join(dir, REALM_FILES.realmFile)
    const pending = Object.values(config.ports).some((p) => p === 0)
    const host = advertisedHost(config)
    if (asJson) {
      out.write(`${JSON.stringify({ realm, dir, realmFile: pending ? null : realmFile, advertiseHost: host, ports: config.ports })}\n`)
      return
    }
    out.write(`realm ${realm} created in ${dir}\n`)
    if (pending) out.write(`realm.json: written by kdc start once its listeners are bound (port 0 = any free port)\n`)
    else out.write(`clients need ${realmFile}: they will connect to ${host} (change with --advertise-host)\n`)
  }

  const parser = yargs()
    .scriptName('kdc')
    .usage('$0 <command> [options]\n\nThe Tessera KDC: AS, TGS, time and admin listeners for one realm.')
    .option('debug', { type: 'boolean', describe: 'print stack traces on errors' })
    .middleware((a) => {
      debug = Boolean(a.debug)
    })
    .command(
      'init',
      'create a realm in DIR (its listener settings are kept for kdc start)',
      (y) =>
        y
          .option('realm', { type: 'string', demandOption: true, describe: 'realm name, e.g. EXAMPLE.COM' })
          .option('dir', { type: 'string', demandOption: true, describe: 'realm directory (created)' })
          .option('admin', { type: 'string', default: 'admin', describe: 'name of the first administrator' })
          .option('admin-password-file', { type: 'string', describe: 'file whose first line is the admin password' })
          .options(netOptions)
          .check(checkPortFlags),
      (a) =>
        run(async () => {
          const config = resolveKdcConfig(applyFlags(await readConfigFile(a.config), a))
          const password = await adminPassword(a['admin-password-file'])
          await initRealmDir({ dir: a.dir, realm: a.realm, adminName: a.admin, adminPassword: password, config })
          initReport(a.realm, a.dir, config, a.json)
          return Exit.OK
        }),
    )
    .command(
      'start',
      'run the KDC of the realm in DIR (where kdc init said to listen, unless flags or --config say otherwise)',
      (y) =>
        y
          .option('dir', { type: 'string', demandOption: true, describe: 'realm directory (from kdc init)' })
          .option('init-if-missing', {
            type: 'boolean',
            describe: 'create a realm (TESSERA.LOCAL) in DIR first if there is none; the admin password goes to DIR/admin.password',
          })
          .option('realm', { type: 'string', default: 'TESSERA.LOCAL', describe: 'realm name for --init-if-missing' })
          .options(netOptions)
          .options(httpOptions)
          .check(checkPortFlags),
      (a) =>
        run(async () => {
          const readInput = async () => applyHttpFlags(applyFlags(await readConfigFile(a.config), a), a)
          const input = await readInput()
          // Validated up front (a typo in the config file is reported before anything is created),
          // over the settings kdc init recorded, as startKdc will use them.
          const recorded = await readListenSettings(a.dir)
          const config = resolveKdcConfig({ ...recorded, ...input, ports: { ...recorded.ports, ...input.ports } })
          let created: { pwFile: string; removeDir: boolean; removeLogs: boolean } | undefined
          if (a['init-if-missing'] && !(await exists(path.join(a.dir, REALM_FILES.stash)))) {
            const password = randomBytes(18).toString('base64url')
            const removeDir = !(await exists(a.dir))
            const removeLogs = !(await exists(path.join(a.dir, REALM_FILES.logs)))
            await initRealmDir({ dir: a.dir, realm: a.realm, adminPassword: password, config: resolveKdcConfig(input) })
            const pwFile = path.join(a.dir, 'admin.password')
            created = { pwFile, removeDir, removeLogs }
            await writeFile(pwFile, `${password}\n`, { mode: 0o600, flag: 'wx' })
          }
          let kdc: RunningKdc
          try {
            kdc = await startKdc({ dir: a.dir, config: input })
          } catch (e) {
            if (created) {
              // A realm nobody has used yet: do not leave it behind for the next attempt to trip on.
              if (created.removeDir) await rm(a.dir, { recursive: true, force: true })
              else
                for (const f of [REALM_FILES.stash, REALM_FILES.db, REALM_FILES.realmFile, REALM_FILES.listen, 'admin.password'].concat(
                  created.removeLogs ? [REALM_FILES.logs] : [],
                ))
                  await rm(path.join(a.dir, f), { recursive: true, force: true })
            }
            const why = explainListenFailure(e, config)
            if (why instanceof TesseraError && why.code === TesseraErrorCode.TESSERA_DB_LOCKED)
              throw new TesseraError(
                TesseraErrorCode.TESSERA_DB_LOCKED,
                `another kdc is already running on ${a.dir} (its database is locked): stop it first, or give this one another --dir`,
                { cause: why },
              )
            if (created && why instanceof Error) why.message += `; the realm just created in ${a.dir} was removed`
            throw why
          }
          if (created)
            err.write(`kdc: created realm ${a.realm} in ${a.dir}; admin password for admin@${a.realm} is in ${created.pwFile}\n`)
          const ad = kdc.addresses
          const runFile: RunFile = {
            pid: process.pid,
            version: tesseraVersion(),
            realm: kdc.realm,
            startedAt: new Date(kdc.startedAt).toISOString(),
            listeners: ad,
          }
          if (kdc.opsAddress) runFile.http = kdc.opsAddress
          await writeRunFile(a.dir, runFile)
          if (a.json)
            out.write(
              `${JSON.stringify({ realm: kdc.realm, realmFile: path.join(a.dir, REALM_FILES.realmFile), listening: ad, ...(kdc.opsAddress ? { http: kdc.opsAddress } : {}) })}\n`,
            )
          else
            out.write(
              `listening as=${fmt(ad.as)} tgs=${fmt(ad.tgs)} time=${fmt(ad.time)} admin=${fmt(ad.admin)}${kdc.opsAddress ? ` http=${fmt(kdc.opsAddress)}` : ''}\n`,
            )
          // SIGHUP: read the config file and flags again, apply what can change live, reopen the
          // logs (logrotate), run the reloaders (the admin ACL). One reload at a time.
          let reloading: Promise<void> = Promise.resolve()
          const reload = () => {
            reloading = reloading.then(async () => {
              try {
                await kdc.reload(await readInput())
              } catch (e) {
                kdc.context.log.ops.error('reload refused; the running settings are kept', { err: (e as Error).message })
                err.write(`kdc: reload refused, running settings kept: ${formatError(e, debug)}\n`)
              }
            })
          }
          const unregister =
            io.onReloadSignal?.(reload) ??
            (() => {
              process.on('SIGHUP', reload)
              return () => process.off('SIGHUP', reload)
            })()
          try {
            await (io.stopSignal ??
              new Promise<void>((resolve) => {
                process.once('SIGINT', resolve)
                process.once('SIGTERM', resolve)
              }))
          } finally {
            unregister()
            await reloading
            await kdc.close()
            await removeRunFile(a.dir)
          }
          return Exit.OK
        }),
    )
    .command(
      'status',
      'whether the KDC of DIR runs: version, realm, listeners, uptime, principals (exit 0 up and ready, 1 up but not ready, 4 not running)',
      (y) =>
        y
          .option('dir', { type: 'string', demandOption: true, describe: 'realm directory of the running kdc' })
          .option('wait', {
            type: 'number',
            describe: 'wait up to this many seconds for the kdc to be up and ready (a systemd ExecStartPost readiness check)',
          })
          .option('json', { type: 'boolean', describe: 'print the result as one JSON object (shapes: docs/cli.md)' })
          .check((x) => {
            if (x.wait !== undefined && !(x.wait >= 0)) throw new UsageError('--wait must be a number of seconds (>= 0)')
            return true
          }),
      (a) =>
        run(async () => {
          const deadline = Date.now() + (a.wait ?? 0) * 1000
          let r = await readStatus(a.dir)
          while (r.code !== Exit.OK && Date.now() < deadline) {
            await new Promise((resolve) => setTimeout(resolve, 200))
            r = await readStatus(a.dir)
          }
          out.write(a.json ? `${JSON.stringify(r.report)}\n` : r.text)
          return r.code
        }),
    )
    // ---- master-key rotation (src/admin/master-rotation.ts; docs/operations.md "Master key") ----
    .command(
      'master-key <step>',
      'rotate the master key: add, use, reseal, retire (status: show); the running KDC carries out each step while it serves, else it runs here',
      (y) =>
        y
          .positional('step', { choices: ['status', 'add', 'use', 'reseal', 'retire'] as const, demandOption: true })
          .option('dir', { type: 'string', demandOption: true, describe: 'realm directory' })
          .option('kvno', { type: 'number', describe: 'use: the master key version to make active (default the newest)' })
          .option('batch', { type: 'number', describe: 'reseal: principals per synced batch (default 100)' })
          .option('json', { type: 'boolean', describe: 'print the report as JSON' }),
      (a) =>
        run(async () => {
          const { runMasterKeyStep } = await import('../admin/master-rotation.js')
          const tty = (err as NodeJS.WriteStream).isTTY === true
          let last = -1
          const r = await runMasterKeyStep({
            dir: a.dir,
            step: a.step,
            user: env.USER ?? env.LOGNAME ?? 'unknown',
            ...(a.kvno !== undefined ? { kvno: a.kvno } : {}),
            ...(a.batch !== undefined ? { batchSize: a.batch } : {}),
            onProgress: (done, total) => {
              // Progress on a terminal: one rewritten line; elsewhere a line per 10 %.
              const pct = total === 0 ? 100 : Math.floor((done * 100) / total)
              if (tty) err.write(`\rreseal ${done}/${total} principals (${pct}%)`)
              else if (pct >= last + 10 || done === total) err.write(`reseal ${done}/${total} principals (${pct}%)\n`)
              if (!tty && (pct >= last + 10 || done === total)) last = pct
            },
          })
          if (tty && a.step === 'reseal') err.write('\n')
          if (a.json) out.write(`${JSON.stringify(r)}\n`)
          else {
            const s = r.status
            if (r.step === 'add') out.write(`master key kvno ${r.kvno} added (stash: ${r.stash.join(', ')}); next: kdc master-key use\n`)
            if (r.step === 'use')
              out.write(
                `new seals use master key kvno ${r.kvno}${r.auditEpoch !== undefined ? `; the audit log and new dumps are MAC'd under audit epoch ${r.auditEpoch}` : ''}; next: kdc master-key reseal\n`,
              )
            if (r.step === 'reseal' && r.stopped) out.write(`reseal stopped after ${r.resealed} records (the kdc is stopping); it resumes when the kdc starts again\n`)
            else if (r.step === 'reseal') out.write(`resealed ${r.resealed} of ${r.total} principals under master key kvno ${s.active}; next: kdc master-key retire\n`)
            if (r.step === 'retire') out.write(`retired master key(s) ${r.retired!.join(', ') || '(none)'}; the stash holds kvno ${r.stash.join(', ')}\n`)
            out.write(
              `active ${s.active}; known ${s.known.join(', ')}; stash ${r.stash.join(', ')}${s.reseal ? `; reseal to ${s.reseal.target} unfinished (run reseal)` : ''}${s.unregistered.length ? `; stash keys not yet added: ${s.unregistered.join(', ')} (run add)` : ''}\n`,
            )
            if (r.running) out.write(`the kdc is running: ${r.running.step}${r.running.total !== undefined ? ` ${r.running.done}/${r.running.total}` : ''}\n`)
            out.write(r.via === 'kdc' ? 'carried out by the running kdc\n' : 'carried out on the database here (no kdc running)\n')
          }
          return Exit.OK
        }),
    )
    .demandCommand(1, 'name a command: init, start, status or master-key')
    .epilogue(exitCodesEpilogue())
    .strict()
    .help()
    .exitProcess(false)
    .fail((msg, e) => {
      if (e && !(e instanceof UsageError)) throw e
      if (usageError) return
      usageError = true
      err.write(`kdc: ${msg ?? e?.message}\nRun kdc --help for usage.\n`)
      code = Exit.USAGE
    })
  await parser.parseAsync(argv, {}, (_e, _a, output) => {
    if (output && !usageError) out.write(`${output}\n`)
  })
  return code
}
