/**
 * Liveness (the process answers) and readiness. An instance is ready while it can serve, even with the store down
 * (warm tokens are answered from its copies; the body says it is degraded): readiness that failed on a shared
 * dependency would take every instance out of the load balancer at once. It answers 503 only while closing.
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { HealthSchema } from '../schemas/health.js'

const healthRoutes: FastifyPluginAsyncTypebox = async (app) => {
  let closing = false
  app.addHook('preClose', async () => { closing = true })

  app.get('/health/live', {
    schema: { summary: 'Liveness: 200 while the process runs', operationId: 'live', tags: ['operations'], response: { 200: HealthSchema } }
  }, async (request, reply) => {
    app.finish(request, reply, 200)
    return { status: 'ok' }
  })

  app.get('/health/ready', {
    schema: {
      summary: 'Readiness: 200 ready or degraded (serving with the store or pub/sub down), 503 only while closing',
      operationId: 'ready',
      tags: ['operations'],
      response: { 200: HealthSchema, 503: HealthSchema }
    }
  }, async (request, reply) => {
    if (closing) {
      app.finish(request, reply, 503)
      return await reply.code(503).send({ status: 'closing', store: app.store.kind })
    }
    const storeUp = await app.store.ping().then(() => true, () => false)
    const pubsubUp = app.store.pubsubUp
    app.finish(request, reply, 200)
    return { status: storeUp && pubsubUp ? 'ready' : 'degraded', store: app.store.kind, storeUp, pubsubUp }
  })
}

export default healthRoutes
