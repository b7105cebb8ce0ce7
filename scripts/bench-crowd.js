/**
 * A crowd of connections that never complete a request, for the benchmark's crowd section, in its own process:
 * `node scripts/bench-crowd.js <port> <count> <silent|slowloris>` keeps <count> connections open to 127.0.0.1:<port>,
 * each opened again as soon as it is closed; silent ones never send a byte, slowloris ones send part of the headers.
 * Prints "ready" once every connection was opened once; on SIGTERM, prints how many it opened in all, and exits.
 */
import { connect } from 'node:net'

const [port, count, mode] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4] ?? 'silent']
let opened = 0
let stopping = false

function open () {
  const socket = connect(port, '127.0.0.1')
  socket.on('connect', () => {
    opened++
    if (opened === count) console.log('ready')
    if (mode === 'slowloris') socket.write('POST /api/v3/get-wechat-access-token-info HTTP/1.1\r\nhost: localhost\r\n')
  })
  socket.on('error', () => { /* a reset is what the service answers a shed connection with: it is opened again */ })
  socket.on('data', () => { /* an answer (a 408 at the request timeout) is read and ignored */ })
  socket.on('close', () => { if (!stopping) setImmediate(open) })
}

for (let i = 0; i < count; i++) open()
process.on('SIGTERM', () => {
  stopping = true
  console.log(String(opened))
  process.exit(0)
})
