/** Tests and CI leave nothing behind: temporary directories are removed, fixture files are tap's (removed after each test). */
import t from 'tap'
import { readdir, readFile } from 'node:fs/promises'

const root = new URL('../', import.meta.url)

async function sources (dir: string): Promise<string[]> {
  const entries = await readdir(new URL(dir, root), { withFileTypes: true })
  const nested = await Promise.all(entries.map(async (entry) => entry.isDirectory()
    ? await sources(`${dir}${entry.name}/`)
    : entry.name.endsWith('.ts') ? [`${dir}${entry.name}`] : []))
  return nested.flat()
}

t.test('a test that makes a temporary directory removes it; none writes to a fixed path in /tmp', async (t) => {
  const files = [...await sources('test/'), ...await sources('scripts/')].filter((file) => file !== 'test/leftovers.test.ts')
  t.ok(files.length > 20, `${files.length} files`)
  for (const file of files) {
    const text = await readFile(new URL(file, root), 'utf8')
    t.notMatch(text, /['"`]\/tmp\//, `${file} names no path in /tmp (t.testdir() or mkdtemp(join(tmpdir(), ...)) with rm)`)
    if (/\bmkdtemp(Sync)?\(/.test(text)) t.match(text, /\brm(Sync)?\(/, `${file} removes the directory it makes`)
  }
})

t.test('.ci/run removes its log when it exits', async (t) => {
  const script = await readFile(new URL('.ci/run', root), 'utf8')
  const log = /^(\w+)=\$\(mktemp\)$/m.exec(script)
  t.ok(log, 'it keeps the log in a mktemp file')
  t.match(script, new RegExp(`^trap 'rm -f "\\$${log?.[1]}"' EXIT$`, 'm'), 'and removes it on exit, whatever the outcome')
})
