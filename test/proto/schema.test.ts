/** proto/schema.json: generated from proto/messages.ts, committed, and well-formed JSON Schema. */
import { readFileSync } from 'node:fs'
import { expect } from 'chai'
import { buildJsonSchema, JSON_SCHEMA_DIALECT, renderJsonSchema } from '../../proto/gen-json-schema.js'
import { InnerSchemas, MessageSchemas } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'

const SCHEMA_PATH = new URL('../../proto/schema.json', import.meta.url)

type Node = Record<string, unknown>

/** Every object node of a JSON tree with its JSON pointer. */
function* walk(node: unknown, path = '#'): Generator<[string, Node]> {
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) yield* walk(node[i], `${path}/${i}`)
    return
  }
  if (node === null || typeof node !== 'object') return
  yield [path, node as Node]
  for (const [k, v] of Object.entries(node)) yield* walk(v, `${path}/${k}`)
}

describe('proto/schema.json', () => {
  const committedText = readFileSync(SCHEMA_PATH, 'utf8')
  const committed = JSON.parse(committedText) as Node
  const defs = committed.$defs as Record<string, Node>

  it('equals the schema generated from proto/messages.ts (run `npx tsx proto/gen-json-schema.ts proto/schema.json`)', () => {
    expect(committedText).to.equal(renderJsonSchema())
  })

  it('round-trips through JSON unchanged (no Symbol keys, no undefined, no functions)', () => {
    const built = buildJsonSchema()
    expect(JSON.parse(JSON.stringify(built))).to.deep.equal(built)
  })

  it('declares the draft 2020-12 dialect', () => {
    expect(committed.$schema).to.equal(JSON_SCHEMA_DIALECT)
  })

  it('has one $def per message type, named as in MsgType, and a root oneOf over them', () => {
    const names = Object.keys(MsgType)
    for (const name of names) expect(defs, name).to.have.property(name)
    expect(Object.keys(MessageSchemas)).to.have.length(names.length)
    expect((committed.oneOf as Node[]).map((r) => r.$ref)).to.have.members(names.map((n) => `#/$defs/${n}`))
  })

  it('has one $def per sealed inner part', () => {
    for (const name of Object.keys(InnerSchemas)) expect(defs, name).to.have.property(name)
  })

  it('pins each message to its version and type number', () => {
    for (const [name, n] of Object.entries(MsgType)) {
      const props = defs[name]!.properties as Record<string, Node>
      expect(props.v, name).to.include({ const: 1 })
      expect(props.t, name).to.include({ const: n })
    }
  })

  it('closes every object schema (additionalProperties false) with a required list naming only known properties', () => {
    let objects = 0
    for (const [path, node] of walk(committed)) {
      if (node.type !== 'object') continue
      objects++
      if (node.patternProperties) {
        // A free-form map (AdminBody.args): bounded instead of closed.
        expect(node.maxProperties, path).to.be.a('number')
        continue
      }
      expect(node.additionalProperties, path).to.equal(false)
      expect(node.required, path).to.be.an('array')
      const props = Object.keys(node.properties as Node)
      for (const r of node.required as string[]) expect(props, `${path} requires ${r}`).to.include(r)
    }
    expect(objects).to.be.greaterThan(20)
  })

  it('every message and inner part is a closed object', () => {
    for (const name of [...Object.keys(MsgType), ...Object.keys(InnerSchemas)]) {
      expect(defs[name]!.type, name).to.equal('object')
      expect(defs[name]!.additionalProperties, name).to.equal(false)
      expect(defs[name]!.required, name).to.be.an('array').that.is.not.empty
    }
  })

  it('resolves every $ref inside the document', () => {
    for (const [path, node] of walk(committed)) {
      if (typeof node.$ref !== 'string') continue
      const m = /^#\/\$defs\/([A-Za-z_]+)$/.exec(node.$ref)
      expect(m, `${path}: ${node.$ref}`).to.not.equal(null)
      expect(defs, `${path}: ${node.$ref}`).to.have.property(m![1]!)
    }
  })

  it('uses only standard JSON Schema types, byte strings marked x-msgpack bin with byte bounds', () => {
    const standard = ['object', 'array', 'string', 'integer', 'number', 'boolean', 'null']
    let bins = 0
    for (const [path, node] of walk(committed)) {
      if (typeof node.type === 'string') expect(standard, path).to.include(node.type)
      if (node['x-msgpack'] !== undefined) {
        bins++
        expect(node, path).to.include({ type: 'string', 'x-msgpack': 'bin' })
        expect(node.minBytes, path).to.be.a('number')
        expect(node.maxBytes, path).to.be.a('number').that.is.at.least(node.minBytes as number)
        expect(node, path).to.not.have.any.keys('minByteLength', 'maxByteLength')
      }
    }
    expect(bins).to.be.greaterThan(10)
  })

  it('bounds every integer within 0..2^53-1', () => {
    for (const [path, node] of walk(committed)) {
      if (node.type !== 'integer') continue
      expect(node.minimum, path).to.equal(0)
      expect(node.maximum, path).to.be.a('number').that.is.at.most(Number.MAX_SAFE_INTEGER)
    }
  })

  it('describes sealed fields with the nonce || tag || ciphertext layout and a 40-byte minimum', () => {
    const ticket = defs.Ticket!.properties as Record<string, Node>
    expect(ticket.enc).to.include({ 'x-msgpack': 'bin', minBytes: 40, maxBytes: 4096 })
    expect(String(ticket.enc!.description)).to.match(/nonce\(24\) \|\| tag\(16\) \|\| ciphertext/)
  })
})
