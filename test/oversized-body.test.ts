import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { Socket } from 'node:net'
import { ApiCodes } from '../src/api-codes.js'
import { DRAIN_BYTES, DRAIN_MS } from '../src/plugins/envelope.js'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { RawConnection, envelopeOf, listen } from './helpers/raw-http.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const LIMIT = 8192
const oversized = (bytes: number): string => JSON.stringify({ appId: APP_ID, appSecret: APP_SECRET, pad: 'x'.repeat(bytes) })

async function service (t: Test) {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { BODY_LIMIT_BYTES: String(LIMIT) } })
  const accepted: Socket[] = []
  app.server.on('connection', (socket: Socket) => { accepted.push(socket) })
  const port = await listen(app)
  return { app, port, accepted }
}

function checkEnvelope (t: Test, envelope: { statusCode: number, apiCode?: number, requestId: string }, requestId: string | null | undefined): void {
  t.equal(envelope.statusCode, 413)
  t.equal(envelope.apiCode, ApiCodes.BODY_TOO_LARGE.apiCode)
  t.equal(envelope.requestId, requestId, 'its requestId in x-request-id')
}

t.test('Node\'s fetch sending a body of 1 MB or 4 MB reads the 1003 envelope, with Connection: close', async (t) => {
  const { port } = await service(t)
  for (const size of [1 << 20, 4 << 20]) {
    const res = await fetch(`http://127.0.0.1:${port}${ROUTE}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: oversized(size) })
    t.equal(res.status, 200, `${size} bytes: HTTP 200, as GenAuth answers`)
    t.equal(res.headers.get('connection'), 'close')
    t.match(res.headers.get('content-type'), /^application\/json/)
    checkEnvelope(t, await res.json() as { statusCode: number, apiCode?: number, requestId: string }, res.headers.get('x-request-id'))
  }
})

/** Python's urllib sends the whole body before it reads the answer. */
const PYTHON = `
import json, sys, urllib.request
url, size = sys.argv[1], int(sys.argv[2])
body = json.dumps({"appId": "${APP_ID}", "appSecret": "${APP_SECRET}", "pad": "x" * size}).encode()
try:
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers={"content-type": "application/json"})) as res:
        print(json.dumps({"status": res.status, "connection": res.headers["connection"], "requestId": res.headers["x-request-id"], "body": json.loads(res.read())}))
except Exception as err:
    print(json.dumps({"error": repr(err)}))
`

t.test('Python\'s urllib, which sends the whole body before reading, reads the 1003 envelope of a 1 MB or 6 MB body', async (t) => {
  const { port } = await service(t)
  for (const size of [1 << 20, 6 << 20]) {
    const child = spawn('python3', ['-c', PYTHON, `http://127.0.0.1:${port}${ROUTE}`, String(size)], { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
    await once(child, 'exit')
    const result = JSON.parse(out) as { error?: string, status: number, connection: string, requestId: string, body: { statusCode: number, apiCode?: number, requestId: string } }
    t.notOk(result.error, `${size} bytes: no error (${result.error ?? 'none'})`)
    if (result.error) continue
    t.equal(result.status, 200)
    t.equal(result.connection, 'close')
    checkEnvelope(t, result.body, result.requestId)
  }
})

/** Writes `chunk` again and again as fast as the connection takes it, until it is closed; resolves with the bytes written. */
async function flood (connection: RawConnection, chunk: Buffer): Promise<number> {
  let written = 0
  while (!connection.closed && !connection.socket.destroyed) {
    written += chunk.length
    if (!connection.socket.write(chunk)) {
      await new Promise((resolve) => {
        connection.socket.once('drain', resolve)
        connection.socket.once('close', resolve)
      })
    }
  }
  return written
}

t.test('a body that never ends is answered at once, read and discarded up to DRAIN_BYTES, and the connection closed', async (t) => {
  const { port, accepted } = await service(t)
  const cases: Array<[string, string]> = [
    ['a Content-Length far too large', `content-length: ${1e12}\r\n`],
    ['chunks without end', 'transfer-encoding: chunked\r\n']
  ]
  for (const [name, framing] of cases) {
    await t.test(name, async (t) => {
      const connection = await RawConnection.open(port, { allowHalfOpen: true })
      t.teardown(() => { connection.destroy() })
      const head = `POST ${ROUTE} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n${framing}\r\n`
      connection.write(head)
      const piece = Buffer.alloc(64 * 1024, 'x')
      const chunk = framing.startsWith('transfer') ? Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]) : piece
      const [res, written] = await Promise.all([connection.response(10_000), flood(connection, chunk)])
      t.equal(res?.headers.connection, 'close', 'answered while the body was still coming')
      checkEnvelope(t, envelopeOf(res), res?.headers['x-request-id'])
      const server = accepted.find((socket) => socket.remotePort === connection.socket.localPort)!
      t.ok(server.bytesRead > head.length + LIMIT + 1024 * 1024, `the service went on reading after its answer (${server.bytesRead} bytes)`)
      t.ok(server.bytesRead <= head.length + LIMIT + DRAIN_BYTES + 2 * chunk.length, `and stopped after DRAIN_BYTES (${server.bytesRead} bytes read, ${written} written)`)
    })
  }
})

t.test('a body that trickles in after the answer is read for DRAIN_MS, then the connection is closed', async (t) => {
  const { port } = await service(t)
  const connection = await RawConnection.open(port, { allowHalfOpen: true })
  t.teardown(() => { connection.destroy() })
  connection.write(`POST ${ROUTE} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: ${LIMIT * 100}\r\n\r\n`)
  const res = await connection.response()
  const answeredAt = Date.now()
  checkEnvelope(t, envelopeOf(res), res?.headers['x-request-id'])
  const timer = setInterval(() => { if (!connection.socket.destroyed) connection.write('x'.repeat(100)) }, 50)
  t.teardown(() => { clearInterval(timer) })
  await connection.done
  const lasted = Date.now() - answeredAt
  t.ok(lasted >= DRAIN_MS - 50, `kept reading after the answer (${lasted} ms)`)
  t.ok(lasted < DRAIN_MS * 3, 'then closed the connection, well before REQUEST_TIMEOUT_MS')
})

t.test('through inject (no socket) an oversized body still gets the 1003 envelope', async (t) => {
  const { app } = await service(t)
  const res = await app.inject({ method: 'POST', url: ROUTE, headers: { 'content-type': 'application/json' }, payload: oversized(LIMIT) })
  checkEnvelope(t, res.json(), res.headers['x-request-id'] as string)
})
