/** Realm administration: the ACL, password policy, the audit log, the operations, dump and load. */
export * from './acl.js'
export * from './audit.js'
export * from './dump.js'
export * from './duration.js'
export * from './operations.js'
export * from './key-lifecycle.js'
export * from './password-policy.js'
export * from './rotation.js'
