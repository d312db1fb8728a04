/** `kauth`: the kinit / klist / kdestroy / kvno / kpasswd habits, for Tessera. */
import os from 'node:os'
import yargs from 'yargs'
import { ErrorCode } from '../../proto/error-codes.js'
import { ticketFlagNames } from '../../proto/flags.js'
import { AdminClient, AdminError } from '../client/admin-client.js'
import { type CacheContents, ccachePath, CredentialCache, defaultCcachePath } from '../client/ccache.js'
import { type Credentials, KdcClient } from '../client/kdc-client.js'
import { syncTime } from '../client/time-sync.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { readKeytab } from '../krb/keytab.js'
import { describeSkew, principalString } from '../krb/parts.js'
import type { RealmFile } from '../krb/realm-file.js'
import { ResumptionStore } from '../wire/resumption.js'
import { keytabCommand } from './kauth-keytab.js'
import { tokenCommand } from './kauth-token.js'
import { Exit, exitCodeFor, exitCodesEpilogue, formatError, loadRealmForCli, promptHidden, readPasswordFile, readStdinLine } from './common.js'

/** Streams and environment of one kauth run (tests pass their own). */
export interface KauthIo {
  env?: NodeJS.ProcessEnv
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
  stdin?: NodeJS.ReadStream
}

/** Parse "90s", "30m", "10h", "7d" or plain seconds into ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([smhd]?)$/.exec(text.trim())
  if (!m) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `bad duration "${text}" (use e.g. 90s, 30m, 10h, 7d)`)
  const unit = { '': 1000, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as '' | 's' | 'm' | 'h' | 'd']
  return Math.round(Number(m[1]) * unit)
}

const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z')

const isTgt = (c: Credentials) => c.sname.length === 2 && c.sname[0] === 'krbtgt'

/** One ticket as `list --json` and `renew --json` print it. */
function describe(c: Credentials, now: number) {
  const o: Record<string, unknown> = {
    service: principalString(c.sname, c.srealm),
    kvno: c.ticket.kvno,
    start: iso(c.starttime),
    end: iso(c.endtime),
    flags: ticketFlagNames(c.flags),
    expired: c.endtime <= now,
  }
  if (c.renewTill !== undefined) o.renewTill = iso(c.renewTill)
  return o
}

/** `name` with the realm's name when it has none; refuses 'a@b@c' before anything is asked or sent. */
function qualify(name: string, realm: string): string {
  if (name.indexOf('@') !== name.lastIndexOf('@'))
    throw new TesseraError(TesseraErrorCode.TESSERA_BAD_NAME, `bad principal name "${name}": more than one "@"`)
  return name.includes('@') ? name : `${name}@${realm}`
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
  const json = (o: unknown) => out.write(`${JSON.stringify(o)}\n`)

  type Global = { 'realm-file'?: string | undefined; ccache?: string | undefined; 'connect-timeout'?: number | undefined }
  const loadRealm = (a: Global): Promise<RealmFile> => loadRealmForCli(a['realm-file'], env, 'kauth', '--realm-file FILE or TESSERA_REALM_FILE=FILE (after `npm start` in a Tessera checkout it is var/realm.json)')

  const cache = (a: Global) => new CredentialCache(a.ccache ?? ccachePath(env))
  // Transport resumption tickets live in the credential cache between commands, so a
  // command after the first skips the key exchange and sends its request at once; the
  // clock offset measured at login spares later commands a skew error and a resync.
  const client = async (a: Global, from?: CacheContents) => {
    const rf = await loadRealm(a)
    const resumption = new ResumptionStore()
    if (from?.resume) resumption.import(from.resume)
    const c = new KdcClient(rf, {
      resumption,
      ...(from?.clockOffsetMs ? { clockOffsetMs: from.clockOffsetMs } : {}),
      ...(a['connect-timeout'] !== undefined ? { connectTimeoutMs: a['connect-timeout'] * 1000 } : {}),
    })
    return { c, rf, resumption }
  }
  /** The cache with every entry, expired ones included; TESSERA_NO_CREDENTIALS when there is none. */
  const needCache = async (a: Global) => {
    const cc = cache(a)
    const contents = await cc.load({ expired: true })
    if (!contents || contents.entries.length === 0)
      throw new TesseraError(TesseraErrorCode.TESSERA_NO_CREDENTIALS, `no credentials cache found (${cc.file}); run kauth login`)
    return { cc, contents, now: Date.now() + (contents.clockOffsetMs ?? 0) }
  }
  const tgtOf = (contents: CacheContents, now: number) => {
    const tgt = contents.entries.find(isTgt)
    if (!tgt) throw new TesseraError(TesseraErrorCode.TESSERA_NO_CREDENTIALS, 'no ticket-granting ticket in the cache; run kauth login')
    if (tgt.endtime <= now)
      throw new TesseraError(
        TesseraErrorCode.TESSERA_NO_CREDENTIALS,
        `the ticket-granting ticket of ${principalString(contents.cname, contents.crealm)} expired at ${iso(tgt.endtime)}; run kauth login`,
      )
    return tgt
  }
  const run = async (fn: () => Promise<number | undefined>) => {
    if (usageError) return
    try {
      code = (await fn()) ?? Exit.OK
    } catch (e) {
      err.write(`kauth: ${e instanceof AdminError && !debug ? `${e.message} (${e.codeName})` : formatError(e, debug)}\n`)
      code = exitCodeFor(e)
    }
  }
  const jsonOption = { type: 'boolean', describe: 'print JSON, one object per line (shapes: docs/cli.md)' } as const

  await yargs()
    .scriptName('kauth')
    .usage('$0 <command> [options]\n\nLog in to a Tessera realm and manage your tickets.')
    .option('realm-file', { type: 'string', describe: 'realm.json (else TESSERA_REALM_FILE, else ~/.config/tessera/realm.json)' })
    .option('ccache', { alias: 'c', type: 'string', describe: 'credential cache file (else TESSERA_CCACHE, else a per-user default)' })
    .option('connect-timeout', { type: 'number', describe: 'seconds to wait for each KDC address' })
    .option('debug', { type: 'boolean', describe: 'print stack traces on errors' })
    .middleware((a) => {
      debug = Boolean(a.debug)
    })
    .command(
      'login [principal]',
      'log in and cache a ticket-granting ticket (kinit; kinit -k -t with --keytab)',
      (y) =>
        y
          .positional('principal', { type: 'string', describe: 'name[@REALM] (default: your user name, or the keytab\'s only principal)' })
          .option('password-file', { type: 'string', describe: 'file whose first line is the password' })
          .option('keytab', { alias: 't', type: 'string', describe: 'log in with a key from this keytab, not a password' })
          .option('k', { type: 'boolean', describe: 'use a keytab (with -t FILE), as kinit -k' })
          .option('lifetime', { alias: 'l', type: 'string', describe: 'ticket life, e.g. 10h' })
          .option('renewable', { alias: 'r', type: 'string', describe: 'renewable life, e.g. 7d' })
          .option('forwardable', { alias: 'f', type: 'boolean' })
          .option('service', {
            alias: 'S',
            type: 'string',
            describe: 'an initial ticket for this service instead of a TGT (kinit -S), e.g. kadmin/admin for kadmin',
          })
          .option('json', jsonOption),
      (a) =>
        run(async () => {
          if (a.k && !a.keytab) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_NAME, '-k needs the keytab: -k -t FILE')
          const rf = await loadRealm(a)
          const opts = {
            ...(a.lifetime ? { lifetimeMs: parseDuration(a.lifetime) } : {}),
            ...(a.renewable ? { renewableLifeMs: parseDuration(a.renewable) } : {}),
            ...(a.forwardable ? { forwardable: true } : {}),
            ...(a.service ? { service: a.service } : {}),
          }
          let principal: string
          let login: (c: KdcClient) => Promise<Credentials>
          if (a.keytab) {
            const keytab = await readKeytab(a.keytab)
            const held = keytab.principals()
            if (!a.principal && held.length !== 1)
              throw new TesseraError(
                TesseraErrorCode.TESSERA_CONFIG,
                `keytab ${a.keytab} holds ${held.length === 0 ? 'no key' : `several principals (${held.join(', ')})`}; name the principal to log in as`,
              )
            principal = a.principal ? qualify(a.principal, rf.realm) : held[0]!
            const entry = keytab.latest(principal)
            keytab.wipe()
            if (!entry) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `keytab ${a.keytab} holds no key for ${principal}`)
            login = (c) => c.loginWithKey(principal, { key: entry.key, kvno: entry.kvno }, opts).finally(() => entry.key.fill(0))
          } else {
            principal = qualify(a.principal ?? env.USER ?? os.userInfo().username, rf.realm)
            let password: string
            if (a['password-file']) password = await readPasswordFile(a['password-file'], err, 'kauth')
            else if (stdin.isTTY) password = await promptHidden(`Password for ${principal}: `, stdin, err as NodeJS.WriteStream)
            else password = await readStdinLine(stdin)
            if (password.length === 0) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'empty password')
            login = (c) => c.login(principal, password, opts)
          }
          const cc = cache(a)
          // A cache we cannot read (another user's, corrupt) is replaced by the login anyway.
          const previous = await cc.load().catch(() => undefined)
          const { c, resumption } = await client(a, previous?.resume ? { ...previous, clockOffsetMs: 0 } : undefined)
          try {
            const tgt = await login(c)
            const localNow = Date.now()
            // The offset the client corrected (after a skew error), else what the ticket's
            // authtime (the KDC's clock) says: a login is a clock reading too.
            const seen = tgt.authtime - localNow
            const skew = rf.maxClockSkewMs
            const offset = c.clockOffsetMs !== 0 ? c.clockOffsetMs : Math.abs(seen) > skew / 2 ? seen : 0
            if (Math.abs(offset) > skew / 2) err.write(`kauth: ${describeSkew(localNow, localNow + offset)}; Tessera corrects for it\n`)
            await cc.initialize(tgt, resumption.export(), { clockOffsetMs: Math.round(offset) })
            const who = principalString(tgt.cname, tgt.crealm)
            if (a.json) json({ client: who, cache: cc.file, ...describe(tgt, localNow + offset) })
            else out.write(`logged in as ${who}; ticket valid until ${iso(tgt.endtime)}\n`)
          } finally {
            c.close()
            resumption.clear() // wipes the secrets this process held
          }
          return Exit.OK
        }),
    )
    .command(
      'list',
      'show cached tickets (klist), or the keys of a keytab (klist -k)',
      (y) =>
        y
          .option('json', jsonOption)
          .option('silent', { alias: 's', type: 'boolean', describe: 'print nothing; exit 0 if the cache holds a valid ticket-granting ticket, else 6' })
          .option('keytab', { alias: 'k', type: 'string', describe: 'list the principals and key versions of this keytab (never its keys)' }),
      (a) =>
        run(async () => {
          if (a.keytab) {
            const keytab = await readKeytab(a.keytab)
            const rows = keytab.entries.map((e) => ({ principal: principalString(e.name, e.realm), kvno: e.kvno, created: iso(e.createdAt) }))
            keytab.wipe()
            if (a.json) json({ keytab: a.keytab, entries: rows })
            else {
              out.write(`Keytab: ${a.keytab}\nKVNO  Principal\n----  ---------\n`)
              for (const r of rows) out.write(`${String(r.kvno).padStart(4)}  ${r.principal}  (created ${r.created})\n`)
            }
            return Exit.OK
          }
          if (a.silent) {
            try {
              const { contents, now } = await needCache(a)
              return contents.entries.some((e) => isTgt(e) && e.endtime > now) ? Exit.OK : Exit.NO_CREDENTIALS
            } catch {
              return Exit.NO_CREDENTIALS
            }
          }
          const { cc, contents, now } = await needCache(a)
          const client = principalString(contents.cname, contents.crealm)
          const tgt = contents.entries.find(isTgt)
          if (a.json) json({ cache: cc.file, client, tickets: contents.entries.map((e) => describe(e, now)) })
          else {
            out.write(`Credentials cache: ${cc.file}\nPrincipal: ${client}\n\n`)
            out.write('Valid starting        Expires               Service\n')
            for (const e of contents.entries) {
              const d = describe(e, now)
              out.write(`${d.start}  ${d.end}  ${d.service}${d.expired ? '  (expired)' : ''}\n`)
              const extra = [`flags: ${(d.flags as string[]).join(',') || '-'}`, `kvno ${e.ticket.kvno}`]
              if (d.renewTill) extra.push(`renew until ${d.renewTill}`)
              out.write(`    ${extra.join('; ')}\n`)
            }
          }
          if (tgt && tgt.endtime <= now) err.write(`kauth: the ticket-granting ticket expired at ${iso(tgt.endtime)}; run kauth login\n`)
          return Exit.OK
        }),
    )
    .command(
      'logout',
      'destroy the credential cache (kdestroy; -A: every cache)',
      (y) => y.option('all', { alias: 'A', type: 'boolean', describe: 'destroy every cache: the one in effect and the default ones' }),
      (a) =>
        run(async () => {
          const files = new Set([cache(a).file])
          if (a.all) {
            files.add(defaultCcachePath(env))
            files.add(defaultCcachePath({ ...env, XDG_RUNTIME_DIR: '' }))
          }
          let destroyed = 0
          for (const f of files) if (await new CredentialCache(f).destroy()) destroyed++
          if (destroyed === 0) {
            err.write(`kauth: no credentials cache to destroy (${[...files].join(', ')})\n`)
            return Exit.NO_CREDENTIALS
          }
          return Exit.OK
        }),
    )
    .command(
      'ticket <service..>',
      'get and cache service tickets, print their kvno (kvno)',
      (y) =>
        y
          .positional('service', { type: 'string', array: true, demandOption: true, describe: 'service principals, e.g. HTTP/www.example.com' })
          .option('json', jsonOption),
      (a) =>
        run(async () => {
          const { cc, contents, now } = await needCache(a)
          const tgt = tgtOf(contents, now)
          const { c, resumption } = await client(a, contents)
          let result: number = Exit.OK
          try {
            for (const service of a.service as string[]) {
              try {
                const st = await c.getServiceTicket(tgt, service)
                await cc.store(st, resumption.export())
                const name = principalString(st.sname, st.srealm)
                if (a.json) json({ service: name, kvno: st.ticket.kvno })
                else out.write(`${name}: kvno = ${st.ticket.kvno}\n`)
              } catch (e) {
                const code = exitCodeFor(e)
                // A refusal of this one service: go on with the others. Anything about the TGT or the KDC: stop.
                if (code !== Exit.FAILURE) throw e
                err.write(`kauth: ${formatError(e, debug)}\n`)
                result = code
              }
            }
          } finally {
            c.close()
            resumption.clear()
          }
          return result
        }),
    )
    .command(
      'renew',
      'renew the ticket-granting ticket (kinit -R)',
      (y) => y.option('json', jsonOption),
      (a) =>
        run(async () => {
          const { cc, contents, now } = await needCache(a)
          const { c, resumption } = await client(a, contents)
          try {
            const tgt = await c.renew(tgtOf(contents, now))
            await cc.store(tgt, resumption.export())
            if (a.json) json({ client: principalString(tgt.cname, tgt.crealm), cache: cc.file, ...describe(tgt, now) })
            else out.write(`renewed; ticket valid until ${iso(tgt.endtime)}\n`)
          } finally {
            c.close()
            resumption.clear()
          }
          return Exit.OK
        }),
    )
    .command(
      'passwd [principal]',
      'change your own password (kpasswd), through kadmin/changepw',
      (y) =>
        y
          .positional('principal', { type: 'string', describe: "name[@REALM] (default: the credential cache's principal, else your user name)" })
          .option('password-file', { type: 'string', describe: 'file whose first line is the current password' })
          .option('new-password-file', { type: 'string', describe: 'file whose first line is the new password (else asked twice)' })
          .option('json', jsonOption),
      (a) =>
        run(async () => {
          const rf = await loadRealm(a)
          let principal: string
          if (a.principal) principal = qualify(a.principal, rf.realm)
          else {
            const cached = await cache(a)
              .load({ expired: true })
              .catch(() => undefined)
            principal = cached ? principalString(cached.cname, cached.crealm) : qualify(env.USER ?? os.userInfo().username, rf.realm)
          }
          const ask = async (question: string) => {
            if (!stdin.isTTY)
              throw new TesseraError(
                TesseraErrorCode.TESSERA_CONFIG,
                'no terminal to ask for passwords: give --password-file OLD --new-password-file NEW',
              )
            const v = await promptHidden(question, stdin, err as NodeJS.WriteStream)
            if (v.length === 0) throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'empty password; password not changed')
            return v
          }
          const old = a['password-file'] ? await readPasswordFile(a['password-file'], err, 'kauth') : await ask(`Old password for ${principal}: `)
          let next: string
          if (a['new-password-file']) next = await readPasswordFile(a['new-password-file'], err, 'kauth')
          else {
            next = await ask('New password: ')
            if ((await ask('New password (again): ')) !== next)
              throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, 'the new passwords differ; password not changed')
          }
          const { c, resumption } = await client(a)
          try {
            let admin: AdminClient
            try {
              // An AS exchange with the old password: a wrong one is a failed login, counted towards lockout.
              admin = await AdminClient.login(c, principal, old, 'kadmin/changepw')
            } catch (e) {
              if (e instanceof KrbProtocolError && e.code === ErrorCode.KDC_ERR_PREAUTH_FAILED)
                throw new KrbProtocolError(e.code, e.status, {
                  cause: e,
                  message: `the old password of ${principal} is wrong (or there is no such principal); password not changed. Failed attempts count towards the lockout`,
                })
              throw e
            }
            let r: { kvno: number }
            try {
              r = await admin.changePassword(principal, next)
            } catch (e) {
              if (e instanceof AdminError) throw new AdminError(e.code, `password not changed: ${e.message}`)
              throw e
            }
            if (a.json) json({ principal, kvno: r.kvno })
            else out.write(`password of ${principal} changed (key version ${r.kvno}); log in again with the new one\n`)
          } finally {
            c.close()
            resumption.clear()
          }
          return Exit.OK
        }),
    )
    .command(
      'time',
      "compare this machine's clock with the KDC's signed time",
      (y) => y.option('json', jsonOption).option('samples', { type: 'number', default: 4 }),
      (a) =>
        run(async () => {
          const { c, rf } = await client(a)
          try {
            const s = await syncTime(c, { samples: a.samples, apply: false })
            const skew = rf.maxClockSkewMs
            const abs = Math.abs(s.offsetMs)
            const [verdict, says] =
              abs > skew / 2
                ? ['corrected', `${describeSkew(0, s.offsetMs)}; Tessera corrects for it, but set this clock right (NTP)`]
                : abs < Math.max(1000, s.boundMs)
                  ? ['in-sync', 'in sync with the KDC (within 1 s)']
                  : ['drift', `${describeSkew(0, s.offsetMs)}; within the ${skew / 60_000} min the realm allows`]
            const r = {
              serverTime: new Date(s.serverTimeMs).toISOString(),
              offsetMs: Number(s.offsetMs.toFixed(3)),
              delayMs: Number(s.delayMs.toFixed(3)),
              boundMs: Number(s.boundMs.toFixed(3)),
              verified: s.verified,
              maxClockSkewMs: skew,
              verdict,
            }
            if (a.json) json(r)
            else
              out.write(
                `server time: ${r.serverTime}\noffset:      ${r.offsetMs} ms (add to this clock)\ndelay:       ${r.delayMs} ms\n` +
                  `bound:       ±${r.boundMs} ms\nverified:    yes\nverdict:     ${says}\n`,
              )
          } finally {
            c.close()
          }
          return Exit.OK
        }),
    )
    .command(tokenCommand({ run, needCache, tgtOf, client, out, json, jsonOption } as unknown as Parameters<typeof tokenCommand>[0]))
    .command(keytabCommand({ run, client, out, json, jsonOption } as unknown as Parameters<typeof keytabCommand>[0]))
    .demandCommand(1, 'name a command: login, list, logout, ticket, renew, passwd or time')
    .epilogue(exitCodesEpilogue())
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
