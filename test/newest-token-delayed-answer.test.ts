/**
 * Of two entries written for one app, the token WeChat issued last wins, also when an answer is delayed after WeChat
 * issued it (on the way back, or in a process that stalled with the answer in its socket), so that the answer that
 * arrives last is not the token issued last. In classic mode a token kept by mistake would be served by every
 * instance until it expires, two hours on, though WeChat retires it five minutes after the other is issued.
 */
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { APP_ID, APP_SECRET, TestClock, build, post, startMock, type Teardown } from './helpers/build.js'
import { RedisServer } from './helpers/redis-server.js'
import { until } from './helpers/until.js'

const TOKEN = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

/** A pass-through to the WeChat stand-in that can hold an answer (already issued) until released. */
async function delayingProxy (t: Teardown, target: string) {
  const upstream = new URL(target)
  let hold: Promise<void> | undefined
  let answered = 0
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const forward = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
        const parts: Buffer[] = []
        answer.on('data', (chunk: Buffer) => parts.push(chunk))
        answer.on('end', () => {
          answered++
          const send = (): void => { res.writeHead(answer.statusCode ?? 502, answer.headers).end(Buffer.concat(parts)) }
          if (hold) hold.then(send, () => res.destroy())
          else send()
        })
      })
      forward.on('error', () => res.destroy())
      forward.end(Buffer.concat(chunks))
    })
  })
  server.listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  let release = (): void => {}
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    holdNext () { hold = new Promise<void>((resolve) => { release = resolve }) },
    release () {
      hold = undefined
      release()
    },
    get answered () { return answered }
  }
}

t.test('classic mode, the store losing the lock (FLUSHALL): the token issued first but answered last is not the one kept', async (t) => {
  const redis = await RedisServer.start()
  t.teardown(() => redis.stop())
  const { mock, url } = await startMock(t)
  const proxy = await delayingProxy(t, url)
  const clock = new TestClock()
  const env = {
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: 'delayed-answer',
    WECHAT_TOKEN_MODE: 'classic',
    WECHAT_APPS: JSON.stringify({ [APP_ID]: APP_SECRET }),
    SCHEDULER_INTERVAL_SECONDS: '0'
  }
  // Instance a reaches WeChat through a path that delays answers; instance b directly.
  const a = (await build(t, { upstream: proxy.url, env, clock })).app
  const b = (await build(t, { upstream: url, env, clock })).app
  t.ok(await until(() => a.store.pubsubUp && b.store.pubsubUp), 'both instances subscribed')

  proxy.holdNext()
  const first = post(a, TOKEN, body)
  t.ok(await until(() => proxy.answered === 1), 'WeChat issued a\'s token; its answer is on its way')
  const issuedFirst = mock.issuedTokens()[0]!
  const client = redis.client()
  t.teardown(() => client.disconnect())
  await client.flushall()
  const second = await post(b, TOKEN, body)
  t.equal(second.body.statusCode, 200, 'b took the lost lock, fetched and stored a token')
  const issuedLast = mock.issuedTokens()[1]!
  t.equal(second.body.data?.accessToken, issuedLast)
  proxy.release()
  t.equal((await first).body.statusCode, 200, 'a\'s answer arrived last')

  // Which of the two WeChat issued last cannot be told from a's side (its request went out first, its answer came
  // last): it fetches once more, and that token, issued after both, is the latest.
  const latest = mock.issuedTokens().at(-1)!
  t.ok(mock.issuedTokens().length <= 3, 'at most one fetch more')
  clock.advance(6 * 60_000)
  mock.advance(6 * 60_000)
  t.equal(mock.check(issuedFirst), 'expired', 'five minutes on, WeChat has retired the token issued first')
  for (const [name, app] of [['a', a], ['b', b]] as const) {
    const served = (await post(app, TOKEN, body)).body.data?.accessToken
    t.equal(served, latest, `instance ${name} serves the token WeChat issued last`)
    t.equal(mock.check(served ?? ''), 'valid', `instance ${name} serves a token WeChat accepts`)
  }
})
