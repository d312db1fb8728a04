/** Wire limits shared by every implementation (PROTOCOL.md §7). */
export const Limits = {
  /** Default cap on a frame body, bytes (the 4-byte length prefix not counted). */
  MAX_FRAME_BYTES: 64 * 1024,
  /** Deepest nesting of arrays/maps accepted in a message body. */
  MAX_DEPTH: 16,
  /** Most entries accepted in one map or array. */
  MAX_CONTAINER_ENTRIES: 1024,
  /**
   * Longest principal-name component, in UTF-8 bytes (PROTOCOL.md §7.4): checked by the
   * schema on the wire and by the principal-name rules (src/db/names.ts) everywhere else.
   */
  MAX_NAME_COMPONENT_BYTES: 255,
  /** Default clock skew accepted between client and server, ms. */
  MAX_CLOCK_SKEW_MS: 5 * 60 * 1000,
} as const
