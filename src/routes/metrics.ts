/** GET /metrics: the Prometheus exposition of this instance. */
import type { FastifyPluginAsync } from 'fastify'

const metricsRoute: FastifyPluginAsync = async (app) => {
  app.get('/metrics', async (request, reply) => {
    const gauge = app.metrics.tokenSecondsLeft
    gauge.reset()
    const now = Date.now()
    for (const [appId, expiresAt] of app.tokens.known()) gauge.labels(appId).set(Math.max(0, Math.floor((expiresAt - now) / 1000)))
    app.finish(request, reply, 200)
    return await reply.type(app.metrics.registry.contentType).send(await app.metrics.registry.metrics())
  })
}

export default metricsRoute
