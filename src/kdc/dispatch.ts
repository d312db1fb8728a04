/** decode -> route on msgType -> exactly one reply (MIT dispatch.c). Each listener accepts its own types only. */
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { KrbProtocolError } from '../errors.js'
import { type ConnectionContext, isPromiseLike, type RequestHandler } from '../wire/server.js'
import { processAsReq } from './as-req.js'
import type { RequestRecorder } from '../ops/metrics.js'
import type { KdcContext } from './context.js'
import { processTgsReq } from './tgs-req.js'

/** The four listeners of a KDC. */
export type ListenerName = 'as' | 'tgs' | 'time' | 'admin'

/** Per-listener handlers for message types that live outside this module (time, admin). */
export type ExtraHandlers = Partial<Record<ListenerName, (msg: Message, conn: ConnectionContext) => Promise<Message> | Message>>

/**
 * Build the request handler of one listener. A handler that answers synchronously (the TGS
 * when the database cache holds every principal named) is answered without a promise; every
 * failure, synchronous or not, comes back as a rejected promise.
 */
export function makeHandler(ctx: KdcContext, listener: ListenerName, extra: ExtraHandlers = {}): RequestHandler {
  const handler = plainHandler(ctx, listener, extra)
  return ctx.metrics ? measured(handler, ctx.metrics.recorder(listener, SERVED[listener])) : handler
}

/**
 * Count each answer by type and outcome and time the handler. Without metrics the handler is
 * not wrapped at all: the hot path pays nothing.
 */
function measured(handler: RequestHandler, rec: RequestRecorder): RequestHandler {
  return (msg, conn) => {
    const t0 = performance.now()
    const reply = handler(msg, conn)
    if (!isPromiseLike(reply)) {
      rec.answered(msg.t, (performance.now() - t0) / 1000)
      return reply
    }
    return Promise.resolve(reply).then(
      (r) => {
        rec.answered(msg.t, (performance.now() - t0) / 1000)
        return r
      },
      (err: unknown) => {
        const e = err as KrbProtocolError
        rec.refused(msg.t, e.code, (performance.now() - t0) / 1000)
        if (e.status === 'CLIENT_LOCKED') rec.lockedRefusals++
        throw err
      },
    )
  }
}

function plainHandler(ctx: KdcContext, listener: ListenerName, extra: ExtraHandlers): RequestHandler {
  return (msg, conn) => {
    let reply: Message | Promise<Message>
    try {
      reply = route(ctx, listener, extra, msg, conn)
    } catch (err) {
      return Promise.reject(refusal(ctx, listener, conn, err))
    }
    if (isPromiseLike(reply))
      return Promise.resolve(reply).catch((err: unknown) => {
        throw refusal(ctx, listener, conn, err)
      })
    return reply
  }
}

/** The request type each listener serves (PROTOCOL.md §1). */
const SERVED: Readonly<Record<ListenerName, number>> = {
  as: MsgType.AS_REQ,
  tgs: MsgType.TGS_REQ,
  time: MsgType.TIME_REQ,
  admin: MsgType.ADMIN_REQ,
}

function route(ctx: KdcContext, listener: ListenerName, extra: ExtraHandlers, msg: Message, conn: ConnectionContext): Message | Promise<Message> {
  // Another listener's message is MSG_TYPE on every listener, implemented or not (§1).
  if (msg.t !== SERVED[listener])
    throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE', {
      message: `message type ${msg.t} is not served on the ${listener} listener`,
    })
  if (listener === 'as' && msg.t === MsgType.AS_REQ) return processAsReq(ctx, msg, conn)
  if (listener === 'tgs' && msg.t === MsgType.TGS_REQ) return processTgsReq(ctx, msg, conn)
  const h = extra[listener]
  if (!h)
    throw new KrbProtocolError(ErrorCode.TSR_ERR_NOT_IMPLEMENTED, 'NOT_IMPLEMENTED', {
      message: `the ${listener} service is not implemented by this KDC yet`,
    })
  return h(msg, conn)
}

/** The KrbProtocolError a failure is answered with. */
function refusal(ctx: KdcContext, listener: ListenerName, conn: ConnectionContext, err: unknown): KrbProtocolError {
  if (err instanceof KrbProtocolError) {
    // Errors carry the KDC's clock (the one skew is judged by), not the host's.
    err.serverTime ??= ctx.now()
    return err
  }
  // Anything else is our bug: the peer learns nothing, the log learns everything.
  ctx.log.ops.error('internal error', {
    listener,
    peer: conn.peer,
    err: err instanceof Error ? err.message : String(err),
    stack: err instanceof Error ? err.stack : undefined,
  })
  return new KrbProtocolError(ErrorCode.KRB_ERR_GENERIC, 'GENERIC', { message: 'internal error' })
}
