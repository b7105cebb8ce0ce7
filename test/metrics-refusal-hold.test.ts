import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { HELD_MAX } from '../src/routes/metrics.js'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { RawConnection, envelopeOf, exchange, listen, rawPost, until } from './helpers/raw-http.js'

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

t.test('a connection pipelining refused scrapes gets every one answered, and no pipeline piles up behind a held one', async (t) => {
  const { app } = await build(t, { env: { METRICS_KEY: KEY } })
  const port = await listen(app)
  const underWay = new Map<Socket, number>()
  let most = 0
  app.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket
    underWay.set(socket, (underWay.get(socket) ?? 0) + 1)
    most = Math.max(most, underWay.get(socket)!)
    response.once('close', () => { underWay.set(socket, underWay.get(socket)! - 1) })
  })
  const client = await RawConnection.open(port)
  t.teardown(() => { client.destroy() })
  client.write(SCRAPE.repeat(20_000))
  let answered = 0
  while (answered < 20_000 && (await client.response(20_000))?.status === 401) answered++
  t.equal(answered, 20_000, 'every scrape without the key answered 401')
  // Node's HTTP parser reads up to 64 KiB at a time and emits every request of a read before any answer can end, so
  // that many are under way at once whatever the service does. Past PIPELINE_MAX under way none is held, so the
  // answers written pause the parser (Node's backpressure) instead of every one waiting for the end of its second
  // while the parser reads on: one read, and what is left of the answers to the one before when it resumes.
  const perRead = Math.ceil(65_536 / SCRAPE.length)
  t.ok(most <= 2 * perRead, `at most two reads' worth (${2 * perRead}) of the connection's requests under way at once (${most})`)
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
