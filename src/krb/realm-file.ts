/** realm.json: what clients need to reach and trust a realm's KDC. Nothing secret. */
import { readFile } from 'node:fs/promises'
import os from 'node:os'
import nodePath from 'node:path'
import { TesseraError, TesseraErrorCode } from '../errors.js'

/** One KDC's addresses. */
export interface KdcAddress {
  host: string
  as: number
  tgs: number
  time: number
  admin: number
}

/** Parsed realm.json. */
export interface RealmFile {
  realm: string
  /** KDCs in the order clients try them. */
  kdcs: KdcAddress[]
  /** KDC X25519 transport public key (32 bytes). */
  transportKey: Uint8Array
  /** KDC Ed25519 signing public key (32 bytes). */
  signingKey: Uint8Array
  /** Largest clock difference the KDC accepts, ms. */
  maxClockSkewMs: number
  /**
   * During an identity-key rotation (PROTOCOL.md §11): the next X25519 transport key, which
   * the KDC already answers to, and its default from `nextKeysActiveFrom` on.
   */
  nextTransportKey?: Uint8Array
  /** During an identity-key rotation: the next Ed25519 signing key. */
  nextSigningKey?: Uint8Array
  /** When the next keys become the ones to use, ms since epoch (present with either next key). */
  nextKeysActiveFrom?: number
}

/** The transport key a client uses at `now`: the next one once its activation has come, else the current one. */
export function transportKeyAt(r: Pick<RealmFile, 'transportKey' | 'nextTransportKey' | 'nextKeysActiveFrom'>, now: number): Uint8Array {
  return r.nextTransportKey !== undefined && now >= (r.nextKeysActiveFrom ?? 0) ? r.nextTransportKey : r.transportKey
}

/** The signing key a client expects at `now` (names it in TIME_REQ `k`): as {@link transportKeyAt}. */
export function signingKeyAt(r: Pick<RealmFile, 'signingKey' | 'nextSigningKey' | 'nextKeysActiveFrom'>, now: number): Uint8Array {
  return r.nextSigningKey !== undefined && now >= (r.nextKeysActiveFrom ?? 0) ? r.nextSigningKey : r.signingKey
}

function bad(msg: string): never {
  throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `invalid realm file: ${msg}`)
}

function hexKey(name: string, v: unknown): Uint8Array {
  if (typeof v !== 'string' || !/^[0-9a-f]{64}$/i.test(v)) bad(`${name} must be 64 hex characters`)
  return new Uint8Array(Buffer.from(v, 'hex'))
}

function port(name: string, v: unknown): number {
  // Port 0 tells a KDC to take any free port; only the port it then bound is of use to a client.
  if (v === 0) bad(`${name} is 0, which only a KDC can use ("any free port"); kdc start writes the ports it bound into realm.json`)
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) bad(`${name} must be a port number`)
  return v
}

/** True for an address that means "every interface" (0.0.0.0, ::): a place to bind, not to connect to. */
export function isUnspecifiedHost(host: string): boolean {
  return host === '0.0.0.0' || (host.includes(':') && /^[0:]+$/.test(host.replace(/^\[|\]$/g, '')))
}

/** Validate a parsed JSON value as a realm file. */
export function parseRealmFile(json: unknown): RealmFile {
  if (typeof json !== 'object' || json === null) bad('not a JSON object')
  const o = json as Record<string, unknown>
  if (typeof o.realm !== 'string' || o.realm.length === 0) bad('realm missing')
  if (!Array.isArray(o.kdcs) || o.kdcs.length === 0) bad('kdcs must list at least one KDC')
  const kdcs = o.kdcs.map((k: unknown, i: number): KdcAddress => {
    if (typeof k !== 'object' || k === null) bad(`kdcs[${i}] is not an object`)
    const x = k as Record<string, unknown>
    if (typeof x.host !== 'string' || x.host.length === 0) bad(`kdcs[${i}].host missing`)
    if (isUnspecifiedHost(x.host))
      bad(`kdcs[${i}].host is ${x.host}, an address to listen on, not one to connect to (kdc init/start --advertise-host NAME)`)
    return {
      host: x.host,
      as: port(`kdcs[${i}].as`, x.as),
      tgs: port(`kdcs[${i}].tgs`, x.tgs),
      time: port(`kdcs[${i}].time`, x.time),
      admin: port(`kdcs[${i}].admin`, x.admin),
    }
  })
  const skew = o.maxClockSkewMs ?? 300000
  if (typeof skew !== 'number' || !Number.isInteger(skew) || skew < 1000) bad('maxClockSkewMs must be an integer >= 1000')
  const out: RealmFile = {
    realm: o.realm,
    kdcs,
    transportKey: hexKey('transportKey', o.transportKey),
    signingKey: hexKey('signingKey', o.signingKey),
    maxClockSkewMs: skew,
  }
  if (o.nextTransportKey !== undefined) out.nextTransportKey = hexKey('nextTransportKey', o.nextTransportKey)
  if (o.nextSigningKey !== undefined) out.nextSigningKey = hexKey('nextSigningKey', o.nextSigningKey)
  const hasNext = out.nextTransportKey !== undefined || out.nextSigningKey !== undefined
  if (o.nextKeysActiveFrom !== undefined || hasNext) {
    const t = o.nextKeysActiveFrom
    if (!hasNext) bad('nextKeysActiveFrom is given without nextTransportKey or nextSigningKey')
    if (typeof t !== 'number' || !Number.isSafeInteger(t) || t < 0) bad('nextKeysActiveFrom must be ms since epoch (an integer >= 0)')
    out.nextKeysActiveFrom = t
  }
  return out
}

/** The JSON form of a realm file. */
export function realmFileJson(r: RealmFile): Record<string, unknown> {
  return {
    realm: r.realm,
    kdcs: r.kdcs,
    transportKey: Buffer.from(r.transportKey).toString('hex'),
    signingKey: Buffer.from(r.signingKey).toString('hex'),
    maxClockSkewMs: r.maxClockSkewMs,
    ...(r.nextTransportKey !== undefined ? { nextTransportKey: Buffer.from(r.nextTransportKey).toString('hex') } : {}),
    ...(r.nextSigningKey !== undefined ? { nextSigningKey: Buffer.from(r.nextSigningKey).toString('hex') } : {}),
    ...(r.nextKeysActiveFrom !== undefined ? { nextKeysActiveFrom: r.nextKeysActiveFrom } : {}),
  }
}

/**
 * realm.json when TESSERA_REALM_FILE does not say: $XDG_CONFIG_HOME/tessera/realm.json,
 * else ~/.config/tessera/realm.json.
 */
export function defaultRealmFilePath(env: NodeJS.ProcessEnv): string {
  const base = env.XDG_CONFIG_HOME || nodePath.join(env.HOME || os.homedir(), '.config')
  return nodePath.join(base, 'tessera', 'realm.json')
}

/**
 * The realm file to use, for the CLIs and the library alike: TESSERA_REALM_FILE, else
 * {@link defaultRealmFilePath}. Pass `process.env` (the library never reads it by itself).
 */
export function realmFilePath(env: NodeJS.ProcessEnv): string {
  return env.TESSERA_REALM_FILE || defaultRealmFilePath(env)
}

/** Read and validate realm.json. Throws TESSERA_CONFIG with the path in the message. */
export async function loadRealmFile(path: string): Promise<RealmFile> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `cannot read realm file ${path}: ${why}`, { cause: err })
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (err) {
    throw new TesseraError(TesseraErrorCode.TESSERA_CONFIG, `realm file ${path} is not valid JSON`, { cause: err })
  }
  try {
    return parseRealmFile(json)
  } catch (err) {
    if (err instanceof TesseraError) throw new TesseraError(err.code, `${path}: ${err.message}`, { cause: err })
    throw err
  }
}
