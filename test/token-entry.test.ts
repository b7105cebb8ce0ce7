import { spawnSync } from 'node:child_process'
import t from 'tap'

// Entries built by spreading get a V8 hidden class each (hundreds of bytes per cached app, and slower reads).
t.test('every token entry, stored or fetched, shares one hidden class', async (t) => {
  const script = `
    import { tokenEntry, parseEntry } from './src/store/types.ts'
    import { createMemoryStore } from './src/store/memory-store.ts'
    const store = createMemoryStore()
    const entries = []
    for (let i = 0; i < 50; i++) {
      const fetched = { accessToken: 'token-' + i, expiresAt: Date.now() + 7_000_000 + i }
      const entry = tokenEntry({ ...fetched, mode: 'stable', secretFingerprint: 'fp' + i, sentAt: Date.now(), fetchedAt: Date.now(), generation: 1 })
      await store.compareAndSet('wx' + i, entry, 0)
      entries.push(entry, parseEntry(JSON.stringify(entry)))
      const stored = await store.get('wx' + i)
      if (stored) entries.push(stored)
    }
    process.stdout.write(String(entries.filter((e) => !%HaveSameMap(e, entries[0])).length) + ' of ' + entries.length)
  `
  const run = spawnSync(process.execPath, ['--allow-natives-syntax', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' })
  t.equal(run.stderr.replace(/.*ExperimentalWarning.*\n?/g, ''), '', 'the script ran')
  t.match(run.stdout, /^0 of \d+$/, 'no entry with a shape of its own')
  t.notMatch(run.stdout, /^0 of 0$/)
})
