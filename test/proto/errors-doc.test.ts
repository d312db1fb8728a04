/** docs/errors.md: one heading per wire code and per local code, none stale. */
import { readFileSync } from 'node:fs'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { TesseraErrorCode } from '../../src/errors.js'

const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8')
const headings = [...doc.matchAll(/^## (.+)$/gm)].map((m) => m[1]!.trim())

const wireHeadings = Object.entries(ErrorCode).map(([name, n]) => `${name} (${n})`)
const localHeadings = Object.keys(TesseraErrorCode)

/** The text under a heading, up to the next heading. */
function section(heading: string): string {
  const start = doc.indexOf(`\n## ${heading}\n`)
  const rest = doc.slice(start + heading.length + 5)
  const end = rest.search(/^#{1,2} /m)
  return end < 0 ? rest : rest.slice(0, end)
}

describe('docs/errors.md', () => {
  it('has a "## NAME (n)" heading for every wire code in proto/error-codes.ts', () => {
    const missing = wireHeadings.filter((h) => !headings.includes(h))
    expect(missing, 'missing headings').to.deep.equal([])
  })

  it('has a "## TESSERA_..." heading for every local code in src/errors.ts', () => {
    const missing = localHeadings.filter((h) => !headings.includes(h))
    expect(missing, 'missing headings').to.deep.equal([])
  })

  it('has no stale heading (a code that no longer exists, or a wrong number)', () => {
    const known = new Set([...wireHeadings, ...localHeadings])
    expect(headings.filter((h) => !known.has(h)), 'stale headings').to.deep.equal([])
  })

  it('has each heading once', () => {
    expect(new Set(headings).size).to.equal(headings.length)
  })

  it('says for each code what it means and what to do', () => {
    for (const h of headings) {
      const body = section(h)
      expect(body.trim().length, h).to.be.greaterThan(20)
      expect(body, h).to.include('**What to do:**')
    }
  })
})
