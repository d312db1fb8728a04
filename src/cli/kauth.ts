/** `kauth`: the kinit / klist / kdestroy / kvno / kpasswd habits, for Tessera. */
import os from 'node:os'
import path from 'node:path'
import yargs from 'yargs'
import { ticketFlagNames } from '../../proto/flags.js'
import { CredentialCache, defaultCcachePath } from '../client/ccache.js'
import { ResumptionStore, type StoredTicket } from '../wire/resumption.js'
import { type Credentials, KdcClient } from '../client/kdc-client.js'
import { syncTime } from '../client/time-sync.js'
import { ErrorCode, KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { principalString } from '../krb/parts.js'
import { loadRealmFile } from '../krb/realm-file.js'
import { Exit, formatError, promptHidden, readPasswordFile, readStdinLine } from './common.js'

/** Streams and environment of one kauth run (tests pass their own). */
export interface KauthIo {
  env?: NodeJS.ProcessEnv
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
  stdin?: NodeJS.ReadStream
}

/** realm.json when neither --realm-file nor TESSERA_REALM_FILE says: $XDG_CONFIG_HOME/tessera/realm.json or ~/.config/tessera/realm.json. */
export function defaultRealmFilePath(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CONFIG_HOME ?? path.join(env.HOME ?? os.homedir(), '.config')
  return path.join(base, 'tessera', 'realm.json')
}

/** Parse "90s", "30m", "10h", "7d" or plain seconds into ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([smhd]?)$/.exec(text.trim())
  if (!m) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `bad duration "${text}" (use e.g. 90s, 30m, 10h, 7d)`)
  const unit = { '': 1000, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as '' | 's' | 'm' | 'h' | 'd']
  return Math.round(Number(m[1]) * unit)
}

function exitCodeFor(e: unknown): number {
  if (e instanceof KrbProtocolError) {
    if (
      e.code === ErrorCode.KDC_ERR_PREAUTH_FAILED ||
      e.code === ErrorCode.KDC_ERR_CLIENT_REVOKED ||
      e.code === ErrorCode.KDC_ERR_KEY_EXPIRED ||
      e.code === ErrorCode.KDC_ERR_NAME_EXP
    )
      return Exit.AUTH
    return Exit.FAILURE
  }
  if (e instanceof TesseraError) {
    switch (e.code) {
      case TesseraErrorCode.TESSERA_NETWORK:
      case TesseraErrorCode.TESSERA_TIMEOUT:
        return Exit.UNREACHABLE
      case TesseraErrorCode.TESSERA_CONFIG:
        return Exit.CONFIG
      case TesseraErrorCode.TESSERA_NO_CREDENTIALS:
        return Exit.NO_CREDENTIALS
    }
  }
  return Exit.FAILURE
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z')

function describe(c: Credentials) {
  const o: Record<string, unknown> = {
    service: principalString(c.sname, c.srealm),
    kvno: c.ticket.kvno,
    start: iso(c.starttime),
    end: iso(c.endtime),
    flags: ticketFlagNames(c.flags),
  }
  if (c.renewTill !== undefined) o.renewTill = iso(c.renewTill)
  return o
}

/** Run kauth with argv; resolves with the exit code. */
export async function main(argv: string[], io: KauthIo = {}): Promise<number> {
  const env = io.env ?? process.env
  const out = io.stdout ?? process.stdout
  const err = io.stderr ?? process.stderr
  const stdin = io.stdin ?? process.stdin
  let code: number = Exit.OK
  let debug = false
  let usageError = false

  type Global = { 'realm-file'?: string | undefined; ccache?: string | undefined; 'connect-timeout'?: number | undefined }
  const realmFilePath = (a: Global) => a['realm-file'] ?? env.TESSERA_REALM_FILE ?? defaultRealmFilePath(env)
  const cache = (a: Global) => new CredentialCache(a.ccache ?? env.TESSERA_CCACHE ?? defaultCcachePath(env))
  // Transport resumption tickets live in the credential cache between commands, so a
  // command after the first skips the key exchange and sends its request at once.
  const client = async (a: Global, resume?: StoredTicket[]) => {
    const rf = await loadRealmFile(realmFilePath(a))
    const resumption = new ResumptionStore()
    if (resume) resumption.import(resume)
    const c = new KdcClient(rf, {
      resumption,
      ...(a['connect-timeout'] !== undefined ? { connectTimeoutMs: a['connect-timeout'] * 1000 } : {}),
    })
    return { c, resumption }
  }
  const needCache = async (a: Global) => {
    const cc = cache(a)
    const contents = await cc.load()
    if (!contents || contents.entries.length === 0)
      throw new TesseraError(TesseraErrorCode.TESSERA_NO_CREDENTIALS, `no credentials cache found (${cc.file}); run kauth login`)
    return { cc, contents }
  }
  const tgtOf = (contents: { crealm: string; entries: Credentials[] }) => {
    const tgt = contents.entries.find((e) => e.sname.length === 2 && e.sname[0] === 'krbtgt')
    if (!tgt) throw new TesseraError(TesseraErrorCode.TESSERA_NO_CREDENTIALS, 'no ticket-granting ticket in the cache (expired?); run kauth login')
    return tgt
  }
  const run = async (fn: () => Promise<number | undefined>) => {
    if (usageError) return
    try {
      code = (await fn()) ?? Exit.OK
    } catch (e) {
      err.write(`kauth: ${formatError(e, debug)}\n`)
      code = exitCodeFor(e)
    }
  }

  await yargs()
    .scriptName('kauth')
    .usage('$0 <command> [options]\n\nLog in to a Tessera realm and manage your tickets.')
    .option('realm-file', { type: 'string', describe: 'realm.json (else TESSERA_REALM_FILE, else ~/.config/tessera/realm.json)' })
    .option('ccache', { type: 'string', describe: 'credential cache file (else TESSERA_CCACHE, else a per-user default)' })
    .option('connect-timeout', { type: 'number', describe: 'seconds to wait for each KDC address' })
    .option('debug', { type: 'boolean', describe: 'print stack traces on errors' })
    .middleware((a) => {
      debug = Boolean(a.debug)
    })
    .command(
      'login [principal]',
      'log in and cache a ticket-granting ticket (kinit)',
      (y) =>
        y
          .positional('principal', { type: 'string', describe: 'name[@REALM] (default: your user name)' })
          .option('password-file', { type: 'string', describe: 'file whose first line is the password' })
          .option('lifetime', { type: 'string', describe: 'ticket life, e.g. 10h' })
          .option('renewable', { type: 'string', describe: 'renewable life, e.g. 7d' })
          .option('forwardable', { type: 'boolean' }),
      (a) =>
        run(async () => {
          const principal = a.principal ?? env.USER ?? os.userInfo().username
          let password: string
          if (a['password-file']) password = await readPasswordFile(a['password-file'], err, 'kauth')
          else if (stdin.isTTY) password = await promptHidden(`Password for ${principal}: `, stdin)
          else password = await readStdinLine(stdin)
          if (password.length === 0) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'empty password')
          const cc = cache(a)
          // A cache we cannot read (another user's, corrupt) is replaced by the login anyway.
          const previous = await cc.load().catch(() => undefined)
          const { c, resumption } = await client(a, previous?.resume)
          try {
            const tgt = await c.login(principal, password, {
              ...(a.lifetime ? { lifetimeMs: parseDuration(a.lifetime) } : {}),
              ...(a.renewable ? { renewableLifeMs: parseDuration(a.renewable) } : {}),
              ...(a.forwardable ? { forwardable: true } : {}),
            })
            await cc.initialize(tgt, resumption.export())
            out.write(`logged in as ${principal_(tgt)}; ticket valid until ${iso(tgt.endtime)}\n`)
          } finally {
            c.close()
            resumption.clear() // wipes the secrets this process held
          }
          return Exit.OK
        }),
    )
    .command(
      'list',
      'show cached tickets (klist)',
      (y) => y.option('json', { type: 'boolean', describe: 'machine-readable output' }),
      (a) =>
        run(async () => {
          const { cc, contents } = await needCache(a)
          const client = principalString(contents.cname, contents.crealm)
          if (a.json) {
            out.write(`${JSON.stringify({ cache: cc.file, client, tickets: contents.entries.map(describe) }, null, 2)}\n`)
            return Exit.OK
          }
          out.write(`Credentials cache: ${cc.file}\nPrincipal: ${client}\n\n`)
          out.write('Valid starting        Expires               Service\n')
          for (const e of contents.entries) {
            const d = describe(e)
            out.write(`${d.start}  ${d.end}  ${d.service}\n`)
            const extra = [`flags: ${(d.flags as string[]).join(',') || '-'}`, `kvno ${e.ticket.kvno}`]
            if (d.renewTill) extra.push(`renew until ${d.renewTill}`)
            out.write(`    ${extra.join('; ')}\n`)
          }
          return Exit.OK
        }),
    )
    .command(
      'logout',
      'destroy the credential cache (kdestroy)',
      () => {},
      (a) =>
        run(async () => {
          const cc = cache(a)
          if (!(await cc.destroy())) {
            err.write(`kauth: no credentials cache to destroy (${cc.file})\n`)
            return Exit.NO_CREDENTIALS
          }
          return Exit.OK
        }),
    )
    .command(
      'ticket <service>',
      'get and cache a service ticket, print its kvno (kvno)',
      (y) => y.positional('service', { type: 'string', demandOption: true, describe: 'service principal, e.g. HTTP/www.example.com' }),
      (a) =>
        run(async () => {
          const { cc, contents } = await needCache(a)
          const { c, resumption } = await client(a, contents.resume)
          try {
            const st = await c.getServiceTicket(tgtOf(contents), a.service)
            await cc.store(st, resumption.export())
            out.write(`${principalString(st.sname, st.srealm)}: kvno = ${st.ticket.kvno}\n`)
          } finally {
            c.close()
            resumption.clear()
          }
          return Exit.OK
        }),
    )
    .command(
      'renew',
      'renew the ticket-granting ticket (kinit -R)',
      () => {},
      (a) =>
        run(async () => {
          const { cc, contents } = await needCache(a)
          const { c, resumption } = await client(a, contents.resume)
          try {
            const tgt = await c.renew(tgtOf(contents))
            await cc.store(tgt, resumption.export())
            out.write(`renewed; ticket valid until ${iso(tgt.endtime)}\n`)
          } finally {
            c.close()
            resumption.clear()
          }
          return Exit.OK
        }),
    )
    .command(
      'passwd',
      'change your password (kpasswd)',
      () => {},
      (a) =>
        run(async () => {
          await loadRealmFile(realmFilePath(a))
          throw new TesseraError(
            TesseraErrorCode.TESSERA_CONFIG,
            'password change goes through the admin service, which this version of Tessera does not provide yet',
          )
        }),
    )
    .command(
      'time',
      "compare this machine's clock with the KDC's signed time",
      (y) => y.option('json', { type: 'boolean' }).option('samples', { type: 'number', default: 4 }),
      (a) =>
        run(async () => {
          const { c } = await client(a)
          try {
            const s = await syncTime(c, { samples: a.samples, apply: false })
            const r = {
              serverTime: new Date(s.serverTimeMs).toISOString(),
              offsetMs: Number(s.offsetMs.toFixed(3)),
              delayMs: Number(s.delayMs.toFixed(3)),
              boundMs: Number(s.boundMs.toFixed(3)),
              verified: s.verified,
            }
            if (a.json) out.write(`${JSON.stringify(r)}\n`)
            else
              out.write(
                `server time: ${r.serverTime}\noffset:      ${r.offsetMs} ms (add to this clock)\ndelay:       ${r.delayMs} ms\nbound:       ±${r.boundMs} ms\nverified:    yes\n`,
              )
          } finally {
            c.close()
          }
          return Exit.OK
        }),
    )
    .demandCommand(1, 'name a command: login, list, logout, ticket, renew, passwd or time')
    .strict()
    .help()
    .exitProcess(false)
    .fail((msg, e) => {
      if (e) throw e
      if (usageError) return
      usageError = true
      err.write(`kauth: ${msg}\nRun kauth --help for usage.\n`)
      code = Exit.USAGE
    })
    .parseAsync(argv, {}, (_e, _a, output) => {
      // --help / --version text goes to our stdout (yargs would use console.log).
      if (output && !usageError) out.write(`${output}\n`)
    })
  return code
}

function principal_(c: Credentials): string {
  return principalString(c.cname, c.crealm)
}
