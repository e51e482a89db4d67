/**
 * Whether this run is a CI run, where the suites that need outside servers or tools must run (a
 * missing one fails them instead of skipping). CI services export CI in several spellings —
 * `true`, `True`, `1`, `yes` — so any value but an empty one, `0`, `false` or `no` counts.
 */
export function isCI(): boolean {
  const v = process.env['CI']
  return v !== undefined && v.trim() !== '' && !/^(0|false|no)$/i.test(v.trim())
}
