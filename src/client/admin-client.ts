/**
 * AdminClient: what `kadmin` and `kauth passwd` do, for apps (PROTOCOL.md §8.5). It holds an
 * initial ticket for kadmin/admin (administration) or kadmin/changepw (one's own password)
 * and sends each operation as an ADMIN_REQ on the admin listener.
 */
import { ErrorCode } from '../../proto/error-codes.js'
import { TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { AdminBody, type AdminReq, AdminResult, type Message } from '../../proto/messages.js'
import { MsgType, PROTOCOL_VERSION } from '../../proto/msg-types.js'
import { KrbProtocolError, TesseraError, TesseraErrorCode } from '../errors.js'
import { openPart, sealPart } from '../krb/parts.js'
import { nextStamp } from './ap.js'
import { krbErrorFromReply } from './errors.js'
import type { ClientKey, Credentials, KdcClient } from './kdc-client.js'

/** An operation the admin service refused (AdminResult with ok false). `code` is a PROTOCOL.md §9 code. */
export class AdminError extends Error {
  override readonly name = 'AdminError'
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message)
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
    const sig = signal ? AbortSignal.any([signal, AbortSignal.timeout(30_000)]) : AbortSignal.timeout(30_000)
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
}
