import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { isCI } from './ci.js'

const run = promisify(execFile)

/**
 * Whether `openssl` can make test certificates here. Under `CI=true` its absence is an error (the
 * TLS suites must run); elsewhere a notice says what to install and the caller skips.
 */
export async function hasOpenssl(): Promise<boolean> {
  try {
    await run('openssl', ['version'])
    return true
  } catch {
    const message = 'openssl is not installed: the TLS tests make their certificates with it (apt-get install openssl).'
    if (isCI()) throw new Error(`${message} Required under CI=true.`)
    console.warn(`[skipped] ${message}`)
    return false
  }
}

/**
 * Makes a self-signed certificate for 127.0.0.1 (its own CA) with `openssl`, valid one day, in
 * `dir`: PEM files `<name>.crt` and `<name>.key` (an unencrypted PKCS#8 RSA key), for private test servers.
 */
export async function selfSignedCert(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.crt`)
  const key = join(dir, `${name}.key`)
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'])
  return { cert, key }
}
