/** Kerberos rules shared by kdc, client and service: sealed inner parts, name comparison, time checks. */
import type { Static, TSchema } from '@sinclair/typebox'
import { ErrorCode } from '../../proto/error-codes.js'
import { SchemaError, validate } from '../../proto/validate.js'
import { open, seal } from '../crypto/index.js'
import { KrbProtocolError, TesseraError } from '../errors.js'
import { decode, withEncoded } from '../wire/codec.js'

type OptionalKeys<T> = { [K in keyof T]-?: undefined extends T[K] ? K : Record<string, never> extends Pick<T, K> ? K : never }[keyof T]
/** T whose optional fields may also be given as undefined (omitted on the wire). */
export type Loose<T> = Omit<T, OptionalKeys<T>> & { [K in OptionalKeys<T>]?: T[K] | undefined }

/** Seal an inner part after checking it against its schema: seal(key, usage, msgpack(value)). */
export function sealPart<T extends TSchema>(key: Uint8Array, usage: number, schema: T, value: Loose<Static<T>>): Uint8Array {
  // Our own output is checked too: a bug must not put an out-of-contract part on the wire.
  validate(schema, value)
  return withEncoded(value, (plain) => seal(key, usage, plain))
}

/**
 * Open and validate an inner part. Throws KrbProtocolError KRB_AP_ERR_BAD_INTEGRITY when it
 * does not open, KRB_AP_ERR_MODIFIED when it opens but is not a valid part.
 */
export function openPart<T extends TSchema>(key: Uint8Array, usage: number, schema: T, sealed: Uint8Array): Static<T> {
  return readPart(schema, open(key, usage, sealed))
}

/**
 * Decode and validate the plaintext of a part already opened. Throws KrbProtocolError
 * KRB_AP_ERR_MODIFIED when it is not a valid part.
 */
export function readPart<T extends TSchema>(schema: T, plain: Uint8Array): Static<T> {
  try {
    return validate(schema, decode(plain))
  } catch (err) {
    if (err instanceof SchemaError || err instanceof TesseraError)
      throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MODIFIED, 'MODIFIED', { cause: err, message: 'sealed part is malformed' })
    throw err
  }
}

/** True when two principal names (component lists) are equal. */
export function sameName(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** "a/b" */
export function nameString(components: readonly string[]): string {
  return components.join('/')
}

/** "a/b@REALM" */
export function principalString(components: readonly string[], realm: string): string {
  return `${components.join('/')}@${realm}`
}

/**
 * A human description of a clock difference as seen from `party` (whose clock is
 * serverMs): "your clock is 7 min behind the KDC's", "… 2 h 3 min ahead of the service's".
 */
export function describeSkew(localMs: number, serverMs: number, party = 'KDC'): string {
  const diff = serverMs - localMs
  const abs = Math.abs(diff)
  const mins = Math.round(abs / 60000)
  let amount: string
  if (abs < 60000) amount = `${Math.round(abs / 1000)} s`
  else if (mins < 60) amount = `${mins} min`
  else amount = `${Math.floor(mins / 60)} h ${mins % 60} min`
  return `your clock is ${amount} ${diff > 0 ? 'behind' : 'ahead of'} the ${party}'s`
}
