/**
 * Optional caller authentication: with AUTH_TOKENS set, every route of the scope this plugin is registered in needs a
 * caller key in authorization. It is registered in the scope of the /api routes, so the check is a hook of the route
 * the router matched, whatever spelling of the path (percent-encoded, absolute form) led there.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import type { CallerKey } from '../config.js'
import { AppError } from '../errors.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The name of the caller key presented, when caller authentication is on. */
    callerName: string | null
  }
}

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

/** The key in an authorization header, sent raw (Node and Python SDKs) or as "Bearer <key>" (Java SDK). */
export function presentedKey (header: string | undefined): string | undefined {
  if (!header) return undefined
  const match = /^bearer\s+(.+)$/i.exec(header.trim())
  return (match?.[1] ?? header).trim() || undefined
}

export default fp<{ keys: CallerKey[] }>(async (app, { keys }) => {
  app.decorateRequest('callerName', null)
  if (keys.length === 0) return
  const known = keys.map((k) => ({ name: k.name, digest: digest(k.key) }))

  /** Compares against every key, whatever matches first, each comparison constant-time. */
  function callerFor (presented: string): string | null {
    const candidate = digest(presented)
    let name: string | null = null
    for (const key of known) if (timingSafeEqual(key.digest, candidate) && name === null) name = key.name
    return name
  }

  app.addHook('onRequest', async (request) => {
    const presented = presentedKey(request.headers.authorization)
    if (!presented) throw new AppError('UNAUTHORIZED', 'A caller key is required in the authorization header')
    const name = callerFor(presented)
    if (!name) throw new AppError('UNAUTHORIZED', 'The caller key in the authorization header is not valid')
    request.callerName = name
  })
}, { name: 'auth', fastify: '5.x' })
