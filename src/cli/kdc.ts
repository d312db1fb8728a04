/** `kdc init` and `kdc start`: create a realm, run its listeners. */
import { randomBytes } from 'node:crypto'
import { access, readFile, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import yargs from 'yargs'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { advertisedHost, type KdcConfig, type KdcConfigInput, resolveKdcConfig } from '../kdc/config.js'
import { startKdc } from '../admin/start.js'
import type { RunningKdc } from '../kdc/kdc.js'
import { initRealmDir, REALM_FILES, readListenSettings } from '../kdc/realm.js'
import { Exit, exitCodeFor, exitCodesEpilogue, formatError, promptHidden, readPasswordFile } from './common.js'

/** Environment and streams the CLI may use (tests pass their own). */
export interface CliEnv {
  env?: NodeJS.ProcessEnv
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
  /** Resolves when the daemon should stop (default: SIGINT/SIGTERM). */
  stopSignal?: Promise<void>
}

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
  const which = listeners.map((l) => `the ${LISTENER_NAMES[l]} listener`).join(' and ') || 'a listener'
  const flags = listeners.map((l) => `--${PORT_FLAGS[l]} N`).join(' / ') || '--as-port N, --tgs-port N, --time-port N, --admin-port N'
  const why =
    cause.code === 'EADDRINUSE'
      ? `port ${port} on ${config.host} (${which}) is already in use: stop what holds it, or choose another port with ${flags}`
      : `not allowed to listen on port ${port} on ${config.host} (${which}; ports below 1024 need root or CAP_NET_BIND_SERVICE): choose another with ${flags}`
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

/** A bad flag value found by a yargs check: reported like any usage error. */
class UsageError extends Error {}

/** A yargs check: every port flag given is a port number (else a usage error, exit 2). */
function checkPortFlags(a: NetFlags): true {
  for (const flag of Object.values(PORT_FLAGS)) {
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
          .check(checkPortFlags),
      (a) =>
        run(async () => {
          const input = applyFlags(await readConfigFile(a.config), a)
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
          if (a.json) out.write(`${JSON.stringify({ realm: kdc.realm, realmFile: path.join(a.dir, REALM_FILES.realmFile), listening: ad })}\n`)
          else out.write(`listening as=${fmt(ad.as)} tgs=${fmt(ad.tgs)} time=${fmt(ad.time)} admin=${fmt(ad.admin)}\n`)
          await (io.stopSignal ??
            new Promise<void>((resolve) => {
              process.once('SIGINT', resolve)
              process.once('SIGTERM', resolve)
            }))
          await kdc.close()
          return Exit.OK
        }),
    )
    // ---- master-key rotation (src/admin/master-rotation.ts; docs/operations.md "Master key") ----
    .command(
      'master-key <step>',
      'rotate the master key, the KDC stopped for each step: add, use, reseal, retire (status: show)',
      (y) =>
        y
          .positional('step', { choices: ['status', 'add', 'use', 'reseal', 'retire'] as const, demandOption: true })
          .option('dir', { type: 'string', demandOption: true, describe: 'realm directory' })
          .option('kvno', { type: 'number', describe: 'use: the master key version to make active (default the newest)' })
          .option('batch', { type: 'number', default: 100, describe: 'reseal: principals per synced batch' })
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
            batchSize: a.batch,
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
            if (r.step === 'use') out.write(`new seals use master key kvno ${r.kvno}; next: kdc master-key reseal\n`)
            if (r.step === 'reseal') out.write(`resealed ${r.resealed} of ${r.total} principals under master key kvno ${s.active}; next: kdc master-key retire\n`)
            if (r.step === 'retire') out.write(`retired master key(s) ${r.retired!.join(', ') || '(none)'}; the stash holds kvno ${r.stash.join(', ')}\n`)
            out.write(
              `active ${s.active}; known ${s.known.join(', ')}; stash ${r.stash.join(', ')}${s.reseal ? `; reseal to ${s.reseal.target} unfinished (run reseal)` : ''}${s.unregistered.length ? `; stash keys not yet added: ${s.unregistered.join(', ')} (run add)` : ''}\n`,
            )
          }
          return Exit.OK
        }),
    )
    .demandCommand(1, 'name a command: init, start or master-key')
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
