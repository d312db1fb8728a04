import { expect } from 'chai'
import { KeyedMutex } from '../../src/db/mutex.js'

const tick = () => new Promise((resolve) => setImmediate(resolve))

describe('KeyedMutex', () => {
  it('runs sections of one key one at a time, in arrival order', async () => {
    const m = new KeyedMutex()
    const log: string[] = []
    await Promise.all(
      [1, 2, 3].map((i) =>
        m.run('k', async () => {
          log.push(`start ${i}`)
          await tick()
          log.push(`end ${i}`)
        }),
      ),
    )
    expect(log).to.deep.equal(['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3'])
  })

  it('runs sections of different keys concurrently', async () => {
    const m = new KeyedMutex()
    const log: string[] = []
    await Promise.all(
      ['a', 'b'].map((k) =>
        m.run(k, async () => {
          log.push(`start ${k}`)
          await tick()
          log.push(`end ${k}`)
        }),
      ),
    )
    expect(log).to.deep.equal(['start a', 'start b', 'end a', 'end b'])
  })

  it('passes results and errors through and keeps going after a failure', async () => {
    const m = new KeyedMutex()
    const failing = m.run('k', async () => {
      throw new Error('boom')
    })
    const next = m.run('k', async () => 42)
    try {
      await failing
      expect.fail('resolved')
    } catch (err) {
      expect((err as Error).message).to.equal('boom')
    }
    expect(await next).to.equal(42)
  })

  it('holds no memory for idle keys', async () => {
    const m = new KeyedMutex()
    await Promise.all([m.run('a', async () => {}), m.run('a', async () => {}), m.run('b', async () => {})])
    expect(m.size).to.equal(0)
  })
})
