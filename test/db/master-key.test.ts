import { chmod, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'chai'
import { createStash, masterKeyFromPassphrase, readStash } from '../../src/db/master-key.js'
import { TesseraErrorCode } from '../../src/errors.js'
import { rejectsWith, tempDir } from './helpers/records.js'

const posix = process.platform !== 'win32'

describe('master key', () => {
  let dir: string
  let remove: () => Promise<void>
  beforeEach(async () => {
    ;({ dir, remove } = await tempDir())
  })
  afterEach(() => remove())

  describe('createStash', () => {
    it('writes 32 random bytes with mode 0600 and returns them', async () => {
      const path = join(dir, 'stash')
      const key = await createStash(path)
      expect(key).to.have.length(32)
      expect(new Uint8Array(await readFile(path))).to.deep.equal(key)
      if (posix) expect((await stat(path)).mode & 0o777).to.equal(0o600)
      expect(await createStash(join(dir, 'other'))).not.to.deep.equal(key)
    })

    it('refuses to overwrite an existing file with TESSERA_EXISTS', async () => {
      const path = join(dir, 'stash')
      const key = await createStash(path)
      await rejectsWith(createStash(path), TesseraErrorCode.TESSERA_EXISTS)
      expect(new Uint8Array(await readFile(path))).to.deep.equal(key)
    })
  })

  describe('readStash', () => {
    it('reads back the key createStash wrote', async () => {
      const path = join(dir, 'stash')
      const key = await createStash(path)
      expect(await readStash(path)).to.deep.equal(key)
    })

    for (const mode of [0o644, 0o640, 0o604, 0o660]) {
      it(`refuses a stash with mode 0${mode.toString(8)} with TESSERA_CONFIG`, async function () {
        if (!posix) this.skip()
        const path = join(dir, 'stash')
        await createStash(path)
        await chmod(path, mode)
        const err = await rejectsWith(readStash(path), TesseraErrorCode.TESSERA_CONFIG)
        expect(err.message).to.include('chmod 600')
      })
    }

    it('refuses a stash that is not 32 bytes with TESSERA_CONFIG', async () => {
      const path = join(dir, 'short')
      await writeFile(path, new Uint8Array(31), { mode: 0o600 })
      await rejectsWith(readStash(path), TesseraErrorCode.TESSERA_CONFIG)
      await writeFile(path, new Uint8Array(33), { mode: 0o600 })
      await rejectsWith(readStash(path), TesseraErrorCode.TESSERA_CONFIG)
    })

    it('reports a missing stash with TESSERA_CONFIG', async () => {
      await rejectsWith(readStash(join(dir, 'nope')), TesseraErrorCode.TESSERA_CONFIG)
    })
  })

  describe('masterKeyFromPassphrase', () => {
    it('derives the same 32-byte key for the same passphrase and realm, another for another realm', async () => {
      const [a, b, c] = await Promise.all([
        masterKeyFromPassphrase('open sesame', 'EXAMPLE.COM'),
        masterKeyFromPassphrase('open sesame', 'EXAMPLE.COM'),
        masterKeyFromPassphrase('open sesame', 'OTHER.ORG'),
      ])
      expect(a).to.have.length(32)
      expect(a).to.deep.equal(b)
      expect(a).not.to.deep.equal(c)
    })

    it('refuses an empty passphrase with TESSERA_CONFIG', async () => {
      await rejectsWith(masterKeyFromPassphrase('', 'EXAMPLE.COM'), TesseraErrorCode.TESSERA_CONFIG)
    })
  })
})
