/**
 * Sorting for the hot paths. V8's Array.prototype.sort allocates its work state on every call,
 * and the codecs sort short arrays (a handful of replica ids or dots) on every encode. Results are
 * the same as the built-in sort's: both are stable, and the string order is the built-in default
 * (UTF-16 code units).
 */

/** Sorts `a` in place with `cmp` (insertion sort up to 16 elements, the built-in sort beyond). */
export function sortInPlace<T>(a: T[], cmp: (x: T, y: T) => number): T[] {
  if (a.length > 16) return a.sort(cmp)
  for (let i = 1; i < a.length; i++) {
    const x = a[i] as T
    let j = i - 1
    while (j >= 0 && cmp(a[j] as T, x) > 0) {
      a[j + 1] = a[j] as T
      j--
    }
    a[j + 1] = x
  }
  return a
}

/** The built-in sort's default order for strings. */
export function compareStrings(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0
}

/** The strings of `it`, sorted as `[...it].sort()` would. */
export function sortedStrings(it: Iterable<string>): string[] {
  return sortInPlace([...it], compareStrings)
}
