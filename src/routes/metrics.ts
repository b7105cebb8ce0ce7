/**
 * GET /metrics: the Prometheus exposition of this instance, on the main listener or on its own (METRICS_PORT). One
 * rendering, kept as a Buffer, serves every scrape of the same second; scrapes past METRICS_SCRAPES_PER_SECOND get a
 * short 429, and with METRICS_KEY a scrape without the key a 401, neither rendered nor logged one by one. A refusal is
 * answered when the second ends: a client that loops on /metrics makes one request a second per connection. The hold
 * never keeps its connection from being closed to make room, ends at once on a connection pipelining past 16
 * requests (holdAnswer), and at most HELD_MAX refusals are held at once: past it a refusal is answered at once, and
 * its connection closed.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import { holdAnswer } from '../connection-limit.js'
import { AppError } from '../errors.js'
import type { Metrics } from '../metrics.js'
import { presentedKey } from '../plugins/auth.js'
import { errorEnvelope } from '../plugins/envelope.js'

const REUSE_MS = 1000
/** Refusals held until their second ends, all connections of the listener together, at most. */
export const HELD_MAX = 100

export interface MetricsRouteOptions {
  metrics: Metrics
  /** METRICS_KEY: the key a scrape must present in authorization. */
  key?: string | undefined
  /** METRICS_SCRAPES_PER_SECOND. */
  scrapesPerSecond: number
}

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

const metricsRoute: FastifyPluginAsync<MetricsRouteOptions> = async (app, { metrics, key, scrapesPerSecond }) => {
  const expected = key === undefined ? undefined : digest(key)
  let last: { at: number, body: Promise<Buffer> } | undefined
  let second = 0
  let scrapes = 0
  let warnedAt = 0
  let secondEnds: Promise<void> | undefined
  let held = 0

  /** Resolves when the current second ends, one timer for every refusal of the second. */
  async function endOfSecond (): Promise<void> {
    secondEnds ??= new Promise((resolve) => setTimeout(() => {
      secondEnds = undefined
      resolve()
    }, 1000 - (Date.now() % 1000)))
    await secondEnds
  }

  async function refuse (request: FastifyRequest, reply: FastifyReply, error: AppError, status: number, headers: Record<string, string>) {
    const hold = held < HELD_MAX ? holdAnswer(request.raw, endOfSecond) : undefined
    if (hold !== undefined) {
      held++
      await hold.finally(() => { held-- })
    } else if (held >= HELD_MAX) {
      reply.header('connection', 'close')
    }
    app.finish(request, reply, error.statusCode)
    return await reply.code(status).headers(headers).send(errorEnvelope(request, error))
  }

  app.get('/metrics', async (request, reply) => {
    if (expected !== undefined) {
      const presented = presentedKey(request.headers.authorization)
      if (presented === undefined || !timingSafeEqual(digest(presented), expected)) {
        return await refuse(request, reply, new AppError('UNAUTHORIZED', 'METRICS_KEY is set: send it in authorization as "Bearer <key>"'),
          401, { 'www-authenticate': 'Bearer' })
      }
    }
    const now = Date.now()
    if (Math.floor(now / 1000) !== second) {
      second = Math.floor(now / 1000)
      scrapes = 0
    }
    if (++scrapes > scrapesPerSecond) {
      if (now - warnedAt >= 60_000) {
        warnedAt = now
        request.log.warn({ scrapesPerSecond }, 'METRICS_SCRAPES_PER_SECOND reached: further scrapes this second get HTTP 429')
      }
      return await refuse(request, reply, new AppError('RATE_LIMITED', `At most ${scrapesPerSecond} scrapes of /metrics a second; retry in 1 second`),
        429, { 'retry-after': '1' })
    }
    app.finish(request, reply, 200)
    if (last === undefined || now - last.at >= REUSE_MS) {
      const body = metrics.registry.metrics().then((text) => Buffer.from(text))
      last = { at: now, body }
      body.catch(() => { last = undefined }) // a failed rendering is not reused; the scrape itself gets the error
    }
    const body = await last.body
    return await reply.type(metrics.registry.contentType).send(body)
  })
}

export default metricsRoute
