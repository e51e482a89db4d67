/**
 * Structural equality and printing of plain JS values (including Map, Set, Uint8Array), used to
 * compare replica values when a spec gives no `equals`.
 */

/** Deep structural equality. Sets and Maps compare by content, ignoring insertion order. */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
    return true
  }
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!(Array.isArray(a) && Array.isArray(b)) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false
    return true
  }
  if (a instanceof Set || b instanceof Set) {
    if (!(a instanceof Set && b instanceof Set) || a.size !== b.size) return false
    // Each element of `a` matched to its own element of `b`: two equal objects in `a` need two in
    // `b` (matching any equal one said Set{[1],[1]} equals Set{[1],[2]}). Primitives are unique in
    // a Set: b.has finds the one.
    const objects: object[] = []
    for (const y of b) if (typeof y === 'object' && y !== null) objects.push(y)
    const used = new Array<boolean>(objects.length).fill(false)
    outer: for (const x of a) {
      if (typeof x !== 'object' || x === null) {
        if (b.has(x)) continue
        return false
      }
      for (let i = 0; i < objects.length; i++) {
        if (used[i] !== true && deepEqual(x, objects[i])) {
          used[i] = true
          continue outer
        }
      }
      return false
    }
    return true
  }
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) return false
    for (const [k, v] of a) {
      if (!b.has(k) || !deepEqual(v, b.get(k))) return false
    }
    return true
  }
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  if (ka.length !== kb.length) return false
  const ob = b as Record<string, unknown>
  const oa = a as Record<string, unknown>
  for (const k of ka) if (!Object.prototype.hasOwnProperty.call(ob, k) || !deepEqual(oa[k], ob[k])) return false
  return true
}

/** A readable, deterministic rendering of a value for failure messages. */
export function show(v: unknown, depth = 0): string {
  if (depth > 6) return '…'
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v === 'string') return JSON.stringify(v)
  if (typeof v !== 'object' || v === null) return String(v)
  if (v instanceof Uint8Array) return `bytes[${v.length}](${[...v.subarray(0, 48)].map((x) => x.toString(16).padStart(2, '0')).join('')}${v.length > 48 ? '…' : ''})`
  if (Array.isArray(v)) return `[${v.map((x) => show(x, depth + 1)).join(', ')}]`
  if (v instanceof Set) return `Set{${[...v].map((x) => show(x, depth + 1)).sort().join(', ')}}`
  if (v instanceof Map) return `Map{${[...v].map(([k, x]) => `${show(k, depth + 1)} => ${show(x, depth + 1)}`).sort().join(', ')}}`
  return `{${Object.keys(v)
    .sort()
    .map((k) => `${k}: ${show((v as Record<string, unknown>)[k], depth + 1)}`)
    .join(', ')}}`
}
