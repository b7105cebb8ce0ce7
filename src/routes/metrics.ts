/**
 * GET /metrics: the Prometheus exposition of this instance. One rendering serves every scrape of the same second:
 * with many apps a rendering takes tens of milliseconds of the event loop, and the route needs no caller key.
 */
import type { FastifyPluginAsync } from 'fastify'

const REUSE_MS = 1000

const metricsRoute: FastifyPluginAsync = async (app) => {
  let last: { at: number, text: Promise<string> } | undefined

  async function render (): Promise<string> {
    const gauge = app.metrics.tokenSecondsLeft
    gauge.reset()
    const now = Date.now()
    const left = (expiresAt: number): number => Math.max(0, Math.floor((expiresAt - now) / 1000))
    for (const [appId, expiresAt] of app.tokens.known()) gauge.labels(appId, 'access_token').set(left(expiresAt))
    for (const [appId, credential, expiresAt] of app.tickets.known()) gauge.labels(appId, credential).set(left(expiresAt))
    return await app.metrics.registry.metrics()
  }

  app.get('/metrics', async (request, reply) => {
    app.finish(request, reply, 200)
    if (last === undefined || Date.now() - last.at >= REUSE_MS) {
      const text = render()
      last = { at: Date.now(), text }
      text.catch(() => { last = undefined }) // a failed rendering is not reused; the scrape itself gets the error
    }
    const text = await last.text
    return await reply.type(app.metrics.registry.contentType).send(text)
  })
}

export default metricsRoute
