/**
 * Counts a benchmark server's garbage collections, preloaded (`node --import`) by scripts/bench.ts into the servers of
 * the hit runs; loaded from this checkout, it counts an earlier build's as well. On stdin, the line `gc` is answered
 * by a line of JSON on stderr with the totals since the process started:
 * {"gc":"counted","scavenges":n,"scavengeMs":x,"markCompacts":n,"markCompactMs":x} (a scavenge collects the young
 * generation; a mark-compact the whole heap). Stdin, as scripts/profile-agent.js does: SIGUSR2 is bench-server.js's.
 */
import { PerformanceObserver, constants } from 'node:perf_hooks'
import { createInterface } from 'node:readline'

const totals = { scavenges: 0, scavengeMs: 0, markCompacts: 0, markCompactMs: 0 }
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MINOR) {
      totals.scavenges++
      totals.scavengeMs += entry.duration
    } else if (entry.detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
      totals.markCompacts++
      totals.markCompactMs += entry.duration
    }
  }
}).observe({ entryTypes: ['gc'] })

createInterface({ input: process.stdin }).on('line', (line) => {
  const message = line.trim() === 'gc' ? { gc: 'counted', ...totals } : { gc: 'failed', error: `unknown command ${line.trim()}` }
  // The observer is called once the collections' entries are queued: a turn later, so a count asked for right after a
  // run includes them.
  setImmediate(() => { process.stderr.write(JSON.stringify(message) + '\n') })
})
