/**
 * Key usage numbers: each sealed object is sealed with a subkey derived for its
 * usage, so a ciphertext made for one role never opens in another. Numbers follow
 * RFC 4120 §7.5.1 where the role matches; 1024+ are Tessera's own.
 */
export const KeyUsage = {
  /** PA-ENC-TIMESTAMP, sealed with the client's long-term key. */
  AS_REQ_PA_ENC_TIMESTAMP: 1,
  /** EncTicketPart, sealed with the service's long-term key. */
  KDC_REP_TICKET: 2,
  /** EncASRepPart, sealed with the client's long-term key. */
  AS_REP_ENCPART: 3,
  /** TGS-REQ authenticator, sealed with the TGT session key. */
  TGS_REQ_AUTH: 7,
  /** EncTGSRepPart, sealed with the TGT session key. */
  TGS_REP_ENCPART_SESSKEY: 8,
  /** AP-REQ authenticator, sealed with the ticket session key. */
  AP_REQ_AUTH: 11,
  /** EncAPRepPart, sealed with the ticket session key. */
  AP_REP_ENCPART: 12,
  /** Admin request body, sealed with the kadmin ticket's session key. */
  ADMIN_REQ_BODY: 1024,
  /** Admin reply body, sealed with the kadmin ticket's session key. */
  ADMIN_REP_BODY: 1025,
  /** Principal keys at rest, sealed with the realm master key. */
  DB_KEY_AT_REST: 1026,
  /** SecureSession application messages, client -> service. */
  SESSION_C2S: 1027,
  /** SecureSession application messages, service -> client. */
  SESSION_S2C: 1028,
  /** Credential cache / keytab entries when sealed (reserved). */
  LOCAL_STORE: 1029,
  /** TGS_REP.jwt (EncJwtPart: the JWT bridge's token), sealed with the presented ticket's session key. */
  TGS_REP_JWT: 1040,
} as const
export type KeyUsage = (typeof KeyUsage)[keyof typeof KeyUsage]
