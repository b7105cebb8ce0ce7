/**
 * A V8 CPU profiler inside a benchmark server, preloaded (`node --import`) by scripts/profile-hit.ts when PROFILE_CPU=1,
 * so that only the windows it measures are profiled; loaded from this checkout, it profiles an earlier build's server
 * as well. Commands on stdin, one a line: `start <sampling interval µs>`, then `stop <file>` (the .cpuprofile is
 * written there). Each is answered, once done, by a line of JSON on stderr: {"profiler":"started"} or
 * {"profiler":"stopped","file":...}. Stdin rather than a signal: SIGUSR1 opens Node's inspector, SIGUSR2 is
 * bench-server.js's GC report, and V8's sampler itself runs on SIGPROF.
 */
import { writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'
import { createInterface } from 'node:readline'

const session = new Session()
session.connect()
const post = (method, params = {}) => new Promise((resolve, reject) => {
  session.post(method, params, (err, result) => { if (err) reject(err); else resolve(result) })
})
const answer = (message) => { process.stderr.write(JSON.stringify({ profiler: message.profiler, ...message }) + '\n') }

createInterface({ input: process.stdin }).on('line', (line) => {
  const [command, argument = ''] = line.trim().split(/ (.*)/s)
  const done = command === 'start'
    ? (async () => {
        await post('Profiler.enable')
        await post('Profiler.setSamplingInterval', { interval: Number(argument) || 1000 })
        await post('Profiler.start')
        answer({ profiler: 'started' })
      })()
    : command === 'stop'
      ? (async () => {
          const { profile } = await post('Profiler.stop')
          writeFileSync(argument, JSON.stringify(profile))
          answer({ profiler: 'stopped', file: argument })
        })()
      : Promise.reject(new Error(`unknown command ${command}`))
  done.catch((err) => { answer({ profiler: 'failed', error: String(err) }) })
})
