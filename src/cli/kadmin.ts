/**
 * `kadmin`: principals, policies, keytabs, the ACL and the audit log of a realm, with MIT
 * kadmin's command names. Remote (the admin listener, through AdminClient) or `--local` (the
 * realm directory, the daemon stopped, through LocalAdmin); both run the same operations.
 */
import { access, open, readFile } from 'node:fs/promises'
import os from 'node:os'
import { createInterface } from 'node:readline'
import { SingleBar } from 'cli-progress'
import yargs, { type Argv } from 'yargs'
import { ErrorCode } from '../../proto/error-codes.js'
import { TicketFlag } from '../../proto/flags.js'
import { formatDuration, parseDuration } from '../admin/duration.js'
import { LocalAdmin, loadRealmDir } from '../admin/local.js'
import { AdminClient, AdminError } from '../client/admin-client.js'
import { type CacheContents, CredentialCache, ccachePath } from '../client/ccache.js'
import { KdcClient } from '../client/kdc-client.js'
import { readStashKeys } from '../db/master-key.js'
import type { Policy, PrincipalAttributes } from '../db/types.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { type KdcConfig, type KdcConfigInput, resolveKdcConfig } from '../kdc/config.js'
import { Keytab, type KeytabEntry, readKeytab, writeKeytab } from '../krb/keytab.js'
import { realmJwks } from '../krb/jwks.js'
import type { RealmFile } from '../krb/realm-file.js'
import { ResumptionStore } from '../wire/resumption.js'
import { Exit, exitCodeFor, exitCodesEpilogue, formatError, loadRealmForCli, promptHidden, readPasswordFile } from './common.js'
import { watchCommand } from './kadmin-watch.js'

/** Streams and environment of one kadmin run (tests pass their own). */
export interface KadminIo {
  env?: NodeJS.ProcessEnv
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
  stdin?: NodeJS.ReadStream
}

/** What both AdminClient (remote) and LocalAdmin (`--local`) offer: the CLI is a thin layer over it. */
export type AdminApi = Pick<
  AdminClient,
  | 'addPrincipal'
  | 'deletePrincipal'
  | 'renamePrincipal'
  | 'modifyPrincipal'
  | 'getPrincipal'
  | 'listPrincipals'
  | 'changePassword'
  | 'randomizeKey'
  | 'extractKeys'
  | 'addPolicy'
  | 'modifyPolicy'
  | 'deletePolicy'
  | 'getPolicy'
  | 'listPolicies'
  | 'checkAcl'
  | 'readAudit'
  | 'rotateKey'
  | 'purgeKeys'
>

/** Global options that take a value: the word after them is not the command. */
const VALUE_OPTIONS = new Set([
  '-p',
  '--principal',
  '--password-file',
  '--admin-password-file',
  '--keytab',
  '--admin-keytab',
  '--realm-file',
  '-c',
  '--ccache',
  '--dir',
  '--config',
  '--connect-timeout',
])

/**
 * Before the command, `--password-file` and `--keytab` are the administrator's (how kadmin logs
 * in); after it they are the command's (`addprinc --password-file`, `ktadd --keytab`). yargs
 * has one namespace, so the global ones are renamed before parsing.
 */
export function splitGlobalOptions(argv: readonly string[]): string[] {
  const out = [...argv]
  for (let i = 0; i < out.length; i++) {
    const t = out[i]!
    if (t === '--') break
    if (!t.startsWith('-')) break // the command
    const [name, value] = t.includes('=') ? [t.slice(0, t.indexOf('=')), t.slice(t.indexOf('=') + 1)] : [t, undefined]
    const renamed = name === '--password-file' ? '--admin-password-file' : name === '--keytab' ? '--admin-keytab' : name
    out[i] = value === undefined ? renamed : `${renamed}=${value}`
    if (value === undefined && VALUE_OPTIONS.has(name)) i++
  }
  return out
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z')
const when = (ms: number | undefined) => (ms === undefined ? '[never]' : iso(ms))

function usage(message: string): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_VALIDATION, message)
}

/** A time as administrators type it: `never`, a duration from now (`30d`), or an ISO 8601 date. */
export function parseTime(text: string, now: number): number | null {
  const t = text.trim()
  if (t.toLowerCase() === 'never') return null
  try {
    return now + parseDuration(t)
  } catch {
    const ms = Date.parse(t)
    if (Number.isNaN(ms)) throw usage(`not a time: ${JSON.stringify(text)} (examples: never, 30d, 2027-01-31, 2027-01-31T12:00:00Z)`)
    return ms
  }
}

/** A past time: a duration ago (`2h`) or an ISO 8601 date. */
function parseSince(text: string, now: number): number {
  try {
    return now - parseDuration(text)
  } catch {
    const ms = Date.parse(text)
    if (Number.isNaN(ms)) throw usage(`not a time: ${JSON.stringify(text)} (examples: 2h, 7d, 2027-01-31T12:00:00Z)`)
    return ms
  }
}

/** The attribute flags of addprinc and modprinc: yargs booleans (`--no-X` clears), MIT's `+flag` beside each (docs/cli.md). */
const ATTRIBUTE_OPTIONS = {
  'requires-preauth': { attr: 'requiresPreauth', mit: '+requires_preauth', describe: 'logins need pre-authentication (--no-requires-preauth: not)' },
  'allow-service': { attr: 'allowService', mit: '+allow_svr', describe: 'may be the service of a ticket' },
  'allow-forwardable': { attr: 'allowForwardable', mit: '+allow_forwardable', describe: 'tickets may be forwardable' },
  'allow-renewable': { attr: 'allowRenewable', mit: '+allow_renewable', describe: 'tickets may be renewable' },
  'allow-jwt': { attr: 'allowJwt', mit: 'no MIT equivalent', describe: 'the TGS may issue DPoP-bound JWTs for it (PROTOCOL.md §15)' },
} as const satisfies Record<string, { attr: keyof PrincipalAttributes; mit: string; describe: string }>

type AttributeFlags = { [K in keyof typeof ATTRIBUTE_OPTIONS]?: boolean | undefined }

function withAttributeOptions<T>(y: Argv<T>): Argv<T & AttributeFlags> {
  let out = y as Argv<T & AttributeFlags>
  for (const [flag, o] of Object.entries(ATTRIBUTE_OPTIONS))
    out = out.option(flag, { type: 'boolean', describe: `${o.describe} (MIT ${o.mit})` }) as Argv<T & AttributeFlags>
  return out
}

function attributesOf(a: AttributeFlags & { disabled?: boolean | undefined }): Partial<PrincipalAttributes> | undefined {
  const out: Partial<PrincipalAttributes> = {}
  for (const [flag, o] of Object.entries(ATTRIBUTE_OPTIONS)) {
    const v = a[flag as keyof AttributeFlags]
    if (v !== undefined) out[o.attr] = v
  }
  if (a.disabled !== undefined) out.disabled = a.disabled
  return Object.keys(out).length === 0 ? undefined : out
}

const POLICY_OPTIONS = {
  minlength: { type: 'number', describe: 'minimum password length' },
  minclasses: { type: 'number', describe: 'minimum character classes (1-4: lower, upper, digits, other)' },
  history: { type: 'number', describe: 'passwords remembered (the new one must differ from them)' },
  minlife: { type: 'string', describe: 'minimum password life before its owner may change it (e.g. 1d)' },
  maxlife: { type: 'string', describe: 'password life (e.g. 90d; 0: never expires)' },
  maxfailure: { type: 'number', describe: 'failed logins before a lockout (0: none)' },
  failurecountinterval: { type: 'string', describe: 'window the failures are counted in (e.g. 10m)' },
  lockoutduration: { type: 'string', describe: 'how long a lockout lasts (e.g. 1h; 0: until modprinc --unlock)' },
} as const

type PolicyFlags = {
  minlength?: number | undefined
  minclasses?: number | undefined
  history?: number | undefined
  minlife?: string | undefined
  maxlife?: string | undefined
  maxfailure?: number | undefined
  failurecountinterval?: string | undefined
  lockoutduration?: string | undefined
}

function policyArgsOf(name: string, a: PolicyFlags) {
  const args: Partial<Policy> & { name: string } = { name }
  const int = (flag: string, v: number | undefined) => {
    if (v === undefined) return undefined
    if (!Number.isSafeInteger(v) || v < 0) throw usage(`--${flag} must be a whole number`)
    return v
  }
  const dur = (v: string | undefined) => (v === undefined ? undefined : v.trim() === '0' ? 0 : parseDuration(v))
  const set = <K extends keyof Policy>(k: K, v: Policy[K] | undefined) => {
    if (v !== undefined) args[k] = v
  }
  set('minLength', int('minlength', a.minlength))
  set('minClasses', int('minclasses', a.minclasses))
  set('history', int('history', a.history))
  set('minPasswordLifeMs', dur(a.minlife))
  set('maxPasswordLifeMs', dur(a.maxlife))
  set('maxFailures', int('maxfailure', a.maxfailure))
  set('failureCountIntervalMs', dur(a.failurecountinterval))
  set('lockoutDurationMs', dur(a.lockoutduration))
  return args
}

/** The exit code of a kadmin failure: the shared scheme, with a malformed request as a usage error. */
export function kadminExitCode(e: unknown): number {
  if (e instanceof AdminError) return e.code === ErrorCode.ADM_ERR_BAD_REQUEST ? Exit.USAGE : Exit.FAILURE
  if (e instanceof TesseraError && e.code === TesseraErrorCode.TESSERA_VALIDATION) return Exit.USAGE
  return exitCodeFor(e)
}

function kadminError(e: unknown, debug: boolean): string {
  if (e instanceof AdminError) return debug ? (e.stack ?? e.message) : `${e.message} (${e.codeName})`
  return formatError(e, debug)
}

/** A progress bar on a terminal (count, rate, time left); nothing when stderr is piped. */
function progressBar(err: NodeJS.WritableStream, label: string, total: number) {
  if (!(err as NodeJS.WriteStream).isTTY) return undefined
  const bar = new SingleBar({
    stream: err,
    format: `${label} [{bar}] {value}/{total} | {rate}/s | {duration_formatted} elapsed, ETA {eta_formatted}`,
    hideCursor: true,
    clearOnComplete: false,
    etaBuffer: 50,
  })
  const start = Date.now()
  bar.start(Math.max(total, 1), 0, { rate: '0' })
  return {
    update(n: number) {
      if (n > bar.getTotal()) bar.setTotal(n)
      const s = (Date.now() - start) / 1000
      bar.update(n, { rate: s > 0 ? Math.round(n / s).toString() : '0' })
    },
    stop(n?: number) {
      if (n !== undefined) {
        bar.setTotal(Math.max(n, 1))
        bar.update(n)
      }
      bar.stop()
    },
  }
}

async function readConfigFile(file: string | undefined): Promise<KdcConfig> {
  if (!file) return resolveKdcConfig({})
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot read config file ${file}: ${(err as Error).message}`, { cause: err })
  }
  let input: KdcConfigInput
  try {
    input = JSON.parse(text) as KdcConfigInput
  } catch (err) {
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `config file ${file} is not valid JSON`, { cause: err })
  }
  return resolveKdcConfig(input)
}

/** Lines of a file of names: one a line, blank lines and `#` comments skipped. */
async function readNames(file: string): Promise<string[]> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`, { cause: err })
  }
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith('#'))
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p)
    return true
  } catch {
    return false
  }
}

/** A ticket in the cache kadmin may use: an initial kadmin/admin ticket valid for at least another minute. */
function cachedAdminTicket(contents: CacheContents | undefined, principal: string | undefined, now: number) {
  if (contents === undefined) return undefined
  const who = `${contents.cname.join('/')}@${contents.crealm}`
  if (principal !== undefined && principal !== who && principal !== contents.cname.join('/')) return undefined
  return contents.entries.find(
    (e) => e.sname.length === 2 && e.sname[0] === 'kadmin' && e.sname[1] === 'admin' && (e.flags & TicketFlag.INITIAL) !== 0 && e.endtime > now + 60_000,
  )
}

interface Global {
  principal?: string | undefined
  'admin-password-file'?: string | undefined
  'admin-keytab'?: string | undefined
  'realm-file'?: string | undefined
  ccache?: string | undefined
  local?: boolean | undefined
  dir?: string | undefined
  config?: string | undefined
  json?: boolean | undefined
  'connect-timeout'?: number | undefined
}

interface Session {
  api: AdminApi
  local?: LocalAdmin
  realm: string
  close(): Promise<void>
}

/** Most audit records asked for in one remote request (one reply is at most 60 KB). */
const REMOTE_AUDIT_LIMIT = 100

/** A bad argument found by a yargs check: reported like any usage error. */
class UsageError extends Error {}

/** Refusals of one name in `addprinc --from` (the others go on); any other failure stops the run. */
const PER_NAME_REFUSALS: ReadonlySet<string> = new Set([
  TesseraErrorCode.TESSERA_EXISTS,
  TesseraErrorCode.TESSERA_VALIDATION,
  TesseraErrorCode.TESSERA_BAD_NAME,
  TesseraErrorCode.TESSERA_NOT_FOUND,
  TesseraErrorCode.TESSERA_PROTECTED,
  TesseraErrorCode.TESSERA_NOT_AUTHORIZED,
])

/** Run kadmin with argv; resolves with the exit code. */
export async function main(argv: string[], io: KadminIo = {}): Promise<number> {
  const env = io.env ?? process.env
  const out = io.stdout ?? process.stdout
  const err = io.stderr ?? process.stderr
  const stdin = io.stdin ?? process.stdin
  let code: number = Exit.OK
  let debug = false
  let usageError = false
  const json = (o: unknown) => out.write(`${JSON.stringify(o)}\n`)
  const say = (line: string) => out.write(`${line}\n`)

  const user = () => {
    try {
      return os.userInfo().username
    } catch {
      return env.USER ?? 'unknown'
    }
  }

  const loadRealm = (a: Global): Promise<RealmFile> => loadRealmForCli(a['realm-file'], env, 'kadmin', '--realm-file FILE, or use --local --dir DIR on the KDC host')


  const prompt = async (question: string): Promise<string> => {
    if (!stdin.isTTY)
      throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `no terminal to ask "${question.trim()}": give the password in a file (see kadmin --help)`)
    const v = await promptHidden(question, stdin, err as NodeJS.WriteStream)
    if (v.length === 0) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'empty password')
    return v
  }

  /** A new password: from a file, or typed twice. */
  const newPassword = async (file: string | undefined, who: string): Promise<string> => {
    if (file) return readPasswordFile(file, err, 'kadmin')
    const a = await prompt(`Enter password for principal "${who}": `)
    const b = await prompt(`Re-enter password for principal "${who}": `)
    if (a !== b) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'the two passwords differ; nothing changed')
    return a
  }

  const askYes = async (question: string): Promise<boolean> => {
    if (!stdin.isTTY) throw usage(`${question.trim()} (no terminal to ask: give --force)`)
    const rl = createInterface({ input: stdin, output: err })
    try {
      const answer = await new Promise<string>((resolve) => rl.question(question, resolve))
      return /^y(es)?$/i.test(answer.trim())
    } finally {
      rl.close()
    }
  }

  const openLocal = async (a: Global): Promise<Session> => {
    if (!a.dir) throw usage('--local needs the realm directory: --local --dir DIR')
    const config = await readConfigFile(a.config)
    const local = await LocalAdmin.open({ dir: a.dir, user: user(), config, log: { error: (m) => err.write(`kadmin: ${m}\n`) } })
    return { api: local, local, realm: local.realm, close: () => local.close() }
  }

  const openRemote = async (a: Global): Promise<Session> => {
    const rf = await loadRealm(a)
    const cc = new CredentialCache(a.ccache ?? ccachePath(env))
    const fromCache = a['admin-password-file'] || a['admin-keytab'] ? undefined : await cc.load().catch(() => undefined)
    const resumption = new ResumptionStore()
    if (fromCache?.resume) resumption.import(fromCache.resume)
    const kc = new KdcClient(rf, {
      resumption,
      ...(fromCache?.clockOffsetMs ? { clockOffsetMs: fromCache.clockOffsetMs } : {}),
      ...(a['connect-timeout'] !== undefined ? { connectTimeoutMs: a['connect-timeout'] * 1000 } : {}),
    })
    const close = async () => {
      kc.close()
      resumption.clear()
    }
    const qualify = (name: string) => (name.includes('@') ? name : `${name}@${rf.realm}`)
    try {
      let client: AdminClient
      if (a['admin-keytab']) {
        const kt = await readKeytab(a['admin-keytab'])
        const held = kt.principals()
        if (!a.principal && held.length !== 1) {
          kt.wipe()
          throw new TesseraError(
            TesseraErrorCode.TESSERA_CONFIG,
            `keytab ${a['admin-keytab']} holds ${held.length === 0 ? 'no key' : `several principals (${held.join(', ')})`}; name the administrator with -p`,
          )
        }
        const principal = a.principal ? qualify(a.principal) : held[0]!
        const entry = kt.latest(principal)
        kt.wipe()
        if (!entry) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `keytab ${a['admin-keytab']} holds no key for ${principal}`)
        try {
          client = await AdminClient.loginWithKey(kc, principal, { key: entry.key, kvno: entry.kvno })
        } finally {
          entry.key.fill(0)
        }
      } else {
        const cached = cachedAdminTicket(fromCache, a.principal ? qualify(a.principal) : undefined, Date.now() + (fromCache?.clockOffsetMs ?? 0))
        if (cached) client = AdminClient.fromCredentials(kc, cached)
        else {
          const principal = qualify(a.principal ?? `${env.USER ?? user()}/admin`)
          const password = a['admin-password-file']
            ? await readPasswordFile(a['admin-password-file'], err, 'kadmin')
            : await prompt(`Password for ${principal}: `)
          client = await AdminClient.login(kc, principal, password)
        }
      }
      return { api: client, realm: rf.realm, close }
    } catch (e) {
      await close()
      throw e
    }
  }

  /** Run `fn` against the realm (remote or --local), closing it afterwards. */
  const withAdmin = async (a: Global, fn: (s: Session) => Promise<number | undefined>) => {
    if (usageError) return
    try {
      const s = a.local ? await openLocal(a) : await openRemote(a)
      try {
        code = (await fn(s)) ?? Exit.OK
      } finally {
        await s.close()
      }
    } catch (e) {
      err.write(`kadmin: ${kadminError(e, debug)}\n`)
      code = kadminExitCode(e)
    }
  }
  const run = async (fn: () => Promise<number | undefined>) => {
    if (usageError) return
    try {
      code = (await fn()) ?? Exit.OK
    } catch (e) {
      err.write(`kadmin: ${kadminError(e, debug)}\n`)
      code = kadminExitCode(e)
    }
  }

  /**
   * Add `keys` to the keytab at `file` (created 0600), then wipe them. The versions `retired`
   * of their principal are dropped from it: a keytab must not go on opening tickets sealed
   * with a key the KDC retired (an emergency rotation: perhaps a stolen key). Versions merely
   * absent from the KDC stay, as MIT's ktadd keeps them (tickets sealed with them may be live).
   */
  const addToKeytab = async (file: string, keys: KeytabEntry[], retired: (kvno: number) => boolean = () => false) => {
    const kt = (await exists(file)) ? await readKeytab(file) : new Keytab()
    try {
      for (const e of keys) {
        const id = { realm: e.realm, components: e.name }
        for (const kvno of kt.kvnos(id)) if (retired(kvno) && !keys.some((k) => k.kvno === kvno)) kt.remove(id, kvno)
      }
      for (const e of keys) kt.add(e)
      await writeKeytab(file, kt)
    } finally {
      kt.wipe()
      for (const e of keys) e.key.fill(0)
    }
  }
  const lifetimes = (a: { maxlife?: string | undefined; maxrenewlife?: string | undefined }) => ({
    ...(a.maxlife !== undefined ? { maxLife: parseDuration(a.maxlife) } : {}),
    ...(a.maxrenewlife !== undefined ? { maxRenewableLife: parseDuration(a.maxrenewlife) } : {}),
  })
  const expiries = (a: { expire?: string | undefined; pwexpire?: string | undefined }) => {
    const now = Date.now()
    return {
      ...(a.expire !== undefined ? { expiresAt: parseTime(a.expire, now) } : {}),
      ...(a.pwexpire !== undefined ? { passwordExpiresAt: parseTime(a.pwexpire, now) } : {}),
    }
  }

  const printPrincipal = (v: Awaited<ReturnType<AdminApi['getPrincipal']>>) => {
    const attrs = [
      v.attributes.disabled ? 'DISALLOW_ALL_TIX' : undefined,
      v.attributes.requiresPreauth ? 'REQUIRES_PRE_AUTH' : undefined,
      v.attributes.allowForwardable ? undefined : 'DISALLOW_FORWARDABLE',
      v.attributes.allowRenewable ? undefined : 'DISALLOW_RENEWABLE',
      v.attributes.allowService ? undefined : 'DISALLOW_SVR',
    ].filter((x) => x !== undefined)
    const rows: [string, string][] = [
      ['Principal', v.name],
      ['Expiration date', when(v.expiresAt)],
      ['Last password change', when(v.lastPasswordChange)],
      ['Sessions revoked', when(v.revokedAt)],
      ['Password expiration date', when(v.passwordExpiresAt)],
      ['Maximum ticket life', formatDuration(v.maxLife)],
      ['Maximum renewable life', formatDuration(v.maxRenewableLife)],
      ['Last modified', `${iso(v.modifiedAt)} (${v.modifiedBy})`],
      ['Created', `${iso(v.createdAt)} (${v.createdBy})`],
      ['Last successful authentication', when(v.lockout.lastSuccess)],
      ['Last failed authentication', when(v.lockout.lastFailure)],
      ['Failed password attempts', String(v.lockout.failureCount)],
      ['Locked', v.lockout.locked ? `yes, until ${when(v.lockout.lockedUntil)}` : 'no'],
      ['Current key version (kvno)', String(v.kvno)],
      ['Number of keys', String(v.keys.length)],
    ]
    for (const k of v.keys) {
      const kind = k.kind === 'password' && k.kdf ? `password (${k.kdf.alg} N=${k.kdf.N} r=${k.kdf.r} p=${k.kdf.p})` : k.kind
      rows.push(['Key', `vno ${k.kvno}, ${kind}, created ${iso(k.createdAt)}${k.retiresAt !== undefined ? `, retires ${iso(k.retiresAt)}` : ''}`])
    }
    rows.push(['Attributes', attrs.join(' ') || '(none)'], ['Policy', v.policy ?? '[none]'])
    for (const [k, x] of rows) say(`${`${k}:`.padEnd(32)}${x}`)
  }

  const printPolicy = (p: Policy) => {
    const d = (ms: number | undefined) => formatDuration(ms ?? 0)
    const rows: [string, string][] = [
      ['Policy', p.name],
      ['Minimum password length', String(p.minLength)],
      ['Minimum number of password character classes', String(p.minClasses)],
      ['Number of old keys kept (history)', String(p.history ?? 0)],
      ['Minimum password life', d(p.minPasswordLifeMs)],
      ['Maximum password life', p.maxPasswordLifeMs === 0 ? '0 (never expires)' : d(p.maxPasswordLifeMs)],
      ['Maximum password failures before lockout', p.maxFailures === 0 ? '0 (no lockout)' : String(p.maxFailures)],
      ['Password failure count reset interval', d(p.failureCountIntervalMs)],
      ['Password lockout duration', p.lockoutDurationMs === 0 ? '0 (until unlocked)' : d(p.lockoutDurationMs)],
    ]
    for (const [k, x] of rows) say(`${`${k}:`.padEnd(46)}${x}`)
  }

  const globalOptions = {
    principal: { alias: 'p', type: 'string', describe: 'administrator to act as (default: the cached kadmin ticket\'s, the keytab\'s, else $USER/admin)' },
    'admin-password-file': {
      type: 'string',
      describe: "file whose first line is the administrator's password (also --password-file before the command)",
    },
    'admin-keytab': { type: 'string', describe: "log in with the administrator's key from this keytab (also --keytab before the command)" },
    'realm-file': { type: 'string', describe: 'realm.json (else TESSERA_REALM_FILE, else ~/.config/tessera/realm.json)' },
    ccache: { alias: 'c', type: 'string', describe: 'credential cache holding a kadmin/admin ticket (kauth login -S kadmin/admin)' },
    local: { type: 'boolean', describe: 'edit the realm directory directly (the KDC stopped), as the local Unix user' },
    dir: { type: 'string', describe: 'realm directory, with --local (and load: the new one)' },
    config: { type: 'string', describe: 'KDC JSON config, with --local/load (KDF and lifetimes of new principals, listen addresses)' },
    json: { type: 'boolean', describe: 'print JSON, one object per line (shapes: docs/cli.md)' },
    'connect-timeout': { type: 'number', describe: 'seconds to wait for each KDC address' },
    debug: { type: 'boolean', describe: 'print stack traces on errors' },
  } as const

  const parser = yargs()
    .scriptName('kadmin')
    .usage(
      '$0 [-p PRINCIPAL] [--password-file FILE | --keytab FILE] [--realm-file FILE] [--json] <command> …\n' +
        '$0 --local --dir DIR <command> …\n\n' +
        'Administer a Tessera realm: principals, policies, keytabs, the ACL and the audit log (MIT kadmin names).',
    )
    .options(globalOptions)
    .middleware((a) => {
      debug = Boolean(a.debug)
    })
    .command(
      'addprinc [name]',
      'add a principal (with a password, or --randkey for a service)',
      (y) =>
        withAttributeOptions(
          y
            .positional('name', { type: 'string', describe: 'name[/instance][@REALM]' })
            .option('password-file', { type: 'string', describe: "file whose first line is the new principal's password (else asked twice)" })
            .option('randkey', { type: 'boolean', describe: 'a random key (services)' })
            .option('from', { type: 'string', describe: 'add every name of FILE (one a line), with --randkey' })
            .option('policy', { type: 'string', describe: 'password policy' })
            .option('maxlife', { type: 'string', describe: 'maximum ticket life (e.g. 10h)' })
            .option('maxrenewlife', { type: 'string', describe: 'maximum renewable life (e.g. 7d)' })
            .option('expire', { type: 'string', describe: 'when the principal expires (never, 30d, 2027-01-31)' })
            .option('pwexpire', { type: 'string', describe: 'when the password expires (else the policy decides)' })
            .option('disabled', { type: 'boolean', describe: 'created disabled: no tickets (MIT -allow_tix)' })
            .conflicts('password-file', 'randkey')
            .conflicts('name', 'from')
            .check((a) => {
              if (a.name === undefined && a.from === undefined) throw new UsageError('addprinc needs a NAME (or --from FILE)')
              return true
            }),
        ),
      (a) =>
        withAdmin(a, async (s) => {
          const common = {
            ...(a.policy !== undefined ? { policy: a.policy } : {}),
            ...lifetimes(a),
            ...expiries(a),
          }
          const attributes = attributesOf(a)
          if (attributes) Object.assign(common, { attributes })
          if (a.from !== undefined) {
            if (!a.randkey) throw usage('addprinc --from FILE adds principals with random keys: add --randkey (set passwords afterwards with cpw)')
            const names = await readNames(a.from)
            const bar = progressBar(err, 'addprinc', names.length)
            let failed = 0
            let done = 0
            try {
              for (const name of names) {
                try {
                  const r = await s.api.addPrincipal({ name, randkey: true, ...common })
                  if (a.json) json({ name: r.name, kvno: r.kvno })
                  else if (!bar) say(`Principal "${r.name}" created.`)
                } catch (e) {
                  // A refusal of one name (exists, bad name) does not stop the others; anything else does.
                  if (!(e instanceof AdminError || (e instanceof TesseraError && PER_NAME_REFUSALS.has(e.code)))) throw e
                  failed++
                  err.write(`${bar ? '\n' : ''}kadmin: ${name}: ${kadminError(e, debug)}\n`)
                }
                bar?.update(++done)
              }
            } finally {
              bar?.stop()
            }
            if (bar && !a.json) say(`${names.length - failed} of ${names.length} principals created.`)
            return failed > 0 ? Exit.FAILURE : Exit.OK
          }
          if (a.name === undefined) throw usage('addprinc needs a NAME (or --from FILE)')
          const key = a.randkey ? { randkey: true } : { password: await newPassword(a['password-file'], a.name) }
          const r = await s.api.addPrincipal({ name: a.name, ...key, ...common })
          if (a.json) json({ name: r.name, kvno: r.kvno })
          else say(`Principal "${r.name}" created.`)
          return Exit.OK
        }),
    )
    .command(
      'delprinc <name>',
      'delete a principal (asks first, unless --force)',
      (y) => y.positional('name', { type: 'string', demandOption: true }).option('force', { type: 'boolean', describe: 'do not ask' }),
      (a) =>
        withAdmin(a, async (s) => {
          const name = a.name.includes('@') ? a.name : `${a.name}@${s.realm}`
          if (!a.force && !(await askYes(`Are you sure you want to delete the principal "${name}"? (yes/no): `))) {
            err.write(`kadmin: principal "${name}" not deleted\n`)
            return Exit.FAILURE
          }
          await s.api.deletePrincipal(a.name)
          if (a.json) json({ name, deleted: true })
          else say(`Principal "${name}" deleted.`)
          return Exit.OK
        }),
    )
    .command(
      'renprinc <name> <newName>',
      'rename a principal (its keys and password stay)',
      (y) => y.positional('name', { type: 'string', demandOption: true }).positional('newName', { type: 'string', demandOption: true }),
      (a) =>
        withAdmin(a, async (s) => {
          await s.api.renamePrincipal(a.name, a.newName)
          const q = (n: string) => (n.includes('@') ? n : `${n}@${s.realm}`)
          if (a.json) json({ name: q(a.name), newName: q(a.newName) })
          else say(`Principal "${q(a.name)}" renamed to "${q(a.newName)}".`)
          return Exit.OK
        }),
    )
    .command(
      'modprinc <name>',
      'change attributes, lifetimes, policy or expiry; --unlock, --disable, --enable',
      (y) =>
        withAttributeOptions(
          y
            .positional('name', { type: 'string', demandOption: true })
            .option('maxlife', { type: 'string', describe: 'maximum ticket life (e.g. 10h)' })
            .option('maxrenewlife', { type: 'string', describe: 'maximum renewable life (e.g. 7d)' })
            .option('expire', { type: 'string', describe: 'when the principal expires (never, 30d, 2027-01-31)' })
            .option('pwexpire', { type: 'string', describe: 'when the password expires (never, 30d, a date)' })
            .option('policy', { type: 'string', describe: 'password policy' })
            .option('clear-policy', { type: 'boolean', describe: 'no policy (the default rules apply)' })
            .option('unlock', { type: 'boolean', describe: 'end a lockout and reset the failure count' })
            .option('disable', { type: 'boolean', describe: 'no tickets for or to it (MIT -allow_tix)' })
            .option('enable', { type: 'boolean', describe: 'tickets again (MIT +allow_tix)' })
            .option('rotate-every', { type: 'string', describe: 'rotate the key on this schedule (e.g. 30d; "never" clears it)' })
            .option('stage-ahead', { type: 'string', describe: 'with --rotate-every: stage the next key this long before it becomes current (e.g. 1d)' })
            .option('grace', { type: 'string', describe: 'with --rotate-every: keep the previous key this long after (e.g. 2d; "tickets": until its tickets expire)' })
            .conflicts('policy', 'clear-policy')
            .conflicts('disable', 'enable'),
        ),
      (a) =>
        withAdmin(a, async (s) => {
          const attributes = attributesOf({ ...a, ...(a.disable ? { disabled: true } : a.enable ? { disabled: false } : {}) })
          const args = {
            name: a.name,
            ...(attributes ? { attributes } : {}),
            ...lifetimes(a),
            ...expiries(a),
            ...(a.policy !== undefined ? { policy: a.policy } : a['clear-policy'] ? { policy: null } : {}),
            ...(a.unlock ? { unlock: true } : {}),
            ...(a['rotate-every'] !== undefined ? { rotateEvery: a['rotate-every'] === 'never' ? null : parseDuration(a['rotate-every']) } : {}),
            ...(a['stage-ahead'] !== undefined ? { stageAhead: parseDuration(a['stage-ahead']) } : {}),
            ...(a.grace !== undefined ? { grace: a.grace === 'tickets' ? null : parseDuration(a.grace) } : {}),
          }
          if (Object.keys(args).length === 1) throw usage('modprinc: nothing to change (see kadmin modprinc --help)')
          const v = await s.api.modifyPrincipal(args)
          if (a.json) json(v)
          else say(`Principal "${v.name}" modified.`)
          return Exit.OK
        }),
    )
    .command(
      'jwks',
      "print the realm's public signing keys as a JWKS (from the realm file; never a private part)",
      (y) => y,
      (a) =>
        run(async () => {
          const rf = await loadRealm(a)
          say(JSON.stringify(await realmJwks(rf), null, a.json ? 0 : 2))
          return Exit.OK
        }),
    )
    .command(
      'rotate <name>',
      'add a new random key version; the old one stays through --grace (services, krbtgt)',
      (y) =>
        y
          .positional('name', { type: 'string', demandOption: true })
          .option('grace', { type: 'string', describe: 'keep the previous key this long after the new one is current (default: until its tickets can all have expired)' })
          .option('stage-ahead', { type: 'string', describe: 'create the next key now (ktadd returns it) and make it current this much later' })
          .option('emergency', { type: 'boolean', describe: 'retire every older key at once: tickets sealed with them are refused from now on' })
          .option('keytab', { type: 'string', describe: 'also add the new key to this keytab (0600)' }),
      (a) =>
        withAdmin(a, async (s) => {
          const r = await s.api.rotateKey({
            name: a.name,
            ...(a.grace !== undefined ? { grace: parseDuration(a.grace) } : {}),
            ...(a['stage-ahead'] !== undefined ? { stageAhead: parseDuration(a['stage-ahead']) } : {}),
            ...(a.emergency ? { emergency: true } : {}),
          })
          // An emergency rotation retired every older version: the keytab keeps none of them.
          const emergency = a.emergency === true || (a.grace !== undefined && parseDuration(a.grace) === 0)
          if (a.keytab !== undefined && r.keys.length > 0) await addToKeytab(a.keytab, r.keys, (kvno) => emergency && kvno < r.kvno)
          if (a.json) json({ ...r, keys: r.keys.map(({ key: _k, ...e }) => e) })
          else {
            const when = r.activatesAt > Date.now() + 1000 ? `staged, current from ${iso(r.activatesAt)}` : 'current now'
            const prev = r.previous.retiresAt !== undefined ? `; kvno ${r.previous.kvno} retires ${iso(r.previous.retiresAt)}` : ''
            say(`${r.name}: kvno ${r.kvno} ${when}${prev}`)
          }
          return Exit.OK
        }),
    )
    .command(
      'purgekeys <name>',
      'remove old key versions (refused while they may still open a valid ticket, unless --force)',
      (y) =>
        y
          .positional('name', { type: 'string', demandOption: true })
          .option('keepkvno', { type: 'number', describe: 'remove the versions below this kvno' })
          .option('all-old', { type: 'boolean', describe: 'remove every version older than the current one (the default)' })
          .option('force', { type: 'boolean', describe: 'also remove versions that may still open valid tickets' })
          .conflicts('keepkvno', 'all-old'),
      (a) =>
        withAdmin(a, async (s) => {
          const r = await s.api.purgeKeys({
            name: a.name,
            ...(a.keepkvno !== undefined ? { keepkvno: a.keepkvno } : {}),
            ...(a['all-old'] ? { allOld: true } : {}),
            ...(a.force ? { force: true } : {}),
          })
          if (a.json) json(r)
          else say(`${r.name}: purged ${r.purged.length > 0 ? r.purged.map((k) => `kvno ${k}`).join(', ') : 'nothing'}; kept ${r.kept.join(', ')}${r.forced.length > 0 ? ` (forced: ${r.forced.join(', ')})` : ''}`)
          return Exit.OK
        }),
    )
    .command(
      'getprinc <name>',
      'show a principal (never its keys)',
      (y) => y.positional('name', { type: 'string', demandOption: true }),
      (a) =>
        withAdmin(a, async (s) => {
          const v = await s.api.getPrincipal(a.name)
          if (a.json) json(v)
          else printPrincipal(v)
          return Exit.OK
        }),
    )
    .command(
      'listprincs [glob]',
      'list principal names (GLOB: * matches any run of characters)',
      (y) => y.positional('glob', { type: 'string' }),
      (a) =>
        withAdmin(a, async (s) => {
          const names = await s.api.listPrincipals(a.glob)
          if (a.json) json({ principals: names })
          else for (const n of names) say(n)
          return Exit.OK
        }),
    )
    .command(
      'cpw <name>',
      'change a password (asked twice, or --password-file), or a key (--randkey)',
      (y) =>
        y
          .positional('name', { type: 'string', demandOption: true })
          .option('password-file', { type: 'string', describe: 'file whose first line is the new password' })
          .option('randkey', { type: 'boolean', describe: 'a new random key' })
          .option('keepold', { type: 'boolean', describe: 'keep the old key versions (tickets under them stay valid)' })
          .conflicts('password-file', 'randkey'),
      (a) =>
        withAdmin(a, async (s) => {
          const o = a.keepold ? { keepold: true } : {}
          const r = a.randkey ? await s.api.randomizeKey(a.name, o) : await s.api.changePassword(a.name, await newPassword(a['password-file'], a.name), o)
          for (const k of r.keys) k.key.fill(0)
          if (a.json) json({ name: r.name, kvno: r.kvno })
          else say(`${a.randkey ? 'Key' : 'Password'} for "${r.name}" changed (kvno ${r.kvno}).`)
          return Exit.OK
        }),
    )
    .command(
      'ktadd <name>',
      "write a principal's current (and still valid older) keys to a 0600 keytab; the key changes only with --randkey",
      (y) =>
        y
          .positional('name', { type: 'string', demandOption: true })
          .option('keytab', { alias: 'k', type: 'string', demandOption: true, describe: 'keytab file (created 0600, or added to)' })
          .option('randkey', { type: 'boolean', describe: 'first change the key (MIT ktadd does by default; Tessera only when asked)' })
          .option('keepold', { type: 'boolean', describe: 'with --randkey: keep the old versions in the database' }),
      (a) =>
        withAdmin(a, async (s) => {
          const r = await s.api.extractKeys(a.name, { ...(a.randkey ? { randkey: true } : {}), ...(a.keepold ? { keepold: true } : {}) })
          const kvnos = r.keys.map((k) => k.kvno)
          // The versions the KDC shows as retired (getprinc needs `i`: without it, nothing is dropped).
          const retired = await s.api
            .getPrincipal(a.name)
            .then((v) => v.keys.filter((k) => k.state === 'retired').map((k) => k.kvno))
            .catch(() => [] as number[])
          await addToKeytab(a.keytab, r.keys, (kvno) => retired.includes(kvno))
          if (a.json) json({ name: r.name, keytab: a.keytab, kvno: r.kvno, kvnos })
          else for (const v of kvnos) say(`Entry for principal ${r.name} with kvno ${v} added to keytab ${a.keytab}.`)
          return Exit.OK
        }),
    )
    .command(
      'addpol <name>',
      'add a password policy',
      (y) => y.positional('name', { type: 'string', demandOption: true }).options(POLICY_OPTIONS),
      (a) =>
        withAdmin(a, async (s) => {
          const p = await s.api.addPolicy(policyArgsOf(a.name, a))
          if (a.json) json(p)
          else say(`Policy "${p.name}" created.`)
          return Exit.OK
        }),
    )
    .command(
      'modpol <name>',
      'change a password policy (only the fields given)',
      (y) => y.positional('name', { type: 'string', demandOption: true }).options(POLICY_OPTIONS),
      (a) =>
        withAdmin(a, async (s) => {
          const args = policyArgsOf(a.name, a)
          if (Object.keys(args).length === 1) throw usage('modpol: nothing to change (see kadmin modpol --help)')
          const p = await s.api.modifyPolicy(args)
          if (a.json) json(p)
          else say(`Policy "${p.name}" modified.`)
          return Exit.OK
        }),
    )
    .command(
      'delpol <name>',
      'delete a password policy (refused while a principal uses it)',
      (y) => y.positional('name', { type: 'string', demandOption: true }),
      (a) =>
        withAdmin(a, async (s) => {
          await s.api.deletePolicy(a.name)
          if (a.json) json({ name: a.name, deleted: true })
          else say(`Policy "${a.name}" deleted.`)
          return Exit.OK
        }),
    )
    .command(
      'getpol <name>',
      'show a password policy',
      (y) => y.positional('name', { type: 'string', demandOption: true }),
      (a) =>
        withAdmin(a, async (s) => {
          const p = await s.api.getPolicy(a.name)
          if (a.json) json(p)
          else printPolicy(p)
          return Exit.OK
        }),
    )
    .command(
      'listpols',
      'list password policies',
      () => {},
      (a) =>
        withAdmin(a, async (s) => {
          const names = await s.api.listPolicies()
          if (a.json) json({ policies: names })
          else for (const n of names) say(n)
          return Exit.OK
        }),
    )
    .command(
      'acl <action> <actor> <operation> [target]',
      'acl check ACTOR OPERATION [TARGET]: the ACL line that decides, and why',
      (y) =>
        y
          .positional('action', { choices: ['check'] as const, demandOption: true })
          .positional('actor', { type: 'string', demandOption: true, describe: 'who would ask, name[@REALM]' })
          .positional('operation', { type: 'string', demandOption: true, describe: 'addprinc, delprinc, modprinc, cpw, getprinc, ktadd, addpol, …' })
          .positional('target', { type: 'string', describe: 'the principal it would act on' })
          .option('new-name', { type: 'string', describe: 'renprinc: the new name' })
          .option('randkey', { type: 'boolean', describe: 'ktadd --randkey (needs c too)' }),
      (a) =>
        withAdmin(a, async (s) => {
          const e = await s.api.checkAcl({
            actor: a.actor,
            op: a.operation as Parameters<AdminApi['checkAcl']>[0]['op'],
            ...(a.target !== undefined ? { target: a.target } : {}),
            ...(a['new-name'] !== undefined ? { newTarget: a['new-name'] } : {}),
            ...(a.randkey ? { randkey: true } : {}),
          })
          const decisions = e.decisions.map((d) => ({
            letter: d.letter,
            allowed: d.allowed,
            reason: d.reason,
            rule: d.rule ? { line: d.rule.line, text: d.rule.text } : null,
          }))
          if (a.json)
            json({ allowed: e.allowed, op: e.op, reason: e.reason, ...(e.selfService !== undefined ? { selfService: e.selfService } : {}), decisions })
          else {
            say(`${e.allowed ? 'ALLOWED' : 'DENIED'}: ${e.reason.replace(/^(allowed|refused): /, '')}`)
            if (e.selfService !== undefined) say(`  self-service rule: ${e.selfService}`)
            for (const d of decisions)
              say(`  '${d.letter}' ${d.allowed ? 'granted' : 'refused'} by ${d.rule ? `line ${d.rule.line}: ${d.rule.text}` : 'no line (nothing matches)'}`)
          }
          return e.allowed ? Exit.OK : Exit.FAILURE
        }),
    )
    .command(
      'audit',
      'show the audit log (newest last), or check it (--verify: exits 1 naming the first bad line)',
      (y) =>
        y
          .option('since', { type: 'string', describe: 'only records since then (2h = two hours ago, or a date)' })
          .option('verify', { type: 'boolean', describe: 'check the hash chain and the database anchor' })
          .option('limit', { type: 'number', default: 50, describe: 'at most this many records (the newest)' }),
      (a) =>
        withAdmin(a, async (s) => {
          if (a.verify) {
            const r = await s.api.readAudit({ verify: true, limit: 0 })
            const v = r.verification!
            if (a.json) json(v)
            else if (v.ok) say(`audit log OK: ${v.records} records, the last one anchored in the database`)
            if (!v.ok) {
              err.write(`kadmin: audit log verification failed at line ${v.firstBadLine}: ${v.problem}\n`)
              return Exit.FAILURE
            }
            return Exit.OK
          }
          if (!Number.isSafeInteger(a.limit) || a.limit < 1) throw usage('--limit must be a positive whole number')
          // One admin reply holds at most 60 KB (PROTOCOL.md §8.5): a few hundred records.
          if (!s.local && a.limit > REMOTE_AUDIT_LIMIT)
            throw usage(
              `--limit ${a.limit}: over the admin listener at most ${REMOTE_AUDIT_LIMIT} records per request; narrow with --since, or read the whole log with --local on the KDC host`,
            )
          const r = await s.api.readAudit({ limit: a.limit, ...(a.since !== undefined ? { since: parseSince(a.since, Date.now()) } : {}) })
          if (a.json) json({ records: r.records })
          else {
            say(`${'SEQ'.padStart(6)}  ${'TIME'.padEnd(20)}  ${'ACTOR'.padEnd(24)}  ${'OP'.padEnd(10)}  ${'TARGET'.padEnd(28)}  OUTCOME`)
            for (const x of r.records)
              say(
                `${String(x.seq).padStart(6)}  ${iso(x.time).padEnd(20)}  ${x.actor.padEnd(24)}  ${x.op.padEnd(10)}  ${(x.target ?? '-').padEnd(28)}  ${x.outcome}${x.kvno !== undefined ? ` kvno ${x.kvno}` : ''}${x.reason !== undefined ? `: ${x.reason}` : ''}`,
              )
          }
          return Exit.OK
        }),
    )
    // ---- KDC identity keys (src/admin/identity.ts; docs/operations.md "Identity keys") ----
    .command(
      'rotate-identity',
      'rotate the KDC identity keys: stage next ones (published in realm.json), then --activate, then --retire',
      (y) =>
        y
          .option('which', { choices: ['transport', 'signing', 'both'] as const, default: 'both' as const, describe: 'the keys to rotate' })
          .option('stage-ahead', { type: 'string', describe: 'the next keys become the default this long from now (1d, 2h, …); default now' })
          .option('activate', { type: 'boolean', describe: 'make the staged keys current (the old ones stay accepted)' })
          .option('force', { type: 'boolean', describe: 'with --activate: before the staged activation time' })
          .option('retire', { type: 'boolean', describe: 'forget the previous keys: realm files from before the rotation stop working' })
          .option('status', { type: 'boolean', describe: 'show the identity keys, change nothing' }),
      (a) =>
        withAdmin(a, async (s) => {
          const steps = [a.activate, a.retire, a.status].filter(Boolean).length
          if (steps > 1) throw usage('give at most one of --activate, --retire and --status')
          const op = a.activate ? 'activate-identity' : a.retire ? 'retire-identity' : a.status ? 'get-identity' : 'rotate-identity'
          const args: Record<string, unknown> =
            op === 'rotate-identity'
              ? { which: a.which, ...(a['stage-ahead'] !== undefined ? { stageAhead: parseDuration(a['stage-ahead']) } : {}) }
              : op === 'activate-identity' && a.force
                ? { force: true }
                : {}
          const v = (s.local ? await s.local.identity(op, args) : await (s.api as AdminClient).call(op, args)) as Record<string, unknown>
          if (a.json) json(v)
          else {
            for (const k of ['transportKey', 'signingKey', 'nextTransportKey', 'nextSigningKey', 'previousTransportKey', 'previousSigningKey'])
              if (typeof v[k] === 'string') say(`${k.padEnd(21)} ${v[k]}`)
            if (typeof v.nextActivatesAt === 'number') say(`${'nextActivatesAt'.padEnd(21)} ${iso(v.nextActivatesAt)}`)
            if (op === 'rotate-identity') say('next keys staged; the KDC rewrote realm.json: hand it to clients before the activation time')
          }
          return Exit.OK
        }),
    )
    .command(
      'dump <file>',
      'write a consistent snapshot of the database to FILE (0600, keys still sealed), while the KDC serves',
      (y) => y.positional('file', { type: 'string', demandOption: true }),
      (a) =>
        run(async () => {
          if (!a.local) {
            const s = await openRemote(a)
            try {
              let bar: ReturnType<typeof progressBar> | undefined
              let r: { entries: number; sha256: string }
              try {
                r = await (s.api as AdminClient).dump(a.file, (got: number, total: number) => {
                  bar ??= progressBar(err, 'dump (bytes)', total)
                  bar?.update(got)
                })
                bar?.stop()
              } catch (e) {
                bar?.stop()
                throw e
              }
              if (a.json) json({ file: a.file, entries: r.entries, sha256: r.sha256 })
              else say(`dumped ${r.entries} entries to ${a.file} (sha256 ${r.sha256})`)
            } finally {
              await s.close()
            }
            return Exit.OK
          }
          const s = await openLocal(a)
          try {
            const local = s.local!
            const bar = progressBar(err, 'dump', await local.estimateEntries())
            let r: { entries: number; sha256: string }
            try {
              r = await local.dump(a.file, (n) => bar?.update(n))
              bar?.stop(r.entries)
            } catch (e) {
              bar?.stop()
              throw e
            }
            if (a.json) json({ file: a.file, entries: r.entries, sha256: r.sha256 })
            else say(`dumped ${r.entries} entries to ${a.file} (sha256 ${r.sha256})`)
          } finally {
            await s.close()
          }
          return Exit.OK
        }),
    )
    .command(
      'load <file>',
      'restore a dump into a new realm directory (--dir NEWDIR) with the master key it was made under (--stash)',
      (y) =>
        y
          .positional('file', { type: 'string', demandOption: true })
          .option('stash', { type: 'string', demandOption: true, describe: "the source realm's stash file (the dump's keys are sealed under it)" }),
      (a) =>
        run(async () => {
          if (!a.dir) throw usage('load needs the new realm directory: --dir NEWDIR')
          const config = await readConfigFile(a.config)
          const masterKeys = await readStashKeys(a.stash)
          const total = await dumpEntryCount(a.file)
          const bar = progressBar(err, 'load', total ?? 0)
          try {
            const r = await loadRealmDir({ file: a.file, dir: a.dir, masterKeys, user: user(), config, onProgress: (n) => bar?.update(n) })
            bar?.stop(r.entries)
            if (a.json) json({ dir: a.dir, realm: r.realm, entries: r.entries, sha256: r.sha256 })
            else say(`loaded ${r.entries} entries of realm ${r.realm} into ${a.dir}; start it with kdc start --dir ${a.dir}`)
          } catch (e) {
            bar?.stop()
            throw e
          } finally {
            for (const m of masterKeys) m.key.fill(0)
          }
          return Exit.OK
        }),
    )
    .command(watchCommand({ withAdmin, say, json, usage } as unknown as Parameters<typeof watchCommand>[0]))
    .demandCommand(1, 'name a command (kadmin --help lists them)')
    .epilogue(exitCodesEpilogue())
    .strict()
    .help()
    .exitProcess(false)
    .fail((msg, e) => {
      if (e && !(e instanceof UsageError)) throw e
      if (usageError) return
      usageError = true
      err.write(`kadmin: ${msg ?? e?.message}\nRun kadmin --help for usage.\n`)
      code = Exit.USAGE
    })
  await parser.parseAsync(splitGlobalOptions(argv), {}, (_e, _a, output) => {
    if (output && !usageError) out.write(`${output}\n`)
  })
  return code
}

/** The entry count a dump's end record announces (for the progress bar), or undefined. */
async function dumpEntryCount(file: string): Promise<number | undefined> {
  try {
    const fh = await open(file, 'r')
    try {
      const { size } = await fh.stat()
      const len = Math.min(size, 4096)
      const buf = Buffer.alloc(len)
      await fh.read(buf, 0, len, size - len)
      const last = buf.toString('utf8').trimEnd().split('\n').pop() ?? ''
      const v = JSON.parse(last) as { entries?: unknown }
      return typeof v.entries === 'number' ? v.entries : undefined
    } finally {
      await fh.close()
    }
  } catch {
    return undefined
  }
}
