import t, { type Test } from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { shed } from './helpers/shed.js'
import { RawConnection, envelopeOf, exchange, listen, rawPost, until } from './helpers/raw-http.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const TIMEOUT = 1000

/** One request on a new connection, closed after the answer: whether it got a token. */
async function freshRequest (port: number): Promise<boolean> {
  try {
    return envelopeOf(await exchange(port, rawPost(ROUTE, body, { connection: 'close' }))).statusCode === 200
  } catch {
    return false
  }
}

async function service (t: Test, env: Record<string, string>) {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '5', CONNECTION_GRACE_MS: '100', REQUEST_TIMEOUT_MS: String(TIMEOUT), ...env } })
  const port = await listen(app)
  const accepted: Socket[] = []
  app.server.on('connection', (socket: Socket) => { accepted.push(socket) })
  /** Requests received and answers finished (handed to the socket whole) per connection. */
  const progress = new Map<Socket, { received: number, finished: number }>()
  app.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const counts = progress.get(request.socket) ?? { received: 0, finished: 0 }
    progress.set(request.socket, counts)
    counts.received++
    response.once('finish', () => { counts.finished++ })
  })
  return { app, port, accepted, progress }
}

/**
 * Past every timeout the service applies to a client, the five connections are still open (no timeout frees their
 * room): a caller gets in all the same, one of them being closed to make room, for `reason`.
 */
async function callerGetsIn (t: Test, app: FastifyInstance, port: number, held: Socket[], reason: 'pipelined' | 'unread'): Promise<void> {
  await sleep(TIMEOUT * 3)
  t.equal(held.filter((socket) => !socket.destroyed).length, 5, 'the service still holds the five connections, past REQUEST_TIMEOUT_MS')
  let answered = 0
  for (let i = 0; i < 20; i++) if (await freshRequest(port)) answered++
  t.ok(answered >= 19, `${answered} of 20 requests on new connections answered with a token`)
  const counts = await shed(app)
  t.equal(counts.new, 0, 'no caller\'s new connection was closed to make room')
  t.ok(counts[reason]! >= 1, `one of the five was closed to make room, as ${reason}`)
}

for (const [name, line, env] of [
  ['/openapi.json', 'GET /openapi.json HTTP/1.1\r\nhost: localhost\r\n\r\n', {}],
  ['/health/live', 'GET /health/live HTTP/1.1\r\nhost: localhost\r\n\r\n', { DOCS_ENABLED: 'false' }]
] as const) {
  t.test(`connections that pipeline hundreds of requests for ${name} and never read the answers are closed at once; callers get in`, async (t) => {
    const { app, port } = await service(t, env)
    const readers: RawConnection[] = []
    t.teardown(() => { for (const reader of readers) reader.destroy() })
    for (let i = 0; i < 5; i++) {
      const reader = await RawConnection.open(port)
      readers.push(reader)
      reader.socket.pause()
      // 400 complete requests in one write: their answers would stay in memory until read.
      reader.write(line.repeat(400))
    }
    await until(async () => (await shed(app)).pipelined === 5, 'each of the five closed for pipelining past 16 requests')
    t.pass('each of the five was closed for pipelining past 16 requests')
    let answered = 0
    for (let i = 0; i < 20; i++) if (await freshRequest(port)) answered++
    t.equal(answered, 20, 'and every request on a new connection is answered with a token')
    t.equal((await shed(app)).new, 0, 'no caller\'s connection was closed')
  })
}

t.test('connections that leave their answers unread, never more than a few requests under way, are closed to make room once the grace has passed', async (t) => {
  const { app, port, accepted, progress } = await service(t, {})
  const readers: RawConnection[] = []
  t.teardown(() => { for (const reader of readers) reader.destroy() })
  const docs = 'GET /openapi.json HTTP/1.1\r\nhost: localhost\r\n\r\n'
  for (let i = 0; i < 5; i++) {
    const reader = await RawConnection.open(port)
    readers.push(reader)
    reader.socket.pause()
    await until(() => accepted[i] !== undefined, 'accepted')
    const socket = accepted[i]!
    const counts = (): { received: number, finished: number } => progress.get(socket) ?? { received: 0, finished: 0 }
    // Rounds of 4 requests, each sent once the last is answered, until the socket buffers are full and answers wait.
    for (let sent = 4; ; sent += 4) {
      reader.write(docs.repeat(4))
      await until(() => counts().received === sent && (counts().finished === sent || socket.writableLength > 0),
        `round answered, or its answers stuck, on connection ${i + 1}`)
      if (counts().finished < sent) break
    }
  }
  await callerGetsIn(t, app, port, accepted.slice(0, 5), 'unread')
})
