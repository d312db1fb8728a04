/** The crypto core: the only module that touches a NaCl implementation. */
export { allBackends, backend, type NaclBackend, useBackend } from './backend.js'
export {
  checkConfirm,
  clientHandshakeFinish,
  confirmBox,
  counterNonce,
  earlyDataHash,
  MAX_RESUMPTION_TICKET_BYTES,
  openEarly,
  openFrame,
  openTicketBox,
  resumeEarly,
  resumeKeys,
  sealEarly,
  sealFrame,
  sealTicketBox,
  serverHandshake,
  type TransportKeys,
  transcriptHash,
  wipeTransportKeys,
  identityKeyId,
  IDENTITY_KEY_ID_BYTES,
} from './handshake.js'
export {
  checkKdfParams,
  constantTimeEqual,
  DEFAULT_KDF_PARAMS,
  defaultSalt,
  hkdf,
  hmacSha256,
  type KdfParams,
  passwordToKey,
  sha256,
  usageKey,
  wipe,
} from './keys.js'
export { randomBytes, randomKey, randomUint32 } from './random.js'
export { NONCE_BYTES, open, SEAL_OVERHEAD, seal, TAG_BYTES, tryOpen } from './seal.js'
export { ed25519KeyPair, type KeyPair, sign, verify, x25519, x25519KeyPair } from './sign.js'
