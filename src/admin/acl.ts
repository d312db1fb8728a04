/** The admin ACL: MIT kadm5.acl syntax, parsed once into rules, matched first-match-wins, reloaded when the file changes. */
import { type FSWatcher, readFileSync, statSync, watch } from 'node:fs'
import path from 'node:path'
import { checkPrincipalId, checkRealm, formatPrincipal, samePrincipal } from '../db/names.js'
import { checkPolicyName } from '../db/policy.js'
import type { PrincipalAttributes, PrincipalId } from '../db/types.js'
import { TesseraError, TesseraErrorCode } from '../errors.js'
import { parseDuration } from './duration.js'

/**
 * Permission letters. MIT's a d m c i l s e (kadm5.acl(5)), plus two of ours: `p` policy
 * management (MIT's `p` is iprop, which Tessera does not have; MIT grants addpol/modpol/delpol
 * through a/m/d) and `u` reading the audit log.
 */
export const ACL_LETTERS = {
  a: 'add',
  d: 'delete',
  m: 'modify',
  c: 'change-password',
  i: 'inquire',
  l: 'list',
  s: 'setkey',
  e: 'extract',
  p: 'policy',
  u: 'audit',
} as const
export type AclLetter = keyof typeof ACL_LETTERS

/** What `x` and `*` grant: everything but `e` (as MIT: extracting keys must be given by name). */
export const ALL_BUT_EXTRACT: readonly AclLetter[] = ['a', 'd', 'm', 'c', 'i', 'l', 's', 'p', 'u']

/** Admin operations, by MIT's kadmin command names (plus our own: unlock, audit, dump, aclcheck). */
export type AdminOpName =
  | 'addprinc'
  | 'delprinc'
  | 'renprinc'
  | 'modprinc'
  | 'cpw'
  | 'getprinc'
  | 'listprincs'
  | 'ktadd'
  | 'addpol'
  | 'modpol'
  | 'delpol'
  | 'getpol'
  | 'listpols'
  | 'audit'
  | 'dump'
  | 'aclcheck'
  | 'rotate'
  | 'purgekeys'
  | 'fetchkeys'
  | 'watch'

/**
 * The letters each operation needs, and whether it names a principal as target. An operation
 * without a target is matched only by lines whose target is absent or `*` (MIT: list and
 * policy permissions are global). renprinc needs `d` on the old name and `a` on the new one
 * through a line without restrictions; ktadd with randkey needs `c` too; these two are
 * checked by the operation layer.
 */
export const OP_PERMISSIONS: Readonly<Record<AdminOpName, { letters: readonly AclLetter[]; target: boolean }>> = Object.freeze({
  addprinc: { letters: ['a'], target: true },
  delprinc: { letters: ['d'], target: true },
  renprinc: { letters: ['d', 'a'], target: true },
  modprinc: { letters: ['m'], target: true },
  cpw: { letters: ['c'], target: true },
  getprinc: { letters: ['i'], target: true },
  listprincs: { letters: ['l'], target: false },
  ktadd: { letters: ['e'], target: true },
  addpol: { letters: ['p'], target: false },
  modpol: { letters: ['p'], target: false },
  delpol: { letters: ['p'], target: false },
  getpol: { letters: ['i'], target: false },
  listpols: { letters: ['l'], target: false },
  audit: { letters: ['u'], target: false },
  dump: { letters: ['i', 'l', 'e'], target: false },
  aclcheck: { letters: ['i'], target: false },
  // A rotation is a key change (cpw -randkey -keepold); purging old versions modifies the
  // record (MIT purgekeys needs modify), and with force, which can end live tickets, `c` too.
  rotate: { letters: ['c'], target: true },
  purgekeys: { letters: ['m'], target: true },
  // A service's own keys (self only, by the self-service rule; `E` on a line matching the
  // principal as actor and target forbids it), and the event stream (each event filtered by `i`).
  fetchkeys: { letters: ['e'], target: true },
  watch: { letters: [], target: false },
})

/** Attribute names of `+flag`/`-flag` restrictions: MIT's names (and aliases) -> our attribute and the value `+` forces. */
export const ACL_FLAGS: Readonly<Record<string, { attr: Exclude<keyof PrincipalAttributes, 'jwtAudience'>; plus: boolean }>> = Object.freeze({
  allow_tix: { attr: 'disabled', plus: false },
  allow_tickets: { attr: 'disabled', plus: false },
  disallow_all_tix: { attr: 'disabled', plus: true },
  requires_preauth: { attr: 'requiresPreauth', plus: true },
  requires_pre_auth: { attr: 'requiresPreauth', plus: true },
  preauth: { attr: 'requiresPreauth', plus: true },
  allow_forwardable: { attr: 'allowForwardable', plus: true },
  forwardable: { attr: 'allowForwardable', plus: true },
  disallow_forwardable: { attr: 'allowForwardable', plus: false },
  allow_renewable: { attr: 'allowRenewable', plus: true },
  renewable: { attr: 'allowRenewable', plus: true },
  disallow_renewable: { attr: 'allowRenewable', plus: false },
  allow_svr: { attr: 'allowService', plus: true },
  service: { attr: 'allowService', plus: true },
  disallow_svr: { attr: 'allowService', plus: false },
})

/** What a line's restrictions force on an add or modify it allows (kadm5.acl(5) "restrictions"). */
export interface AclRestrictions {
  /** Attributes forced to these values. */
  attributes?: Partial<PrincipalAttributes>
  /** Policy forced to this name; null: forced empty (`-clearpolicy`). */
  policy?: string | null
  /** The principal expires at most this long after the request (`-expire`), ms. */
  expireInMs?: number
  /** The password expires at most this long after the request (`-pwexpire`), ms. */
  pwExpireInMs?: number
  /** Ticket lifetime at most (`-maxlife`), ms. */
  maxLifeMs?: number
  /** Renewable lifetime at most (`-maxrenewlife`), ms. */
  maxRenewableLifeMs?: number
}

/** A principal pattern: components and realm, each a literal, `*` (any), or in a target `*1`..`*9`. */
export interface AclPattern {
  components: string[]
  realm: string
}

/** One line of the ACL. */
export interface AclRule {
  /** 1-based line number in the file (the first line of a continued line). */
  line: number
  /** The line as written (continuations joined). */
  text: string
  /** Null: `*`, any principal. */
  actor: AclPattern | null
  allowed: ReadonlySet<AclLetter>
  /** Letters the line takes away in upper case (`E` also forbids a service's self-retrieval, fetchkeys). */
  denied?: ReadonlySet<AclLetter>
  /** Null: absent or `*`, any target (and requests without a target). */
  target: AclPattern | null
  restrictions?: AclRestrictions
}

/** The outcome of one permission check. */
export interface AclDecision {
  allowed: boolean
  letter: AclLetter
  /** The line that decided; absent when no line matched (then: refused). */
  rule?: AclRule
  /** Restrictions to impose (only when allowed and the line has some). */
  restrictions?: AclRestrictions
  /** One sentence for `kadmin acl check` and for refusals. */
  reason: string
}

const SEPARATORS = /[\s,]+/
const BACKREF = /^\*([1-9])$/

function aclError(file: string, line: number, why: string): TesseraError {
  return new TesseraError(TesseraErrorCode.TESSERA_ACL, `${file}:${line}: ${why}`)
}

function parsePattern(text: string, realm: string, isTarget: boolean, fail: (why: string) => never): AclPattern | null {
  if (text === '*') return null
  const at = text.lastIndexOf('@')
  const name = at < 0 ? text : text.slice(0, at)
  const r = at < 0 ? realm : text.slice(at + 1)
  if (r !== '*') {
    try {
      checkRealm(r)
    } catch (err) {
      fail(`bad realm in ${JSON.stringify(text)}: ${(err as Error).message}`)
    }
  }
  const components = name.split('/')
  const literal: string[] = []
  for (const c of components) {
    if (c === '*') literal.push('x')
    else if (BACKREF.test(c)) {
      if (!isTarget) fail(`${JSON.stringify(c)} in ${JSON.stringify(text)}: back-references are allowed in the target only`)
      literal.push('x')
    } else if (c.includes('*')) fail(`${JSON.stringify(c)} in ${JSON.stringify(text)}: "*" matches a whole component only`)
    else literal.push(c)
  }
  try {
    checkPrincipalId({ realm: 'X', components: literal })
  } catch (err) {
    fail(`bad principal ${JSON.stringify(text)}: ${(err as Error).message}`)
  }
  return { components, realm: r }
}

function parseRestrictions(tokens: string[], fail: (why: string) => never): AclRestrictions {
  const rs: AclRestrictions = {}
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!
    const sign = tok[0]
    if (sign !== '+' && sign !== '-') fail(`restriction ${JSON.stringify(tok)} must start with "+" or "-"`)
    const word = tok.slice(1).toLowerCase().replaceAll('-', '_')
    const flag = ACL_FLAGS[word]
    if (flag !== undefined) {
      rs.attributes ??= {}
      rs.attributes[flag.attr] = sign === '+' ? flag.plus : !flag.plus
      continue
    }
    if (sign === '-' && word === 'clearpolicy') {
      if (rs.policy !== undefined) fail('more than one policy restriction')
      rs.policy = null
      continue
    }
    const arg = tokens[++i]
    const known = sign === '-' && ['policy', 'expire', 'pwexpire', 'maxlife', 'maxrenewlife'].includes(word)
    if (!known) fail(`unknown restriction ${JSON.stringify(tok)} (see docs/admin.md for the flags Tessera supports)`)
    if (arg === undefined) fail(`restriction ${tok} needs a value`)
    if (word === 'policy') {
      if (rs.policy !== undefined) fail('more than one policy restriction')
      try {
        checkPolicyName(arg)
      } catch (err) {
        fail((err as Error).message)
      }
      rs.policy = arg
      continue
    }
    let ms: number
    try {
      ms = parseDuration(arg)
    } catch (err) {
      fail(`${tok}: ${(err as Error).message}`)
    }
    if (word === 'expire') rs.expireInMs = ms
    else if (word === 'pwexpire') rs.pwExpireInMs = ms
    else if (word === 'maxlife') rs.maxLifeMs = ms
    else rs.maxRenewableLifeMs = ms
  }
  return rs
}

function matchActor(p: AclPattern | null, actor: PrincipalId, backrefs: string[]): boolean {
  if (p === null) return true
  if (p.components.length !== actor.components.length) return false
  // The realm matches as a wildcard but records no back-reference (MIT match_princ).
  if (p.realm !== '*' && p.realm !== actor.realm) return false
  for (let i = 0; i < p.components.length; i++) {
    const c = p.components[i]!
    if (c === '*') {
      // MIT keeps at most nine back-references.
      if (backrefs.length < 9) backrefs.push(actor.components[i]!)
    } else if (c !== actor.components[i]) return false
  }
  return true
}

function matchTarget(p: AclPattern | null, target: PrincipalId | undefined, backrefs: string[]): boolean {
  if (p === null) return true
  if (target === undefined) return false
  if (p.components.length !== target.components.length) return false
  if (p.realm !== '*' && p.realm !== target.realm) return false
  for (let i = 0; i < p.components.length; i++) {
    const c = p.components[i]!
    const t = target.components[i]!
    if (c === '*') continue
    const ref = BACKREF.exec(c)
    if (ref !== null) {
      const n = Number(ref[1]) - 1
      if (n >= backrefs.length || backrefs[n] !== t) return false
    } else if (c !== t) return false
  }
  return true
}

function describe(letter: AclLetter): string {
  return `'${letter}' (${ACL_LETTERS[letter]})`
}

function onTarget(target: PrincipalId | undefined): string {
  return target === undefined ? '' : ` on ${formatPrincipal(target)}`
}

/** Options of {@link Acl.parse}. */
export interface AclParseOptions {
  /** Realm of patterns written without `@REALM`. */
  realm: string
  /** File name used in error messages. @default "kadm5.acl" */
  file?: string
}

/** A parsed ACL: rules in file order. Immutable. */
export class Acl {
  readonly rules: readonly AclRule[]
  readonly realm: string

  constructor(rules: readonly AclRule[], realm: string) {
    this.rules = Object.freeze([...rules])
    this.realm = realm
  }

  /**
   * Parse kadm5.acl text: `principal permissions [target [restrictions]]` per line, fields
   * separated by white space or commas; blank lines and lines starting with `#` are skipped, a
   * `#` token after white space starts a comment, a line ending in `\` continues on the next.
   * Throws TesseraError(TESSERA_ACL) naming the file and line of the first error.
   */
  static parse(text: string, opts: AclParseOptions): Acl {
    const file = opts.file ?? 'kadm5.acl'
    const lines = text.split(/\r?\n/)
    const rules: AclRule[] = []
    for (let i = 0; i < lines.length; i++) {
      const lineNo = i + 1
      let raw = lines[i]!
      while (raw.endsWith('\\') && i + 1 < lines.length) raw = `${raw.slice(0, -1)} ${lines[++i]!}`
      const fail: (why: string) => never = (why) => {
        throw aclError(file, lineNo, why)
      }
      const hash = raw.search(/(^|\s)#/)
      const body = (hash < 0 ? raw : raw.slice(0, hash)).trim()
      if (body.length === 0) continue
      const tokens = body.split(SEPARATORS).filter((t) => t.length > 0)
      const [who, perms, target, ...rest] = tokens as [string, string | undefined, string | undefined, ...string[]]
      if (perms === undefined) fail('a line needs a principal and permissions')
      const allowed = new Set<AclLetter>()
      const denied = new Set<AclLetter>()
      for (const ch of perms) {
        const lower = ch.toLowerCase()
        const grant = ch === lower
        const letters: readonly AclLetter[] = lower === 'x' || ch === '*' ? ALL_BUT_EXTRACT : lower in ACL_LETTERS ? [lower as AclLetter] : []
        if (letters.length === 0) fail(`unknown permission ${JSON.stringify(ch)} in ${JSON.stringify(perms)} (letters: ${Object.keys(ACL_LETTERS).join('')}, x, *)`)
        // Left to right: a lower-case letter grants, an upper-case one takes away (MIT parse_entry).
        for (const l of letters) grant ? allowed.add(l) : allowed.delete(l)
        for (const l of letters) grant ? denied.delete(l) : denied.add(l)
      }
      const rule: AclRule = {
        line: lineNo,
        text: body,
        actor: parsePattern(who, opts.realm, false, fail),
        allowed,
        target: target === undefined ? null : parsePattern(target, opts.realm, true, fail),
      }
      if (denied.size > 0) rule.denied = denied
      if (rest.length > 0) rule.restrictions = parseRestrictions(rest, fail)
      rules.push(Object.freeze(rule))
    }
    return new Acl(rules, opts.realm)
  }

  /** The first rule whose actor and target patterns match (whatever it allows), or undefined. */
  find(actor: PrincipalId, target?: PrincipalId): AclRule | undefined {
    for (const rule of this.rules) {
      const backrefs: string[] = []
      if (matchActor(rule.actor, actor, backrefs) && matchTarget(rule.target, target, backrefs)) return rule
    }
    return undefined
  }

  /**
   * Is `letter` granted to `actor` on `target` (undefined: an operation without a target)?
   * The first line matching actor and target decides, as in MIT: a later line never adds what
   * an earlier matching line leaves out.
   */
  check(actor: PrincipalId, letter: AclLetter, target?: PrincipalId): AclDecision {
    const rule = this.find(actor, target)
    const who = formatPrincipal(actor)
    if (rule === undefined)
      return { allowed: false, letter, reason: `no ACL line matches ${who}${onTarget(target)}: ${describe(letter)} is not granted` }
    const allowed = rule.allowed.has(letter)
    const d: AclDecision = {
      allowed,
      letter,
      rule,
      reason: allowed
        ? `line ${rule.line} (${rule.text}) grants ${describe(letter)} to ${who}${onTarget(target)}`
        : `line ${rule.line} (${rule.text}) is the first to match ${who}${onTarget(target)} and does not grant ${describe(letter)}`,
    }
    if (allowed && rule.restrictions !== undefined) d.restrictions = rule.restrictions
    return d
  }

  /** True when `actor` holds every letter of `x` on every target (the "full admin" of the last-admin rule). */
  isFullAdmin(actor: PrincipalId): boolean {
    return ALL_BUT_EXTRACT.every((l) => this.check(actor, l).allowed)
  }
}

/** How an operation was decided, for `kadmin acl check ACTOR OPERATION TARGET`. */
export interface AclExplanation {
  allowed: boolean
  op: AdminOpName
  /** One decision per letter needed (renprinc: `d` on the old name, `a` on the new one). */
  decisions: AclDecision[]
  /** Set when the self-service rule decided instead of the ACL. */
  selfService?: string
  reason: string
}

/** Options of {@link explain}. */
export interface ExplainOptions {
  /** renprinc: the new name. */
  newTarget?: PrincipalId
  /** getpol: the policy asked for, and the actor's own policy (self-service). */
  policy?: string
  actorPolicy?: string
  /** ktadd: the key is also changed (needs `c`). */
  randkey?: boolean
  /** purgekeys: versions that may still open a valid ticket are purged too (needs `c`). */
  force?: boolean
  /** modprinc: a rotation schedule is set or cleared (needs `c`: the KDC will change the key). */
  rotation?: boolean
}

/** The self-service rule that allows `op` to `actor` without an ACL line, or undefined. */
export function selfService(op: AdminOpName, actor: PrincipalId, target: PrincipalId | undefined, o: ExplainOptions = {}): string | undefined {
  const self = target !== undefined && samePrincipal(actor, target)
  if (self && op === 'getprinc') return 'any principal may read its own record'
  if (self && op === 'cpw') return 'any principal may change its own password or key (policy permitting)'
  if (op === 'getpol' && o.policy !== undefined && o.policy === o.actorPolicy) return 'any principal may read its own policy'
  if (self && op === 'fetchkeys') return 'a service may fetch its own current and next keys'
  if (op === 'watch') return 'any principal may watch the events of its own keys'
  return undefined
}

/** Which rule decides `op` for `actor` on `target`, and why (the ACL plus the self-service rules). */
export function explain(acl: Acl, actor: PrincipalId, op: AdminOpName, target?: PrincipalId, o: ExplainOptions = {}): AclExplanation {
  const self = selfService(op, actor, target, o)
  if (op === 'fetchkeys' && self !== undefined) {
    // Self-retrieval is allowed unless the first line matching the principal (as actor and target) denies `E`.
    const rule = acl.find(actor, target)
    if (rule?.denied?.has('e')) {
      const reason = `line ${rule.line} (${rule.text}) denies E (extract) to ${formatPrincipal(actor)}, which forbids fetching its own keys`
      return { allowed: false, op, decisions: [{ allowed: false, letter: 'e', rule, reason }], reason: `refused: ${reason}` }
    }
  }
  const spec = OP_PERMISSIONS[op]
  const t = spec.target ? target : undefined
  const decisions: AclDecision[] = []
  if (op === 'renprinc') {
    decisions.push(acl.check(actor, 'd', t))
    const add = acl.check(actor, 'a', o.newTarget)
    if (add.allowed && add.restrictions !== undefined)
      decisions.push({ ...add, allowed: false, reason: `${add.reason}, but with restrictions, which a rename cannot honour (MIT)` })
    else decisions.push(add)
  } else {
    for (const l of spec.letters) decisions.push(acl.check(actor, l, t))
    if (op === 'ktadd' && o.randkey === true) decisions.push(acl.check(actor, 'c', t))
    if (op === 'purgekeys' && o.force === true) decisions.push(acl.check(actor, 'c', t))
    if (op === 'modprinc' && o.rotation === true) decisions.push(acl.check(actor, 'c', t))
  }
  const byAcl = decisions.every((d) => d.allowed)
  if (self !== undefined && !byAcl) return { allowed: true, op, decisions, selfService: self, reason: `allowed: ${self}` }
  const firstNo = decisions.find((d) => !d.allowed)
  return {
    allowed: byAcl,
    op,
    decisions,
    reason: byAcl ? `allowed: ${decisions.map((d) => d.reason).join('; ')}` : `refused: ${firstNo!.reason}`,
  }
}

/** The changes an add or modify asks for, in the form restrictions apply to. */
export interface PrincipalChanges {
  attributes?: Partial<PrincipalAttributes>
  /** A policy name, or null to clear it. */
  policy?: string | null
  /** Principal expiry, ms since epoch; null to clear. */
  expiresAt?: number | null
  /** Password expiry, ms since epoch; null to clear. */
  passwordExpiresAt?: number | null
  maxLife?: number
  maxRenewableLife?: number
}

/**
 * Impose a line's restrictions on an add or modify (MIT impose_restrictions): forced flags
 * and policy replace what was asked; each limit replaces a value that was not asked for or
 * that is larger. Returns a new object.
 */
export function applyRestrictions(rs: AclRestrictions | undefined, ch: PrincipalChanges, now: number): PrincipalChanges {
  if (rs === undefined) return ch
  const out: PrincipalChanges = { ...ch }
  if (rs.attributes !== undefined) out.attributes = { ...ch.attributes, ...rs.attributes }
  if (rs.policy !== undefined) out.policy = rs.policy
  const cap = (asked: number | null | undefined, limit: number): number =>
    asked === undefined || asked === null || asked > limit ? limit : asked
  if (rs.expireInMs !== undefined) out.expiresAt = cap(ch.expiresAt, now + rs.expireInMs)
  if (rs.pwExpireInMs !== undefined) out.passwordExpiresAt = cap(ch.passwordExpiresAt, now + rs.pwExpireInMs)
  if (rs.maxLifeMs !== undefined) out.maxLife = cap(ch.maxLife, rs.maxLifeMs)
  if (rs.maxRenewableLifeMs !== undefined) out.maxRenewableLife = cap(ch.maxRenewableLife, rs.maxRenewableLifeMs)
  return out
}

/** The ACL `kdc init` writes: the initial administrator gets everything, extract included. */
export function defaultAcl(adminPrincipal: PrincipalId): string {
  return [
    '# kadm5.acl: who may administer this realm (syntax and letters: docs/admin.md).',
    '# principal  permissions  [target  [restrictions]]   first matching line wins',
    '# a add  d delete  m modify  c change password/key  i inquire  l list  s set key',
    '# e extract keys  p policies  u audit log;  x or * = all but e;  upper case = deny',
    `${formatPrincipal(adminPrincipal)}  *e`,
    '',
  ].join('\n')
}

/** Where reload problems are reported (a winston logger fits). */
export interface AclLog {
  error(message: string, meta?: Record<string, unknown>): void
  info?(message: string, meta?: Record<string, unknown>): void
}

/** Options of {@link AclFile.open}. */
export interface AclFileOptions {
  realm: string
  log?: AclLog
  /** Also watch the directory (fs.watch) to reload as soon as the file changes. @default true */
  watch?: boolean
}

interface FileStamp {
  mtimeMs: number
  ctimeMs: number
  size: number
  ino: number
}

/** An ACL file edited in place is read once it has been still this long (ms). */
export const ACL_SETTLE_MS = 250

function stamp(file: string): FileStamp | undefined {
  try {
    const st = statSync(file)
    return { mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, size: st.size, ino: st.ino }
  } catch {
    return undefined
  }
}

function sameStamp(a: FileStamp | undefined, b: FileStamp | undefined): boolean {
  if (a === undefined || b === undefined) return a === b
  return a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs && a.size === b.size && a.ino === b.ino
}

/**
 * The ACL file of a realm, reloaded when it changes: every {@link current} compares the file's
 * stat (mtime, ctime, size, inode) with the loaded one and re-reads it if it differs, so an
 * edit applies to the next decision without a restart; fs.watch triggers the same check early.
 * A new file that does not parse is logged (file and line) and the last good ACL stays in use.
 * A missing file means an empty ACL: nobody has admin rights (self-service still works).
 */
export class AclFile {
  readonly file: string
  readonly #realm: string
  readonly #log: AclLog | undefined
  #acl: Acl
  #stamp: FileStamp | undefined
  #error: TesseraError | undefined
  #watcher: FSWatcher | undefined
  #recheck: NodeJS.Timeout | undefined
  #closed = false

  private constructor(file: string, realm: string, log: AclLog | undefined, acl: Acl, st: FileStamp | undefined) {
    this.file = file
    this.#realm = realm
    this.#log = log
    this.#acl = acl
    this.#stamp = st
  }

  /** Load the file. Throws TesseraError(TESSERA_ACL) if it exists and does not parse (no last good ACL to fall back on). */
  static open(file: string, opts: AclFileOptions): AclFile {
    const st = stamp(file)
    const acl = st === undefined ? new Acl([], opts.realm) : Acl.parse(readFileSync(file, 'utf8'), { realm: opts.realm, file })
    if (st === undefined) opts.log?.error(`ACL file ${file} does not exist: no principal has admin rights (self-service only)`)
    const f = new AclFile(file, opts.realm, opts.log, acl, st)
    if (opts.watch ?? true) {
      try {
        f.#watcher = watch(path.dirname(file), { persistent: false }, (_e, name) => {
          if (name === null || name === path.basename(file)) f.current()
        })
        f.#watcher.on('error', () => f.#watcher?.close())
      } catch {
        // Not every file system can be watched; the stat check on each decision still applies.
      }
    }
    return f
  }

  /** The ACL in force now (re-read first if the file changed). */
  current(): Acl {
    const st = stamp(this.file)
    if (!sameStamp(st, this.#stamp)) this.#reload(st)
    return this.#acl
  }

  /** The error of the last reload attempt, if the file in place does not parse (the previous ACL is in use). */
  get error(): TesseraError | undefined {
    this.current()
    return this.#error
  }

  /** Stop watching. */
  close(): void {
    this.#closed = true
    this.#watcher?.close()
    this.#watcher = undefined
    if (this.#recheck !== undefined) clearTimeout(this.#recheck)
    this.#recheck = undefined
  }

  #recheckAfter(ms: number): void {
    if (this.#closed || this.#recheck !== undefined) return
    this.#recheck = setTimeout(() => {
      this.#recheck = undefined
      if (!this.#closed) this.current()
    }, Math.max(1, Math.ceil(ms)))
    this.#recheck.unref()
  }

  #reload(st: FileStamp | undefined): void {
    // An edit in place (same inode) may be caught half-written: a truncated file would read as
    // "no rules", a line cut short as a wider grant (`bob ci svc/*` read as `bob ci`). Such a
    // file is read only once it has not changed for ACL_SETTLE_MS, and only if it did not
    // change while being read. A file renamed into place (a new inode: what editors and
    // `mv` do) is complete at once.
    if (st !== undefined && this.#stamp !== undefined && st.ino === this.#stamp.ino) {
      const age = Date.now() - Math.max(st.mtimeMs, st.ctimeMs)
      if (age < ACL_SETTLE_MS) {
        this.#recheckAfter(ACL_SETTLE_MS - age)
        return
      }
    }
    if (st === undefined) {
      this.#stamp = st
      this.#acl = new Acl([], this.#realm)
      this.#error = undefined
      this.#log?.error(`ACL file ${this.file} was removed: no principal has admin rights (self-service only)`)
      return
    }
    try {
      const text = readFileSync(this.file, 'utf8')
      if (!sameStamp(stamp(this.file), st)) {
        // Changed while we read it: try again once it is still.
        this.#recheckAfter(ACL_SETTLE_MS)
        return
      }
      this.#stamp = st
      this.#acl = Acl.parse(text, { realm: this.#realm, file: this.file })
      this.#error = undefined
      this.#log?.info?.(`ACL file ${this.file} reloaded (${this.#acl.rules.length} rules)`)
    } catch (err) {
      this.#error =
        err instanceof TesseraError ? err : new TesseraError(TesseraErrorCode.TESSERA_ACL, `cannot read ${this.file}`, { cause: err })
      this.#log?.error(`${this.#error.message}; keeping the previous ACL`)
    }
  }
}
