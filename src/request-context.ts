/** What the services need of a request: who asks (for logs, the audit trail and per-caller limits) and its logger. */
import type { FastifyRequest } from 'fastify'
import { deferredChild } from './logger.js'
import { originOf } from './plugins/auth.js'
import type { CallContext } from './tokens/refresher.js'

/** What the token service needs of the request; its logger (with appId and caller) is made only when a line is logged. */
export function context (request: FastifyRequest, appId: string): CallContext {
  const caller = callerOf(request)
  return { log: deferredChild(request.log, () => ({ appId, caller })), caller, requestId: request.id, origin: originOf(request) }
}

/** Who is asking: the caller key's name, else the GenAuth / Authing SDK headers; for logs and the audit trail. */
function callerOf (request: FastifyRequest): string | undefined {
  if (request.callerName) return request.callerName
  const h = request.headers
  const value = h['x-authing-app-id'] ?? h['x-genauth-app-id'] ?? h['x-authing-userpool-id']
  return typeof value === 'string' ? value.slice(0, 64) : undefined
}
