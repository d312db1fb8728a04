/** decode -> route on msgType -> exactly one reply (MIT dispatch.c). Each listener accepts its own types only. */
import { ErrorCode } from '../../proto/error-codes.js'
import type { Message } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { KrbProtocolError } from '../errors.js'
import type { ConnectionContext, RequestHandler } from '../wire/server.js'
import { processAsReq } from './as-req.js'
import type { KdcContext } from './context.js'
import { processTgsReq } from './tgs-req.js'

/** The four listeners of a KDC. */
export type ListenerName = 'as' | 'tgs' | 'time' | 'admin'

/** Per-listener handlers for message types that live outside this module (time, admin). */
export type ExtraHandlers = Partial<Record<ListenerName, (msg: Message, conn: ConnectionContext) => Promise<Message> | Message>>

/** Build the request handler of one listener. */
export function makeHandler(ctx: KdcContext, listener: ListenerName, extra: ExtraHandlers = {}): RequestHandler {
  return async (msg, conn) => {
    try {
      switch (listener) {
        case 'as':
          if (msg.t === MsgType.AS_REQ) return await processAsReq(ctx, msg, conn)
          break
        case 'tgs':
          if (msg.t === MsgType.TGS_REQ) return await processTgsReq(ctx, msg, conn)
          break
        default: {
          const h = extra[listener]
          if (!h)
            throw new KrbProtocolError(ErrorCode.TSR_ERR_NOT_IMPLEMENTED, 'NOT_IMPLEMENTED', {
              message: `the ${listener} service is not implemented by this KDC yet`,
            })
          return await h(msg, conn)
        }
      }
      throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE', {
        message: `message type ${msg.t} is not served on the ${listener} listener`,
      })
    } catch (err) {
      if (err instanceof KrbProtocolError) {
        // Errors carry the KDC's clock (the one skew is judged by), not the host's.
        err.serverTime ??= ctx.now()
        throw err
      }
      // Anything else is our bug: the peer learns nothing, the log learns everything.
      ctx.log.ops.error('internal error', {
        listener,
        peer: conn.peer,
        err: err instanceof Error ? err.message : String(err),
        stack: err instanceof Error ? err.stack : undefined,
      })
      throw new KrbProtocolError(ErrorCode.KRB_ERR_GENERIC, 'GENERIC', { message: 'internal error' })
    }
  }
}
