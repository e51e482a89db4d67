import { describe, expect, it } from 'vitest'
import { ConfigError, TransportError } from '@concord/core'
import { replyCode, translateError } from './errors.js'

function reply(message: string): Error {
  const e = new Error(message)
  e.name = 'ReplyError'
  return e
}

describe('translateError', () => {
  it('reads the code of a server reply', () => {
    expect(replyCode(reply('NOGROUP No such key'))).toBe('NOGROUP')
    expect(replyCode(new Error('Connection is closed.'))).toBeUndefined()
  })

  it('maps auth and type errors to ConfigError, transient replies and network errors to retriable TransportError', () => {
    for (const m of ['WRONGPASS invalid username-password pair', 'NOAUTH Authentication required.', 'WRONGTYPE Operation against a key']) {
      expect(translateError(reply(m), 'x')).toBeInstanceOf(ConfigError)
    }
    for (const m of ['LOADING Redis is loading', 'READONLY You cannot write', 'CLUSTERDOWN down', 'NOGROUP No such key']) {
      const e = translateError(reply(m), 'x')
      expect(e).toBeInstanceOf(TransportError)
      expect(e.retriable).toBe(true)
    }
    const network = translateError(new Error('Connection is closed.'), 'poll')
    expect(network).toBeInstanceOf(TransportError)
    expect(network.retriable).toBe(true)
    expect(network.cause).toBeInstanceOf(Error)
    const bad = translateError(reply('ERR syntax error'), 'x')
    expect(bad.retriable).toBe(false)
  })

  it('passes Concord errors through', () => {
    const e = new ConfigError('bad')
    expect(translateError(e, 'x')).toBe(e)
  })
})
