import t from 'tap'
import { PIPELINE_MAX } from '../src/connection-limit.js'
import { HELD_MAX } from '../src/routes/metrics.js'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { RawConnection, envelopeOf, exchange, listen, rawPost, until } from './helpers/raw-http.js'
import { shed } from './helpers/shed.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const KEY = 'metrics-key-0123456789abcdef'
const SCRAPE = 'GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n'

/** One request on a new connection, closed after the answer: whether it got a token. */
async function freshRequest (port: number): Promise<boolean> {
  try {
    return envelopeOf(await exchange(port, rawPost(ROUTE, body, { connection: 'close' }))).statusCode === 200
  } catch {
    return false
  }
}

for (const [name, env] of [['without METRICS_KEY', {}], ['with METRICS_KEY', { METRICS_KEY: KEY }]] as const) {
  t.test(`/metrics on PORT (${name}): clients looping on /metrics cannot keep callers of the token route out`, async (t) => {
    const { url } = await startMock(t)
    const { app } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '5', ...env } })
    const port = await listen(app)
    const loops: RawConnection[] = []
    const state = { stopped: false, answers: 0, reopened: 0 }
    t.teardown(() => {
      state.stopped = true
      for (const loop of loops) loop.destroy()
    })
    /** A client that loops on /metrics with two requests under way, and opens its connection again if it is closed. */
    async function scrapeInLoop (): Promise<void> {
      while (!state.stopped) {
        const loop = await RawConnection.open(port)
        loops.push(loop)
        loop.write(SCRAPE + SCRAPE)
        while (!state.stopped && await loop.response(5000).catch(() => undefined)) {
          state.answers++
          loop.write(SCRAPE)
        }
        loop.destroy()
        if (!state.stopped) state.reopened++
      }
    }
    for (let i = 0; i < 5; i++) scrapeInLoop().catch(() => {})
    // The loops are past the scrapes a second: from now on each of their requests is held until its second ends.
    await until(() => state.answers >= 10, 'the loops got answers, 429 or 401')
    let answered = 0
    for (let i = 0; i < 20; i++) if (await freshRequest(port)) answered++
    t.ok(answered >= 19, `${answered} of 20 requests on new connections answered with a token`)
    t.comment(`the loops' connections were closed and opened again ${state.reopened} times`)
  })
}

t.test('a connection pipelining thousands of refused scrapes is closed once more than 16 are under way: nothing piles up behind a held one', async (t) => {
  const { app } = await build(t, { env: { METRICS_KEY: KEY } })
  const port = await listen(app)
  let received = 0
  app.server.on('request', () => { received++ })
  const client = await RawConnection.open(port)
  t.teardown(() => { client.destroy() })
  client.write(SCRAPE.repeat(20_000))
  let answered = 0
  while ((await client.response(5_000))?.status === 401) answered++
  t.ok(client.closed, 'the service closed the connection')
  t.ok(answered <= PIPELINE_MAX, `${answered} answered before it was closed, at most ${PIPELINE_MAX}`)
  // Node's HTTP parser reads up to 64 KiB at a time: what it had read is all that ever reached the service.
  t.ok(received <= Math.ceil(65_536 / SCRAPE.length), `${received} of the 20,000 requests reached the service, at most one read's worth`)
  t.equal((await shed(app)).pipelined, 1, 'counted as pipelined')
})

t.test(`at most ${HELD_MAX} refusals are held at once; past that a refusal is answered at once, and its connection closed`, async (t) => {
  const { app } = await build(t, { env: { METRICS_KEY: KEY } })
  const port = await listen(app)
  const clients = 300
  const received: number[] = []
  app.server.on('request', () => { received.push(Date.now()) })
  const connections = await Promise.all(Array.from({ length: clients }, async () => await RawConnection.open(port)))
  t.teardown(() => { for (const connection of connections) connection.destroy() })
  for (const connection of connections) connection.write(SCRAPE)
  const answers = await Promise.all(connections.map(async (connection) => await connection.response()))
  t.equal(answers.filter((answer) => answer?.status === 401).length, clients, 'every scrape without the key answered 401')
  // The held ones are answered when their second ends: each second the requests arrived in held HELD_MAX at most.
  const seconds = Math.floor(Math.max(...received) / 1000) - Math.floor(Math.min(...received) / 1000) + 1
  const closing = answers.filter((answer) => answer?.headers.connection === 'close').length
  t.ok(closing >= clients - HELD_MAX * seconds, `${closing} answered at once with connection: close (requests received over ${seconds} s)`)
  t.ok(closing < clients, 'the others were held')
})
