/**
 * AdminClient: what `kadmin` and `kauth passwd` do, for apps (PROTOCOL.md §8.5). It holds an
 * initial ticket for kadmin/admin (administration) or kadmin/changepw (one's own password)
 * and sends each operation as an ADMIN_REQ on the admin listener.
 */
import { createHash } from 'node:crypto'
import { constants } from 'node:fs'
import { open, rename, stat, unlink } from 'node:fs/promises'
import path from 'node:path'
import { ErrorCode, errorCodeName } from '../../proto/error-codes.js'
import { TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { AdminBody, type AdminReq, AdminResult, type Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { openPart, sealPart } from '../krb/parts.js'
import { nextStamp } from './ap.js'
import { krbErrorFromReply } from './errors.js'
import type { AclDecision, AclExplanation, AclRule } from '../admin/acl.js'
import type { AuditRecord, AuditVerification } from '../admin/audit.js'
import type {
  AclCheckArgs,
  AddPrincipalArgs,
  ExtractArgs,
  KeyResult,
  ModifyPrincipalArgs,
  PolicyArgs,
  PrincipalView,
  ReadAuditArgs,
} from '../admin/operations.js'
import type { PurgeKeysArgs, PurgeKeysResult, RotateArgs, RotateResult } from '../admin/rotation.js'
import type { FetchKeysResult, WatchArgs, WatchResult } from '../admin/self-keys.js'
import type { Policy } from '../db/types.js'
import type { ClientKey, Credentials, KdcClient } from './kdc-client.js'

export type { AddPrincipalArgs, ExtractArgs, KeyResult, ModifyPrincipalArgs, PolicyArgs, PrincipalView, ReadAuditArgs, AclCheckArgs, FetchKeysResult, WatchArgs, WatchResult }

/** An ACL line as `acl check` reports it (its permission set stays on the server). */
export type AclRuleView = Pick<AclRule, 'line' | 'text'>

/** One permission decision of {@link AclCheckResult}. */
export type AclDecisionView = Omit<AclDecision, 'rule'> & { rule?: AclRuleView }

/** What `acl check` answers: the deciding line of each permission needed, and why. */
export type AclCheckResult = Omit<AclExplanation, 'decisions'> & { decisions: AclDecisionView[] }

/** What `audit` answers: the records asked for and, with verify, the verification. */
export interface AuditResult {
  records: AuditRecord[]
  verification?: AuditVerification
}

/** An operation the admin service refused (AdminResult with ok false). `code` is a PROTOCOL.md §9 code. */
export class AdminError extends Error {
  override readonly name = 'AdminError'
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message)
  }

  /** The code's name (PROTOCOL.md §9), e.g. `ADM_ERR_NOT_FOUND`. */
  get codeName(): string {
    return errorCodeName(this.code as ErrorCode)
  }
}

/** Which admin service principal a ticket is for. */
export type AdminService = 'kadmin/admin' | 'kadmin/changepw'

/** Talks to the admin listener with one initial kadmin ticket. */
export class AdminClient {
  private constructor(
    readonly kdc: KdcClient,
    readonly creds: Credentials,
  ) {}

  /** Log in with a password for `service` (an AS exchange: the password is always typed again). */
  static async login(kdc: KdcClient, principal: string, password: string, service: AdminService = 'kadmin/admin'): Promise<AdminClient> {
    return new AdminClient(kdc, await kdc.login(principal, password, { service }))
  }

  /** Log in from a key (e.g. a keytab entry) for `service`. */
  static async loginWithKey(kdc: KdcClient, principal: string, key: ClientKey, service: AdminService = 'kadmin/admin'): Promise<AdminClient> {
    return new AdminClient(kdc, await kdc.loginWithKey(principal, key, { service }))
  }

  /** Use credentials obtained elsewhere (say from the credential cache); they must be initial kadmin tickets. */
  static fromCredentials(kdc: KdcClient, creds: Credentials): AdminClient {
    const s = creds.sname
    if (!(s.length === 2 && s[0] === 'kadmin' && (s[1] === 'admin' || s[1] === 'changepw')))
      throw new TesseraError(TesseraErrorCode.TESSERA_NO_CREDENTIALS, `a ticket for ${s.join('/')} is not a kadmin ticket`)
    if (!(creds.flags & TicketFlag.INITIAL))
      throw new TesseraError(TesseraErrorCode.TESSERA_NO_CREDENTIALS, 'the kadmin ticket must come from a login with the password (INITIAL)')
    return new AdminClient(kdc, creds)
  }

  /** The principal this client acts as, `name@REALM`. */
  get principal(): string {
    return `${this.creds.cname.join('/')}@${this.creds.crealm}`
  }

  /**
   * Run one operation. Resolves with its result; rejects with AdminError when the service
   * refused the operation, KrbProtocolError when it refused the request (ticket expired,
   * skew, replay), TesseraError for local and transport failures.
   */
  async call(op: string, args: Record<string, unknown> = {}, signal?: AbortSignal): Promise<unknown> {
    // A watch waits up to waitMs on the server before it answers.
    const limit = 30_000 + (op === 'watch' && typeof args.waitMs === 'number' ? args.waitMs : 0)
    const sig = signal ? AbortSignal.any([signal, AbortSignal.timeout(limit)]) : AbortSignal.timeout(limit)
    let stamp = { ctime: 0, cusec: 0 }
    const build = (): Message => {
      stamp = nextStamp(this.kdc.now())
      const auth = sealPart(this.creds.sessionKey, KeyUsage.ADMIN_REQ_BODY, AdminBody, {
        crealm: this.creds.crealm,
        cname: this.creds.cname,
        ctime: stamp.ctime,
        cusec: stamp.cusec,
        op,
        args,
      })
      const req: AdminReq = { v: PROTOCOL_VERSION, t: MsgType.ADMIN_REQ, ticket: this.creds.ticket, auth }
      return req
    }
    const reply = await this.kdc.send('admin', build, sig)
    if (reply.t === MsgType.KRB_ERROR) {
      if (reply.code === ErrorCode.KRB_AP_ERR_TKT_EXPIRED)
        throw new KrbProtocolError(reply.code, 'TKT_EXPIRED', { message: 'the kadmin ticket expired; log in again' })
      throw krbErrorFromReply(reply, this.kdc.now(), 'kadmin')
    }
    if (reply.t !== MsgType.ADMIN_REP) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, `unexpected reply type ${reply.t} to ADMIN_REQ`)
    let result: AdminResult
    try {
      result = openPart(this.creds.sessionKey, KeyUsage.ADMIN_REP_BODY, AdminResult, reply.enc)
    } catch (err) {
      throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'the admin reply does not open under the kadmin session key', { cause: err })
    }
    // The reply names the request it answers: an old reply cannot stand in for this one.
    if (result.ctime !== stamp.ctime || result.cusec !== stamp.cusec)
      throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'the admin reply answers another request')
    if (!result.ok) throw new AdminError(result.code ?? ErrorCode.KRB_ERR_GENERIC, result.text ?? 'refused')
    return result.result
  }
  // ---- typed operations (src/admin/operations.ts; what `kadmin` runs) ----

  /** addprinc: a new principal with a password or a random key (`randkey: true`). `keys` holds the random key made, never a password key. */
  async addPrincipal(args: AddPrincipalArgs): Promise<KeyResult> {
    return keyResult(await this.call('addprinc', { ...args }))
  }

  /** delprinc. */
  async deletePrincipal(name: string): Promise<void> {
    await this.call('delprinc', { name })
  }

  /** renprinc: one atomic rename (needs `d` on the old name, `a` on the new one). */
  async renamePrincipal(name: string, newName: string): Promise<void> {
    await this.call('renprinc', { name, newName })
  }

  /** modprinc (attributes, lifetimes, policy or `policy: null`, expiry, `unlock`): the record after the change. */
  async modifyPrincipal(args: ModifyPrincipalArgs): Promise<PrincipalView> {
    return (await this.call('modprinc', { ...args })) as PrincipalView
  }

  /** getprinc: the record without key bytes (`kvno`, and `keys` with every version's times). */
  async getPrincipal(name: string): Promise<PrincipalView> {
    return (await this.call('getprinc', { name })) as PrincipalView
  }

  /** listprincs [GLOB]: names, sorted. */
  async listPrincipals(glob?: string): Promise<string[]> {
    return (await this.call('listprincs', glob === undefined ? {} : { glob })) as string[]
  }

  /** cpw with a new password (quality and history rules apply; own password: minlife too). */
  async changePassword(name: string, password: string, o: { keepold?: boolean } = {}): Promise<KeyResult> {
    return keyResult(await this.call('cpw', { name, password, ...(o.keepold ? { keepold: true } : {}) }))
  }

  /** cpw --randkey: a new random key, returned in `keys`. */
  async randomizeKey(name: string, o: { keepold?: boolean } = {}): Promise<KeyResult> {
    return keyResult(await this.call('cpw', { name, randkey: true, ...(o.keepold ? { keepold: true } : {}) }))
  }

  /** ktadd: the current and still valid older keys (never changes the key unless `randkey`). */
  async extractKeys(name: string, o: Omit<ExtractArgs, 'name'> = {}): Promise<KeyResult> {
    return keyResult(await this.call('ktadd', { name, ...o }))
  }

  /**
   * dump: the KDC takes a consistent snapshot while it serves (needs `i`, `l` and `e` on
   * everything) and the dump comes back in chunks, written to `file` (0600, through a temp
   * file renamed into place; refused if `file` exists) and checked against the KDC's SHA-256.
   */
  async dump(file: string, onProgress?: (bytes: number, total: number) => void): Promise<{ entries: number; sha256: string; bytes: number }> {
    const first = (await this.call('dump', {})) as { session: string; size: number; entries: number; sha256: string; data: Uint8Array }
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`)
    const hash = createHash('sha256')
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
    let done = false
    try {
      let got = 0
      let data = first.data
      while (true) {
        await fh.write(data)
        hash.update(data)
        got += data.length
        onProgress?.(got, first.size)
        if (got >= first.size) break
        if (data.length === 0) throw new TesseraError(TesseraErrorCode.TESSERA_BAD_REPLY, 'the dump ended early')
        data = ((await this.call('dump', { session: first.session, offset: got })) as { data: Uint8Array }).data
      }
      await fh.sync()
      await fh.close()
      // The dump's own trailer carries the SHA-256 of what precedes it; checked again by load.
      try {
        await stat(file)
        throw new TesseraError(TesseraErrorCode.TESSERA_EXISTS, `${file} already exists; refusing to overwrite it`)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
      await rename(tmp, file)
      done = true
      return { entries: first.entries, sha256: first.sha256, bytes: got }
    } finally {
      if (!done) {
        await fh.close().catch(() => {})
        await unlink(tmp).catch(() => {})
      }
    }
  }

  /** rotate: a new random key version (services, krbtgt); the old one kept through `grace` (PROTOCOL.md §8.5.4). */
  async rotateKey(args: RotateArgs): Promise<RotateResult> {
    const r = (await this.call('rotate', { ...args })) as RotateResult
    return { ...r, keys: keyResult({ name: r.name, kvno: r.kvno, keys: r.keys }).keys }
  }

  /** purgekeys: remove old key versions (refused while they may still open a valid ticket unless `force`). */
  async purgeKeys(args: PurgeKeysArgs): Promise<PurgeKeysResult> {
    return (await this.call('purgekeys', { ...args })) as PurgeKeysResult
  }

  /** addpol: unset fields take the default policy's values. */
  async addPolicy(args: PolicyArgs): Promise<Policy> {
    return (await this.call('addpol', { ...args })) as Policy
  }

  /** modpol: only the fields given change. */
  async modifyPolicy(args: PolicyArgs): Promise<Policy> {
    return (await this.call('modpol', { ...args })) as Policy
  }

  /** delpol (refused while a principal uses it). */
  async deletePolicy(name: string): Promise<void> {
    await this.call('delpol', { name })
  }

  /** getpol. */
  async getPolicy(name: string): Promise<Policy> {
    return (await this.call('getpol', { name })) as Policy
  }

  /** listpols: policy names. */
  async listPolicies(): Promise<string[]> {
    return (await this.call('listpols', {})) as string[]
  }

  /** acl check: which line decides `op` for `actor` on `target`, and why. */
  async checkAcl(args: AclCheckArgs): Promise<AclCheckResult> {
    return (await this.call('aclcheck', { ...args })) as AclCheckResult
  }

  /**
   * fetchkeys: this principal's own current, next (staged) and not yet retired keys, for its
   * keytab (a service logged in from its keytab, for kadmin/changepw, needs no admin).
   */
  async fetchKeys(): Promise<FetchKeysResult> {
    const r = (await this.call('fetchkeys', { name: this.principal })) as FetchKeysResult
    return { ...keyResult(r), versions: r.versions ?? [] } as FetchKeysResult
  }

  /**
   * watch: the events after `after` this principal may see, as a long poll (PROTOCOL.md
   * §8.5.4). Replies on one connection come in order, so give a watch a KdcClient of its own,
   * whose timeoutMs exceeds waitMs (waitMs is capped to the client's timeoutMs - 5 s).
   */
  async watch(args: WatchArgs = {}, signal?: AbortSignal): Promise<WatchResult> {
    const a: Record<string, unknown> = { ...args }
    if (typeof args.waitMs === 'number') a.waitMs = Math.max(0, Math.min(args.waitMs, this.kdc.timeoutMs - 5000))
    return (await this.call('watch', a, signal)) as WatchResult
  }

  /** audit [since] [verify]: the records and, with verify, the log checked against the database anchor. */
  async readAudit(args: ReadAuditArgs = {}): Promise<AuditResult> {
    return (await this.call('audit', { ...args })) as AuditResult
  }
}

/** A key result with its key bytes copied out of the reply buffer (decoded binaries are views). */
function keyResult(v: unknown): KeyResult {
  const r = v as KeyResult
  return { ...r, keys: (r.keys ?? []).map((k) => ({ ...k, name: [...k.name], key: new Uint8Array(k.key) })) }
}
