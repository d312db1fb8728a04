/** Message type numbers on the wire (`t` field). Never renumber: add new ones. */
export const MsgType = {
  /** Handshake, client -> server, sent in clear: client ephemeral X25519 key. */
  HS_INIT: 1,
  /** Handshake, server -> client, sent in clear: server ephemeral key + key confirmation. */
  HS_RESP: 2,
  /** Handshake, client -> server, in clear: resume with a ticket (+ optional sealed early request). */
  HS_RESUME: 3,
  /** Handshake, server -> client, in clear: server random + key confirmation of a resumption. */
  HS_RESUMED: 4,
  AS_REQ: 10,
  AS_REP: 11,
  TGS_REQ: 12,
  TGS_REP: 13,
  AP_REQ: 14,
  AP_REP: 15,
  KRB_ERROR: 30,
  TIME_REQ: 40,
  TIME_REP: 41,
  ADMIN_REQ: 50,
  ADMIN_REP: 51,
} as const
export type MsgType = (typeof MsgType)[keyof typeof MsgType]

/** Protocol version carried in every message (`v` field). */
export const PROTOCOL_VERSION = 1

/**
 * Requests a client may send as early data in HS_RESUME (PROTOCOL.md §3.6). An active
 * attacker can make a server handle an early request once more than its sender meant
 * (by racing a copy ahead of it and making the client retry), so only requests that are
 * safe to handle twice qualify: time queries, and AS/TGS requests (a second ticket is
 * useless to anyone but the client). Never ADMIN_REQ.
 */
export const EARLY_DATA_TYPES: readonly number[] = [MsgType.AS_REQ, MsgType.TGS_REQ, MsgType.TIME_REQ]
