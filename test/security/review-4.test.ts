/**
 * Security review 4 (KDC side): roastable user keys, kadmin tickets from a TGT, AS requests
 * for names that can never log in, over the wire against a real daemon.
 */
import { expect } from 'chai'
import { ErrorCode } from '../../proto/error-codes.js'
import { TicketFlag } from '../../proto/flags.js'
import { randomKey } from '../../src/crypto/index.js'
import { ADMIN_PASSWORD, asReq, expectKrb, expectKrbError, preauth, REALM, useTestKdc } from '../helpers/kdc-helpers.js'
import { useProcessGuards } from '../helpers/wire-guards.js'

const id = (name: string) => ({ realm: REALM, components: name.split('/') })

describe('security review 4: ticket targets and initial-only services', function () {
  this.timeout(20_000)
  useProcessGuards()
  const t = useTestKdc()

  before(async () => {
    await t.kdc.addPrincipal('alice', { password: 'pw-alice' })
    await t.kdc.addPrincipal('bob', { password: 'pw-bob' })
    await t.kdc.addPrincipal('opted-in', { password: 'pw-opted', attributes: { allowService: true } })
    await t.kdc.addPrincipal('svc/host')
    await t.kdc.addPrincipal('closed/host', { attributes: { allowService: false } })
  })

  describe('a principal whose key comes from a password is no ticket target by default (Kerberoasting)', () => {
    it('refuses a service ticket for another user, and for the admin made at realm creation, with KDC_ERR_POLICY', async () => {
      const c = t.client()
      const tgt = await c.login('alice', 'pw-alice')
      const bob = await expectKrb(c.getServiceTicket(tgt, 'bob'), ErrorCode.KDC_ERR_POLICY)
      expect(bob.message).to.match(/password/)
      await expectKrb(c.getServiceTicket(tgt, 'admin'), ErrorCode.KDC_ERR_POLICY)
      // and a user cannot get a ticket sealed with its own password key either
      await expectKrb(c.getServiceTicket(tgt, 'alice'), ErrorCode.KDC_ERR_POLICY)
    })

    it('refuses an AS exchange naming a user as the service', async () => {
      await expectKrb(t.client().login('alice', 'pw-alice', { service: 'admin' }), ErrorCode.KDC_ERR_POLICY)
    })

    it('still issues tickets for services with random keys, for a user whose allowService is set, and never for allowService false', async () => {
      const c = t.client()
      const tgt = await c.login('alice', 'pw-alice')
      expect((await c.getServiceTicket(tgt, 'svc/host')).sname).to.deep.equal(['svc', 'host'])
      expect((await c.getServiceTicket(tgt, 'opted-in')).sname).to.deep.equal(['opted-in'])
      await expectKrb(c.getServiceTicket(tgt, 'closed/host'), ErrorCode.KDC_ERR_POLICY)
    })
  })

  describe('kadmin/admin and kadmin/changepw come only from an AS exchange', () => {
    for (const svc of ['kadmin/admin', 'kadmin/changepw']) {
      it(`refuses ${svc} as a TGS target; the AS issues it with the INITIAL flag`, async () => {
        const c = t.client()
        const tgt = await c.login('admin', ADMIN_PASSWORD)
        const e = await expectKrb(c.getServiceTicket(tgt, svc), ErrorCode.KDC_ERR_POLICY)
        expect(e.message).to.match(/only from a login/)
        const initial = await c.login('admin', ADMIN_PASSWORD, { service: svc })
        expect(initial.flags & TicketFlag.INITIAL).to.not.equal(0)
      })
    }

    it('never marks a TGS ticket INITIAL', async () => {
      const c = t.client()
      const tgt = await c.login('alice', 'pw-alice')
      expect(tgt.flags & TicketFlag.INITIAL).to.not.equal(0)
      const st = await c.getServiceTicket(tgt, 'svc/host')
      expect(st.flags & TicketFlag.INITIAL).to.equal(0)
    })
  })

  describe('pre-auth hints once the KDF parameters are raised', () => {
    it('gives unknown names, stably per name, hints drawn from the parameter sets existing principals use', async () => {
      const ch = await t.channel('as')
      const hint = async (name: string) =>
        expectKrbError(await ch.request(asReq([name])), ErrorCode.KDC_ERR_PREAUTH_REQUIRED).edata!.kdf as { N: number }
      const oldN = t.kdc.config.kdf.N
      // The operator raises the parameters: new passwords get N x 4, existing users keep theirs.
      const raised = { ...t.kdc.config.kdf, N: oldN * 4 }
      t.kdc.config.kdf = raised
      try {
        expect((await hint('alice')).N, 'an existing user keeps the parameters of its key').to.equal(oldN)
        const seen = new Map<number, number>()
        for (let i = 0; i < 120; i++) {
          const name = `nobody-${i}`
          const n = (await hint(name)).N
          expect((await hint(name)).N, 'stable per name').to.equal(n)
          seen.set(n, (seen.get(n) ?? 0) + 1)
        }
        // Users' keys use oldN; service keys (random) hint the current config, as a known service does.
        expect([...seen.keys()].sort()).to.deep.equal([oldN, raised.N].sort())
        expect(seen.get(oldN), 'old parameters given to unknown names too').to.be.greaterThan(10)
      } finally {
        t.kdc.config.kdf = { ...t.kdc.config.kdf, N: oldN }
      }
    })
  })

  describe('names that can never log in as a client', () => {
    for (const name of [['krbtgt', REALM], ['kadmin', 'admin'], ['kadmin', 'changepw']]) {
      it(`refuses an AS request as ${name.join('/')} before trying a key or counting a failure`, async () => {
        const before = await t.kdc.db.get(id(name.join('/')))
        expect(before).to.not.equal(undefined)
        const ch = await t.channel('as')
        for (let i = 0; i < 5; i++) {
          const e = expectKrbError(await ch.request(asReq(name, { padata: preauth(randomKey()) })), ErrorCode.KDC_ERR_POLICY)
          expect(e.text).to.match(/cannot log in/)
        }
        expectKrbError(await ch.request(asReq(name)), ErrorCode.KDC_ERR_POLICY)
        const st = await t.kdc.db.lockoutState(id(name.join('/')))
        expect(st!.failureCount).to.equal(0)
        // no write: the cached record is the very same object
        expect(t.kdc.db.peek(id(name.join('/')))).to.equal(before)
      })
    }
  })
})

