import t from 'tap'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { shed } from './helpers/shed.js'
import { RawConnection, listen, rawPost, until } from './helpers/raw-http.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

t.test('a connection that leaves its answers unread is closed once the grace has passed, however often it sends one more request', async (t) => {
  const grace = 300
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '2', CONNECTION_GRACE_MS: String(grace) } })
  const port = await listen(app)
  const accepted: Socket[] = []
  app.server.on('connection', (socket: Socket) => { accepted.push(socket) })
  const counts = { received: 0, finished: 0 }
  app.server.on('request', (_request: IncomingMessage, response: ServerResponse) => {
    counts.received++
    response.once('finish', () => { counts.finished++ })
  })
  const opened: RawConnection[] = []
  t.teardown(() => { for (const connection of opened) connection.destroy() })

  const reader = await RawConnection.open(port)
  opened.push(reader)
  reader.socket.pause()
  await until(() => accepted.length === 1, 'accepted')
  const socket = accepted[0]!
  // Rounds of 4 small answers, each sent once the last is answered, until the socket buffers are full and answers wait.
  const request = rawPost(ROUTE, body)
  for (let sent = 4; ; sent += 4) {
    reader.write(request.repeat(4))
    await until(() => counts.received === sent && (counts.finished === sent || socket.writableLength > 0), 'round answered, or its answers stuck')
    if (counts.finished < sent) break
  }
  t.ok(socket.writableLength < socket.writableHighWaterMark, 'its answers wait unread, below the mark past which Node stops reading requests')

  // One more request every half grace, never a byte read: its answers make no progress for longer than the grace.
  for (let i = 0; i < 4; i++) {
    await sleep(grace / 2)
    const before = counts.received
    reader.write(request)
    await until(() => counts.received === before + 1, 'the request arrived')
  }
  t.notOk(socket.destroyed, 'it is still open')

  const silent = await RawConnection.open(port)
  opened.push(silent)
  const newcomer = await RawConnection.open(port)
  opened.push(newcomer)
  // The service's side of each: the reader, its buffers full, would not see its connection close until it read.
  await until(() => accepted.length === 3, 'both accepted')
  await until(() => accepted.some((accepted) => accepted.destroyed), 'a connection was closed to make room')
  t.ok(socket.destroyed, 'the connection whose answers have waited unread past the grace is closed to make room')
  t.notOk(accepted[1]!.destroyed, 'not a young silent one')
  t.equal((await shed(app)).unread, 1, 'counted as unread')
})
