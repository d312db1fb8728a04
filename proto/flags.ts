/** Bit sets carried in `flags` (tickets) and `options` (requests). Never renumber. */

/** Ticket flags (EncTicketPart.flags, EncKdcRepPart.flags). */
export const TicketFlag = {
  FORWARDABLE: 1 << 0,
  FORWARDED: 1 << 1,
  RENEWABLE: 1 << 2,
  INITIAL: 1 << 3,
  PRE_AUTHENT: 1 << 4,
} as const
export type TicketFlag = (typeof TicketFlag)[keyof typeof TicketFlag]

/** KDC options (AS_REQ.options, TgsAuthenticator.options). */
export const KdcOption = {
  FORWARDABLE: 1 << 0,
  FORWARDED: 1 << 1,
  RENEWABLE: 1 << 2,
  RENEWABLE_OK: 1 << 3,
  RENEW: 1 << 4,
} as const
export type KdcOption = (typeof KdcOption)[keyof typeof KdcOption]

/** Pre-authentication data types (PaData.type). */
export const PaType = {
  /** Encrypted timestamp: value = seal(client key, AS_REQ_PA_ENC_TIMESTAMP, PaEncTs). */
  PA_ENC_TIMESTAMP: 2,
} as const
export type PaType = (typeof PaType)[keyof typeof PaType]

/** Flag names, for display (klist). */
export function ticketFlagNames(flags: number): string[] {
  return Object.entries(TicketFlag)
    .filter(([, bit]) => (flags & bit) !== 0)
    .map(([name]) => name.toLowerCase().replace('_', '-'))
}
