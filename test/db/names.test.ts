import { expect } from 'chai'
import fc from 'fast-check'
import {
  checkPassword,
  checkPrincipalId,
  formatName,
  formatPrincipal,
  PasswordQualityError,
  parsePrincipal,
  principalFromKey,
  principalKey,
} from '../../src/db/names.js'
import { DEFAULT_POLICY } from '../../src/db/policy.js'
import type { Policy, PrincipalId } from '../../src/db/types.js'
import { TesseraError, TesseraErrorCode } from '../../src/errors.js'
import { throwsWith } from './helpers/records.js'

const id = (realm: string, ...components: string[]): PrincipalId => ({ realm, components })
const BAD = TesseraErrorCode.TESSERA_BAD_NAME

/** The TESSERA_BAD_NAME error `fn` throws. */
function badName(fn: () => unknown): TesseraError {
  try {
    fn()
  } catch (err) {
    expect(err).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(BAD)
    return err as TesseraError
  }
  throw new Error('expected a TESSERA_BAD_NAME error')
}

describe('parsePrincipal', () => {
  const parses = (text: string, expected: PrincipalId, defaultRealm?: string) =>
    it(`parses ${JSON.stringify(text)}`, () => {
      expect(parsePrincipal(text, defaultRealm)).to.deep.equal(expected)
    })
  const rejects = (text: string, defaultRealm?: string) =>
    it(`rejects ${JSON.stringify(text)} with TESSERA_BAD_NAME`, () => throwsWith(() => parsePrincipal(text, defaultRealm), BAD))

  parses('alice@EXAMPLE.COM', id('EXAMPLE.COM', 'alice'))
  parses('HTTP/www.example.com@EXAMPLE.COM', id('EXAMPLE.COM', 'HTTP', 'www.example.com'))
  parses('alice', id('EXAMPLE.COM', 'alice'), 'EXAMPLE.COM')
  parses('krbtgt/OTHER.ORG@EXAMPLE.COM', id('EXAMPLE.COM', 'krbtgt', 'OTHER.ORG'), 'IGNORED.REALM')
  parses('Alice@example.com', id('example.com', 'Alice'))
  rejects('alice')
  rejects('')
  rejects('alice@')
  rejects('a@b@EXAMPLE.COM')
  rejects('/admin@EXAMPLE.COM')
  rejects('alice/@EXAMPLE.COM')
  rejects('a//b@EXAMPLE.COM')
  rejects('a\\/b@EXAMPLE.COM')
  rejects('alice@EXAMPLE COM')
  rejects('alice', 'BAD REALM')
})

describe('formatPrincipal', () => {
  it('formats name/instance@REALM and round-trips through parsePrincipal', () => {
    const p = id('EXAMPLE.COM', 'HTTP', 'www.example.com')
    expect(formatPrincipal(p)).to.equal('HTTP/www.example.com@EXAMPLE.COM')
    expect(parsePrincipal(formatPrincipal(p))).to.deep.equal(p)
  })

  it('formats the components alone with formatName', () => {
    expect(formatName(['a', 'b', 'c'])).to.equal('a/b/c')
    expect(formatName(['alice'])).to.equal('alice')
  })
})

describe('checkPrincipalId', () => {
  const accepts = (what: string, p: PrincipalId) =>
    it(`accepts ${what}`, () => {
      expect(() => checkPrincipalId(p)).not.to.throw()
    })
  const rejects = (what: string, p: PrincipalId) =>
    it(`rejects ${what} with TESSERA_BAD_NAME`, () => throwsWith(() => checkPrincipalId(p), BAD))

  accepts('a one-component name', id('EXAMPLE.COM', 'alice'))
  accepts('8 components', id('R', '1', '2', '3', '4', '5', '6', '7', '8'))
  accepts('a 255-byte component', id('R', 'x'.repeat(255)))
  accepts('a component of 255 bytes in 2-byte characters', id('R', 'é'.repeat(127)))
  accepts('NFC non-ASCII text', id('EXAMPLE.COM', 'Zoë', 'Ελλάδα'))
  accepts('upper and lower case', id('Example.Com', 'Alice'))
  accepts('a realm with digits, "_" and "-"', id('my-realm_2.example.com', 'a'))
  accepts('a 255-character realm', id('R'.repeat(255), 'a'))
  accepts('emoji (outside the BMP)', id('R', '\u{1F600}'))

  rejects('no components', id('R'))
  rejects('9 components', id('R', '1', '2', '3', '4', '5', '6', '7', '8', '9'))
  rejects('an empty component', id('R', 'a', ''))
  rejects('a 256-byte component', id('R', 'x'.repeat(256)))
  rejects('a 256-byte component in 2-byte characters', id('R', 'é'.repeat(128)))
  rejects('NUL', id('R', 'a\u0000b'))
  rejects('a C0 control (newline)', id('R', 'a\nb'))
  rejects('a C0 control (0x1f)', id('R', 'a\u001fb'))
  rejects('DEL', id('R', 'a\u007fb'))
  rejects('a C1 control (NEL)', id('R', 'a\u0085b'))
  rejects('a C1 control (0x9f)', id('R', 'a\u009fb'))
  rejects('"/" inside a component', id('R', 'a/b'))
  rejects('"@" inside a component', id('R', 'a@b'))
  rejects('"\\" inside a component', id('R', 'a\\b'))
  rejects('a non-NFC component (e + combining acute)', id('R', 'Zoe\u0308'))
  rejects('a non-NFC component (Angstrom sign)', id('R', '\u212b'))
  rejects('an unpaired high surrogate', id('R', 'a\ud800'))
  rejects('an unpaired low surrogate', id('R', '\udc00a'))
  rejects('a bidi override', id('R', 'admin\u202egpj'))
  rejects('a whole name over 1024 bytes', id('R', 'a'.repeat(255), 'b'.repeat(255), 'c'.repeat(255), 'd'.repeat(255), 'e'))
  rejects('an empty realm', id('', 'a'))
  rejects('a realm with a space', id('EXAMPLE COM', 'a'))
  rejects('a realm with non-ASCII', id('EXAMPLÉ.COM', 'a'))
  rejects('a realm with "@"', id('A@B', 'a'))
  rejects('a realm starting with "."', id('.EXAMPLE.COM', 'a'))
  rejects('a realm ending with "."', id('EXAMPLE.COM.', 'a'))
  rejects('a realm with ".."', id('EXAMPLE..COM', 'a'))
  rejects('a 256-character realm', id('R'.repeat(256), 'a'))
  rejects('components that are not strings', { realm: 'R', components: [1 as unknown as string] })

  describe('invisible and line-separator characters (issue 9 item 10)', () => {
    // Each displays as nothing (or as a line break): "ad\u200Bmin" looks like "admin".
    for (const [what, ch] of [
      ['a zero-width space U+200B', '\u200b'],
      ['a zero-width non-joiner U+200C', '\u200c'],
      ['a zero-width joiner U+200D', '\u200d'],
      ['a word joiner U+2060', '\u2060'],
      ['an invisible times U+2062', '\u2062'],
      ['a soft hyphen U+00AD', '\u00ad'],
      ['a byte order mark U+FEFF', '\ufeff'],
      ['a combining grapheme joiner U+034F', '\u034f'],
      ['a Mongolian vowel separator U+180E', '\u180e'],
      ['a Hangul filler U+3164', '\u3164'],
      ['a variation selector U+FE0F', '\ufe0f'],
      ['a tag character U+E0061', '\u{e0061}'],
      ['a line separator U+2028', '\u2028'],
      ['a paragraph separator U+2029', '\u2029'],
    ] as const) {
      for (const [where, p] of [
        ['inside', id('R', `ad${ch}min`)],
        ['leading', id('R', `${ch}admin`)],
        ['trailing, in the second component', id('R', 'host', `admin${ch}`)],
      ] as const) {
        it(`rejects ${what} ${where} with TESSERA_BAD_NAME, naming the code point and its position`, () => {
          const err = badName(() => checkPrincipalId(p))
          const cp = ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')
          expect(err.message).to.include(`invisible or line-separator character U+${cp} at position`)
        })
      }
    }

    it('gives the position in code points, 1-based, within its component', () => {
      const err = badName(() => checkPrincipalId(id('R', '\u{1F600}x', 'ad\u200bmin')))
      expect(err.message).to.equal('principal name contains an invisible or line-separator character U+200B at position 3 of component 2')
    })

    it('rejects one in the realm with the same message', () => {
      const err = badName(() => checkPrincipalId(id('EXAM\u200bPLE.COM', 'a')))
      expect(err.message).to.equal('principal name contains an invisible or line-separator character U+200B at position 5 of the realm')
    })

    it('rejects one through parsePrincipal too', () => {
      throwsWith(() => parsePrincipal('ad\u200bmin@EXAMPLE.COM'), BAD)
    })

    accepts('visible non-ASCII letters and a plain hyphen', id('R', 'jean-françois', 'Ωμέγα'))
  })
  rejects('components that are not an array', { realm: 'R', components: 'alice' as unknown as string[] })
})

describe('principalKey', () => {
  // Pairs a naive encoding (join with '/' or '@', case folding, normalisation, NUL
  // separators, digits next to lengths) would confuse.
  const lookAlikes: PrincipalId[] = [
    id('R', 'a', 'b'),
    id('R', 'a/b'),
    id('R', 'a@R'),
    id('R', 'ab'),
    id('R', 'a\u0000b'),
    id('R', 'a', '\u0000b'),
    id('R', 'A', 'b'),
    id('r', 'a', 'b'),
    id('R', 'a', 'b', ''),
    id('R', '', 'a', 'b'),
    id('Ra', 'b'),
    id('R', '1:a'),
    id('R', 'a1:b'),
    id('R1:a', 'b'),
    id('R', '1:a', '1:b'),
    id('2:R', 'a'),
    id('R', 'é'),
    id('R', 'e\u0301'),
    id('R', '\ufffd'),
    id('R', '\ud800'),
    id('R', '\u00e9\u00e9'),
    id('R', '2:é'),
    id('R', '22:é'),
  ]

  it('gives distinct keys (as strings and as UTF-8 bytes) to hand-picked look-alikes', () => {
    const strings = new Set(lookAlikes.map(principalKey))
    expect(strings.size).to.equal(lookAlikes.length)
    // Well-formed names only: a lone surrogate has no UTF-8 form, which is why the store refuses it.
    const wellFormed = lookAlikes.filter((p) => !/\p{Cs}/u.test(p.realm + p.components.join('')))
    const bytes = new Set(wellFormed.map((p) => Buffer.from(principalKey(p), 'utf8').toString('hex')))
    expect(bytes.size).to.equal(wellFormed.length)
  })

  it('decodes back to the same id (so no two ids share a key)', () => {
    const anyText = fc.string({ unit: 'binary', maxLength: 12 })
    fc.assert(
      fc.property(anyText, fc.array(anyText, { minLength: 1, maxLength: 8 }), (realm, components) => {
        expect(principalFromKey(principalKey({ realm, components }))).to.deep.equal({ realm, components })
        expect(principalFromKey(Buffer.from(principalKey({ realm, components }), 'utf8'))).to.deep.equal({ realm, components })
      }),
      { numRuns: 1000 },
    )
  })

  it('is injective over a small adversarial alphabet (key equal iff id equal)', () => {
    const unit = fc.constantFrom('a', 'A', '1', '2', ':', '/', '@', '\\', '\u0000', 'é', 'e', '\u0301', '\ufffd', '\ud800')
    const part = fc.string({ unit, maxLength: 4 })
    const ident = fc.record({ realm: part, components: fc.array(part, { maxLength: 3 }) })
    fc.assert(
      fc.property(ident, ident, (a, b) => {
        const same = a.realm === b.realm && JSON.stringify(a.components) === JSON.stringify(b.components)
        expect(principalKey(a) === principalKey(b)).to.equal(same)
      }),
      { numRuns: 5000 },
    )
  })

  it('maps distinct well-formed ids to distinct UTF-8 byte keys', () => {
    const text = fc.string({ unit: 'grapheme', maxLength: 6 })
    const ident = fc.record({ realm: text, components: fc.array(text, { minLength: 1, maxLength: 4 }) })
    fc.assert(
      fc.property(fc.uniqueArray(ident, { minLength: 2, maxLength: 30, selector: (p) => JSON.stringify(p) }), (ids) => {
        const keys = new Set(ids.map((p) => Buffer.from(principalKey(p), 'utf8').toString('hex')))
        expect(keys.size).to.equal(ids.length)
      }),
      { numRuns: 300 },
    )
  })

  it('throws TESSERA_DB on a malformed key', () => {
    for (const bad of ['', 'abc', '5:ab', '1:R', ':R1:a', '1:R1']) throwsWith(() => principalFromKey(bad), TesseraErrorCode.TESSERA_DB)
  })
})

describe('checkPassword', () => {
  const alice = id('EXAMPLE.COM', 'alice')
  const strict: Policy = { ...DEFAULT_POLICY, name: 'strict', minLength: 12, minClasses: 3 }
  const accepts = (pw: string, policy: Policy | undefined, who = alice) =>
    it(`accepts ${JSON.stringify(pw)} under ${policy?.name ?? 'no policy'}`, () => {
      expect(() => checkPassword(pw, policy, who)).not.to.throw()
    })
  const rejects = (reason: string, pw: string, policy: Policy | undefined, who = alice) =>
    it(`rejects ${JSON.stringify(pw)} under ${policy?.name ?? 'no policy'} (${reason})`, () => {
      try {
        checkPassword(pw, policy, who)
        expect.fail('accepted')
      } catch (err) {
        expect(err).to.be.instanceOf(PasswordQualityError)
        expect((err as PasswordQualityError).code).to.equal('TESSERA_PASSWORD_QUALITY')
        expect((err as PasswordQualityError).reason).to.equal(reason)
        expect((err as Error).message).not.to.include(pw)
      }
    })

  accepts('correct horse', undefined)
  accepts('eightchr', undefined)
  accepts('Tr0ub4dor&3xy', strict)
  accepts('ÄÖÜäöü123456', strict)
  accepts('bobby-tables-1', undefined, id('R', 'al'))
  rejects('TOO_SHORT', 'seven77', undefined)
  rejects('TOO_SHORT', 'Short1!', strict)
  rejects('TOO_FEW_CLASSES', 'alllowercaseletters', strict)
  rejects('TOO_FEW_CLASSES', 'ALLUPPER12345', { ...strict, minClasses: 4 })
  rejects('CONTAINS_NAME', 'my-ALICE-pass', undefined)
  rejects('CONTAINS_NAME', 'xxAlice99!!Yy', strict)
  it('counts characters, not UTF-16 units or bytes', () => {
    expect(() => checkPassword('\u{1F600}'.repeat(8), undefined, alice)).not.to.throw()
    expect(() => checkPassword('\u{1F600}'.repeat(7), undefined, alice)).to.throw(PasswordQualityError)
  })
})
