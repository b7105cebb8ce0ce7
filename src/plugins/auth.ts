/**
 * Optional caller authentication: with AUTH_TOKENS set, every route of the scope this plugin is registered in needs a
 * caller key in authorization. It is registered in the scope of the /api routes, so the check is a hook of the route
 * the router matched, whatever spelling of the path (percent-encoded, absolute form) led there.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import type { CallerKey } from '../config.js'
import { AppError } from '../errors.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The name of the caller key presented, when caller authentication is on. */
    callerName: string | null
  }
}

const digest = (value: string): Buffer => createHash('sha256').update(value).digest()

/** An IPv6 address's /64, which one host can hold whole: the unit an address-based limit must count. */
function prefix64 (ip: string): string {
  const [head = '', tail] = ip.split('%')[0]!.split('::')
  const first = head === '' ? [] : head.split(':')
  const last = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? first : [...first, ...Array<string>(Math.max(0, 8 - first.length - last.length)).fill('0'), ...last]
  return `${groups.slice(0, 4).map((group) => parseInt(group, 16).toString(16)).join(':')}::/64`
}

/**
 * Who is asking, for the per-caller limits: `key:<name>` of the verified caller key, else `ip:<address>` (an IPv4
 * address, or an IPv6 address's /64). Never what a caller merely claims, such as a header.
 */
export function originOf (request: FastifyRequest): string {
  if (request.callerName !== null) return `key:${request.callerName}`
  const ip = request.ip.startsWith('::ffff:') ? request.ip.slice(7) : request.ip
  return `ip:${ip.includes(':') ? prefix64(ip) : ip}`
}

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
