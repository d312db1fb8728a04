/** proto/PROTOCOL.md stays in step with proto/*.ts and the vectors: tables, numbers, names. */
import { readdirSync, readFileSync } from 'node:fs'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { KdcOption, PaType, TicketFlag } from '../../proto/flags.js'
import { buildJsonSchema } from '../../proto/gen-json-schema.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { InnerSchemas } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { ADMIN_ARGS, type AdminArgSpec } from '../../src/admin/listener.js'

const doc = readFileSync(new URL('../../proto/PROTOCOL.md', import.meta.url), 'utf8')
const vectorsDir = new URL('../../proto/vectors/', import.meta.url)
const hs = JSON.parse(readFileSync(new URL('handshake.json', vectorsDir), 'utf8'))
const res = JSON.parse(readFileSync(new URL('resumption.json', vectorsDir), 'utf8'))
const timeSig = JSON.parse(readFileSync(new URL('time-signature.json', vectorsDir), 'utf8'))

type Node = Record<string, unknown>
const defs = buildJsonSchema().$defs as Record<string, Node>

/** The rows (cells) of the first table after a `#### name` heading. */
function fieldTable(name: string): string[][] {
  const at = doc.indexOf(`\n#### ${name}\n`)
  expect(at, `PROTOCOL.md has no "#### ${name}" heading`).to.be.greaterThan(-1)
  const lines = doc.slice(at).split('\n').slice(2)
  const rows: string[][] = []
  let started = false
  for (const line of lines) {
    if (line.startsWith('|')) {
      started = true
      rows.push(line.split('|').slice(1, -1).map((c) => c.trim()))
    } else if (started) break
  }
  return rows.slice(2) // header and separator
}

function pow(n: number): string {
  if (n === Number.MAX_SAFE_INTEGER) return '2^53-1'
  if (n === 0xffffffff) return '2^32-1'
  if (n === 0xffff) return '2^16-1'
  if (n === 1 << 20) return '2^20'
  return String(n)
}

/** The "limits" cell expected for a field schema. */
function limits(s: Node): string {
  if (s.const !== undefined) return `= ${JSON.stringify(s.const)}`
  if (s['x-msgpack'] === 'bin') return s.minBytes === s.maxBytes ? `${s.minBytes} bytes` : `${s.minBytes}..${s.maxBytes} bytes`
  if (s.type === 'integer') return `0..${pow(s.maximum as number)}`
  if (s.type === 'string') return s.minLength ? `${s.minLength}..${s.maxLength} chars` : `≤ ${s.maxLength} chars`
  if (s.$ref === '#/$defs/PrincipalName') return '1..8 components of 1..255 UTF-8 bytes'
  if (s.type === 'array') return `${s.minItems ?? 0}..${s.maxItems} items`
  if (s.type === 'object' && s.patternProperties) return `≤ ${s.maxProperties} entries`
  return ''
}

/** Rows of every table whose first cells are `| n | NAME |`. */
function hasRow(cells: string[]): boolean {
  return doc.includes(`| ${cells.join(' | ')} |`)
}

/** Section numbers of the document's headings: "## 8. Exchanges" -> 8, "### 8.1 AS" -> 8.1, "#### 14.3.1 …" -> 14.3.1. */
function headingNumbers(): Set<string> {
  return new Set([...doc.matchAll(/^#{2,4} (\d+(?:\.\d+)*)\.? /gm)].map((m) => m[1]!))
}

/** Every "§N.M" of the document that refers to this document (not to an RFC's section), with its line. */
function sectionRefs(): { ref: string; line: number; context: string }[] {
  const out: { ref: string; line: number; context: string }[] = []
  const lines = doc.split('\n')
  lines.forEach((text, i) => {
    for (const m of text.matchAll(/§(\d+(?:\.\d+)*)/g)) {
      const before = text.slice(0, m.index)
      // "RFC 4120 §3.2.3", "RFC 7748 §5.2 and §6.1", "RFC 8446 §8, E.5": another document's sections.
      if (/RFC \d+,? (?:§[\d.]+(?:,| and| or)? )*$/.test(before)) continue
      out.push({ ref: m[1]!, line: i + 1, context: text.trim() })
    }
  })
  return out
}

/** The text of the section whose heading starts with `prefix` (e.g. "### 9.2"), up to the next heading of any level. */
function sectionText(prefix: string): string {
  const at = doc.indexOf(`\n${prefix}`)
  expect(at, `no heading ${prefix}`).to.be.greaterThan(-1)
  const rest = doc.slice(at + 1)
  const end = rest.slice(1).search(/\n#{2,4} /)
  return end < 0 ? rest : rest.slice(0, end + 1)
}

describe('proto/PROTOCOL.md cross-references', () => {
  it('names an existing heading in every §N.M reference', () => {
    const headings = headingNumbers()
    expect(headings.size).to.be.greaterThan(30)
    const refs = sectionRefs()
    expect(refs.length).to.be.greaterThan(50)
    const dangling = refs.filter((r) => !headings.has(r.ref)).map((r) => `line ${r.line}: §${r.ref} in "${r.context}"`)
    expect(dangling, dangling.join('\n')).to.deep.equal([])
  })

  it('lists in its contents exactly the numbered top-level sections, in order', () => {
    const contents = sectionText('## Contents')
    const listed = [...contents.matchAll(/^(\d+)\. /gm)].map((m) => m[1])
    const top = [...doc.matchAll(/^## (\d+)\. /gm)].map((m) => m[1])
    expect(listed).to.deep.equal(top)
    // Sub-sections the contents name ("resumption, §3.6") exist too: checked with every other reference above.
  })

  it('numbers sub-sections under an existing parent, without gaps', () => {
    const nums = [...headingNumbers()]
    for (const n of nums) {
      const parts = n.split('.')
      if (parts.length === 1) continue
      const parent = parts.slice(0, -1).join('.')
      expect(nums, `parent of ${n}`).to.include(parent)
      const last = Number(parts.at(-1))
      if (last > 1) expect(nums, `${n} follows ${parent}.${last - 1}`).to.include(`${parent}.${last - 1}`)
    }
  })

  it('points the SecureSession handshake at the AP checks of §14.2 and AdminBody.args at no empty section', () => {
    expect(sectionText('#### 14.3.1')).to.include("§14.2's table")
    expect(sectionText('#### 14.3.1')).to.not.match(/of §2\b/)
    const adminBody = fieldTable('AdminBody').find((r) => r[0] === '`args`')!
    expect(adminBody[4]).to.not.include('§13')
  })

  it('lists in §9.2 every code that §9.1 marks "closes", and no code that stays open', () => {
    const closing = fieldTableAfter('### 9.1')
      .filter((r) => r[4]!.includes('closes'))
      .map((r) => r[0]!)
    expect(closing).to.include.members(['61', '100', '101', '102', '103', '105', '106', '108'])
    const bullet = sectionText('### 9.2').split('\n- ')[1]!
    expect(bullet).to.match(/^\*\*Errors that close\*\*/)
    for (const code of closing) expect(bullet, `§9.2 names ${code}`).to.include(`(${code})`)
    const staysOpen = fieldTableAfter('### 9.1').filter((r) => r[4] === 'stays open').map((r) => r[0]!)
    for (const code of staysOpen) expect(bullet, `§9.2 does not list ${code} as closing`).to.not.include(`(${code})`)
  })
})

/** The rows of the first table after the heading starting with `heading`. */
function fieldTableAfter(heading: string): string[][] {
  const lines = sectionText(heading).split('\n')
  const rows: string[][] = []
  for (const line of lines) if (line.startsWith('|')) rows.push(line.split('|').slice(1, -1).map((c) => c.trim()))
  return rows.slice(2)
}

describe('proto/PROTOCOL.md', () => {
  const documented = [...Object.keys(MsgType), ...Object.keys(InnerSchemas), 'Ticket', 'PaData', 'ErrorData', 'KdfParams']

  for (const name of documented) {
    it(`documents every field of ${name}, in schema order, with its limits and whether it is required`, () => {
      const schema = defs[name]!
      const props = schema.properties as Record<string, Node>
      const required = new Set(schema.required as string[])
      const rows = fieldTable(name)
      expect(rows.map((r) => r[0]), name).to.deep.equal(Object.keys(props).map((f) => `\`${f}\``))
      for (const r of rows) {
        const f = r[0]!.slice(1, -1)
        expect(r[2], `${name}.${f} limits`).to.equal(limits(props[f]!))
        expect(r[3], `${name}.${f} required`).to.equal(required.has(f) ? 'yes' : 'opt')
        expect(r[4], `${name}.${f} meaning`).to.not.equal('')
      }
    })
  }

  it('lists every message type number', () => {
    for (const [name, t] of Object.entries(MsgType)) expect(hasRow([String(t), name]), `${t} ${name}`).to.equal(true)
  })

  it('lists every error code in the §9 table', () => {
    for (const [name, code] of Object.entries(ErrorCode)) expect(hasRow([String(code), name]), `${code} ${name}`).to.equal(true)
  })

  it('lists every key usage in the §5 table', () => {
    for (const [name, u] of Object.entries(KeyUsage)) expect(hasRow([String(u), name]), `${u} ${name}`).to.equal(true)
  })

  it('lists every ticket flag, KDC option and pre-auth type', () => {
    for (const set of [TicketFlag, KdcOption])
      for (const [name, bit] of Object.entries(set)) expect(hasRow([String(Math.log2(bit)), String(bit), name]), name).to.equal(true)
    for (const [name, n] of Object.entries(PaType)) expect(hasRow([String(n), name]), name).to.equal(true)
  })

  it('names every vector file in the §12 index', () => {
    const files = readdirSync(vectorsDir).filter((f) => f.endsWith('.json'))
    expect(files.length).to.be.greaterThan(5)
    for (const f of files) expect(doc, f).to.include(`| \`${f}\` |`)
  })

  it('quotes the handshake worked example and the realm file keys from the vectors', () => {
    expect(doc).to.include(`S_pub   = ${hs.serverStatic.publicKey}`)
    expect(doc).to.include(`h       = ${hs.h}`)
    expect(doc).to.include(`k_c2s   = ${hs.k_c2s}`)
    expect(doc).to.include(`k_s2c   = ${hs.k_s2c}`)
    // §3.6's worked example: the resumption that continues it
    expect(doc).to.include(`rms     = ${hs.rms}`)
    expect(doc).to.include(`h       = ${res.h}`)
    expect(doc).to.include(`k_early = ${res.k_early}`)
    expect(doc).to.include(`h2      = ${res.h2}`)
    expect(doc).to.include(`k_c2s   = ${res.k_c2s}`)
    expect(res.rms).to.equal(hs.rms)
    expect(doc).to.include(`"transportKey": "${hs.serverStatic.publicKey}"`)
    expect(doc).to.include(`"signingKey": "${timeSig.signingKey}"`)
  })

  it('states the constructions exactly as the code uses them', () => {
    for (const s of [
      'SHA-256("tessera-nk-v1" || S_pub || Ec_pub || Es_pub)',
      'HKDF-SHA256(IKM = es || ee, salt = h, info = "tessera-nk-v1 keys", L = 160)',
      'SHA-256("tessera-resume-v1" || S_pub || cr || uint32be(age) || tk)',
      'HKDF-SHA256(IKM = rms, salt = h, info = "tessera-resume-v1 early", L = 32)',
      'HKDF-SHA256(IKM = rms, salt = h2, info = "tessera-resume-v1 keys", L = 160)',
      'secretbox(uint32be(lifetime_s) || tk, 24 zero bytes, k_res)',
      'uint64be(n) || 16 zero bytes',
      'HMAC-SHA256(key, "tessera/usage/v1" || uint32be(usage))',
      '"tessera-time-v1" || nonce(32) || uint64be(recv) || uint64be(xmit) || uint32be(radius)',
    ])
      expect(doc).to.include(s)
  })
})

describe('proto/PROTOCOL.md §8.5 admin operations', () => {
  const section = sectionText('#### 8.5.4')
  const WORD: Record<AdminArgSpec['type'], string> = { str: 'str', 'str?': 'str or nil', bool: 'bool', uint: 'uint', 'uint?': 'uint or nil', map: 'map' }

  /** The args table under "##### `op`", as [arg, type, req.] rows. */
  function argsTable(op: string): string[][] {
    const at = section.indexOf(`\n##### \`${op}\` `)
    expect(at, `§8.5.4 has no "##### \`${op}\`" heading`).to.be.greaterThan(-1)
    const rest = section.slice(at + 1)
    const end = rest.slice(1).search(/\n##### /)
    const rows: string[][] = []
    for (const line of (end < 0 ? rest : rest.slice(0, end + 1)).split('\n'))
      if (line.startsWith('|')) rows.push(line.split('|').slice(1, -1).map((c) => c.trim()))
    return rows.slice(2).map((r) => r.slice(0, 3))
  }

  it('has a heading for exactly the operations the admin service serves', () => {
    const documented = [...section.matchAll(/^##### `([a-z-]+)` /gm)].map((m) => m[1])
    expect(documented).to.deep.equal(Object.keys(ADMIN_ARGS))
  })

  for (const [op, spec] of Object.entries(ADMIN_ARGS)) {
    it(`documents the args of ${op} with the types and requirements the service checks`, () => {
      const want = Object.entries(spec).map(([k, s]) => [`\`${k}\``, WORD[s.type], s.required ? 'yes' : 'opt'])
      expect(argsTable(op)).to.deep.equal(want)
    })
  }

  it('lists in the refusal table every code an AdminResult carries', () => {
    const rows = sectionText('#### 8.5.2').split('\n').filter((l) => /^\| \d+ \|/.test(l)).map((l) => l.split('|')[1]!.trim())
    expect(rows).to.have.members(['107', '109', '110', '111', '112', '113', '114', '29'])
  })
})
