// Builds every @concord/* package and packs each into an npm tarball, for a project outside this
// repository to depend on (the packages are not published to a registry):
//
//   npm run pack-packages [-- --out=<folder>]      (default folder: packs/)
//
// then, in the other project, one npm install of every package it uses with the @concord packages
// those depend on (printed at the end): npm install <folder>/concord-core-0.1.0.tgz <folder>/concord-…
// A @concord dependency left out is looked up on the public registry, where the name is not ours.
// The tarballs hold the compiled JavaScript (dist/, built afresh: a file deleted from src/ is not
// shipped from an old build), its type declarations and the TypeScript sources.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs'
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

const run = (what, cmd, cmdArgs, stdout = 'inherit') => {
  process.stdout.write(`pack: ${what}\n`)
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: ['ignore', stdout, 'inherit'] })
  if (r.status !== 0) {
    process.stderr.write(`pack: ${what} failed (${r.error?.message ?? `exit ${r.status}`})\n`)
    process.exit(1)
  }
}

const dirs = readdirSync(join(root, 'packages'), { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(root, 'packages', d.name, 'package.json')))
  .map((d) => join(root, 'packages', d.name))
// From scratch: tsc -b leaves the output of a deleted source file in dist/, and skips a project
// whose build info says it is up to date.
for (const dir of dirs) {
  rmSync(join(dir, 'dist'), { recursive: true, force: true })
  rmSync(join(dir, 'tsconfig.tsbuildinfo'), { force: true })
}
run('building (tsc -b)', process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-b'])
// Tarballs of an earlier version would be installed beside the new ones by a `<folder>/*.tgz` glob.
mkdirSync(out, { recursive: true })
for (const f of readdirSync(out)) if (/^concord-.*\.tgz$/.test(f)) rmSync(join(out, f))
const manifests = dirs.map((dir) => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')))
const packages = manifests.map((m) => m.name)
run(`packing ${packages.length} packages into ${out}`, 'npm', ['pack', '--silent', '--pack-destination', out, ...packages.flatMap((p) => ['--workspace', p])], 'ignore')
const tarballs = readdirSync(out).filter((f) => /^concord-.*\.tgz$/.test(f))
if (tarballs.length !== packages.length) {
  process.stderr.write(`pack: expected ${packages.length} tarballs in ${out}, found ${tarballs.length}\n`)
  process.exit(1)
}
// Per package, the tarballs one install needs: it and the @concord packages it depends on.
const byName = new Map(manifests.map((m) => [m.name, m]))
const tarballOf = (name) => join(out, `${name.replace(/^@/, '').replace('/', '-')}-${byName.get(name).version}.tgz`)
const needs = (name, acc = new Set()) => {
  if (acc.has(name)) return acc
  acc.add(name)
  for (const dep of Object.keys(byName.get(name).dependencies ?? {})) if (byName.has(dep)) needs(dep, acc)
  return acc
}
process.stdout.write(`pack: done. In your project, one npm install of the tarballs of what you use and what it needs:\n`)
for (const name of packages) process.stdout.write(`  ${name.padEnd(26)} npm install ${[...needs(name)].sort().map(tarballOf).join(' ')}\n`)
