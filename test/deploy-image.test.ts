/**
 * The image builds offline on a supported Node line, and every installed package supports the Node versions the
 * project runs on: package.json's engines (what the tests run on) and the image's.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import semver from 'semver'

const root = new URL('../', import.meta.url)
const text = (path: string) => readFile(new URL(path, root), 'utf8')
const dockerfile = await text('Dockerfile')
const pkg = JSON.parse(await text('package.json')) as { engines: { node: string } }
const lock = JSON.parse(await text('package-lock.json')) as { packages: Record<string, { version?: string, dev?: boolean, engines?: unknown }> }

const bases = [...dockerfile.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]!)
const imageNode = /^node:(\d+)-/.exec(bases[0] ?? '')?.[1]

t.test('the Dockerfile needs nothing from a registry but its base image', async (t) => {
  t.notMatch(dockerfile, /^#\s*syntax\s*=/im, 'no syntax directive: BuildKit would fetch that frontend before line 1, and fail offline')
  t.ok(bases.length === 2 && bases.every((base) => base.startsWith(`node:${imageNode}-`)), `both stages on one Node line: ${bases.join(', ')}`)
})

t.test('the image runs an LTS line of Node that package.json\'s engines allows', async (t) => {
  t.ok(imageNode, 'the base is a node image of a major version')
  t.equal(Number(imageNode) % 2, 0, `Node ${imageNode}: even lines become LTS, odd ones never do`)
  t.ok(Number(imageNode) > 20, 'not Node 20, past its end of life since April 2026')
  t.ok(semver.satisfies(`${imageNode}.0.0`, pkg.engines.node), `engines (${pkg.engines.node}) allows it`)
})

t.test('every package in the lock supports the oldest Node engines allows, this one and the image\'s (npm ci: no EBADENGINE)', async (t) => {
  const oldest = semver.minVersion(pkg.engines.node)!.version
  const versions = [oldest, process.versions.node, `${imageNode}.0.0`]
  let checked = 0
  for (const [path, entry] of Object.entries(lock.packages)) {
    const range = (entry.engines as { node?: unknown } | undefined)?.node
    if (path === '' || typeof range !== 'string') continue
    checked++
    for (const version of versions) {
      if (!semver.satisfies(version, range)) t.fail(`${path.replace(/^.*node_modules\//, '')}@${entry.version} needs node ${range}, not ${version}${entry.dev ? '' : ' (a production dependency)'}`)
    }
  }
  t.ok(checked > 50, `${checked} packages declare the Node versions they support`)
})
