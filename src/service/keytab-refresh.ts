/**
 * A service keeps its own keys current (issue 12): {@link refreshKeytab} logs in as the
 * service from its keytab (an AS exchange with its key, for kadmin/changepw, the ticket that
 * serves only self-service operations), fetches its current, next and still-valid keys
 * (`fetchkeys`, PROTOCOL.md §8.5.4) and updates the keytab; {@link KeytabFollower} does it
 * by itself, on every key event of the service (the `watch` long poll) and on a periodic
 * check, so that after a staged rotation the service holds the next key before the KDC
 * seals with it.
 */

import type { ApReq } from '../../proto/messages.js'
import type { FetchedVersion, FetchKeysResult, WatchResult } from '../admin/self-keys.js'
import { AdminClient, AdminError } from '../client/admin-client.js'
import { KdcClient } from '../client/kdc-client.js'
import { formatPrincipal, parsePrincipal } from '../db/names.js'
import { ErrorCode, KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { type Keytab, readKeytab, writeKeytab } from '../krb/keytab.js'
import type { ServiceVerifier, VerifiedAp, VerifyOptions } from './verify-ap-req.js'

/** Options of {@link refreshKeytab}. */
export interface RefreshKeytabOptions {
  /** A client of the service's realm (the AS and admin listeners). */
  kdc: KdcClient
  /** The keytab file: read (when no `keytab` is given) and written atomically (temporary file + rename, 0600). */
  keytabFile?: string
  /** The keytab in memory (a ServiceVerifier's), updated in place; written to keytabFile too when given. */
  keytab?: Keytab
  /** The service, `name/instance[@REALM]`. @default the keytab's only principal */
  principal?: string
  /** What the last refresh learnt of the versions (a follower passes it: the login then uses the current key first). */
  versions?: readonly FetchedVersion[]
  signal?: AbortSignal
}

/** What a refresh did. */
export interface RefreshResult {
  /** `name@REALM`. */
  principal: string
  /** The version the KDC seals with now. */
  kvno: number
  /** The versions the keytab holds for the principal now, ascending. */
  kvnos: number[]
  /** Versions added, and removed (retired or purged at the KDC). */
  added: number[]
  removed: number[]
  versions: FetchedVersion[]
}

/** The principal a keytab serves: the one given (realm defaulted) or its only one. */
function principalOf(kt: Keytab, given: string | undefined, realm: string): string {
  if (given !== undefined) return formatPrincipal(parsePrincipal(given, realm))
  const all = kt.principals()
  if (all.length !== 1)
    throw new TesseraError(
      TesseraErrorCode.TESSERA_CONFIG,
      all.length === 0 ? 'the keytab holds no key: give the principal, or export a first keytab with kadmin ktadd' : `the keytab holds ${all.length} principals (${all.join(', ')}): name the one to refresh`,
    )
  return all[0]!
}

/**
 * Log in as `principal` from its keys in `kt`, for kadmin/changepw. The current version
 * first (by `versions` when known, else the highest kvno: a staged next key opens nothing
 * before its time, and is then tried after the others).
 */
async function loginAsSelf(kdc: KdcClient, kt: Keytab, principal: string, versions: readonly FetchedVersion[] | undefined): Promise<AdminClient> {
  const kvnos = kt.kvnos(principal).sort((a, b) => b - a)
  if (kvnos.length === 0) throw new TesseraError(TesseraErrorCode.TESSERA_NO_CREDENTIALS, `the keytab holds no key of ${principal}`)
  const now = kdc.now()
  const current = versions?.filter((v) => v.activatesAt <= now && kvnos.includes(v.kvno)).sort((a, b) => b.kvno - a.kvno)[0]?.kvno
  const order = current === undefined ? kvnos : [current, ...kvnos.filter((k) => k !== current)]
  let last: unknown
  for (const kvno of order) {
    const e = kt.find(principal, kvno)!
    try {
      return await AdminClient.loginWithKey(kdc, principal, { key: e.key, kvno }, 'kadmin/changepw')
    } catch (err) {
      last = err
      // Another version may be the current one (a staged key, or one the KDC already retired): try it.
      if (!(err instanceof KrbProtocolError && err.code === ErrorCode.KDC_ERR_PREAUTH_FAILED)) throw err
    } finally {
      e.key.fill(0)
    }
  }
  throw last
}

/** Put the fetched versions of `principal` into `kt`: add the new ones, drop those the KDC no longer keeps (retired). */
function merge(kt: Keytab, principal: string, r: FetchKeysResult): { added: number[]; removed: number[] } {
  const before = new Set(kt.kvnos(principal))
  const keep = new Set(r.keys.map((k) => k.kvno))
  const added: number[] = []
  const removed: number[] = []
  for (const k of r.keys) {
    if (!before.has(k.kvno)) added.push(k.kvno)
    kt.add(k)
    k.key.fill(0)
  }
  for (const kvno of before)
    if (!keep.has(kvno)) {
      kt.remove(principal, kvno)
      removed.push(kvno)
    }
  return { added: added.sort((a, b) => a - b), removed: removed.sort((a, b) => a - b) }
}

/**
 * Fetch the service's current, next and still-valid keys and update its keytab (what
 * `kauth keytab refresh` runs). Versions the KDC has retired are removed; versions that may
 * still open tickets are kept; the file is replaced atomically with mode 0600.
 */
export async function refreshKeytab(o: RefreshKeytabOptions): Promise<RefreshResult> {
  if (o.keytab === undefined && o.keytabFile === undefined) throw new TypeError('refreshKeytab needs keytabFile or keytab')
  const kt = o.keytab ?? (await readKeytab(o.keytabFile!))
  try {
    const principal = principalOf(kt, o.principal, o.kdc.realm.realm)
    return await fetchInto(await loginAsSelf(o.kdc, kt, principal, o.versions), kt, principal, o.keytabFile)
  } finally {
    if (o.keytab === undefined) kt.wipe()
  }
}

/** fetchkeys through `admin` (a session of the principal itself), merged into `kt` and written to `file`. */
async function fetchInto(admin: AdminClient, kt: Keytab, principal: string, file: string | undefined): Promise<RefreshResult> {
  const r = await admin.fetchKeys()
  const { added, removed } = merge(kt, principal, r)
  if (file !== undefined) await writeKeytab(file, kt)
  return { principal, kvno: r.kvno, kvnos: kt.kvnos(principal), added, removed, versions: r.versions }
}

// A follower's kadmin/changepw session is renewed (a new login) once less than this is left of it.
const SESSION_MARGIN_MS = 10 * 60_000

/** Options of {@link KeytabFollower}. */
export interface KeytabFollowerOptions {
  /** A client of the realm (logins and fetches). The watch uses a client of its own. */
  kdc: KdcClient
  /** The keytab to keep current, updated in place: give the same one to the ServiceVerifier. */
  keytab: Keytab
  /** Also write the keytab here after each change (atomically, 0600). */
  keytabFile?: string
  /** @default the keytab's only principal */
  principal?: string
  /** Fallback: refresh this often even if no event arrives, ms. @default 300000 */
  checkEveryMs?: number
  /** Each watch long poll waits this long, ms (≤ 30000). @default 25000 */
  waitMs?: number
  /** First delay after a failed watch or refresh, ms; doubled up to 30 s. @default 1000 */
  retryMs?: number
  /** Problems (a failed refresh, a lost watch): the follower keeps going. */
  onError?: (err: unknown) => void
  /** After each refresh. */
  onRefresh?: (r: RefreshResult) => void
}

// Events after which the service's keys may differ (not extracted: a fetch of its own makes one; not lockout, unlocked).
const KEY_CHANGES: ReadonlySet<string> = new Set(['created', 'changed', 'rotated', 'staged', 'activated', 'purged', 'renamed'])

/**
 * Keeps a service's keytab (and so its ServiceVerifier) current by itself: follows the
 * service's key events through the admin listener's `watch` and refreshes on each, with a
 * periodic refresh as a fallback.
 */
export class KeytabFollower {
  readonly #o: KeytabFollowerOptions
  readonly #stop = new AbortController()
  #principal = ''
  #versions: FetchedVersion[] | undefined
  #refreshing: Promise<RefreshResult> | undefined
  #again = false
  #loop: Promise<void> | undefined
  #timer: NodeJS.Timeout | undefined
  #watchKdc: KdcClient | undefined
  /**
   * The follower's own kadmin/changepw session, kept between refreshes: after an immediate
   * rotation the keytab's keys no longer log in (the AS takes the current key only), but a
   * session opened before it still fetches the new key.
   */
  #session: AdminClient | undefined
  /** The last event sequence number seen (resumes the watch after a failure). */
  lastSeq: number | undefined

  constructor(o: KeytabFollowerOptions) {
    if (!o?.kdc || !o.keytab) throw new TypeError('KeytabFollower needs { kdc, keytab }')
    const wait = o.waitMs ?? 25_000
    if (!Number.isSafeInteger(wait) || wait < 0 || wait > 30_000) throw new RangeError('waitMs must be in [0, 30000]')
    this.#o = o
  }

  /** The principal followed, `name@REALM` (after start). */
  get principal(): string {
    return this.#principal
  }

  /** Refresh once (the keytab must then hold the current key), then follow. Rejects if that first refresh fails. */
  async start(): Promise<RefreshResult> {
    const o = this.#o
    this.#principal = principalOf(o.keytab, o.principal, o.kdc.realm.realm)
    const waitMs = o.waitMs ?? 25_000
    // Its own connection (a waiting poll holds back the requests behind it), on the main client's clock.
    this.#watchKdc = new KdcClient(o.kdc.realm, { timeoutMs: waitMs + 15_000, now: () => o.kdc.now() })
    // The position first, then the keys: an event landing between the two is seen by the watch.
    const watcher = await this.#login(this.#watchKdc)
    this.lastSeq = (await watcher.watch({})).last
    const first = await this.refresh()
    this.#loop = this.#follow(watcher, waitMs)
    const every = o.checkEveryMs ?? 300_000
    if (every > 0) {
      this.#timer = setInterval(() => {
        this.refresh().catch((err: unknown) => this.#o.onError?.(err))
      }, every)
      this.#timer.unref()
    }
    return first
  }

  /** Refresh now (coalesced: a refresh asked for while one runs runs once more after it). */
  refresh(): Promise<RefreshResult> {
    if (this.#refreshing !== undefined) {
      this.#again = true
      return this.#refreshing
    }
    const run = async (): Promise<RefreshResult> => {
      let r: RefreshResult
      do {
        this.#again = false
        r = await this.#fetch()
        this.#versions = r.versions
        this.#o.onRefresh?.(r)
      } while (this.#again && !this.#stop.signal.aborted)
      return r
    }
    const p = run().finally(() => {
      this.#refreshing = undefined
    })
    this.#refreshing = p
    return p
  }

  /**
   * Verify with `verifier` (built on this follower's keytab); a ticket sealed with a version
   * newer than any the keytab holds (an immediate rotation the watch has not brought yet)
   * makes one refresh, then one more try.
   */
  async verify(verifier: ServiceVerifier, req: ApReq, opts?: VerifyOptions): Promise<VerifiedAp> {
    try {
      return verifier.verify(req, opts)
    } catch (err) {
      const held = this.#o.keytab.kvnos(this.#principal)
      if (!(err instanceof KrbProtocolError && err.code === ErrorCode.KRB_AP_ERR_BADKEYVER && req.ticket.kvno > Math.max(0, ...held))) throw err
      await this.refresh()
      return verifier.verify(req, opts)
    }
  }

  /** Stop following (the keytab stays as it is). */
  async close(): Promise<void> {
    this.#stop.abort()
    if (this.#timer) clearInterval(this.#timer)
    this.#watchKdc?.close()
    await this.#loop?.catch(() => {})
    await this.#refreshing?.catch(() => {})
  }

  async #fetch(): Promise<RefreshResult> {
    const o = this.#o
    const s = this.#session
    // kadmin/changepw tickets are short (5 min in a realm made by kdc init): keep a quarter of one in hand.
    const margin = s === undefined ? 0 : Math.min(SESSION_MARGIN_MS, (s.creds.endtime - s.creds.starttime) / 4)
    if (s !== undefined && s.creds.endtime - o.kdc.now() > margin) {
      try {
        return await fetchInto(s, o.keytab, this.#principal, o.keytabFile)
      } catch (err) {
        // A refusal of the ticket (expired, the KDC restarted with new state), or of the session
        // (its login key was purged since, src/admin/operations.ts checkSessionKey): log in again below.
        if (!(err instanceof KrbProtocolError || (err instanceof AdminError && err.code === ErrorCode.TSR_ERR_NOT_AUTHORIZED))) throw err
      }
    }
    this.#session = undefined
    const fresh = await this.#login(o.kdc)
    const r = await fetchInto(fresh, o.keytab, this.#principal, o.keytabFile)
    this.#session = fresh
    return r
  }

  /** Remove the versions of the followed principal older than `kvno` from the keytab (and its file). */
  async #dropBelow(kvno: number): Promise<void> {
    const kt = this.#o.keytab
    let removed = 0
    for (const v of kt.kvnos(this.#principal)) if (v < kvno) removed += kt.remove(this.#principal, v)
    if (removed > 0 && this.#o.keytabFile !== undefined) await writeKeytab(this.#o.keytabFile, kt)
  }

  #login(kdc: KdcClient): Promise<AdminClient> {
    return loginAsSelf(kdc, this.#o.keytab, this.#principal, this.#versions)
  }

  async #follow(first: AdminClient, waitMs: number): Promise<void> {
    const signal = this.#stop.signal
    let admin: AdminClient | undefined = first
    let delay = this.#o.retryMs ?? 1000
    while (!signal.aborted) {
      try {
        admin ??= await this.#login(this.#watchKdc!)
        const args = this.lastSeq === undefined ? { waitMs } : { after: this.lastSeq, waitMs }
        const r: WatchResult = await admin.watch(args, signal)
        this.lastSeq = r.last
        delay = this.#o.retryMs ?? 1000
        // An emergency rotation: the older versions are retired (a stolen key): stop opening tickets
        // with them at once, whether or not the refresh that follows can fetch the new key.
        for (const e of r.events) if (e.type === 'rotated' && e.emergency === true && e.kvno !== undefined) await this.#dropBelow(e.kvno)
        if (r.gap || r.events.some((e) => KEY_CHANGES.has(e.type))) await this.refresh()
      } catch (err) {
        if (signal.aborted) return
        this.#o.onError?.(err)
        // The ticket may have expired, or the key it came from been retired: log in again.
        if (err instanceof KrbProtocolError) admin = undefined
        await sleep(delay, signal)
        delay = Math.min(30_000, delay * 2)
        // Missed events while down: a refresh catches up on the keys.
        await this.refresh().catch((e: unknown) => this.#o.onError?.(e))
      }
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t)
      signal.removeEventListener('abort', done)
      resolve()
    }
    const t = setTimeout(done, ms)
    signal.addEventListener('abort', done, { once: true })
  })
}
