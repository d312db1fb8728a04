/**
 * A KDC that answers a request with TSR_ERR_SHUTTING_DOWN or TSR_ERR_BUSY has not
 * processed it: the client should try the next KDC, as it does when the same codes
 * come at connect time.
 */
import net from 'node:net'
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { KrbProtocolError } from '../../src/errors.js'
import { krbError, plainFrame } from '../../src/wire/channel.js'
import { SecureServer } from '../../src/wire/server.js'
import { ADMIN_PASSWORD, allPorts, useTestKdc, withKdcs } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('KdcClient failover on refusals sent as replies (integration)', function () {
  this.timeout(20000)
  useProcessGuards()
  const t = useTestKdc()

  for (const [name, code] of [
    ['TSR_ERR_SHUTTING_DOWN', ErrorCode.TSR_ERR_SHUTTING_DOWN],
    ['TSR_ERR_BUSY', ErrorCode.TSR_ERR_BUSY],
  ] as const) {
    it(`moves on to the next KDC when the first answers ${name}`, async () => {
      // A KDC of the same realm (same transport key) that refuses every request.
      let refused = 0
      const dying = new SecureServer({ staticKey: t.kdc.context.realm.transportKey, host: '127.0.0.1', port: 0 }, () => {
        refused++
        throw new KrbProtocolError(code, name, { message: 'refused' })
      })
      const { port } = await dying.listen()
      const c = new KdcClient(withKdcs(t.kdc.realmFile, [allPorts(port), t.kdc.realmFile.kdcs[0]!]))
      try {
        const tgt = await c.login('admin', ADMIN_PASSWORD)
        expect(refused, 'the refusing KDC was asked first').to.be.at.least(1)
        expect(tgt.cname).to.deep.equal(['admin'])
      } finally {
        c.close()
        await dying.close()
      }
    })
  }

  it('treats an unauthenticated error sent before the handshake as a reason to fail over, never as an answer', async () => {
    // A stale address or an attacker answering the connection in clear with "pre-auth failed".
    let answered = 0
    const sockets = new Set<net.Socket>()
    const liar = net.createServer((sock) => {
      answered++
      sockets.add(sock)
      sock.on('error', () => {})
      sock.end(plainFrame(krbError(ErrorCode.KDC_ERR_PREAUTH_FAILED, 'PREAUTH_FAILED')))
    })
    await new Promise<void>((r) => liar.listen(0, '127.0.0.1', () => r()))
    const { port } = liar.address() as net.AddressInfo
    const c = new KdcClient(withKdcs(t.kdc.realmFile, [allPorts(port), t.kdc.realmFile.kdcs[0]!]))
    try {
      const tgt = await c.login('admin', ADMIN_PASSWORD)
      expect(answered, 'the liar was asked first').to.be.at.least(1)
      expect(tgt.cname).to.deep.equal(['admin'])
    } finally {
      c.close()
      for (const sock of sockets) sock.destroy()
      await new Promise<void>((r) => liar.close(() => r()))
    }
  })
})
