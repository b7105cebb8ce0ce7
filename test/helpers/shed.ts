/** What the connection limits shed, read from the registry: GET /metrics is limited to a few scrapes a second. */
import type { FastifyInstance } from 'fastify'
import { APP_ID, APP_SECRET, build, startMock, type Teardown } from './build.js'
import { RawConnection, envelopeOf, listen, rawPost } from './raw-http.js'

const TOKEN_ROUTE = '/api/v3/get-wechat-access-token-info'

/** Connections a listener closed to make room, by reason (wxtoken_connections_shed_total). */
export async function shed (app: FastifyInstance, listener: 'main' | 'metrics' = 'main'): Promise<Record<string, number>> {
  const { values } = await app.metrics.connectionsShed.get()
  return Object.fromEntries(values.filter((value) => value.labels.listener === listener).map((value) => [String(value.labels.reason), value.value]))
}

/**
 * A service limited to `maxConnections` on a real port, and a caller's kept-alive connection to it, served once: what
 * the crowd tests then try to keep alive.
 */
export async function keptAliveCaller (t: Teardown, maxConnections: number) {
  const { url } = await startMock(t)
  const { app } = await build(t, { upstream: url, env: { MAX_CONNECTIONS: String(maxConnections) } })
  const port = await listen(app)
  const kept = await RawConnection.open(port)
  t.teardown(() => { kept.destroy() })
  kept.write(rawPost(TOKEN_ROUTE, { appId: APP_ID, appSecret: APP_SECRET }))
  return { app, port, kept, first: envelopeOf(await kept.response()) }
}
