/**
 * The listener of GET /metrics alone (METRICS_PORT): a small Fastify app beside the service's, with the envelope for
 * anything else, listening once the service is ready and closed with it. Scrapes then never share a port, a
 * connection limit or a proxy with the callers of the token routes; its own limit makes room the way MAX_CONNECTIONS
 * does, so connections that do nothing cannot keep Prometheus out.
 */
import { randomUUID } from 'node:crypto'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import type { Config } from './config.js'
import { limitConnections } from './connection-limit.js'
import { requestLoggerFactory } from './logger.js'
import type { Metrics } from './metrics.js'
import envelope, { answerOutsideRoutes, clientErrorHandler, frameworkErrorHandler, requestIdFrom } from './plugins/envelope.js'
import metricsRoute from './routes/metrics.js'

/** Connections the metrics listener keeps open at most: Prometheus needs one or two per instance; past it, one is closed to make room. */
const MAX_METRICS_CONNECTIONS = 64

export async function buildMetricsServer (config: Config, logger: FastifyBaseLogger, metrics: Metrics): Promise<FastifyInstance> {
  const log = logger.child({ listener: 'metrics' })
  const server = Fastify({
    loggerInstance: log,
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: requestLoggerFactory,
    bodyLimit: 1024,
    requestIdHeader: false,
    genReqId: (req) => requestIdFrom(req.headers['x-request-id'], randomUUID),
    clientErrorHandler: clientErrorHandler(log, metrics),
    frameworkErrors: frameworkErrorHandler(log, metrics),
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    http: {
      requireHostHeader: false,
      headersTimeout: config.REQUEST_TIMEOUT_MS,
      connectionsCheckingInterval: Math.min(1000, Math.max(10, Math.floor(config.REQUEST_TIMEOUT_MS / 10)))
    }
  })
  limitConnections(server.server, { max: MAX_METRICS_CONNECTIONS, graceMs: config.CONNECTION_GRACE_MS, log, metrics, listener: 'metrics' })
  answerOutsideRoutes(server.server, metrics)
  await server.register(envelope, { metrics, logLevel: config.LOG_LEVEL, direct: true })
  await server.register(metricsRoute, { metrics, key: config.METRICS_KEY, scrapesPerSecond: config.METRICS_SCRAPES_PER_SECOND })
  return server
}
