/** Tessera's public API. Nothing else is exported. */

// Errors and wire constants
export { ErrorCode, errorCodeName } from '../proto/error-codes.js'
export { KdcOption, PaType, TicketFlag, ticketFlagNames } from '../proto/flags.js'
export { KeyUsage } from '../proto/key-usage.js'
export type { ApRep, ApReq, Ticket } from '../proto/messages.js'
export { MsgType, PROTOCOL_VERSION } from '../proto/msg-types.js'
export { isTesseraError, KrbProtocolError, TesseraError, TesseraErrorCode, TokenError, type TokenErrorName } from './errors.js'

// Client side
export { type ApRepResult, type ApReqOptions, buildApReq, type PendingApReq, verifyApRep } from './client/ap.js'
export { type CacheContents, type CacheLoadOptions, ccachePath, CredentialCache, defaultCcachePath } from './client/ccache.js'
export {
  type ClientKey,
  type Credentials,
  KdcClient,
  type KdcClientOptions,
  type LoginOptions,
  type TicketOptions,
} from './client/kdc-client.js'
export { checkTimeRep, type SyncTimeOptions, syncTime, type TimeSample } from './client/time-sync.js'
// JWT bridge (PROTOCOL.md §15)
export { type DpopKeyPair, generateDpopKeyPair, type ServiceToken, type ServiceTokenOptions } from './client/jwt.js'
export { accessTokenHash, createDpopProof, type DpopProofInput, type DpopResponse, DpopSession, type DpopSessionOptions, htuOf } from './client/dpop.js'
export { discoveryDocument, type PublicSigningKey, type RealmJwk, type RealmJwks, realmJwks, signingKeyId } from './krb/jwks.js'
export {
  defaultRealmFilePath,
  type KdcAddress,
  loadRealmFile,
  parseRealmFile,
  type RealmFile,
  realmFileJson,
  realmFilePath,
} from './krb/realm-file.js'
// Transport resumption tickets, shareable between KdcClients (KdcClientOptions.resumption)
export { ResumptionStore } from './wire/resumption.js'

// Service side
export {
  addKeytabEntry,
  decodeKeytab,
  encodeKeytab,
  Keytab,
  type KeytabEntry,
  readKeytab,
  writeKeytab,
} from './krb/keytab.js'
export {
  SecureSession,
  type SecureSessionClientOptions,
  type SecureSessionOptions,
  type SecureSessionServerOptions,
  SessionError,
} from './service/session.js'
export {
  ServiceVerifier,
  type ServiceVerifierOptions,
  type VerifiedAp,
  type VerifyOptions,
} from './service/verify-ap-req.js'
export { ReplayCache, type ReplayCacheOptions } from './krb/replay-cache.js'
export {
  KeytabFollower,
  type KeytabFollowerOptions,
  type RefreshKeytabOptions,
  type RefreshResult,
  refreshKeytab,
} from './service/keytab-refresh.js'
export {
  type ServiceTokenClaims,
  ServiceTokenVerifier,
  type TokenMiddleware,
  type TokenMiddlewareOptions,
  type TokenRequest,
  type TokenVerifierOptions,
  tokenMiddleware,
  tokenOf,
  tokenRequestOf,
  type VerifiedToken,
  verifyServiceToken,
} from './service/jwt-verifier.js'

// The KDC, embeddable (tests of apps, like Apache Kerby's SimpleKdcServer)
export { DEFAULT_KDC_CONFIG, type KdcConfig, type KdcConfigInput } from './kdc/config.js'
export type { AddPrincipalOptions, AdminService, AdminServiceFactory, RunningKdc, StartKdcOptions } from './kdc/kdc.js'
export { startKdc } from './admin/start.js'
export { type AdminServiceOptions, adminService } from './admin/listener.js'
export {
  type AclCheckResult,
  AdminClient,
  AdminError,
  type AdminService as AdminServiceName,
  type AuditResult,
  type FetchKeysResult,
  type KeyResult,
  type PrincipalView,
  type WatchArgs,
  type WatchResult,
} from './client/admin-client.js'
export type { KeyEvent } from './admin/operations.js'
export type { LoggedEvent } from './db/event-log.js'
export type { WebhookConfig } from './kdc/config.js'
export {
  signWebhookBody,
  verifyWebhookSignature,
  WEBHOOK_KEY_ID_HEADER,
  WEBHOOK_SIGNATURE_CONTEXT,
  WEBHOOK_SIGNATURE_HEADER,
  type WebhookBody,
  type WebhookStats,
} from './admin/webhooks.js'
export { initRealmDir, type InitRealmOptions } from './kdc/realm.js'
