/** Every answer is the GenAuth envelope: request ids, the central error handler and the not-found handler. */
import { randomUUID } from 'node:crypto'
import { STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { Socket } from 'node:net'
import fp from 'fastify-plugin'
import type { ConnectionError, FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { AppError } from '../errors.js'
import { safeError } from '../logger.js'
import type { Metrics } from '../metrics.js'
import { FieldHints } from '../schemas/token.js'

/** What an incoming x-request-id may hold: none of it needs escaping in JSON (sendSuccess writes it unescaped). */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/
const JSON_TYPE = 'application/json; charset=utf-8'

/** Honours a sane incoming x-request-id; otherwise a new UUID. */
export function requestIdFrom (header: string | string[] | undefined, fallback: () => string): string {
  return typeof header === 'string' && REQUEST_ID.test(header) ? header : fallback()
}

export function errorEnvelope (request: FastifyRequest, error: AppError) {
  return { statusCode: error.statusCode, message: error.message, apiCode: error.apiCode, requestId: request.id }
}

/** Maps anything thrown in a request to the AppError the caller will see. */
export function toAppError (err: FastifyError | Error): AppError {
  if (err instanceof AppError) return err
  const fastifyError = err as FastifyError
  if (fastifyError.validation) return new AppError('INVALID_ARGUMENT', validationMessage(fastifyError))
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new AppError('BODY_TOO_LARGE', 'The request body is too large')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new AppError('UNSUPPORTED_MEDIA_TYPE', 'The body must be application/json')
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return new AppError('INVALID_JSON', 'The body is empty but declared as application/json')
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH': return new AppError('INVALID_ARGUMENT', 'Content-Length does not match the body')
  }
  const status = fastifyError.statusCode ?? 500
  if (err instanceof SyntaxError || fastifyError.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return new AppError('INVALID_JSON', 'The body is not valid JSON (keys __proto__ and constructor.prototype are refused)')
  }
  if (status >= 400 && status < 500) return new AppError('INVALID_ARGUMENT', err.message)
  return new AppError('INTERNAL', 'Internal error', { cause: err })
}

function validationMessage (err: FastifyError): string {
  const issue = err.validation?.[0]
  if (!issue) return err.message
  const field = issue.instancePath.replace(/^\//, '').replace(/\//g, '.')
  const params = issue.params as Record<string, unknown>
  if (issue.keyword === 'required') return `${String(params.missingProperty)} is required`
  if (field === '') return issue.keyword === 'type' ? 'The body must be a JSON object' : `The body ${issue.message ?? 'is invalid'}`
  if (issue.keyword === 'type') return `${field} must be a ${String(params.type)}`
  return FieldHints[field] ?? `${field} ${issue.message ?? 'is invalid'}`
}

/** HTTP status of an error envelope: GenAuth answers business errors with HTTP 200, throttling with a real 429; an unknown route is a real 404. */
function httpStatus (error: AppError): number {
  if (error.kind === 'ROUTE_NOT_FOUND') return 404
  if (error.kind === 'MALFORMED_REQUEST') return 400
  return error.kind === 'RATE_LIMITED' ? 429 : 200
}

/** The AppError for a request Node's HTTP server refused (malformed, too large, too slow) before there was one to route. */
function clientErrorOf (code: string | undefined): AppError {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return new AppError('REQUEST_TIMEOUT', 'The request did not arrive within the request timeout')
  if (code === 'HPE_HEADER_OVERFLOW') return new AppError('HEADERS_TOO_LARGE', 'The request headers are too large')
  return new AppError('MALFORMED_REQUEST', 'The request is not valid HTTP/1.1')
}

/** After the answer to an oversized body, how much more of it is read and discarded before the connection is closed. */
export const DRAIN_BYTES = 8 * 1024 * 1024
export const DRAIN_MS = 2000

/** Connections answered early whose request is still being read and discarded: Node's own errors on them end them. */
const draining = new WeakSet<Socket>()

/**
 * Fastify's clientErrorHandler: a request Node's HTTP parser refused (bad framing, headers too large) or that did not
 * arrive within the request timeout is answered with the envelope and its real HTTP status, when the socket can still
 * take an answer, and the connection is closed. The error itself is never logged: its rawPacket holds the request's
 * bytes, caller key and appSecret included.
 */
export function clientErrorHandler (log: FastifyBaseLogger, metrics: Metrics) {
  const answered = new WeakSet<Socket>()
  return (err: ConnectionError, socket: Socket): void => {
    if (socket.destroyed || answered.has(socket)) return
    if (err.code === 'ECONNRESET' || draining.has(socket)) {
      socket.destroy()
      return
    }
    answered.add(socket)
    const error = clientErrorOf(err.code)
    const requestId = randomUUID()
    log.debug({ reqId: requestId, apiCode: error.apiCode, statusCode: error.statusCode, code: err.code }, error.message)
    metrics.countRequest('unknown', error.statusCode)
    // A response already under way on this connection (a pipelined request's) cannot be followed by another.
    const current = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
    if (!socket.writable || current?.headersSent) {
      socket.destroy()
      return
    }
    closeWith(socket, error, requestId)
  }
}

/**
 * Fastify's frameworkErrors: a target the router cannot decode (broken percent-encoding) is answered with the envelope
 * and HTTP 400 (Fastify's own answer had neither apiCode nor requestId, and passes no error handler).
 */
export function frameworkErrorHandler (log: FastifyBaseLogger, metrics: Metrics) {
  return (err: FastifyError, request: FastifyRequest, reply: FastifyReply): void => {
    const error = new AppError('MALFORMED_REQUEST', 'The request target is not a valid URL')
    log.debug({ reqId: request.id, apiCode: error.apiCode, code: err.code }, error.message)
    metrics.countRequest('unknown', error.statusCode)
    reply.header('x-request-id', request.id).code(400).send(errorEnvelope(request, error))
  }
}

/** Writes the envelope of `error` as a whole HTTP response on a raw socket, with its real status, and closes it. */
function closeWith (socket: Socket, error: AppError, requestId: string): void {
  const body = JSON.stringify({ statusCode: error.statusCode, message: error.message, apiCode: error.apiCode, requestId })
  socket.end(`HTTP/1.1 ${error.statusCode} ${STATUS_CODES[error.statusCode]}\r\n` +
    'content-type: application/json; charset=utf-8\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`,
  () => socket.destroy())
  // A client that never takes the answer does not keep the socket.
  socket.setTimeout(1000, () => socket.destroy())
}

/**
 * Answers a request whose body is larger than allowed while the client is still sending it, as nginx's lingering
 * close does: the envelope is written on the connection, which is then half-closed, and the rest of the body is read
 * and discarded until it ends, or for DRAIN_BYTES or DRAIN_MS at most, before the connection is closed. Closed at
 * once, with the body unread, the connection would be reset, and a client that sends the whole body before reading
 * (Python's urllib, Node's fetch on a slow link) would see a broken pipe instead of the answer. Written on the socket
 * because Node's HTTP server would close it as soon as an answer with Connection: close is written.
 */
function answerThenDrain (request: FastifyRequest, reply: FastifyReply, error: AppError): void {
  const socket = request.raw.socket
  reply.hijack()
  draining.add(socket)
  const body = JSON.stringify(errorEnvelope(request, error))
  const headers = {
    ...reply.getHeaders(),
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    date: new Date().toUTCString(),
    connection: 'close'
  }
  const status = httpStatus(error)
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${String(value)}\r\n`).join('')
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${lines}\r\n${body}`)
  let drained = 0
  const stop = (): void => {
    clearTimeout(timer)
    socket.destroy()
  }
  const timer = setTimeout(stop, DRAIN_MS)
  request.raw.on('data', (chunk: Buffer) => {
    drained += chunk.length
    if (drained > DRAIN_BYTES) stop()
  })
  request.raw.once('end', stop)
  socket.once('close', () => { clearTimeout(timer) })
}

/**
 * The requests Node's HTTP server answers itself, before Fastify sees them, answered with the envelope instead: an
 * `Expect` other than 100-continue (Node's bare 417) and a CONNECT (Node closes the connection without a word).
 */
export function answerOutsideRoutes (server: Server, metrics: Metrics): void {
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    const error = new AppError('EXPECTATION_FAILED', 'Only "Expect: 100-continue" is supported')
    const requestId = randomUUID()
    metrics.countRequest('unknown', error.statusCode)
    const body = JSON.stringify({ statusCode: error.statusCode, message: error.message, apiCode: error.apiCode, requestId })
    res.writeHead(error.statusCode, {
      'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'x-request-id': requestId, connection: 'close'
    }).end(body)
  })
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    metrics.countRequest('unknown', 404)
    closeWith(socket, new AppError('ROUTE_NOT_FOUND', `Route ${req.method ?? 'CONNECT'} not found`), randomUUID())
  })
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * Every answer passes here just before it is sent: the x-request-id header, Connection: close while shutting
     * down, and the request counter by route and envelope statusCode. Called by each route and the error handlers,
     * so the hot path runs no hook. Routes pass their url (request.routeOptions builds an object on every read).
     */
    finish: (request: FastifyRequest, reply: FastifyReply, status: number, route?: string) => void
    /**
     * Answers a route's success envelope around `dataJson`, the JSON text of its data (jsonOnce), after finish: sent
     * as text, byte for byte what the route's serializer would make of it, without serializing it again.
     */
    sendSuccess: (request: FastifyRequest, reply: FastifyReply, route: string, dataJson: string) => void
    /**
     * Sends `json`, a JSON text, as the answer (application/json; charset=utf-8), after finish. With `direct` (no hook
     * of the app sets headers), written on the response at the end of the turn, with the headers finish and Fastify's
     * send would give it, in the same order.
     */
    sendJson: (request: FastifyRequest, reply: FastifyReply, route: string, json: string) => void
    /** Headers finish adds to every answer of a route, errors included (the obsolete route's Deprecation and Link). */
    routeHeaders: (route: string, headers: Record<string, string>) => void
  }
}

/** The path of a request target, without its query string or fragment, which can hold anything a caller put there. */
export function pathOf (url: string): string {
  const end = url.search(/[?#]/)
  return end === -1 ? url : url.slice(0, end)
}

/** The request's appId for its log lines, when the body has one that looks like an appId. */
export function appIdOf (request: FastifyRequest): { appId?: string } {
  const appId = (request.body as { appId?: unknown } | undefined)?.appId
  return typeof appId === 'string' && /^wx[0-9a-fA-F]{16}$/.test(appId) ? { appId } : {}
}

export interface EnvelopeOptions {
  metrics: Metrics
  logLevel: string
  /**
   * Whether no hook of the app may set a header before a handler answers (the rate limits' hook may, when they are
   * configured): then a success is written on the response directly, without Fastify's send path.
   */
  direct: boolean
}

export default fp<EnvelopeOptions>(async (app, { metrics, logLevel, direct }) => {
  let closing = false
  app.addHook('preClose', (done) => {
    closing = true
    done()
  })
  const extraHeaders = new Map<string, Record<string, string>>()
  app.decorate('routeHeaders', (route: string, headers: Record<string, string>) => { extraHeaders.set(route, headers) })
  app.decorate('finish', (request: FastifyRequest, reply: FastifyReply, status: number, route?: string) => {
    const url = route ?? request.routeOptions.url ?? 'unknown'
    reply.header('x-request-id', request.id)
    const extra = extraHeaders.get(url)
    if (extra) reply.headers(extra)
    if (closing) reply.header('connection', 'close')
    metrics.countRequest(url, status)
  })
  /**
   * The answers written directly in this turn, written together once its I/O callbacks have run (setImmediate), as
   * the answers made from one Redis reply are: a cached answer written inside its own request's callback cost about
   * 12 µs more CPU than one written with the others at the end of the turn (BENCHMARKS.md). One that cannot be
   * written (its connection closed meanwhile) does not keep the others from being written.
   */
  let due: Array<{ response: ServerResponse, headers: string[], json: string }> = []
  const writeDue = (): void => {
    const answers = due
    due = []
    for (const { response, headers, json } of answers) {
      if (response.headersSent || response.destroyed) continue
      try {
        response.writeHead(200, headers).end(json)
      } catch (err) {
        app.log.warn({ err: safeError(err) }, 'an answer could not be written')
      }
    }
  }
  app.decorate('sendJson', (request: FastifyRequest, reply: FastifyReply, route: string, json: string) => {
    if (direct) {
      metrics.countRequest(route, 200)
      const headers = ['x-request-id', request.id]
      const extra = extraHeaders.get(route)
      if (extra) for (const name in extra) headers.push(name, extra[name]!)
      if (closing) headers.push('connection', 'close')
      headers.push('content-type', JSON_TYPE, 'content-length', String(Buffer.byteLength(json)))
      // Written at the end of the turn with the turn's other answers; Fastify leaves the reply alone from here.
      reply.hijack()
      if (due.length === 0) setImmediate(writeDue)
      due.push({ response: reply.raw, headers, json })
      return
    }
    app.finish(request, reply, 200, route)
    reply.header('content-type', JSON_TYPE).send(json)
  })
  app.decorate('sendSuccess', (request: FastifyRequest, reply: FastifyReply, route: string, dataJson: string) => {
    // A request id is REQUEST_ID's characters or a UUID (requestIdFrom): nothing in it needs escaping in JSON.
    app.sendJson(request, reply, route, `{"statusCode":200,"message":"Operation successful","requestId":"${request.id}","data":${dataJson}}`)
  })
  if (logLevel === 'debug' || logLevel === 'trace') {
    // Run on every response's finish, however it was written (directly too).
    app.addHook('onResponse', (request, reply, done) => {
      // The route matched, never the target as sent: that can hold anything a caller put in it (user info, a key).
      request.log.debug({ ...appIdOf(request), route: request.routeOptions.url ?? '(none)', status: reply.statusCode, ms: Math.round(reply.elapsedTime) }, 'request completed')
      done()
    })
  }

  async function send (request: FastifyRequest, reply: FastifyReply, error: AppError) {
    app.finish(request, reply, error.statusCode)
    if (error.retryAfterSeconds !== undefined) reply.header('retry-after', String(error.retryAfterSeconds))
    const socket = request.raw.socket as Socket & { _httpMessage?: ServerResponse | null }
    if (error.kind === 'BODY_TOO_LARGE' && !request.raw.complete && socket instanceof Socket && socket._httpMessage === reply.raw) {
      answerThenDrain(request, reply, error)
      return reply
    }
    return await reply.code(httpStatus(error)).send(errorEnvelope(request, error))
  }

  app.setErrorHandler(async (err: FastifyError, request, reply) => {
    const error = toAppError(err)
    const detail = { ...appIdOf(request), apiCode: error.apiCode, statusCode: error.statusCode, ...(error.cause ? { cause: safeError(error.cause) } : {}) }
    if (error.kind === 'INTERNAL') request.log.error({ ...detail, stack: err.stack }, error.message)
    else if (error.statusCode >= 500) request.log.warn(detail, error.message)
    else request.log.info(detail, error.message)
    return await send(request, reply, error)
  })

  app.setNotFoundHandler(async (request, reply) => {
    return await send(request, reply, new AppError('ROUTE_NOT_FOUND', `Route ${request.method} ${pathOf(request.url)} not found`))
  })
}, { name: 'envelope', fastify: '5.x' })
