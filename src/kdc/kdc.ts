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
import { TicketIssuer } from '../wire/resumption.js'
import { type RequestHandler, SecureServer } from '../wire/server.js'
import { advertisedHost, type KdcConfig, type KdcConfigInput, resolveKdcConfig } from './config.js'
import type { KdcContext } from './context.js'
import { type AdminErrorMapper, type AdminExecutor, makeAdminHandler } from './admin-req.js'
import { type ExtraHandlers, type ListenerName, makeHandler } from './dispatch.js'
import { processTimeReq, ServedClock, type ServedClockOptions } from './time-req.js'
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
}

/** The admin service once started: the executor of authenticated admin requests. */
export interface AdminService {
  exec: AdminExecutor
  mapError: AdminErrorMapper
  close(): Promise<void>
}

/** Starts the admin service over a KDC's database (called once the database is open). */
export type AdminServiceFactory = (o: {
  context: KdcContext
  dir?: string
  /** Unused: the audit key comes from `context.db.derivedKey` (stable across master-key rotations). */
  masterKey?: Uint8Array
}) => Promise<AdminService>

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
  /** Stop accepting, finish in-flight requests, close the database. */
  close(): Promise<void>
}

/** Opened tickets the TGS keeps (a few hundred bytes each). */
const TICKET_CACHE_ENTRIES = 20_000

const LISTENERS: readonly ListenerName[] = ['as', 'tgs', 'time', 'admin']

/** Start a KDC. Resolves once every listener is bound. */
export async function startKdc(opts: StartKdcOptions = {}): Promise<RunningKdc> {
  const memory = opts.dir === undefined
  // A realm directory's listeners bind where `kdc init` recorded, unless opts.config says otherwise.
  const recorded = memory ? {} : await readListenSettings(opts.dir!)
  const input: KdcConfigInput = { ...recorded, ...opts.config, ports: { ...recorded.ports, ...opts.config?.ports } }
  if (memory) input.ports = { as: 0, tgs: 0, time: 0, admin: 0, ...opts.config?.ports }
  const config = resolveKdcConfig(input)
  const now = opts.now ?? Date.now
  const logOpts: LogOptions =
    opts.log === false ? { console: false } : { level: config.log.level, console: config.log.console, ...opts.log }
  if (opts.log !== false && !memory && config.log.dir === undefined && logOpts.dir === undefined)
    logOpts.dir = path.join(opts.dir!, REALM_FILES.logs)
  if (opts.log !== false && config.log.dir !== undefined) logOpts.dir = config.log.dir
  if (opts.securitySink) logOpts.securitySink = opts.securitySink
  const log: Loggers = createLoggers(logOpts)

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
  const clock = new ServedClock({ hostNowUs: () => now() * 1000, ...opts.timeClock, logger: log.ops })
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
  } catch (err) {
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
  log.ops.info('kdc started', { realm: realm.realm, ...Object.fromEntries(LISTENERS.map((n) => [n, addresses[n].port])) })

  let closing: Promise<void> | undefined
  const kdc: RunningKdc = {
    realm: realm.realm,
    config,
    addresses,
    realmFile,
    db,
    context,
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
        unsubscribe()
        await reloading
        await Promise.all([...servers.values()].map((s) => s.close()))
        // Handlers whose connection closed before they answered (say during the pre-auth
        // failure floor) still run: the database and the logs stay open until they end.
        while (running.size > 0) await Promise.allSettled([...running])
        await adminService?.close()
        resumption?.close()
        await db.close()
        log.ops.info('kdc stopped', { realm: realm.realm })
        await log.close()
      })()
      return closing
    },
  }
  if (adminPassword !== undefined) kdc.adminPassword = adminPassword
  return kdc
}
