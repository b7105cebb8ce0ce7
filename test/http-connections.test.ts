import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ApiCodes } from '../src/api-codes.js'
import { APP_ID, APP_SECRET, CALLER_KEYS, build, startMock } from './helpers/build.js'
import { RawConnection, envelopeOf, exchange, listen, rawPost, type RawResponse } from './helpers/raw-http.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const KEY = CALLER_KEYS[0]!
const body = { appId: APP_ID, appSecret: APP_SECRET }
const payload = JSON.stringify(body)
const head = `POST ${ROUTE} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nauthorization: ${KEY}\r\n`

/** Checks an answer the clientErrorHandler wrote: the envelope, its real HTTP status, then the end of the connection. */
async function checkClientError (t: Test, connection: RawConnection, res: RawResponse | undefined, status: number, apiCode: number) {
  t.ok(res, 'answered')
  if (!res) return
  t.equal(res.status, status, 'the real HTTP status')
  t.match(res.headers['content-type'], /^application\/json/)
  t.equal(res.headers.connection, 'close')
  const envelope = envelopeOf(res)
  t.same(Object.keys(envelope).sort(), ['apiCode', 'message', 'requestId', 'statusCode'])
  t.equal(envelope.statusCode, status)
  t.equal(envelope.apiCode, apiCode)
  t.equal(envelope.requestId, res.headers['x-request-id'])
  t.notMatch(res.body, KEY)
  t.notMatch(res.body, APP_SECRET)
  await connection.done
  t.pass('the connection is closed')
  return envelope
}

t.test('framing errors get the envelope with a documented apiCode and the real status, and nothing of the request is logged', async (t) => {
  const { mock, url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { AUTH_TOKENS: KEY } })
  const port = await listen(app)
  const malformed = ApiCodes.MALFORMED_REQUEST.apiCode
  const cases: Array<[string, string, number, number]> = [
    ['a Content-Length that is not a number', `${head}content-length: 4x\r\n\r\n${payload}`, 400, malformed],
    ['two different Content-Lengths', `${head}content-length: 5\r\ncontent-length: 6\r\n\r\n${payload}`, 400, malformed],
    ['Content-Length with chunked', `${head}content-length: ${payload.length}\r\ntransfer-encoding: chunked\r\n\r\n${payload}`, 400, malformed],
    ['a chunk size that is not hexadecimal', `${head}transfer-encoding: chunked\r\n\r\nzz\r\n${payload}\r\n0\r\n\r\n`, 400, malformed],
    ['a request line that is not HTTP', `GARBAGE ${APP_SECRET}\r\n\r\n`, 400, malformed],
    ['a header name with a space', `${head}bad header: ${APP_SECRET}\r\ncontent-length: 0\r\n\r\n`, 400, malformed],
    ['headers larger than 16 KB', `${head}x-pad: ${'a'.repeat(20000)}\r\ncontent-length: 0\r\n\r\n`, 431, ApiCodes.HEADERS_TOO_LARGE.apiCode]
  ]
  for (const [name, request, status, apiCode] of cases) {
    await t.test(name, async (t) => {
      const connection = await RawConnection.open(port)
      connection.write(request)
      const envelope = await checkClientError(t, connection, await connection.response(), status, apiCode)
      t.ok(logs.records.some((r) => r.reqId === envelope?.requestId && r.apiCode === apiCode), 'logged under its requestId')
    })
  }
  t.equal(mock.calls('stable_token'), 0)
  t.notMatch(logs.text, KEY, 'the raw request is not logged')
  t.notMatch(logs.text, APP_SECRET)
})

t.test('a malformed request pipelined behind a valid one closes the connection; the service keeps serving', async (t) => {
  const { url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { AUTH_TOKENS: KEY } })
  const port = await listen(app)
  const connection = await RawConnection.open(port)
  connection.write(`${rawPost(ROUTE, body, { authorization: KEY })}GARBAGE\r\n\r\n`)
  await checkClientError(t, connection, await connection.response(), 400, ApiCodes.MALFORMED_REQUEST.apiCode)
  const next = await exchange(port, rawPost(ROUTE, body, { authorization: KEY, connection: 'close' }))
  t.equal(next?.status, 200)
  t.equal(envelopeOf(next).statusCode, 200, 'the next connection gets a token')
  t.notMatch(logs.text, KEY)
  t.notMatch(logs.text, APP_SECRET)
})

/** Writes `parts` one every `everyMs` until the connection answers or closes; resolves with the answer and when it came. */
async function trickle (connection: RawConnection, parts: string[], everyMs: number) {
  const started = Date.now()
  connection.write(parts.shift()!)
  const timer = setInterval(() => {
    const part = parts.shift()
    if (part !== undefined && !connection.closed) connection.write(part)
  }, everyMs)
  try {
    const res = await connection.response(5000)
    return { res, elapsed: Date.now() - started }
  } finally {
    clearInterval(timer)
  }
}

t.test('a request that trickles in is cut off near REQUEST_TIMEOUT_MS with the 408 envelope', async (t) => {
  const timeout = 600
  const { url } = await startMock(t)
  const { app, logs } = await build(t, { upstream: url, env: { AUTH_TOKENS: KEY, REQUEST_TIMEOUT_MS: String(timeout) } })
  const port = await listen(app)
  const cases: Array<[string, string[]]> = [
    ['a body, one byte at a time', [`${head}content-length: ${payload.length}\r\n\r\n`, ...payload]],
    ['headers, one line at a time', [`POST ${ROUTE} HTTP/1.1\r\n`, ...Array.from({ length: 100 }, (_, i) => `x-h${i}: ${APP_SECRET}\r\n`)]],
    ['nothing at all', ['']]
  ]
  for (const [name, parts] of cases) {
    await t.test(name, async (t) => {
      const connection = await RawConnection.open(port)
      t.teardown(() => { connection.destroy() })
      const { res, elapsed } = await trickle(connection, parts, 100)
      await checkClientError(t, connection, res, 408, ApiCodes.REQUEST_TIMEOUT.apiCode)
      t.ok(elapsed >= timeout && elapsed < timeout * 1.1 + 400, `cut off after ${elapsed} ms`)
    })
  }
  const kept = await RawConnection.open(port)
  t.teardown(() => { kept.destroy() })
  kept.write(rawPost(ROUTE, body, { authorization: KEY }))
  t.equal(envelopeOf(await kept.response()).statusCode, 200, 'a prompt request is served')
  await sleep(timeout * 2)
  t.notOk(kept.closed, 'a kept-alive connection idle between requests is not cut off')
  kept.write(rawPost(ROUTE, body, { authorization: KEY }))
  t.equal((await kept.response())?.status, 200, 'and serves the next request')
  t.notMatch(logs.text, APP_SECRET)
})

t.test('a request that arrives on a kept-alive connection while the service closes is answered normally, then the connection closes', async (t) => {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url })
  const port = await listen(app)
  const connection = await RawConnection.open(port)
  t.teardown(() => { connection.destroy() })
  connection.write(rawPost(ROUTE, body))
  t.equal((await connection.response())?.headers.connection, 'keep-alive', 'kept alive')
  const request = rawPost(ROUTE, body)
  const split = request.indexOf('\r\n') + 2
  connection.write(request.slice(0, split))
  await sleep(50)
  const closed = app.close()
  await sleep(100)
  connection.write(request.slice(split))
  const res = await connection.response()
  t.equal(res?.status, 200)
  t.equal(res?.headers.connection, 'close', 'Connection: close')
  const envelope = envelopeOf(res)
  t.equal(envelope.statusCode, 200, 'answered with the token, not refused')
  t.equal(envelope.requestId, res?.headers['x-request-id'])
  t.type(envelope.data?.accessToken, 'string')
  await connection.done
  await closed
  t.pass('the connection and then the service closed')
})

t.test('what Node or the router would answer themselves gets the envelope too: a bad URL, no Host, an unknown Expect, CONNECT', async (t) => {
  const { mock, url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { AUTH_TOKENS: KEY } })
  const port = await listen(app)
  for (const target of [`${ROUTE}%`, '/%zz', '/api/v3/get-wechat-access-token-info%E0%A4%A']) {
    const res = await exchange(port, rawPost(target, body, { authorization: KEY }))
    t.equal(res?.status, 400, `${target}: HTTP 400`)
    t.match(envelopeOf(res), { statusCode: 400, apiCode: ApiCodes.MALFORMED_REQUEST.apiCode }, `${target}: the envelope`)
    t.equal(envelopeOf(res).requestId, res?.headers['x-request-id'])
  }
  const noHost = await exchange(port, `POST ${ROUTE} HTTP/1.1\r\ncontent-type: application/json\r\nauthorization: ${KEY}\r\ncontent-length: ${payload.length}\r\nconnection: close\r\n\r\n${payload}`)
  t.equal(envelopeOf(noHost).statusCode, 200, 'a request without Host is served')
  const expect = await exchange(port, `${head}expect: something-else\r\ncontent-length: ${payload.length}\r\n\r\n${payload}`)
  t.equal(expect?.status, 417)
  t.match(envelopeOf(expect), { statusCode: 417, apiCode: ApiCodes.EXPECTATION_FAILED.apiCode })
  const connect = await exchange(port, 'CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n')
  t.equal(connect?.status, 404)
  t.match(envelopeOf(connect), { statusCode: 404, apiCode: ApiCodes.ROUTE_NOT_FOUND.apiCode })
  t.equal(mock.calls('stable_token'), 1, 'only the request without Host reached WeChat')
})
