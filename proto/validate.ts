/** Runtime validation of decoded messages against proto/messages.ts (compiled once). */
import type { Static, TSchema } from '@sinclair/typebox'
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler'
import { InnerSchemas, type Message, MessageSchemas } from './messages.js'

/** Why a value failed validation: the first failing path and a reason. */
export class SchemaError extends Error {
  override readonly name = 'SchemaError'
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`${path || '/'}: ${reason}`)
  }
}

const compiled = new Map<TSchema, TypeCheck<TSchema>>()
function checker<T extends TSchema>(schema: T): TypeCheck<T> {
  let c = compiled.get(schema)
  if (!c) {
    c = TypeCompiler.Compile(schema)
    compiled.set(schema, c)
  }
  return c as TypeCheck<T>
}
for (const s of [...Object.values(MessageSchemas), ...Object.values(InnerSchemas)]) checker(s)

function isPlainRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !(x instanceof Uint8Array)
}

/** Validate `value` against `schema`; throws SchemaError. */
export function validate<T extends TSchema>(schema: T, value: unknown): Static<T> {
  const c = checker(schema)
  if (c.Check(value)) return value
  const first = c.Errors(value).First()
  // A name component too long in characters or in bytes gets the one message of its one limit.
  if (first?.schema['x-maxUtf8Bytes'] !== undefined && typeof first.value === 'string' && first.value.length > 0)
    throw new SchemaError(first.path, `name component longer than ${first.schema['x-maxUtf8Bytes']} UTF-8 bytes`)
  throw new SchemaError(first?.path ?? '', first?.message ?? 'invalid')
}

/** Validate a top-level message: known `t`, then its schema. Throws SchemaError. */
export function validateMessage(value: unknown): Message {
  if (!isPlainRecord(value)) throw new SchemaError('', 'message is not a map')
  const t = value.t
  if (typeof t !== 'number' || !Object.hasOwn(MessageSchemas, t)) throw new SchemaError('/t', `unknown message type ${String(t)}`)
  return validate(MessageSchemas[t as keyof typeof MessageSchemas], value) as Message
}

/** True when `value` names a message type this protocol knows. */
export function isKnownMsgType(t: unknown): boolean {
  return typeof t === 'number' && Object.hasOwn(MessageSchemas, t)
}
