/**
 * Builds the language-neutral JSON Schema (draft 2020-12) of the wire contract from
 * proto/messages.ts, and writes it when run as a script:
 *
 *   npx tsx proto/gen-json-schema.ts proto/schema.json
 *   node dist/proto/gen-json-schema.js proto/schema.json     (npm run build)
 *
 * Conventions of the generated document (also stated in its `description`):
 * - `$defs` holds one entry per top-level message, named by its MsgType (`AS_REQ`),
 *   one per sealed inner part (`EncTicketPart`), and the shared parts they refer to
 *   through `$ref` (`Ticket`, `PaData`, `PrincipalName`, `ErrorData`, `KdfParams`).
 * - TypeBox's non-standard `Uint8Array` type becomes
 *   `{ "type": "string", "x-msgpack": "bin", "minBytes": n, "maxBytes": m }`: on the
 *   wire these values are MessagePack `bin` (0xc4/0xc5/0xc6), never `str`; in a JSON
 *   rendering of a message they are written as hex strings.
 * - TypeBox's internal Symbol keys are stripped; every object schema with `properties`
 *   carries a `required` list (empty when all fields are optional).
 */
import { writeFileSync } from 'node:fs'
import type { TSchema } from '@sinclair/typebox'
import {
  ErrorData,
  InnerSchemas,
  KdfParamsSchema,
  MessageSchemas,
  NAME_COMPONENT_FORMAT,
  PaData,
  PrincipalName,
  Ticket,
} from './messages.js'
import { MsgType, PROTOCOL_VERSION } from './msg-types.js'
import { isMain } from './is-main.js'

/** JSON Schema dialect of the generated document. */
export const JSON_SCHEMA_DIALECT = 'https://json-schema.org/draft/2020-12/schema'

/** Shared sub-schemas emitted once under `$defs` and referenced by identity. */
const SHARED: ReadonlyArray<readonly [string, TSchema]> = [
  ['Ticket', Ticket],
  ['PaData', PaData],
  ['ErrorData', ErrorData],
  ['KdfParams', KdfParamsSchema],
  ['PrincipalName', PrincipalName],
]

const MSG_NAMES = new Map<number, string>(Object.entries(MsgType).map(([name, n]) => [n, name]))

type Json = null | boolean | number | string | Json[] | { [k: string]: Json }

function convert(schema: unknown, refs: Map<unknown, string>, self: unknown): Json {
  if (schema !== self && refs.has(schema)) return { $ref: `#/$defs/${refs.get(schema)}` }
  if (Array.isArray(schema)) return schema.map((x) => convert(x, refs, undefined))
  if (schema === null || typeof schema !== 'object') return schema as Json
  const s = schema as Record<string, unknown>
  // Object.keys skips Symbol keys (TypeBox's Kind, Optional, Hint...).
  if (s.type === 'Uint8Array') {
    const out: Record<string, Json> = { type: 'string', 'x-msgpack': 'bin' }
    if (typeof s.minByteLength === 'number') out.minBytes = s.minByteLength
    if (typeof s.maxByteLength === 'number') out.maxBytes = s.maxByteLength
    if (typeof s.description === 'string') out.description = s.description
    return out
  }
  const out: Record<string, Json> = {}
  // Our own string format is not JSON Schema's: its bound is stated as x-maxUtf8Bytes instead.
  for (const k of Object.keys(s)) if (!(k === 'format' && s[k] === NAME_COMPONENT_FORMAT)) out[k] = convert(s[k], refs, undefined)
  // TypeBox omits `required` when every property is optional; spell it out.
  if (s.type === 'object' && s.properties && !s.required) out.required = []
  return out
}

/** The JSON Schema document of every message, inner part and shared part. */
export function buildJsonSchema(): Record<string, Json> {
  const refs = new Map<unknown, string>()
  for (const [name, s] of SHARED) refs.set(s, name)
  const defs: Record<string, Json> = {}
  const messageRefs: Json[] = []
  for (const [t, schema] of Object.entries(MessageSchemas)) {
    const name = MSG_NAMES.get(Number(t))
    if (!name) throw new Error(`message type ${t} has no MsgType name`)
    defs[name] = convert(schema, refs, schema)
    messageRefs.push({ $ref: `#/$defs/${name}` })
  }
  for (const [name, schema] of Object.entries(InnerSchemas)) defs[name] = convert(schema, refs, schema)
  for (const [name, schema] of SHARED) defs[name] = convert(schema, refs, schema)
  return {
    $schema: JSON_SCHEMA_DIALECT,
    $id: `https://tessera.invalid/proto/v${PROTOCOL_VERSION}/schema.json`,
    title: `Tessera wire protocol v${PROTOCOL_VERSION}`,
    description:
      'Generated from proto/messages.ts by proto/gen-json-schema.ts; do not edit. ' +
      'The root validates any top-level message (one MessagePack map per frame, see PROTOCOL.md). ' +
      'Sealed inner parts and shared parts are under $defs. ' +
      'Convention: a schema {"type":"string","x-msgpack":"bin","minBytes":n,"maxBytes":m} is a byte string, ' +
      'sent as a MessagePack bin (never str) of n..m bytes; JSON renderings of messages write it as lowercase hex. ' +
      'Integers never exceed 2^53-1. Absent optional fields are omitted, never nil. ' +
      'A string schema with "x-maxUtf8Bytes": n (principal-name components) holds at most n bytes once UTF-8 encoded.',
    oneOf: messageRefs,
    $defs: defs,
  }
}

/** The schema document as the exact text of proto/schema.json (2-space indent, trailing newline). */
export function renderJsonSchema(): string {
  return `${JSON.stringify(buildJsonSchema(), null, 2)}\n`
}

if (isMain(import.meta.url)) {
  const out = process.argv[2]
  if (!out) {
    process.stdout.write(renderJsonSchema())
  } else {
    writeFileSync(out, renderJsonSchema())
    process.stderr.write(`wrote ${out}\n`)
  }
}
