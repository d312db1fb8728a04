/** The principal database: names, master key, policies and the store itself. */
export {
  createStash,
  MASTER_KDF_PARAMS,
  MASTER_KEY_BYTES,
  masterKeyFromPassphrase,
  readStash,
} from './master-key.js'
export {
  characterClasses,
  checkPassword,
  checkPrincipalId,
  checkRealm,
  formatName,
  formatPrincipal,
  isValidPrincipalId,
  MAX_COMPONENT_BYTES,
  MAX_COMPONENTS,
  MAX_PRINCIPAL_BYTES,
  MAX_REALM_LENGTH,
  PasswordQualityError,
  type PasswordQualityReason,
  parsePrincipal,
  principalFromKey,
  principalKey,
  samePrincipal,
} from './names.js'
export { checkPolicy, checkPolicyName, DEFAULT_POLICY, MAX_POLICY_HISTORY, MAX_POLICY_NAME_BYTES } from './policy.js'
export {
  type AdminMetaPut,
  type AnyLevel,
  DEFAULT_PRINCIPAL_DB_OPTIONS,
  globMatch,
  type ListOptions,
  PrincipalDb,
  type PrincipalDbOptions,
  type WriteOptions,
} from './principal-db.js'
export type {
  FailureOutcome,
  KeyVersion,
  Policy,
  PrincipalAttributes,
  PrincipalId,
  PrincipalRecord,
  RealmRecord,
} from './types.js'
