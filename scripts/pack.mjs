// Builds every @concord/* package and packs each into an npm tarball, for a project outside this
// repository to depend on (the packages are not published to a registry):
//
//   npm run pack-packages [-- --out=<folder>]      (default folder: packs/)
//
// then, in the other project: npm install <folder>/concord-core-0.1.0.tgz <folder>/concord-…
// (every package it uses, and @concord/core: the others depend on it by version). The tarballs
// hold the compiled JavaScript (dist/), its type declarations and the TypeScript sources.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const unknown = args.filter((a) => !a.startsWith('--out='))
if (unknown.length > 0) {
  process.stderr.write(`pack: unknown argument(s) ${unknown.join(' ')}; usage: npm run pack-packages [-- --out=<folder>]\n`)
  process.exit(2)
}
const outArg = args.find((a) => a.startsWith('--out='))?.slice('--out='.length)
if (outArg === '') {
  process.stderr.write('pack: --out= needs a folder\n')
  process.exit(2)
}
const out = resolve(outArg ?? join(root, 'packs'))

const run = (what, cmd, cmdArgs) => {
  process.stdout.write(`pack: ${what}\n`)
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] })
  if (r.status !== 0) {
    process.stderr.write(`pack: ${what} failed (${r.error?.message ?? `exit ${r.status}`})\n`)
    process.exit(1)
  }
}

run('building (tsc -b)', process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-b'])
// Tarballs of an earlier version would be installed beside the new ones by a `<folder>/*.tgz` glob.
mkdirSync(out, { recursive: true })
for (const f of readdirSync(out)) if (/^concord-.*\.tgz$/.test(f)) rmSync(join(out, f))
const packages = readdirSync(join(root, 'packages'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => JSON.parse(readFileSync(join(root, 'packages', d.name, 'package.json'), 'utf8')).name)
run(`packing ${packages.length} packages into ${out}`, 'npm', ['pack', '--silent', '--pack-destination', out, ...packages.flatMap((p) => ['--workspace', p])])
const tarballs = readdirSync(out).filter((f) => /^concord-.*\.tgz$/.test(f))
if (tarballs.length !== packages.length) {
  process.stderr.write(`pack: expected ${packages.length} tarballs in ${out}, found ${tarballs.length}\n`)
  process.exit(1)
}
process.stdout.write(`pack: done; in your project: npm install ${tarballs.map((t) => join(out, t)).join(' ')}\n`)
