/** KdcConfig: every limit and lifetime of the daemon, its defaults, and validation. */
import os from 'node:os'
import { Limits } from '../../proto/limits.js'
import { DEFAULT_KDF_PARAMS, type KdfParams } from '../crypto/index.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { isUnspecifiedHost } from '../krb/realm-file.js'

const HOUR = 3600_000
const DAY = 24 * HOUR

/** Listener ports. 0 = any free port. */
export interface KdcPorts {
  as: number
  tgs: number
  time: number
  admin: number
}

/** Where the HTTP operations listener binds. */
export interface KdcHttpConfig {
  /** Address to bind; loopback unless the operator says otherwise. @default "127.0.0.1" */
  host: string
  /** Port; 0 = any free port. Never one of the protocol listeners' ports. */
  port: number
}

/** Everything the daemon can be configured with (config file, flags). */
export interface KdcConfig {
  /** Address all listeners bind to. @default "127.0.0.1" */
  host: string
  /** @default { as: 7701, tgs: 7702, time: 7703, admin: 7704 } for the daemon; 0s for startKdc */
  ports: KdcPorts
  /**
   * Host name written into realm.json for clients. @default host, or this machine's host
   * name when host is an address of every interface (0.0.0.0, ::), which no client can use
   */
  advertiseHost?: string
  /** Largest clock difference accepted, ms. @default 300000 */
  maxClockSkewMs: number
  /** Realm-wide cap on ticket life, ms. @default 24 h */
  maxTicketLifeMs: number
  /** Realm-wide cap on renewable life, ms. @default 7 d */
  maxRenewableLifeMs: number
  /** Ticket life when the request asks for none (till = 0), ms. @default 10 h */
  defaultTicketLifeMs: number
  /** Ticket life given to new principals, ms. @default 10 h */
  principalMaxLifeMs: number
  /** Renewable life given to new principals, ms. @default 7 d */
  principalMaxRenewableLifeMs: number
  /** Password KDF for new password keys. @default scrypt N=32768 r=8 p=1 */
  kdf: KdfParams
  /** Failed pre-auth answers are sent no sooner than this after the request arrived, ms (hides lookup/write timing). @default 100 */
  preauthFailureFloorMs: number
  /** Entries the TGS replay cache may hold before it refuses new requests. @default 2000000 */
  replayCacheMaxEntries: number
  /** Record last successful login on every AS success (costs a DB write per login). @default false */
  trackLastSuccess: boolean
  /** JWT bridge (PROTOCOL.md §15): the `iss` of the tokens, e.g. an https URL. @default "tessera:REALM" */
  jwtIssuer?: string
  /** JWT bridge: longest token life, ms (a token never outlives its ticket either). @default 300000 */
  jwtMaxLifeMs: number
  limits: {
    maxFrameBytes: number
    handshakeTimeoutMs: number
    idleTimeoutMs: number
    maxConnections: number
    maxConnectionsPerPeer: number
  }
  /** Transport resumption (PROTOCOL.md §3.6): tickets that let clients reconnect without X25519. */
  resumption: {
    /** Offer tickets and accept HS_RESUME. @default true */
    enabled: boolean
    /** Ticket lifetime (and ticket key rotation period), s. @default 600 */
    lifetimeS: number
    /** Tolerated disagreement on a ticket's age, ms. @default 5000 */
    windowMs: number
    /** Client randoms remembered per generation (anti-replay); beyond it resumption is refused. @default 200000 */
    maxRecent: number
  }
  /**
   * The HTTP operations listener (/metrics, /healthz, /readyz): read-only, on its own port.
   * Absent: off. @default off; when on, host defaults to "127.0.0.1" whatever `host` is
   */
  http?: KdcHttpConfig
  /** The event log (key events and lockouts: the watch stream and webhooks read it). */
  events: {
    /** Events older than this are removed, ms. @default 604800000 (7 days) */
    retentionMs: number
    /** At most this many events are kept. @default 100000 */
    maxEvents: number
  }
  /** Webhooks: each event is POSTed, signed with the realm's Ed25519 key (PROTOCOL.md §8.5.7). @default none */
  webhooks?: WebhookConfig[]
  log: {
    /** Directory for kdc.log / security.log; absent = console only. */
    dir?: string
    level: string
    console: boolean
  }
}

/** One webhook of KdcConfig.webhooks. */
export interface WebhookConfig {
  /** Where events are POSTed (http or https). */
  url: string
  /** Only these event types (docs/operations.md). @default every type */
  events?: string[]
  /** Only events on principals matching this glob (`*` wildcard, as listprincs). @default every principal */
  principals?: string
  /** One POST may take this long, ms. @default 10000 */
  timeoutMs?: number
  /** Attempts per event before it is given up (counted and logged). @default 12 */
  maxAttempts?: number
}

/** Defaults of KdcConfig. */
export const DEFAULT_KDC_CONFIG: Readonly<KdcConfig> = Object.freeze({
  host: '127.0.0.1',
  ports: { as: 7701, tgs: 7702, time: 7703, admin: 7704 },
  maxClockSkewMs: Limits.MAX_CLOCK_SKEW_MS,
  maxTicketLifeMs: DAY,
  maxRenewableLifeMs: 7 * DAY,
  defaultTicketLifeMs: 10 * HOUR,
  principalMaxLifeMs: 10 * HOUR,
  principalMaxRenewableLifeMs: 7 * DAY,
  kdf: { ...DEFAULT_KDF_PARAMS },
  preauthFailureFloorMs: 100,
  replayCacheMaxEntries: 2_000_000,
  trackLastSuccess: false,
  jwtMaxLifeMs: 300_000,
  limits: {
    maxFrameBytes: Limits.MAX_FRAME_BYTES,
    handshakeTimeoutMs: 5000,
    idleTimeoutMs: 60000,
    maxConnections: 4096,
    maxConnectionsPerPeer: 512,
  },
  resumption: { enabled: true, lifetimeS: 600, windowMs: 5000, maxRecent: 200_000 },
  events: { retentionMs: 7 * DAY, maxEvents: 100_000 },
  log: { level: 'info', console: true },
})

/** A partial config as read from a file or given by an embedder. */
export type KdcConfigInput = Partial<Omit<KdcConfig, 'ports' | 'limits' | 'log' | 'kdf' | 'resumption' | 'http' | 'events'>> & {
  http?: Partial<KdcHttpConfig>
  events?: Partial<KdcConfig['events']>
  ports?: Partial<KdcPorts>
  limits?: Partial<KdcConfig['limits']>
  resumption?: Partial<KdcConfig['resumption']>
  log?: Partial<KdcConfig['log']>
  kdf?: Partial<KdfParams>
}

const KNOWN_TOP = new Set(Object.keys(DEFAULT_KDC_CONFIG).concat(['advertiseHost', 'jwtIssuer', 'http', 'webhooks']))

/** Keys of the `http` group. */
const HTTP_KEYS = new Set(['host', 'port'])

function bad(msg: string): never {
  throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `invalid KDC configuration: ${msg}`)
}

function int(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(`${name} must be an integer in [${min}, ${max}]`)
}

/** Merge `input` over `base` and validate; throws TESSERA_CONFIG naming the bad field. */
export function resolveKdcConfig(input: KdcConfigInput = {}, base: Readonly<KdcConfig> = DEFAULT_KDC_CONFIG): KdcConfig {
  if (typeof input !== 'object' || input === null) bad('not an object')
  for (const k of Object.keys(input)) if (!KNOWN_TOP.has(k)) bad(`unknown setting "${k}"`)
  // A typo in a nested key (limits.maxConection) must not be ignored either.
  for (const group of ['ports', 'limits', 'resumption', 'log', 'kdf', 'http', 'events'] as const) {
    const given = (input as Record<string, unknown>)[group]
    if (given === undefined) continue
    if (typeof given !== 'object' || given === null || Array.isArray(given)) bad(`${group} must be an object`)
    const known =
      group === 'http' ? HTTP_KEYS : new Set(Object.keys(base[group] as object).concat(group === 'log' ? ['dir', 'level', 'console'] : []))
    for (const k of Object.keys(given)) if (!known.has(k)) bad(`unknown setting "${group}.${k}"`)
  }
  const c: KdcConfig = {
    ...base,
    ...(input as object),
    ports: { ...base.ports, ...input.ports },
    limits: { ...base.limits, ...input.limits },
    resumption: { ...base.resumption, ...input.resumption },
    log: { ...base.log, ...input.log },
    kdf: { ...base.kdf, ...input.kdf } as KdfParams,
    events: { ...base.events, ...input.events },
  }
  const http = input.http ?? base.http
  if (http === undefined) delete c.http
  else c.http = { host: '127.0.0.1', ...base.http, ...http } as KdcHttpConfig
  if (typeof c.host !== 'string' || c.host.length === 0) bad('host must be a non-empty string')
  if (c.advertiseHost !== undefined) {
    if (typeof c.advertiseHost !== 'string' || c.advertiseHost.length === 0) bad('advertiseHost must be a non-empty string')
    if (isUnspecifiedHost(c.advertiseHost)) bad(`advertiseHost ${c.advertiseHost} is not an address clients can connect to`)
  }
  for (const p of ['as', 'tgs', 'time', 'admin'] as const) int(`ports.${p}`, c.ports[p], 0, 65535)
  if (c.http) {
    if (typeof c.http.host !== 'string' || c.http.host.length === 0) bad('http.host must be a non-empty string')
    int('http.port', c.http.port, 0, 65535)
    // Its own port: a protocol port shared with HTTP would hand Kerberos frames to the wrong parser.
    for (const p of ['as', 'tgs', 'time', 'admin'] as const)
      if (c.http.port !== 0 && c.http.port === c.ports[p]) bad(`http.port ${c.http.port} is the ${p} listener's port; give it its own`)
  }
  int('maxClockSkewMs', c.maxClockSkewMs, 1000, DAY)
  int('maxTicketLifeMs', c.maxTicketLifeMs, 60_000)
  int('maxRenewableLifeMs', c.maxRenewableLifeMs, 0)
  int('defaultTicketLifeMs', c.defaultTicketLifeMs, 60_000)
  int('principalMaxLifeMs', c.principalMaxLifeMs, 60_000)
  int('principalMaxRenewableLifeMs', c.principalMaxRenewableLifeMs, 0)
  int('preauthFailureFloorMs', c.preauthFailureFloorMs, 0, 10_000)
  int('replayCacheMaxEntries', c.replayCacheMaxEntries, 1000)
  int('limits.maxFrameBytes', c.limits.maxFrameBytes, 1024, 16 * 1024 * 1024)
  int('limits.handshakeTimeoutMs', c.limits.handshakeTimeoutMs, 10)
  int('limits.idleTimeoutMs', c.limits.idleTimeoutMs, 10)
  int('limits.maxConnections', c.limits.maxConnections, 1)
  int('limits.maxConnectionsPerPeer', c.limits.maxConnectionsPerPeer, 1)
  if (typeof c.resumption.enabled !== 'boolean') bad('resumption.enabled must be a boolean')
  int('resumption.lifetimeS', c.resumption.lifetimeS, 10, 7 * 24 * 3600)
  int('resumption.windowMs', c.resumption.windowMs, 100, 60_000)
  int('resumption.maxRecent', c.resumption.maxRecent, 1000, 10_000_000)
  if (c.kdf.alg !== 'scrypt') bad('kdf.alg must be "scrypt"')
  int('kdf.N', c.kdf.N, 1024, 1 << 20)
  int('kdf.r', c.kdf.r, 1, 32)
  int('kdf.p', c.kdf.p, 1, 16)
  if (typeof c.trackLastSuccess !== 'boolean') bad('trackLastSuccess must be a boolean')
  if (c.jwtIssuer !== undefined && (typeof c.jwtIssuer !== 'string' || c.jwtIssuer.length === 0 || c.jwtIssuer.length > 1024))
    bad('jwtIssuer must be a non-empty string of at most 1024 characters')
  int('jwtMaxLifeMs', c.jwtMaxLifeMs, 1000, DAY)
  int('events.retentionMs', c.events.retentionMs, 60_000)
  int('events.maxEvents', c.events.maxEvents, 100, 100_000_000)
  if (c.webhooks !== undefined) c.webhooks = checkWebhooks(c.webhooks)
  return c
}

const WEBHOOK_FIELDS = new Set(['url', 'events', 'principals', 'timeoutMs', 'maxAttempts'])

function checkWebhooks(v: unknown): WebhookConfig[] {
  if (!Array.isArray(v) || v.length > 32) bad('webhooks must be an array of at most 32 webhooks')
  return v.map((w: unknown, i) => {
    const at = `webhooks[${i}]`
    if (typeof w !== 'object' || w === null || Array.isArray(w)) bad(`${at} must be an object`)
    for (const k of Object.keys(w)) if (!WEBHOOK_FIELDS.has(k)) bad(`unknown setting "${at}.${k}"`)
    const h = w as WebhookConfig
    if (typeof h.url !== 'string' || !URL.canParse(h.url) || !/^https?:$/.test(new URL(h.url).protocol)) bad(`${at}.url must be an http or https URL`)
    // fetch() refuses a URL with credentials (and names it, password and all, in its error): every delivery would fail.
    if (new URL(h.url).username !== '' || new URL(h.url).password !== '') bad(`${at}.url must not hold a user or password (user:password@): put a token the receiver checks in its path or query`)
    if (h.events !== undefined && (!Array.isArray(h.events) || h.events.some((e) => typeof e !== 'string'))) bad(`${at}.events must be an array of event types`)
    if (h.principals !== undefined && (typeof h.principals !== 'string' || h.principals.length === 0)) bad(`${at}.principals must be a glob`)
    if (h.timeoutMs !== undefined) int(`${at}.timeoutMs`, h.timeoutMs, 100, 120_000)
    if (h.maxAttempts !== undefined) int(`${at}.maxAttempts`, h.maxAttempts, 1, 1000)
    return { ...h, ...(h.events ? { events: [...h.events] } : {}) }
  })
}

/** The host clients are told to connect to (realm.json): never an address of every interface. */
export function advertisedHost(c: Pick<KdcConfig, 'host' | 'advertiseHost'>): string {
  if (c.advertiseHost) return c.advertiseHost
  return isUnspecifiedHost(c.host) ? os.hostname() : c.host
}
