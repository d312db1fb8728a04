import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  Acl,
  ACL_SETTLE_MS,
  AclFile,
  type AclLetter,
  applyRestrictions,
  defaultAcl,
  explain,
} from '../../src/admin/acl.js'
import { parseDuration } from '../../src/admin/duration.js'
import { parsePrincipal } from '../../src/db/names.js'
import { TesseraError, TesseraErrorCode } from '../../src/errors.js'

const REALM = 'ATHENA.MIT.EDU'
const p = (s: string) => parsePrincipal(s, REALM)

/** kadm5.acl(5)'s example, with the restriction we support instead of -postdateable. */
const MIT_EXAMPLE = `
*/admin@ATHENA.MIT.EDU    *                               # line 1
joeadmin@ATHENA.MIT.EDU   ADMCIL                          # line 2
joeadmin/*@ATHENA.MIT.EDU i   */root@ATHENA.MIT.EDU       # line 3
*/root@ATHENA.MIT.EDU     ci  *1@ATHENA.MIT.EDU           # line 4
*/root@ATHENA.MIT.EDU     l   *                           # line 5
sms@ATHENA.MIT.EDU        x   * -maxlife 9h -renewable    # line 6
`

function acl(text: string): Acl {
  return Acl.parse(text, { realm: REALM, file: 'test.acl' })
}

/** One line of the matrix: actor, letter, target (or none), expected. */
function allows(a: Acl, actor: string, letter: AclLetter, target: string | undefined, expected: boolean): void {
  const d = a.check(p(actor), letter, target === undefined ? undefined : p(target))
  expect(d.allowed, `${actor} ${letter} ${target ?? '(no target)'}: ${d.reason}`).to.equal(expected)
}

function parseFails(text: string, line: number, fragment: string): void {
  try {
    acl(text)
  } catch (err) {
    expect(err).to.be.instanceOf(TesseraError)
    expect((err as TesseraError).code).to.equal(TesseraErrorCode.TESSERA_ACL)
    expect((err as Error).message).to.include(`test.acl:${line}:`)
    expect((err as Error).message).to.include(fragment)
    return
  }
  expect.fail(`expected a parse error at line ${line}`)
}

describe('Acl', () => {
  describe('the kadm5.acl(5) example', () => {
    const a = acl(MIT_EXAMPLE)

    it('gives */admin everything but extract (line 1)', () => {
      for (const l of ['a', 'd', 'm', 'c', 'i', 'l', 's', 'p', 'u'] as const) allows(a, 'joeadmin/admin', l, 'anyone', true)
      allows(a, 'joeadmin/admin', 'e', 'anyone', false)
      allows(a, 'joeadmin/admin', 'l', undefined, true)
    })

    it('gives joeadmin nothing: upper-case letters take away (line 2)', () => {
      for (const l of ['a', 'd', 'm', 'c', 'i', 'l'] as const) allows(a, 'joeadmin', l, 'joeadmin', false)
      expect(a.check(p('joeadmin'), 'i', p('x')).rule?.line).to.equal(3)
    })

    it('lets joeadmin/* inquire only about */root (line 3)', () => {
      allows(a, 'joeadmin/extra', 'i', 'bob/root', true)
      allows(a, 'joeadmin/extra', 'c', 'bob/root', false)
      allows(a, 'joeadmin/extra', 'i', 'bob', false)
    })

    it('lets */root change the password of its own null instance only, through the *1 back-reference (line 4)', () => {
      allows(a, 'bob/root', 'c', 'bob', true)
      allows(a, 'bob/root', 'i', 'bob', true)
      allows(a, 'bob/root', 'c', 'alice', false)
    })

    it('first match wins: line 4 matches */root on bob and decides, so line 5 adds no list right there', () => {
      allows(a, 'bob/root', 'l', 'bob', false)
      allows(a, 'bob/root', 'l', undefined, true)
    })

    it('carries the restrictions of the line that allowed (line 6)', () => {
      const d = a.check(p('sms'), 'a', p('newuser'))
      expect(d.allowed).to.equal(true)
      expect(d.restrictions).to.deep.equal({ maxLifeMs: 9 * 3600_000, attributes: { allowRenewable: false } })
    })

    it('refuses a principal no line matches', () => {
      allows(a, 'mallory', 'i', 'mallory', false)
      expect(a.check(p('mallory'), 'i').rule).to.equal(undefined)
    })
  })

  describe('wildcards', () => {
    it('matches * per whole component, with the same number of components', () => {
      const a = acl('*/admin  i\n')
      allows(a, 'bob/admin', 'i', 'x', true)
      allows(a, 'admin', 'i', 'x', false)
      allows(a, 'a/b/admin', 'i', 'x', false)
    })

    it('matches the realm with *, and a bare * as any principal of any length and realm', () => {
      const a = acl('bob@*  i\n*  l\n')
      allows(a, 'bob@OTHER.ORG', 'i', 'x', true)
      allows(a, 'bob/admin@OTHER.ORG', 'l', undefined, true)
      allows(a, 'bob/admin@OTHER.ORG', 'i', 'x', false)
    })

    it('takes patterns without a realm as the local realm', () => {
      const a = acl('bob  i\n')
      allows(a, 'bob', 'i', 'x', true)
      allows(a, 'bob@OTHER.ORG', 'i', 'x', false)
    })

    it('resolves several back-references (t_kadmin_acl.py: */* d *2/*1)', () => {
      const a = acl('*/*  d  *2/*1\n*/two/*/*  d  *3/*1/*2\n')
      allows(a, 'a/b', 'd', 'b/a', true)
      allows(a, 'a/b', 'd', 'a/b', false)
      allows(a, 'one/two/three/four', 'd', 'four/one/three', true)
      allows(a, 'one/two/three/four', 'd', 'three/one/two', false)
    })

    it('never matches a back-reference past the wildcards of the actor', () => {
      const a = acl('bob/*  i  *2\n')
      allows(a, 'bob/x', 'i', 'x', false)
    })

    it('matches a line with a target only for operations that have one', () => {
      const a = acl('bob  l  alice\nbob  i\n')
      allows(a, 'bob', 'l', undefined, false)
      expect(a.check(p('bob'), 'l').rule?.line).to.equal(2)
    })
  })

  describe('permissions', () => {
    it('reads letters left to right: x grants all but e, an upper-case letter then removes one', () => {
      const a = acl('bob  xD\ncarol  *e\ndave  eX\n')
      allows(a, 'bob', 'd', 'x', false)
      allows(a, 'bob', 'a', 'x', true)
      allows(a, 'carol', 'e', 'x', true)
      allows(a, 'dave', 'e', 'x', true)
      allows(a, 'dave', 'a', 'x', false)
    })

    it('knows a full admin: every letter of x on all targets', () => {
      const a = acl('root  *\nhalf  xU\nscoped  *  svc/*\n')
      expect(a.isFullAdmin(p('root'))).to.equal(true)
      expect(a.isFullAdmin(p('half'))).to.equal(false)
      expect(a.isFullAdmin(p('scoped'))).to.equal(false)
    })
  })

  describe('syntax', () => {
    it('skips comments and blank lines, joins continued lines, splits on white space and commas', () => {
      const a = acl('# a comment\n\n   \nbob,i \\\n  alice  # trailing\n')
      expect(a.rules).to.have.length(1)
      expect(a.rules[0]!.line).to.equal(4)
      allows(a, 'bob', 'i', 'alice', true)
    })

    it('names the file and line of an unknown letter', () => parseFails('bob i\nbob q\n', 2, 'unknown permission "q"'))
    it('names the line of a missing permissions field', () => parseFails('\nbob\n', 2, 'needs a principal and permissions'))
    it('refuses a back-reference in the actor', () => parseFails('*1/admin i\n', 1, 'back-references are allowed in the target only'))
    it('refuses a partial wildcard', () => parseFails('adm* i\n', 1, 'whole component only'))
    it('refuses an unknown restriction', () => parseFails('bob a * -postdateable\n', 1, 'unknown restriction "-postdateable"'))
    it('refuses a restriction without its value', () => parseFails('bob a * -maxlife\n', 1, 'needs a value'))
    it('refuses a bad duration', () => parseFails('bob a * -maxlife soon\n', 1, 'not a duration'))
    it('refuses a bad realm', () => parseFails('bob@bad..realm i\n', 1, 'bad realm'))
  })

  describe('restrictions', () => {
    const a = acl('r  am  *  +requires_preauth -allow_svr -policy users -maxlife 1h -maxrenewlife 2h -expire 30d -pwexpire 1d\nc a * -clearpolicy\n')
    const now = 1_000_000

    it('parse MIT flag names and aliases', () => {
      expect(a.rules[0]!.restrictions).to.deep.equal({
        attributes: { requiresPreauth: true, allowService: false },
        policy: 'users',
        maxLifeMs: 3600_000,
        maxRenewableLifeMs: 7200_000,
        expireInMs: 30 * 86_400_000,
        pwExpireInMs: 86_400_000,
      })
    })

    it('force flags and policy and cap the lifetimes and expiries on what was asked', () => {
      const out = applyRestrictions(
        a.rules[0]!.restrictions,
        { attributes: { requiresPreauth: false, allowService: true, allowForwardable: true }, policy: 'admins', maxLife: 10 * 3600_000, maxRenewableLife: 3600_000 },
        now,
      )
      expect(out).to.deep.equal({
        attributes: { requiresPreauth: true, allowService: false, allowForwardable: true },
        policy: 'users',
        maxLife: 3600_000,
        maxRenewableLife: 3600_000,
        expiresAt: now + 30 * 86_400_000,
        passwordExpiresAt: now + 86_400_000,
      })
    })

    it('keep an earlier expiry that was asked for', () => {
      expect(applyRestrictions(a.rules[0]!.restrictions, { expiresAt: now + 5 }, now).expiresAt).to.equal(now + 5)
    })

    it('-clearpolicy forces the policy empty', () => {
      expect(applyRestrictions(a.rules[1]!.restrictions, { policy: 'x' }, now).policy).to.equal(null)
    })
  })

  describe('explain', () => {
    const a = acl('admin  *\nhelp  i\nren  d  old\nren  a  *  +preauth\nren2 ad\n')

    it('names the deciding line and why', () => {
      const e = explain(a, p('help'), 'cpw', p('bob'))
      expect(e.allowed).to.equal(false)
      expect(e.decisions[0]!.rule?.line).to.equal(2)
      expect(e.reason).to.include('line 2').and.include("'c' (change-password)")
    })

    it('reports the self-service rule when it decides', () => {
      const e = explain(a, p('bob'), 'cpw', p('bob'))
      expect(e.allowed).to.equal(true)
      expect(e.selfService).to.include('own password')
    })

    it('allows a rename only through an add line without restrictions (MIT acl_renprinc)', () => {
      expect(explain(a, p('ren2'), 'renprinc', p('x'), { newTarget: p('y') }).allowed).to.equal(true)
      expect(explain(a, p('admin'), 'renprinc', p('x'), { newTarget: p('y') }).allowed).to.equal(true)
      const e = explain(a, p('ren'), 'renprinc', p('old'), { newTarget: p('new') })
      expect(e.decisions[0]!.allowed).to.equal(true)
      expect(e.allowed).to.equal(false)
      expect(e.reason).to.include('restrictions')
    })

    it('needs c as well for ktadd with randkey', () => {
      const b = acl('ex  e\n')
      expect(explain(b, p('ex'), 'ktadd', p('svc')).allowed).to.equal(true)
      expect(explain(b, p('ex'), 'ktadd', p('svc'), { randkey: true }).allowed).to.equal(false)
    })
  })

  it('defaultAcl gives the initial admin everything, extract included', () => {
    const a = Acl.parse(defaultAcl(p('admin')), { realm: REALM })
    for (const l of ['a', 'd', 'm', 'c', 'i', 'l', 's', 'e', 'p', 'u'] as const) allows(a, 'admin', l, 'anyone', true)
    allows(a, 'other', 'i', 'anyone', false)
  })
})

/** Wait until an ACL file edited in place counts as still. */
const settle = () => new Promise((r) => setTimeout(r, ACL_SETTLE_MS + 60))

describe('AclFile', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tessera-acl-'))
  })
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  function logger() {
    const errors: string[] = []
    return { errors, log: { error: (m: string) => errors.push(m) } }
  }

  it('reloads when the file changes, without a restart', async () => {
    const file = join(dir, 'kadm5.acl')
    await writeFile(file, 'bob  i\n')
    const f = AclFile.open(file, { realm: REALM, watch: false })
    expect(f.current().check(p('bob'), 'c', p('x')).allowed).to.equal(false)
    // Edited in place: read once it has been still for ACL_SETTLE_MS.
    await writeFile(file, 'bob  ic\n')
    await settle()
    expect(f.current().check(p('bob'), 'c', p('x')).allowed).to.equal(true)
    // Replaced by rename (what editors do): a new inode.
    await writeFile(join(dir, 'new'), 'bob  I\n')
    await rename(join(dir, 'new'), file)
    expect(f.current().check(p('bob'), 'i', p('x')).allowed).to.equal(false)
    f.close()
  })

  it('keeps the last good ACL when the new file does not parse, and logs file and line', async () => {
    const file = join(dir, 'kadm5.acl')
    await writeFile(file, 'bob  i\n')
    const { errors, log } = logger()
    const f = AclFile.open(file, { realm: REALM, log, watch: false })
    await writeFile(file, 'bob  i\nbob  iq\n')
    await settle()
    expect(f.current().check(p('bob'), 'i', p('x')).allowed).to.equal(true)
    expect(errors.join('\n')).to.include(`${file}:2:`)
    expect(f.error?.code).to.equal(TesseraErrorCode.TESSERA_ACL)
    await writeFile(file, 'carol  i\n')
    await settle()
    expect(f.current().check(p('bob'), 'i', p('x')).allowed).to.equal(false)
    expect(f.error).to.equal(undefined)
    f.close()
  })

  it('never reads a file edited in place half-written: truncated (no rules) or cut mid-line (a wider grant)', async () => {
    const file = join(dir, 'kadm5.acl')
    await writeFile(file, 'admin  *e\nbob  ci  svc/*\n')
    const f = AclFile.open(file, { realm: REALM, watch: false })
    expect(f.current().check(p('admin'), 'a', p('x')).allowed).to.equal(true)
    // An editor writing in place: truncate, then a first chunk cut mid-line.
    await writeFile(file, '')
    expect(f.current().check(p('admin'), 'a', p('x')).allowed, 'truncated file not taken').to.equal(true)
    await writeFile(file, 'admin  *e\nbob  ci')
    expect(f.current().check(p('bob'), 'c', p('anything')).allowed, 'cut line not taken').to.equal(false)
    await writeFile(file, 'admin  *e\nbob  ci  svc/*\ncarol  i\n')
    await settle()
    const acl = f.current()
    expect(acl.check(p('carol'), 'i', p('x')).allowed).to.equal(true)
    expect(acl.check(p('bob'), 'c', p('anything')).allowed).to.equal(false)
    expect(acl.check(p('bob'), 'c', p('svc/a')).allowed).to.equal(true)
    f.close()
  })

  it('treats a missing file as an empty ACL, and says so', async () => {
    const file = join(dir, 'kadm5.acl')
    const { errors, log } = logger()
    const f = AclFile.open(file, { realm: REALM, log, watch: false })
    expect(f.current().rules).to.have.length(0)
    expect(errors[0]).to.include('does not exist')
    await writeFile(file, 'bob  i\n')
    expect(f.current().check(p('bob'), 'i', p('x')).allowed).to.equal(true)
    await unlink(file)
    expect(f.current().check(p('bob'), 'i', p('x')).allowed).to.equal(false)
    f.close()
  })

  it('refuses to start from a file that does not parse', async () => {
    const file = join(dir, 'kadm5.acl')
    await writeFile(file, 'bob  q\n')
    expect(() => AclFile.open(file, { realm: REALM, watch: false })).to.throw(TesseraError, `${file}:1:`)
  })
})

describe('parseDuration', () => {
  for (const [text, ms] of [
    ['90s', 90_000],
    ['10m', 600_000],
    ['2h', 7_200_000],
    ['30d', 30 * 86_400_000],
    ['1h30m', 5_400_000],
    ['2:30', 9_000_000],
    ['3600', 3_600_000],
  ] as const)
    it(`reads ${text}`, () => expect(parseDuration(text)).to.equal(ms))
  it('refuses text that is no duration', () => expect(() => parseDuration('soon')).to.throw(TesseraError))
})
