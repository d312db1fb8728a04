/** proto/validate.ts against the contract of PROTOCOL.md §4 and §7. */
import { expect } from 'chai'
import { AdminBody, InnerSchemas, MessageSchemas } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { isKnownMsgType, SchemaError, validate, validateMessage } from '../../proto/validate.js'
import { decode, encode } from '../../src/wire/codec.js'

const adminBody = { crealm: 'R', cname: ['alice'], ctime: 1, cusec: 0, op: 'get_principal', args: { name: 'bob' } }

function rejects(schema: Parameters<typeof validate>[0], value: unknown): SchemaError {
  try {
    validate(schema, value)
  } catch (e) {
    expect(e).to.be.instanceOf(SchemaError)
    return e as SchemaError
  }
  throw new Error('expected a SchemaError')
}

describe('validateMessage', () => {
  it('knows exactly the MsgType numbers', () => {
    for (const t of Object.values(MsgType)) expect(isKnownMsgType(t), String(t)).to.equal(true)
    for (const t of [0, 5, 16, 31, 42, 52, '10', null]) expect(isKnownMsgType(t), String(t)).to.equal(false)
    expect(Object.keys(MessageSchemas).map(Number).sort((a, b) => a - b)).to.deep.equal(Object.values(MsgType).sort((a, b) => a - b))
  })

  it('refuses a non-map, an unknown type and a type given as a string, with the failing path', () => {
    for (const [v, path] of [
      [[1, 2], ''],
      [new Uint8Array(3), ''],
      [{ v: 1, t: 99 }, '/t'],
      [{ v: 1, t: '10' }, '/t'],
    ] as const) {
      let err: unknown
      try {
        validateMessage(v)
      } catch (e) {
        err = e
      }
      expect(err, JSON.stringify(v)).to.be.instanceOf(SchemaError)
      expect((err as SchemaError).path).to.equal(path)
    }
  })

  it('refuses an extra field in a nested part (Ticket inside TGS_REQ)', () => {
    const ticket = { realm: 'R', sname: ['krbtgt', 'R'], kvno: 1, enc: new Uint8Array(40), extra: 1 }
    expect(() => validateMessage({ v: 1, t: MsgType.TGS_REQ, ticket, auth: new Uint8Array(40) })).to.throw(SchemaError)
  })

  it('refuses a sealed field shorter than nonce + tag (40 bytes)', () => {
    const ticket = { realm: 'R', sname: ['krbtgt', 'R'], kvno: 1, enc: new Uint8Array(40) }
    expect(() => validateMessage({ v: 1, t: MsgType.TGS_REQ, ticket, auth: new Uint8Array(39) })).to.throw(SchemaError)
    expect(validateMessage({ v: 1, t: MsgType.TGS_REQ, ticket, auth: new Uint8Array(40) }).t).to.equal(MsgType.TGS_REQ)
  })

  it('refuses a principal name with no component, an empty component or 9 components', () => {
    const base = { v: 1, t: MsgType.AS_REQ, realm: 'R', sname: ['krbtgt', 'R'], till: 0, nonce: 1, options: 0, padata: [] }
    for (const cname of [[], [''], Array(9).fill('a')]) expect(() => validateMessage({ ...base, cname }), JSON.stringify(cname)).to.throw(SchemaError)
    expect(validateMessage({ ...base, cname: Array(8).fill('a') }).t).to.equal(MsgType.AS_REQ)
  })
})

describe('inner parts', () => {
  it('every inner part refuses an extra field', () => {
    for (const [name, schema] of Object.entries(InnerSchemas)) {
      const e = rejects(schema, { zzz: 1 })
      expect(e.path, name).to.be.a('string')
    }
  })

  it('AdminBody.args holds at most 32 entries', () => {
    const args = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i]))
    rejects(AdminBody, { ...adminBody, args })
    expect(validate(AdminBody, { ...adminBody, args: Object.fromEntries(Object.entries(args).slice(0, 32)) }).op).to.equal('get_principal')
  })

  it('AdminBody.args refuses a key longer than 64 characters', () => {
    rejects(AdminBody, { ...adminBody, args: { ['k'.repeat(65)]: 1 } })
    expect(validate(AdminBody, { ...adminBody, args: { ['k'.repeat(64)]: 1 } }).op).to.equal('get_principal')
  })

  it('a "__proto__" key inside AdminBody.args is refused by the decoder', () => {
    const plain = Buffer.from(encode({ ...adminBody, args: {} }))
    const body = Buffer.concat([plain.subarray(0, -1), Buffer.from('81a95f5f70726f746f5f5f01', 'hex')]) // args: { "__proto__": 1 }
    expect(() => decode(body)).to.throw().with.property('code', 'TESSERA_DECODE')
  })
})

describe('principal-name components (PROTOCOL.md §7.4: at most 255 UTF-8 bytes)', () => {
  const withName = (c: string) => ({ ...adminBody, cname: [c] })

  for (const [label, c] of [
    ['255 ASCII characters', 'a'.repeat(255)],
    ['85 three-byte characters (255 bytes)', '\u4e00'.repeat(85)],
    ['63 emoji and 3 ASCII (255 bytes)', `${'\u{1F600}'.repeat(63)}abc`],
  ] as const)
    it(`accepts ${label}`, () => {
      validate(AdminBody, withName(c))
    })

  for (const [label, c] of [
    ['256 ASCII characters', 'a'.repeat(256)],
    ['254 ASCII and one two-byte character (256 bytes, 255 characters)', `${'a'.repeat(254)}é`],
    ['127 emoji (508 bytes, 254 UTF-16 units)', '\u{1F600}'.repeat(127)],
    ['128 emoji (512 bytes, 256 UTF-16 units)', '\u{1F600}'.repeat(128)],
  ] as const)
    it(`refuses ${label} with the one message of the one limit`, () => {
      const err = rejects(AdminBody, withName(c))
      expect(err.path).to.equal('/cname/0')
      expect(err.message).to.equal('/cname/0: name component longer than 255 UTF-8 bytes')
    })

  it('refuses an empty component with the ordinary message', () => {
    expect(rejects(AdminBody, withName('')).message).to.not.match(/UTF-8/)
  })
})
