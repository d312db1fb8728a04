/** `kdc init` and `kdc start`: create a realm, run its listeners. */
import { randomBytes } from 'node:crypto'
import { access, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import yargs from 'yargs'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { type KdcConfigInput, resolveKdcConfig } from '../kdc/config.js'
import { startKdc } from '../kdc/kdc.js'
import { initRealmDir, REALM_FILES } from '../kdc/realm.js'
import { Exit, formatError, promptHidden, readPasswordFile } from './common.js'

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
  'as-port'?: number | undefined
  'tgs-port'?: number | undefined
  'time-port'?: number | undefined
  'admin-port'?: number | undefined
}

function applyFlags(c: KdcConfigInput, f: NetFlags): KdcConfigInput {
  const out: KdcConfigInput = { ...c, ports: { ...c.ports } }
  if (f.host !== undefined) out.host = f.host
  if (f['as-port'] !== undefined) out.ports!.as = f['as-port']
  if (f['tgs-port'] !== undefined) out.ports!.tgs = f['tgs-port']
  if (f['time-port'] !== undefined) out.ports!.time = f['time-port']
  if (f['admin-port'] !== undefined) out.ports!.admin = f['admin-port']
  return out
}

async function hasRealm(dir: string): Promise<boolean> {
  try {
    await access(path.join(dir, REALM_FILES.stash))
    return true
  } catch {
    return false
  }
}

const netOptions = {
  host: { type: 'string', describe: 'address to bind (default 127.0.0.1)' },
  'as-port': { type: 'number', describe: 'AS listener port (0 = any free port)' },
  'tgs-port': { type: 'number', describe: 'TGS listener port' },
  'time-port': { type: 'number', describe: 'time listener port' },
  'admin-port': { type: 'number', describe: 'admin listener port' },
  config: { type: 'string', describe: 'JSON config file (lifetimes, skew, limits, log paths)' },
} as const

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
      code = e instanceof TesseraError && e.code === TesseraErrorCode.TESSERA_CONFIG ? Exit.CONFIG : Exit.FAILURE
      if (e instanceof TesseraError && e.code === TesseraErrorCode.TESSERA_REALM_EXISTS) code = Exit.USAGE
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

  const parser = yargs()
    .scriptName('kdc')
    .usage('$0 <command> [options]\n\nThe Tessera KDC: AS, TGS, time and admin listeners for one realm.')
    .option('debug', { type: 'boolean', describe: 'print stack traces on errors' })
    .middleware((a) => {
      debug = Boolean(a.debug)
    })
    .command(
      'init',
      'create a realm in DIR',
      (y) =>
        y
          .option('realm', { type: 'string', demandOption: true, describe: 'realm name, e.g. EXAMPLE.COM' })
          .option('dir', { type: 'string', demandOption: true, describe: 'realm directory (created)' })
          .option('admin', { type: 'string', default: 'admin', describe: 'name of the first administrator' })
          .option('admin-password-file', { type: 'string', describe: 'file whose first line is the admin password' })
          .options(netOptions),
      (a) =>
        run(async () => {
          const config = resolveKdcConfig(applyFlags(await readConfigFile(a.config), a))
          const password = await adminPassword(a['admin-password-file'])
          await initRealmDir({ dir: a.dir, realm: a.realm, adminName: a.admin, adminPassword: password, config })
          out.write(`realm ${a.realm} created in ${a.dir}; clients need ${path.join(a.dir, REALM_FILES.realmFile)}\n`)
          return Exit.OK
        }),
    )
    .command(
      'start',
      'run the KDC of the realm in DIR',
      (y) =>
        y
          .option('dir', { type: 'string', demandOption: true, describe: 'realm directory (from kdc init)' })
          .option('init-if-missing', {
            type: 'boolean',
            describe: 'create a realm (TESSERA.LOCAL) in DIR first if there is none; the admin password goes to DIR/admin.password',
          })
          .option('realm', { type: 'string', default: 'TESSERA.LOCAL', describe: 'realm name for --init-if-missing' })
          .options(netOptions),
      (a) =>
        run(async () => {
          const input = applyFlags(await readConfigFile(a.config), a)
          const config = resolveKdcConfig(input)
          if (a['init-if-missing'] && !(await hasRealm(a.dir))) {
            const password = randomBytes(18).toString('base64url')
            await initRealmDir({ dir: a.dir, realm: a.realm, adminPassword: password, config })
            const pwFile = path.join(a.dir, 'admin.password')
            await writeFile(pwFile, `${password}\n`, { mode: 0o600, flag: 'wx' })
            err.write(`kdc: created realm ${a.realm} in ${a.dir}; admin password for admin@${a.realm} is in ${pwFile}\n`)
          }
          const kdc = await startKdc({ dir: a.dir, config: input })
          const ad = kdc.addresses
          const fmt = (x: { host: string; port: number }) => `${x.host.includes(':') ? `[${x.host}]` : x.host}:${x.port}`
          out.write(`listening as=${fmt(ad.as)} tgs=${fmt(ad.tgs)} time=${fmt(ad.time)} admin=${fmt(ad.admin)}\n`)
          await (io.stopSignal ??
            new Promise<void>((resolve) => {
              process.once('SIGINT', resolve)
              process.once('SIGTERM', resolve)
            }))
          await kdc.close()
          return Exit.OK
        }),
    )
    .demandCommand(1, 'name a command: init or start')
    .strict()
    .help()
    .exitProcess(false)
    .fail((msg, e) => {
      if (e) throw e
      if (usageError) return
      usageError = true
      err.write(`kdc: ${msg}\nRun kdc --help for usage.\n`)
      code = Exit.USAGE
    })
  await parser.parseAsync(argv, {}, (_e, _a, output) => {
    if (output && !usageError) out.write(`${output}\n`)
  })
  return code
}
