import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { APP_ID, APP_SECRET, build, startMock } from './helpers/build.js'
import { Crowd, RawConnection, envelopeOf, listen, rawPost } from './helpers/raw-http.js'

const ROUTE = '/api/v3/get-wechat-access-token-info'
const body = { appId: APP_ID, appSecret: APP_SECRET }

/**
 * One request on a new connection, its headers and its body in two writes 100 ms apart, as a client sends them over a
 * link whose ACK of the first packet it waits for (Nagle's algorithm, delayed ACK): whether it got a token.
 */
async function splitRequest (port: number): Promise<boolean> {
  const request = rawPost(ROUTE, body, { connection: 'close' })
  const split = request.indexOf('\r\n\r\n') + 4
  const connection = await RawConnection.open(port)
  try {
    connection.write(request.slice(0, split))
    await sleep(100)
    connection.write(request.slice(split))
    return envelopeOf(await connection.response()).statusCode === 200
  } catch {
    return false
  } finally {
    connection.destroy()
  }
}

for (const [kind, send] of [['silent', undefined], ['slowloris', `POST ${ROUTE} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n`]] as const) {
  t.test(`a caller's connection whose request is still arriving is kept while a crowd of ${kind} connections reconnects`, async (t) => {
    const { url } = await startMock(t)
    const { app } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: '100' } })
    const port = await listen(app)
    const crowd = new Crowd(port, { size: 110, reconnect: true, ...(send ? { send } : {}) })
    t.teardown(async () => { await crowd.stop() })
    await crowd.opens(110 + 50)
    const [opened, started] = [crowd.opened, Date.now()]
    let answered = 0
    for (let i = 0; i < 20; i++) if (await splitRequest(port)) answered++
    t.comment(`the crowd opened ${Math.round((crowd.opened - opened) * 1000 / (Date.now() - started))} connections a second meanwhile`)
    t.ok(answered >= 19, `${answered} of 20 requests answered with a token`)
  })
}
