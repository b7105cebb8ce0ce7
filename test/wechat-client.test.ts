import t from 'tap'
import { createWechatClient } from '../src/wechat/client.js'
import { AppError } from '../src/errors.js'
import { APP_ID, APP_SECRET, startMock } from './helpers/build.js'

function client (baseUrl: string, mode: 'stable' | 'classic') {
  const c = createWechatClient({
    baseUrl,
    mode,
    connectTimeoutMs: 1000,
    headersTimeoutMs: 2000,
    bodyTimeoutMs: 2000,
    connections: 4,
    maxRetries: 2,
    retryBaseMs: 10
  })
  t.teardown(() => c.close())
  return c
}

t.test('expiry counts from when the request was sent, not when it was answered', async (t) => {
  const { mock, url } = await startMock(t)
  mock.inject({ fault: { kind: 'latency', ms: 400 } })
  const sentAt = Date.now()
  const token = await client(url, 'classic').fetchToken(APP_ID, APP_SECRET, { deadline: Date.now() + 5000 })
  const answeredAt = Date.now()
  t.ok(answeredAt - sentAt >= 400)
  t.ok(token.expiresAt >= sentAt + 7200_000 && token.expiresAt < sentAt + 7200_000 + 100,
    `expiresAt is ${token.expiresAt - sentAt} ms after sending`)
})

t.test('a base URL with a path prefix is honoured', async (t) => {
  const { url } = await startMock(t)
  const { createServer } = await import('node:http')
  const { request } = await import('undici')
  const proxy = createServer((req, res) => {
    const path = (req.url ?? '').replace(/^\/wechat/, '')
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      request(`${url}${path}`, { method: req.method as 'POST', body: Buffer.concat(chunks) })
        .then(async (r) => res.writeHead(r.statusCode).end(await r.body.text()))
        .catch(() => res.destroy())
    })
  })
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { proxy.close() })
  const port = (proxy.address() as { port: number }).port
  const token = await client(`http://127.0.0.1:${port}/wechat/`, 'stable').fetchToken(APP_ID, APP_SECRET, { deadline: Date.now() + 5000 })
  t.type(token.accessToken, 'string')
})

t.test('stable force_refresh is sent when asked', async (t) => {
  const { mock, url } = await startMock(t)
  const c = client(url, 'stable')
  const first = await c.fetchToken(APP_ID, APP_SECRET, { deadline: Date.now() + 5000 })
  const same = await c.fetchToken(APP_ID, APP_SECRET, { deadline: Date.now() + 5000 })
  t.equal(same.accessToken, first.accessToken)
  const forced = await c.fetchToken(APP_ID, APP_SECRET, { deadline: Date.now() + 5000, forceRefresh: true })
  t.not(forced.accessToken, first.accessToken)
  t.equal(mock.issued(APP_ID, 'stable_token'), 2)
})

t.test('no error message carries the secret, in either mode', async (t) => {
  const { mock, url } = await startMock(t)
  for (const mode of ['stable', 'classic'] as const) {
    for (const fault of [{ kind: 'drop' }, { kind: 'http', status: 500 }, { kind: 'garbage' }, { kind: 'errcode', errcode: 40164 }] as const) {
      mock.clearFaults()
      mock.inject({ fault })
      const err = await client(url, mode).fetchToken(APP_ID, APP_SECRET, { deadline: Date.now() + 2000 }).catch((e: unknown) => e)
      t.ok(err instanceof AppError, `${mode} ${fault.kind}`)
      t.notMatch(String((err as Error).message), APP_SECRET)
      t.notMatch(JSON.stringify(err), APP_SECRET)
    }
  }
})
