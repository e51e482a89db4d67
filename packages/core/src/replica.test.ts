import { afterEach, describe, expect, it, vi } from 'vitest'
import { callListeners } from './index.js'

describe('callListeners', () => {
  afterEach(() => vi.restoreAllMocks())

  it('a listener throwing a value with no string form stops neither the others nor the caller (String() of it threw a TypeError out of the call)', () => {
    const warn = vi.spyOn(process, 'emitWarning').mockImplementation(() => undefined)
    const got: number[] = []
    const throwers = [Object.create(null) as unknown, { toString: () => { throw new Error('no') } }, Symbol('s'), undefined]
    for (const thrown of throwers) {
      expect(() =>
        callListeners(
          'test',
          [
            () => {
              throw thrown
            },
            (a: number) => void got.push(a),
          ],
          1,
          undefined,
        ),
      ).not.toThrow()
    }
    expect(got).toEqual([1, 1, 1, 1])
    expect(warn).toHaveBeenCalledTimes(4)
  })
})
