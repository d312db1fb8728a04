/** The daemon as a library: startKdc() runs a realm's four listeners, on disk or in memory. */
import path from 'node:path'
import { randomBytes } from '../crypto/index.js'
import { LruCache } from '../db/lru.js'
import { readStashKeys } from '../db/master-key.js'
import { formatPrincipal, parsePrincipal } from '../db/names.js'
import { Keytab, type KeytabEntry, writeKeytab } from '../krb/keytab.js'
import { PrincipalDb } from '../db/principal-db.js'
import type { KeyVersion, PrincipalAttributes, RealmRecord } from '../db/types.js'
import { ErrorCode } from '../../proto/error-codes.js'
import { MsgType } from '../../proto/msg-types.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import type { RealmFile } from '../krb/realm-file.js'
import { ReplayCache } from '../krb/replay-cache.js'
import { createLoggers, type Loggers, type LogOptions, type SecurityEvent } from '../log/logger.js'
import { OpsServer, type OpsProbe, type ReadinessCheck, type ReadyzBody, readiness } from '../ops/http.js'
import { KdcMetrics, type KdcMetricsOptions } from '../ops/metrics.js'
import { tesseraVersion } from '../ops/version.js'
import { TicketIssuer } from '../wire/resumption.js'
import { type RequestHandler, SecureServer } from '../wire/server.js'
import { advertisedHost, type KdcConfig, type KdcConfigInput, resolveKdcConfig } from './config.js'
import type { KdcContext } from './context.js'
import { type AdminErrorMapper, type AdminExecutor, makeAdminHandler } from './admin-req.js'
import { type ExtraHandlers, type ListenerName, makeHandler } from './dispatch.js'
import { processTimeReq, ServedClock, type ServedClockOptions } from './time-req.js'
import { jwtIssuerOf } from './jwt.js'
import { realmJwks } from '../krb/jwks.js'
import { activeSigningPair, bootstrapRealm, makeRealmFile, pairForKeyId, newPrincipalRecord, REALM_FILES, readListenSettings, writeRealmFile } from './realm.js'

/** Options of startKdc. */
export interface StartKdcOptions {
  /** Realm directory made by `kdc init`. Absent: a fresh realm in memory. */
  dir?: string
  /** In-memory realm name. @default "TESSERA.TEST" */
  realm?: string
  /** In-memory admin password. @default random (returned) */
  adminPassword?: string
  /** Settings over the defaults; in memory and without explicit ports, every port is 0 (any free port). */
  config?: KdcConfigInput
  /** Clock (tests). @default Date.now */
  now?: () => number
  /** Log options; `false` = no logging at all. */
  log?: LogOptions | false
  /** Security events are also pushed here (tests). */
  securitySink?: SecurityEvent[]
  /** Handlers for listeners served outside src/kdc (the admin listener). */
  extraHandlers?: ExtraHandlers
  /**
   * The admin service of the admin listener (src/admin: `adminService()`). Absent: the admin
   * listener answers ADMIN_REQ with TSR_ERR_NOT_IMPLEMENTED. The public `startKdc` and
   * `kdc start` pass it.
   */
  admin?: AdminServiceFactory
  /** Clocks of the time service (tests inject host-clock steps). */
  timeClock?: Omit<ServedClockOptions, 'logger'>
  /**
   * Collect metrics (KdcMetrics). `false` = none, whatever the config; an object = these
   * options. @default on when config.http (the ops listener) is set, else off
   */
  metrics?: boolean | KdcMetricsOptions
}

/** The admin service once started: the executor of authenticated admin requests. */
export interface AdminService {
  exec: AdminExecutor
  mapError: AdminErrorMapper
  /** Called as the KDC begins to close, before its listeners drain: end long requests (a watch's long poll) now. */
  stop?(): void
  close(): Promise<void>
}

/** Starts the admin service over a KDC's database (called once the database is open). */
export type AdminServiceFactory = (o: {
  context: KdcContext
  dir?: string
  /** Unused: the audit key comes from `context.db.derivedKey` (the current audit epoch's, kept across master-key rotations). */
  masterKey?: Uint8Array
}) => Promise<AdminService>

/** What RunningKdc.reload() did. */
export interface ReloadReport {
  /** Settings whose new value is in force. */
  applied: string[]
  /** Settings that changed in the file but take effect only after a restart (kept as they were). */
  restartNeeded: string[]
  /** Registered reloaders that failed (each kept its previous state, it is their contract). */
  failed: { name: string; error: string }[]
}

/** A part of the daemon that re-reads its own state on reload (SIGHUP), e.g. the admin ACL. */
export type Reloader = (config: Readonly<KdcConfig>) => void | Promise<void>

/** Options of RunningKdc.addPrincipal. */
export interface AddPrincipalOptions {
  password?: string
  key?: Uint8Array
  attributes?: PrincipalAttributes
  maxLife?: number
  maxRenewableLife?: number
  policy?: string
}

/** A running KDC. */
export interface RunningKdc {
  realm: string
  config: KdcConfig
  addresses: Record<ListenerName, { host: string; port: number }>
  /** What clients need (also written to DIR/realm.json in dir mode). */
  realmFile: RealmFile
  /** The generated admin password (in-memory mode only). */
  adminPassword?: string
  db: PrincipalDb
  context: KdcContext
  /** Create a principal (embedding convenience). Returns its first key version. */
  addPrincipal(name: string, opts?: AddPrincipalOptions): Promise<KeyVersion>
  /** Write a keytab (0600) holding every unretired key version of a principal, like `kadmin ktadd`. */
  exportKeytab(name: string, file: string): Promise<Keytab>
  /** Where the HTTP ops listener is bound, when it is on. */
  opsAddress?: { host: string; port: number }
  /** The metrics, when collected (see StartKdcOptions.metrics). */
  metrics?: KdcMetrics
  /** When the KDC started, ms since epoch. */
  startedAt: number
  /** The readiness answer of /readyz: 200 or 503 and its body. */
  readiness(): { status: number; body: ReadyzBody }
  /**
   * Apply what can change live from `input` (the config file and flags read again; absent:
   * only the log files are reopened and the reloaders run): log level, limits, lifetimes,
   * preauthFailureFloorMs, kdf. Then reopen the log files and run the registered reloaders.
   * Throws TESSERA_CONFIG (nothing applied, logs still reopened) if `input` is invalid.
   */
  reload(input?: KdcConfigInput): Promise<ReloadReport>
  /** Register a reloader, run by every reload() in order of registration; returns its removal. */
  onReload(name: string, fn: Reloader): () => void
  /** Stop accepting, finish in-flight requests, close the database. */
  close(): Promise<void>
}

/** Top-level settings reload() applies live. */
const LIVE_SETTINGS = [
  'limits',
  'preauthFailureFloorMs',
  'maxTicketLifeMs',
  'maxRenewableLifeMs',
  'defaultTicketLifeMs',
  'principalMaxLifeMs',
  'principalMaxRenewableLifeMs',
  'kdf',
] as const

/** Opened tickets the TGS keeps (a few hundred bytes each). */
const TICKET_CACHE_ENTRIES = 20_000

const LISTENERS: readonly ListenerName[] = ['as', 'tgs', 'time', 'admin']

/** Start a KDC. Resolves once every listener is bound. */
export async function startKdc(opts: StartKdcOptions = {}): Promise<RunningKdc> {
  const memory = opts.dir === undefined
  // A realm directory's listeners bind where `kdc init` recorded, unless opts.config says otherwise.
  const recorded = memory ? {} : await readListenSettings(opts.dir!)
  const resolve = (given: KdcConfigInput | undefined): KdcConfig => {
    const input: KdcConfigInput = { ...recorded, ...given, ports: { ...recorded.ports, ...given?.ports } }
    if (memory) input.ports = { as: 0, tgs: 0, time: 0, admin: 0, ...given?.ports }
    return resolveKdcConfig(input)
  }
  const config = resolve(opts.config)
  const startedAt = Date.now()
  const now = opts.now ?? Date.now
  const logOpts: LogOptions =
    opts.log === false ? { console: false } : { level: config.log.level, console: config.log.console, ...opts.log }
  if (opts.log !== false && !memory && config.log.dir === undefined && logOpts.dir === undefined)
    logOpts.dir = path.join(opts.dir!, REALM_FILES.logs)
  if (opts.log !== false && config.log.dir !== undefined) logOpts.dir = config.log.dir
  if (opts.securitySink) logOpts.securitySink = opts.securitySink
  const log: Loggers = createLoggers(logOpts)
  const metricsWanted = opts.metrics ?? config.http !== undefined

  let db: PrincipalDb
  let adminPassword: string | undefined
  let realm: RealmRecord
  if (memory) {
    const masterKey = randomBytes(32)
    db = await PrincipalDb.open({ masterKey, trackLastSuccess: config.trackLastSuccess })
    masterKey.fill(0)
    adminPassword = opts.adminPassword ?? Buffer.from(randomBytes(18)).toString('base64url')
    realm = await bootstrapRealm(db, { realm: opts.realm ?? 'TESSERA.TEST', adminPassword, config, now: now() })
  } else {
    const masterKeys = await readStashKeys(path.join(opts.dir!, REALM_FILES.stash))
    try {
      db = await PrincipalDb.open({
        location: path.join(opts.dir!, REALM_FILES.db),
        masterKeys,
        trackLastSuccess: config.trackLastSuccess,
      })
    } finally {
      for (const m of masterKeys) m.key.fill(0)
    }
    const r = await db.getRealm()
    if (!r) {
      await db.close()
      throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `${opts.dir} holds no realm; run kdc init first`)
    }
    realm = r
  }

  const context: KdcContext = {
    config,
    db,
    realm,
    replay: new ReplayCache({ maxClockSkewMs: config.maxClockSkewMs, maxEntries: config.replayCacheMaxEntries, now, followClockStepBack: true }),
    log,
    now,
    tickets: new LruCache(TICKET_CACHE_ENTRIES),
  }
  // The time service serves the same clock the exchanges check against.
  const hostNowUs = opts.timeClock?.hostNowUs ?? (() => now() * 1000)
  const clock = new ServedClock({ ...opts.timeClock, hostNowUs, logger: log.ops })
  const handlers: ExtraHandlers = {
    time: (msg) => {
      if (msg.t !== MsgType.TIME_REQ)
        throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE', { message: `message type ${msg.t} is not served on the time listener` })
      // The key the client names if held (a retired or unknown one: the active key, which that client will not verify).
      return processTimeReq(clock, (k) => (pairForKeyId(context.realm, 'signing', k, now()) ?? activeSigningPair(context.realm, now())).secretKey, msg)
    },
    ...opts.extraHandlers,
  }
  let adminService: AdminService | undefined
  try {
    if (opts.admin && !opts.extraHandlers?.admin) {
      const o: Parameters<AdminServiceFactory>[0] = { context }
      if (!memory) o.dir = opts.dir!
      adminService = await opts.admin(o)
      const onAdmin = makeAdminHandler(context, adminService.exec, adminService.mapError)
      handlers.admin = (msg, conn) => {
        if (msg.t !== MsgType.ADMIN_REQ)
          throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE', { message: `message type ${msg.t} is not served on the admin listener` })
        return onAdmin(msg, conn)
      }
    }
  } catch (err) {
    await db.close().catch(() => {})
    await log.close().catch(() => {})
    throw err
  }
  // Every handler still running, answered or not (its connection may be gone): close() waits for them.
  const running = new Set<Promise<unknown>>()
  const tracked = (h: RequestHandler): RequestHandler => (msg, conn) => {
    const r = h(msg, conn)
    if (r instanceof Promise) {
      running.add(r)
      const done = () => running.delete(r)
      r.then(done, done)
    }
    return r
  }
  const servers = new Map<ListenerName, SecureServer>()
  // One issuer for all listeners: its keys live in memory only and die with close().
  const resumption = config.resumption.enabled
    ? new TicketIssuer({
        lifetimeMs: config.resumption.lifetimeS * 1000,
        windowMs: config.resumption.windowMs,
        maxRecent: config.resumption.maxRecent,
      })
    : undefined
  let draining = false
  if (metricsWanted) {
    const metrics = new KdcMetrics(
      {
        listeners: () => servers.entries(),
        replay: context.replay,
        db,
        krbtgtKeyCreatedAt: async () => {
          if (!db.isOpen) return undefined
          const k = (await db.get({ realm: realm.realm, components: ['krbtgt', realm.realm] }).catch(() => undefined))?.keys.at(-1)
          return k?.createdAt
        },
        time: () => {
          const t = clock.now()
          return { radiusUs: t.radiusUs, offsetUs: t.us - hostNowUs() }
        },
        resumptionMsToNextRotation: () => (resumption && !resumption.isClosed ? resumption.msToNextRotation : undefined),
        webhooks: () => context.webhooks?.list(),
        now,
      },
      typeof opts.metrics === 'object' ? opts.metrics : {},
    )
    context.metrics = metrics
    // Lockouts are decided inside the AS exchange; its security event is where they show.
    const security = log.security
    log.security = {
      log(ev) {
        if (ev.event === 'lockout') metrics.lockout()
        security.log(ev)
      },
    }
  }
  const checks = (): ReadinessCheck[] => {
    const unbound = LISTENERS.filter((n) => !servers.get(n)?.isListening)
    return [
      db.isOpen ? { name: 'database', ok: true } : { name: 'database', ok: false, detail: 'closed' },
      unbound.length === 0 ? { name: 'listeners', ok: true } : { name: 'listeners', ok: false, detail: `not bound: ${unbound.join(', ')}` },
      draining ? { name: 'draining', ok: false, detail: 'draining: the KDC is stopping' } : { name: 'draining', ok: true },
    ]
  }
  const probe: OpsProbe = {
    checks,
    info: () => ({
      version: tesseraVersion(),
      realm: realm.realm,
      startedAt: new Date(startedAt).toISOString(),
      uptimeS: Math.floor((Date.now() - startedAt) / 1000),
      listeners: Object.fromEntries(
        [...servers].map(([n, s]) => [n, { host: config.host, port: s.isListening ? s.address().port : null }]),
      ),
      principals: (db.isOpen ? db.principalCount : undefined) ?? null,
    }),
  }
  let ops: OpsServer | undefined
  try {
    for (const name of LISTENERS) {
      const server = new SecureServer(
        {
          staticKey: realm.transportKey,
          // Read on every handshake: an identity rotation step changes context.realm, not the listeners.
          staticKeys: (kid) => pairForKeyId(context.realm, 'transport', kid, now()),
          name,
          host: config.host,
          port: config.ports[name],
          ...config.limits,
          ...(resumption ? { resumption } : {}),
          logger: log.ops,
        },
        tracked(makeHandler(context, name, handlers)),
      )
      await server.listen()
      servers.set(name, server)
    }
    if (config.http) {
      ops = new OpsServer({
        host: config.http.host,
        port: config.http.port,
        probe,
        ...(context.metrics ? { metrics: context.metrics } : {}),
        jwks: { keys: () => realmJwks(context.realm), issuer: jwtIssuerOf(context.config, context.realm.realm) },
        logger: log.ops,
      })
      await ops.listen()
    }
  } catch (err) {
    await ops?.close()
    await Promise.all([...servers.values()].map((s) => s.close()))
    resumption?.close()
    await adminService?.close().catch(() => {})
    await db.close()
    await log.close()
    throw new TesseraError(TesseraErrorCode.TESSERA_NETWORK, `cannot listen: ${(err as Error).message}`, { cause: err })
  }
  const addresses = Object.fromEntries(
    LISTENERS.map((n) => [n, { host: config.host, port: servers.get(n)!.address().port }]),
  ) as RunningKdc['addresses']
  const host = advertisedHost(config)
  const realmFile = makeRealmFile(
    realm,
    [{ host, as: addresses.as.port, tgs: addresses.tgs.port, time: addresses.time.port, admin: addresses.admin.port }],
    config.maxClockSkewMs,
  )
  if (!memory) await writeRealmFile(path.join(opts.dir!, REALM_FILES.realmFile), realmFile)
  // An identity rotation step (src/admin/identity.ts) rewrites the realm record: the listeners
  // pick up the keys at the next handshake, realm.json is rewritten, and resumption tickets
  // issued before are refused (TSR_ERR_RESUME), so every client's next connection does a full
  // handshake with the key its realm file names.
  let reloading: Promise<void> = Promise.resolve()
  const reloadIdentity = () => {
    reloading = reloading.then(async () => {
      const r = await db.getRealm()
      if (r === undefined) return
      context.realm = r
      resumption?.reset()
      const rf = makeRealmFile(r, realmFile.kdcs, config.maxClockSkewMs)
      kdc.realmFile = rf
      if (!memory) await writeRealmFile(path.join(opts.dir!, REALM_FILES.realmFile), rf)
      log.ops.info('kdc identity keys reloaded', { realm: r.realm, staged: r.nextActivatesAt ?? null, previous: r.previousTransportKey !== undefined || r.previousSigningKey !== undefined })
    }).catch((err) => {
      log.ops.error('cannot reload the identity keys', { err: (err as Error).message })
    })
  }
  const unsubscribe = db.onRealmChange(() => {
    reloadIdentity()
    return reloading
  })
  const opsAddress = ops ? { host: config.http!.host, port: ops.address().port } : undefined
  log.ops.info('kdc started', {
    realm: realm.realm,
    ...Object.fromEntries(LISTENERS.map((n) => [n, addresses[n].port])),
    ...(opsAddress ? { http: opsAddress.port } : {}),
  })
  context.metrics?.start()
  const reloaders: { name: string; fn: Reloader }[] = []

  let closing: Promise<void> | undefined
  const kdc: RunningKdc = {
    realm: realm.realm,
    config,
    addresses,
    realmFile,
    db,
    context,
    startedAt,
    readiness: () => readiness(probe),
    async reload(input) {
      // Reopened first: logrotate's SIGHUP must work even when the config file has a typo.
      await log.reopen()
      const report: ReloadReport = { applied: [], restartNeeded: [], failed: [] }
      if (input !== undefined) {
        const next = resolve(input)
        const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b)
        const c = config as unknown as Record<string, unknown>
        const n = next as unknown as Record<string, unknown>
        for (const k of LIVE_SETTINGS) {
          if (same(c[k], n[k])) continue
          c[k] = n[k]
          report.applied.push(k)
        }
        for (const server of servers.values()) Object.assign(server.options, config.limits)
        if (config.log.level !== next.log.level) {
          config.log.level = next.log.level
          log.ops.level = next.log.level
          report.applied.push('log.level')
        }
        if (!same({ ...config.log, level: 0 }, { ...next.log, level: 0 })) report.restartNeeded.push('log')
        for (const k of new Set([...Object.keys(c), ...Object.keys(n)]))
          if (k !== 'log' && !(LIVE_SETTINGS as readonly string[]).includes(k) && !same(c[k], n[k])) report.restartNeeded.push(k)
      }
      for (const r of reloaders) {
        try {
          await r.fn(config)
        } catch (err) {
          const error = err instanceof Error ? err.message : String(err)
          report.failed.push({ name: r.name, error })
          log.ops.error('reload failed', { part: r.name, err: error })
        }
      }
      log.ops.info('reloaded', { applied: report.applied, restartNeeded: report.restartNeeded, failed: report.failed.map((f) => f.name) })
      if (report.restartNeeded.length > 0)
        log.ops.warn('settings changed that take effect only after a restart', { settings: report.restartNeeded })
      return report
    },
    onReload(name, fn) {
      const entry = { name, fn }
      reloaders.push(entry)
      return () => {
        const i = reloaders.indexOf(entry)
        if (i >= 0) reloaders.splice(i, 1)
      }
    },
    async addPrincipal(name, o = {}) {
      const id = parsePrincipal(name, realm.realm)
      const rec = await newPrincipalRecord({
        realm: id.realm,
        components: id.components,
        password: o.password,
        key: o.key,
        kdf: config.kdf,
        attributes: o.attributes ?? {},
        maxLife: o.maxLife ?? config.principalMaxLifeMs,
        maxRenewableLife: o.maxRenewableLife ?? config.principalMaxRenewableLifeMs,
        policy: o.policy,
        by: 'embedder',
        now: now(),
      })
      await db.create(rec)
      return rec.keys[0]!
    },
    async exportKeytab(name, file) {
      const id = parsePrincipal(name, realm.realm)
      const rec = await db.get(id)
      if (!rec) throw new TesseraError(TesseraErrorCode.TESSERA_NOT_FOUND, `no principal ${name}`)
      const t = now()
      const keytab = new Keytab(
        rec.keys
          .filter((k) => k.retiresAt === undefined || k.retiresAt > t)
          .map((k) => {
            const e: KeytabEntry = { realm: rec.realm, name: [...rec.components], kvno: k.kvno, key: k.key, createdAt: k.createdAt }
            if (k.kdf) e.kdf = k.kdf
            if (k.salt !== undefined) e.salt = k.salt
            return e
          }),
      )
      await writeKeytab(file, keytab)
      log.security.log({ event: 'keytab-export', client: formatPrincipal(id), outcome: 'ok', reason: file })
      return keytab
    },
    close() {
      closing ??= (async () => {
        // /readyz says so from now on: load balancers stop sending while requests drain.
        draining = true
        adminService?.stop?.()
        unsubscribe()
        await reloading
        await Promise.all([...servers.values()].map((s) => s.close()))
        // Handlers whose connection closed before they answered (say during the pre-auth
        // failure floor) still run: the database and the logs stay open until they end.
        while (running.size > 0) await Promise.allSettled([...running])
        await adminService?.close()
        resumption?.close()
        await context.metrics?.close()
        await db.close()
        await ops?.close()
        log.ops.info('kdc stopped', { realm: realm.realm })
        await log.close()
      })()
      return closing
    },
  }
  if (adminPassword !== undefined) kdc.adminPassword = adminPassword
  if (opsAddress) kdc.opsAddress = opsAddress
  if (context.metrics) kdc.metrics = context.metrics
  return kdc
}
