import t from 'tap'
import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { SHED_REASONS } from '../src/connection-limit.js'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { shed } from './helpers/shed.js'
import { RawConnection, envelopeOf, listen, rawPost, until } from './helpers/raw-http.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

t.test('the next request of a kept-alive connection, its headers then its body trickling in, is one wait: stalled once it has not all arrived within the grace', async (t) => {
  const grace = 1000
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '2', CONNECTION_GRACE_MS: String(grace), REQUEST_TIMEOUT_MS: '30000' } })
  const port = await listen(app)
  const accepted: Socket[] = []
  app.server.on('connection', (socket: Socket) => { accepted.push(socket) })
  const serverSide = (connection: RawConnection): Socket => accepted.find((socket) => socket.remotePort === connection.socket.localPort)!
  const opened: RawConnection[] = []
  const open = async (): Promise<RawConnection> => {
    const connection = await RawConnection.open(port)
    opened.push(connection)
    await until(() => accepted.some((socket) => socket.remotePort === connection.socket.localPort), 'the service accepted it')
    return connection
  }
  t.teardown(() => { for (const connection of opened) connection.destroy() })

  const slow = await open()
  slow.write(rawPost(ROUTE, body))
  t.equal(envelopeOf(await slow.response()).statusCode, 200, 'its first request is served, and it is kept alive')

  // Its next request begins: the first line of its headers.
  const request = rawPost(ROUTE, body)
  const headersEnd = request.indexOf('\r\n\r\n') + 4
  const firstLine = request.indexOf('\r\n') + 2
  const before = serverSide(slow).bytesRead
  slow.write(request.slice(0, firstLine))
  await until(() => serverSide(slow).bytesRead === before + firstLine, 'the service read the first line of its next request')

  // Room is made (a silent connection goes): the limit sees it sending its next request from now on.
  const silent = await open()
  const newcomer = await open()
  await silent.done
  const seenSending = performance.now()
  t.notOk(slow.closed, 'the kept-alive connection is kept while its request is young')
  const newcomerSide = serverSide(newcomer)
  newcomer.destroy()
  await until(() => newcomerSide.destroyed, 'the service let go of the closed newcomer')

  // Its headers end half the grace later, its body then trickles (one byte of it).
  await sleep(grace / 2)
  const read = serverSide(slow).bytesRead
  slow.write(request.slice(firstLine, headersEnd + 1))
  await until(() => serverSide(slow).bytesRead === read + headersEnd + 1 - firstLine, 'the service read its headers and a byte of its body')
  const headersDone = performance.now()

  // Past the grace since it began its request, within the grace since its headers ended: room is made again.
  await sleep(seenSending + grace * 1.1 - performance.now())
  const crowd = await open()
  await open()
  const madeAt = performance.now()
  await until(() => slow.closed || crowd.closed, 'a connection was closed to make room')
  t.ok(madeAt - seenSending >= grace && madeAt - headersDone < grace,
    `room made ${Math.round(madeAt - seenSending)} ms after the request began, ${Math.round(madeAt - headersDone)} ms after its headers ended`)
  t.ok(slow.closed, 'the connection whose request has not all arrived within the grace is closed first')
  t.notOk(crowd.closed, 'not the young silent one')
  t.same(await shed(app), Object.fromEntries(SHED_REASONS.map((reason) => [reason, reason === 'silent' || reason === 'stalled' ? 1 : 0])),
    'one silent connection closed earlier, then the stalled one')
})
