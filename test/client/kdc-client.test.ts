/** KdcClient (src/client/kdc-client.ts) against a tiny fake KDC: it accepts only replies bound to its request. */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { TicketFlag } from '../../proto/flags.js'
import { KeyUsage } from '../../proto/key-usage.js'
import { type AsRep, EncKdcRepPart, EncTicketPart, type Message } from '../../proto/messages.js'
import { MsgType } from '../../proto/msg-types.js'
import { KdcClient } from '../../src/client/kdc-client.js'
import { randomKey, x25519KeyPair } from '../../src/crypto/index.js'
import { KrbProtocolError, TesseraErrorCode } from '../../src/errors.js'
import { sealPart } from '../../src/krb/parts.js'
import type { RealmFile } from '../../src/krb/realm-file.js'
import { SecureServer } from '../../src/wire/server.js'
import { expectTessera, HOUR, REALM, rejection } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

describe('KdcClient reply checks', () => {
  useProcessGuards()
  const clientKey = randomKey()
  const staticKey = x25519KeyPair()
  let server: SecureServer
  let realm: RealmFile
  let reply: (req: Extract<Message, { t: typeof MsgType.AS_REQ }>) => AsRep

  /** A genuine-looking AS_REP sealed with `key`, answering `nonce`. */
  const makeRep = (key: Uint8Array, nonce: number, sname = ['krbtgt', REALM]): AsRep => {
    const now = Date.now()
    const sessionKey = randomKey()
    return {
      v: 1,
      t: MsgType.AS_REP,
      crealm: REALM,
      cname: ['alice'],
      kvno: 1,
      ticket: {
        realm: REALM,
        sname,
        kvno: 1,
        enc: sealPart(randomKey(), KeyUsage.KDC_REP_TICKET, EncTicketPart, {
          flags: TicketFlag.INITIAL | TicketFlag.PRE_AUTHENT,
          key: sessionKey,
          crealm: REALM,
          cname: ['alice'],
          authtime: now,
          starttime: now,
          endtime: now + HOUR,
        }),
      },
      enc: sealPart(key, KeyUsage.AS_REP_ENCPART, EncKdcRepPart, {
        key: sessionKey,
        nonce,
        flags: TicketFlag.INITIAL | TicketFlag.PRE_AUTHENT,
        authtime: now,
        starttime: now,
        endtime: now + HOUR,
        srealm: REALM,
        sname,
      }),
    }
  }

  before(async () => {
    server = new SecureServer({ staticKey, host: '127.0.0.1', port: 0 }, (msg) => {
      if (msg.t !== MsgType.AS_REQ) throw new KrbProtocolError(ErrorCode.KRB_AP_ERR_MSG_TYPE, 'MSG_TYPE')
      return reply(msg)
    })
    const { port } = await server.listen()
    realm = {
      realm: REALM,
      kdcs: [{ host: '127.0.0.1', as: port, tgs: port, time: port, admin: port }],
      transportKey: staticKey.publicKey,
      signingKey: new Uint8Array(32),
      maxClockSkewMs: 300000,
    }
  })
  after(() => server.close())

  it('accepts a reply that answers its nonce (control)', async () => {
    reply = (req) => makeRep(clientKey, req.nonce)
    const c = new KdcClient(realm)
    try {
      const creds = await c.loginWithKey('alice', { key: clientKey })
      expect(creds.cname).to.deep.equal(['alice'])
    } finally {
      c.close()
    }
  })

  it('rejects a replayed AS_REP (another nonce) with TESSERA_BAD_REPLY', async () => {
    const captured = makeRep(clientKey, 12345)
    reply = () => captured
    const c = new KdcClient(realm)
    try {
      const err = await expectTessera(c.loginWithKey('alice', { key: clientKey }), TesseraErrorCode.TESSERA_BAD_REPLY)
      expect(err.message).to.match(/nonce/)
    } finally {
      c.close()
    }
  })

  it('rejects a forged AS_REP (sealed with another key) with TESSERA_BAD_REPLY', async () => {
    reply = (req) => makeRep(randomKey(), req.nonce)
    const c = new KdcClient(realm)
    try {
      await expectTessera(c.loginWithKey('alice', { key: clientKey }), TesseraErrorCode.TESSERA_BAD_REPLY)
    } finally {
      c.close()
    }
  })

  it('rejects an AS_REP for another service with TESSERA_BAD_REPLY', async () => {
    reply = (req) => makeRep(clientKey, req.nonce, ['evil', 'service'])
    const c = new KdcClient(realm)
    try {
      await expectTessera(c.loginWithKey('alice', { key: clientKey }), TesseraErrorCode.TESSERA_BAD_REPLY)
    } finally {
      c.close()
    }
  })

  it('rejects a replayed AS_REP in a password login too', async () => {
    const captured = makeRep(clientKey, 777)
    reply = () => captured
    const c = new KdcClient(realm)
    try {
      // No PREAUTH_REQUIRED from this KDC: the client derives a password key that cannot open the reply.
      const err = await rejection(c.login('alice', 'whatever'))
      expect(err).to.have.property('code', TesseraErrorCode.TESSERA_BAD_REPLY)
    } finally {
      c.close()
    }
  })
})
