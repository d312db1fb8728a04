/** Principal names: parsing, formatting, validation, the injective database key, and password quality. */
import { Limits } from '../../proto/limits.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { DEFAULT_POLICY } from './policy.js'
import type { Policy, PrincipalId } from './types.js'

/** Most components in a principal name. */
export const MAX_COMPONENTS = 8
/** Longest component, UTF-8 bytes: the wire schema's limit too (PROTOCOL.md §7.4). */
export const MAX_COMPONENT_BYTES: number = Limits.MAX_NAME_COMPONENT_BYTES
/** Longest whole principal name as formatted (`a/b@REALM`), UTF-8 bytes. */
export const MAX_PRINCIPAL_BYTES = 1024
/** Longest realm name, characters (ASCII only, so also bytes). */
export const MAX_REALM_LENGTH = 255

// C0 controls, DEL and C1 controls.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/
// '/' and '@' are the separators of the text form; '\\' is refused because escapes are not
// supported, so a name with one could not be typed back unambiguously.
const FORBIDDEN = /[/@\\]/
// An unpaired surrogate has no UTF-8 form: two different names would be stored under the same bytes.
const LONE_SURROGATE = /\p{Cs}/u
// Bidirectional overrides and isolates reorder what is displayed, so a name could show up in a
// listing or a log as another name (Trojan Source, CVE-2021-42574).
const BIDI_CONTROL = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/
// Code points that display as nothing (zero-width characters, soft hyphen, BOM, variation
// selectors, tag characters, Hangul fillers...) or as a line break: "ad\u200Bmin" would
// show as "admin" and be another principal.
const INVISIBLE = /[\p{Default_Ignorable_Code_Point}\p{Zl}\p{Zp}]/u
// Spaces other than U+0020 (no-break, en, ideographic... spaces) and the blank braille
// pattern display as a plain space or as nothing.
const ODD_SPACE = /[\p{Zs}\u2800]/u
const REALM = /^[A-Za-z0-9._-]+$/
// Printable ASCII (U+0020..U+007E): none of it is invisible, an odd space, a control, bidi
// or unpaired, and all of it is NFC. Most names are such: they skip the per-code-point checks.
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/

function badName(message: string): never {
  throw new TesseraError(TesseraErrorCode.TESSERA_BAD_NAME, message)
}

/** Refuse an invisible or line-separator code point in `text`, naming it and its 1-based code point position. */
function checkVisible(text: string, where: string): void {
  if (PRINTABLE_ASCII.test(text)) {
    if (text.startsWith(' ') || text.endsWith(' ')) badName(`principal name has a leading or trailing space in ${where}`)
    return
  }
  for (const ch of text)
    if (ch !== ' ' && ODD_SPACE.test(ch)) {
      const cp = ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')
      badName(`principal name contains a space character other than U+0020 (U+${cp}) in ${where}`)
    }
  if (text.startsWith(' ') || text.endsWith(' ')) badName(`principal name has a leading or trailing space in ${where}`)
  if (!INVISIBLE.test(text)) return
  let pos = 0
  for (const ch of text) {
    pos++
    if (INVISIBLE.test(ch)) {
      const cp = ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')
      badName(`principal name contains an invisible or line-separator character U+${cp} at position ${pos} of ${where}`)
    }
  }
}

/** Throws TesseraError(TESSERA_BAD_NAME) unless `realm` is a valid realm name. */
export function checkRealm(realm: string): void {
  if (typeof realm !== 'string' || realm.length === 0) badName('realm is empty')
  if (realm.length > MAX_REALM_LENGTH) badName(`realm is longer than ${MAX_REALM_LENGTH} characters`)
  checkVisible(realm, 'the realm')
  if (!REALM.test(realm)) badName('realm may only contain letters A-Z a-z, digits, ".", "_" and "-"')
  if (realm.startsWith('.') || realm.endsWith('.')) badName('realm must not start or end with "."')
  if (realm.includes('..')) badName('realm must not contain ".."')
}

function checkComponent(c: unknown, i: number): void {
  const which = `component ${i + 1}`
  if (typeof c !== 'string') badName(`${which} is not a string`)
  if (c.length === 0) badName(`${which} is empty`)
  if (Buffer.byteLength(c, 'utf8') > MAX_COMPONENT_BYTES) badName(`${which} is longer than ${MAX_COMPONENT_BYTES} bytes`)
  if (FORBIDDEN.test(c)) badName(`${which} contains "/", "@" or "\\" (escapes are not supported)`)
  // Printable ASCII needs none of the checks below but the spaces at its ends.
  if (PRINTABLE_ASCII.test(c)) {
    checkVisible(c, which)
    return
  }
  if (CONTROL.test(c)) badName(`${which} contains a control character`)
  if (LONE_SURROGATE.test(c)) badName(`${which} contains an unpaired surrogate`)
  if (BIDI_CONTROL.test(c)) badName(`${which} contains a bidirectional control character`)
  checkVisible(c, which)
  // Refusing non-NFC input (rather than normalising it) keeps one stored form per name, so
  // "é" precomposed and "e" + combining acute cannot become two look-alike principals.
  if (c.normalize('NFC') !== c) badName(`${which} is not in Unicode NFC form`)
}

/**
 * Throws TesseraError(TESSERA_BAD_NAME) unless `id` is a valid principal name: 1..8 components,
 * each non-empty, at most 255 UTF-8 bytes, NFC, without control or bidi-control characters,
 * without invisible (Default_Ignorable_Code_Point) or line/paragraph-separator characters
 * and without '/', '@', '\\'; the whole `a/b@REALM` at most 1024 bytes; a valid realm
 * (see {@link checkRealm}). Case is preserved and significant.
 */
export function checkPrincipalId(id: PrincipalId): void {
  if (id === null || typeof id !== 'object') badName('principal is not an object')
  if (!Array.isArray(id.components)) badName('principal components are not an array')
  const n = id.components.length
  if (n < 1 || n > MAX_COMPONENTS) badName(`principal must have 1 to ${MAX_COMPONENTS} components, not ${n}`)
  id.components.forEach(checkComponent)
  checkRealm(id.realm)
  if (Buffer.byteLength(formatPrincipal(id), 'utf8') > MAX_PRINCIPAL_BYTES)
    badName(`principal name is longer than ${MAX_PRINCIPAL_BYTES} bytes`)
}

/** True when {@link checkPrincipalId} accepts `id`. */
export function isValidPrincipalId(id: PrincipalId): boolean {
  try {
    checkPrincipalId(id)
    return true
  } catch {
    return false
  }
}

/**
 * Parse `name/instance@REALM`. Without an `@REALM` part the name is in `defaultRealm`, and
 * without that either it is refused. Escapes are not supported. Throws TesseraError(TESSERA_BAD_NAME).
 */
export function parsePrincipal(text: string, defaultRealm?: string): PrincipalId {
  if (typeof text !== 'string' || text.length === 0) badName('principal name is empty')
  const at = text.indexOf('@')
  if (at !== text.lastIndexOf('@')) badName('principal name contains more than one "@"')
  let realm: string
  let name: string
  if (at < 0) {
    if (defaultRealm === undefined) badName('principal name has no realm and no default realm is set')
    realm = defaultRealm
    name = text
  } else {
    realm = text.slice(at + 1)
    name = text.slice(0, at)
    if (realm.length === 0) badName('principal name has an empty realm after "@"')
  }
  const id: PrincipalId = { realm, components: name.split('/') }
  checkPrincipalId(id)
  return id
}

/** `["a", "b"]` -> `"a/b"`. */
export function formatName(components: readonly string[]): string {
  return components.join('/')
}

/** `{ realm: "R", components: ["a", "b"] }` -> `"a/b@R"`. */
export function formatPrincipal(id: PrincipalId): string {
  return `${formatName(id.components)}@${id.realm}`
}

/** True when both ids name the same principal (exact, case-sensitive). */
export function samePrincipal(a: PrincipalId, b: PrincipalId): boolean {
  return (
    a.realm === b.realm && a.components.length === b.components.length && a.components.every((c, i) => c === b.components[i])
  )
}

/**
 * The database key of a principal: realm then each component, each written as
 * `<UTF-8 byte length>:<text>`, concatenated. A length-prefixed code is prefix-free, so the
 * key decodes back to exactly one (realm, components): two different ids never share a key,
 * whatever characters they contain. The realm comes first so a realm is one key range.
 */
export function principalKey(id: PrincipalId): string {
  let key = lengthPrefixed(id.realm)
  for (const c of id.components) key += lengthPrefixed(c)
  return key
}

/** `<UTF-8 byte length>:<text>`: one self-delimiting part of a database key. */
export function lengthPrefixed(part: string): string {
  return `${Buffer.byteLength(part, 'utf8')}:${part}`
}

/** Decode one or more length-prefixed parts (inverse of concatenated {@link lengthPrefixed}). Throws TesseraError(TESSERA_DB) on a malformed key. */
export function splitKey(key: string | Uint8Array): string[] {
  const b = typeof key === 'string' ? Buffer.from(key, 'utf8') : Buffer.from(key.buffer, key.byteOffset, key.byteLength)
  const parts: string[] = []
  let pos = 0
  while (pos < b.length) {
    let n = 0
    let digits = 0
    while (pos < b.length && b[pos]! >= 0x30 && b[pos]! <= 0x39) {
      n = n * 10 + (b[pos]! - 0x30)
      pos++
      digits++
    }
    if (digits === 0 || digits > 6 || b[pos] !== 0x3a || pos + 1 + n > b.length)
      throw new TesseraError(TesseraErrorCode.TESSERA_DB, 'malformed key in the principal database')
    parts.push(b.toString('utf8', pos + 1, pos + 1 + n))
    pos += 1 + n
  }
  return parts
}

/** Inverse of {@link principalKey}. Throws TesseraError(TESSERA_DB) on a malformed key. */
export function principalFromKey(key: string | Uint8Array): PrincipalId {
  const [realm, ...components] = splitKey(key)
  if (realm === undefined || components.length === 0)
    throw new TesseraError(TesseraErrorCode.TESSERA_DB, 'malformed key in the principal database')
  return { realm, components }
}

/** Why a password was refused. */
export type PasswordQualityReason = 'TOO_SHORT' | 'TOO_FEW_CLASSES' | 'CONTAINS_NAME'

/**
 * A password refused by the policy. Never carries the password. (Not a TesseraError because
 * src/errors.ts has no code for it yet; the code string is stable.)
 */
export class PasswordQualityError extends Error {
  override readonly name = 'PasswordQualityError'
  readonly code = 'TESSERA_PASSWORD_QUALITY' as const
  constructor(
    readonly reason: PasswordQualityReason,
    message: string,
  ) {
    super(message)
  }
}

const CLASSES = [/\p{Ll}/u, /\p{Lu}/u, /\p{Nd}/u, /[^\p{Ll}\p{Lu}\p{Nd}]/u] as const

/** Number of character classes (lower, upper, decimal digit, other) present in `s`. */
export function characterClasses(s: string): number {
  return CLASSES.filter((re) => re.test(s)).length
}

/**
 * Throws PasswordQualityError unless `password` satisfies `policy` (or {@link DEFAULT_POLICY}):
 * at least `minLength` characters (code points, after NFC), at least `minClasses` of
 * lower/upper/digit/other, and not containing the principal's first component
 * (case-insensitive) when that is 3 characters or more.
 */
export function checkPassword(password: string, policy: Policy | undefined, id: PrincipalId): void {
  const p = policy ?? DEFAULT_POLICY
  const pw = password.normalize('NFC')
  const length = [...pw].length
  if (length < p.minLength) throw new PasswordQualityError('TOO_SHORT', `password must be at least ${p.minLength} characters long`)
  const classes = characterClasses(pw)
  if (classes < p.minClasses)
    throw new PasswordQualityError(
      'TOO_FEW_CLASSES',
      `password must mix at least ${p.minClasses} of: lower case, upper case, digits, other characters`,
    )
  const first = id.components[0]?.normalize('NFC').toLowerCase()
  if (first !== undefined && [...first].length >= 3 && pw.toLowerCase().includes(first))
    throw new PasswordQualityError('CONTAINS_NAME', 'password must not contain the principal name')
}
