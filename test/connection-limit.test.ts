import t from 'tap'
import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { SHED_REASONS } from '../src/connection-limit.js'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { keptAliveCaller, shed } from './helpers/shed.js'
import { Crowd, RawConnection, envelopeOf, exchange, listen, rawPost, until } from './helpers/raw-http.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }
const SLOWLORIS = `POST ${ROUTE} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n`

async function openConnections (app: FastifyInstance): Promise<number> {
  return await new Promise((resolve, reject) => app.server.getConnections((err, count) => { if (err) reject(err); else resolve(count) }))
}

/** One request on a new connection, closed after the answer: whether it got a token. */
async function freshRequest (port: number): Promise<boolean> {
  try {
    return envelopeOf(await exchange(port, rawPost(ROUTE, body, { connection: 'close' }))).statusCode === 200
  } catch {
    return false
  }
}

for (const [kind, send] of [['silent', undefined], ['slowloris', SLOWLORIS]] as const) {
  t.test(`a crowd of ${kind} connections opened again as soon as they are closed cannot keep a caller out`, async (t) => {
    const { url } = await startMock(t)
    const { app, logs } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '100' } })
    const port = await listen(app)
    const crowd = new Crowd(port, { size: 110, reconnect: true, ...(send ? { send } : {}) })
    t.teardown(async () => { await crowd.stop() })
    await crowd.opens(110 + 50)
    const before = crowd.opened
    let answered = 0
    for (let i = 0; i < 100; i++) if (await freshRequest(port)) answered++
    t.ok(answered >= 95, `${answered} of 100 requests on new connections answered with a token`)
    t.ok(crowd.opened > before + 100, `the crowd kept coming back meanwhile (${crowd.opened - before} connections opened)`)
    const counts = await shed(app)
    t.ok(counts.silent! + counts.headers! > 0, 'the service closed crowd connections that had not sent a whole request')
    t.ok(logs.records.some((r) => r.level === 40 && r.maxConnections === 100), 'the operator is told the limit was reached')
  })
}

t.test('a caller\'s kept-alive connection between requests is not closed while such a crowd comes and goes', async (t) => {
  const { port, kept, first } = await keptAliveCaller(t, 100)
  t.equal(first.statusCode, 200)
  const crowd = new Crowd(port, { size: 110, reconnect: true })
  t.teardown(async () => { await crowd.stop() })
  await crowd.opens(110 + 50)
  let answered = 0
  for (let i = 0; i < 50; i++) {
    kept.write(rawPost(ROUTE, body))
    if (envelopeOf(await kept.response()).statusCode === 200) answered++
    await sleep(10)
  }
  t.equal(answered, 50, 'every request on it answered')
  t.notOk(kept.closed, 'and it is still open')
})

t.test('connections that sent no whole request within CONNECTION_GRACE_MS are closed first, before an idle kept-alive one', async (t) => {
  const grace = 200
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '100', CONNECTION_GRACE_MS: String(grace) } })
  const port = await listen(app)
  const kept = await RawConnection.open(port)
  t.teardown(() => { kept.destroy() })
  kept.write(rawPost(ROUTE, body))
  t.equal(envelopeOf(await kept.response()).statusCode, 200)
  const old = new Crowd(port, { size: 99, reconnect: false })
  t.teardown(async () => { await old.stop() })
  await old.opens(99)
  await until(async () => await openConnections(app) === 100, 'the service holds 100 connections')
  // Both the crowd and the kept-alive connection are now past the grace: the crowd goes first all the same.
  await sleep(grace * 1.5)
  const late = new Crowd(port, { size: 10, reconnect: false, send: SLOWLORIS })
  t.teardown(async () => { await late.stop() })
  await until(() => old.closed >= 10, '10 of the old crowd closed')
  t.equal(old.closed, 10, 'the 10 longest waiting')
  t.equal((await shed(app)).stalled, 10, 'counted as stalled')
  t.equal(late.closed, 0, 'the newer connections are kept')
  t.notOk(kept.closed, 'the kept-alive connection is kept')
  kept.write(rawPost(ROUTE, body))
  t.equal(envelopeOf(await kept.response()).statusCode, 200, 'and serves its next request')
})

t.test('an idle kept-alive connection past the grace goes before one that has begun its next request', async (t) => {
  const grace = 100
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '3', CONNECTION_GRACE_MS: String(grace) } })
  const port = await listen(app)
  const accepted: Socket[] = []
  app.server.on('connection', (socket: Socket) => { accepted.push(socket) })
  const open = await Promise.all([0, 1, 2].map(async () => await RawConnection.open(port)))
  t.teardown(() => { for (const connection of open) connection.destroy() })
  for (const connection of open) {
    connection.write(rawPost(ROUTE, body))
    t.equal((await connection.response())?.status, 200, 'within the limit: served, kept alive')
  }
  await sleep(grace * 1.5)
  const request = rawPost(ROUTE, body)
  const split = request.indexOf('\r\n') + 2
  const first = accepted.find((socket) => socket.remotePort === open[0]!.socket.localPort)!
  const readBefore = first.bytesRead
  open[0]!.write(request.slice(0, split))
  await until(() => first.bytesRead === readBefore + split, 'the service read the first line of its next request')

  const later = await exchange(port, rawPost(ROUTE, body, { connection: 'close' }))
  t.equal(envelopeOf(later).statusCode, 200, 'the fourth connection is served')
  await open[1]!.done
  t.pass('the longest idle connection was closed to make room')
  t.notOk(open[2]!.closed, 'the other idle one is kept')
  t.same(await shed(app), Object.fromEntries(SHED_REASONS.map((reason) => [reason, reason === 'idle' ? 1 : 0])), 'one idle connection closed, nothing else')
  open[0]!.write(request.slice(split))
  t.equal(envelopeOf(await open[0]!.response()).statusCode, 200, 'the connection in the middle of its request is served')
})

t.test('a request that has all arrived is never cut: when every connection is being answered, the new one is closed', async (t) => {
  const { mock, url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '3', CONNECTION_GRACE_MS: '10' } })
  const port = await listen(app)
  mock.inject({ fault: { kind: 'latency', ms: 1500 } })
  const busy = await Promise.all([0, 1, 2].map(async () => await RawConnection.open(port)))
  t.teardown(() => { for (const connection of busy) connection.destroy() })
  for (const connection of busy) connection.write(rawPost(ROUTE, body))
  await until(() => mock.calls('stable_token') === 1, 'the token requested from WeChat')
  const crowd = new Crowd(port, { size: 5, reconnect: true })
  t.teardown(async () => { await crowd.stop() })
  await crowd.opens(50)
  for (const connection of busy) {
    const res = await connection.response()
    t.equal(envelopeOf(res).statusCode, 200, 'the requests in progress are answered')
  }
  await crowd.stop()
  t.ok((await shed(app)).new! >= 45, 'each new connection was closed instead')
  t.ok(logs.records.some((r) => r.level === 40 && r.maxConnections === 3), 'the operator is told the limit was reached')
})
