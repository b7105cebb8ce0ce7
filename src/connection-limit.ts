/** MAX_CONNECTIONS: past it, each new connection closes the open one that matters least, never one being answered. */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { Metrics } from './metrics.js'

/** Why a connection was closed to make room for a new one: the `reason` of wxtoken_connections_shed_total. */
export const SHED_REASONS = ['stalled', 'idle', 'receiving', 'new'] as const
export type ShedReason = typeof SHED_REASONS[number]

interface Connection {
  /** When it began waiting for the request it has not completed, or began to idle between requests. */
  since: number
  /** Requests received and not answered yet (more than one only when they are pipelined). */
  active: number
  /** Its latest request: `complete` once the body has all arrived. */
  request: IncomingMessage | undefined
  /** socket.bytesRead when it began to idle: more means it has begun to send its next request. */
  bytesRead: number
}

export interface ConnectionLimit {
  max: number
  /** CONNECTION_GRACE_MS: how long a connection may take to send a whole request, or idle, before it is shed first. */
  graceMs: number
  log: FastifyBaseLogger
  metrics: Metrics
}

/**
 * Counts the server's connections and, when a new one takes the count past `max`, closes one: the longest waiting
 * of those that have not sent a whole request within the grace (silent, slowloris headers, a body still trickling in);
 * else the longest idle of those kept alive between requests for more than the grace; else the oldest still sending
 * its request; else the longest idle (one idle for less than the grace is likely to carry its caller's next request
 * at once); and only when every other connection is being answered, the new one. A connection whose request has all
 * arrived is never closed until it is answered, and the newest is the last closed, so connections opened again and
 * again cannot keep out a caller that sends its request at once. Node's own `maxConnections` is left unset: it would
 * close the new connection, the caller's, whatever the others do. Waiting connections are kept in the order they
 * began to wait, and idle ones in the order they began to idle, so a choice looks at the first few of each. The first
 * shedding of a minute is logged at warn.
 */
export function limitConnections (server: Server, { max, graceMs, log, metrics }: ConnectionLimit): void {
  const open = new Map<Socket, Connection>()
  const waiting = new Map<Socket, Connection>()
  const idle = new Map<Socket, Connection>()
  let warnedAt = -Infinity

  const forget = (socket: Socket): void => {
    open.delete(socket)
    waiting.delete(socket)
    idle.delete(socket)
  }

  /** The longest waiting connection that is not being answered, other than `newcomer`. */
  const firstWaiting = (newcomer: Socket): Socket | undefined => {
    for (const [socket, connection] of waiting) {
      if (socket === newcomer) continue
      if (connection.active > 0 && connection.request?.complete === true) {
        waiting.delete(socket)
        continue
      }
      return socket
    }
    return undefined
  }

  /** The longest idle connection; those that have begun to send a request since are moved to the waiting ones. */
  const firstIdle = (now: number): Socket | undefined => {
    for (const [socket, connection] of idle) {
      if (socket.bytesRead === connection.bytesRead) return socket
      idle.delete(socket)
      connection.since = now
      waiting.set(socket, connection)
    }
    return undefined
  }

  const shed = (socket: Socket, reason: ShedReason): void => {
    forget(socket)
    socket.destroy()
    metrics.connectionsShed.labels(reason).inc()
    const now = Date.now()
    if (now - warnedAt < 60_000) return
    warnedAt = now
    log.warn({ maxConnections: max, reason }, 'MAX_CONNECTIONS reached: a connection was closed to make room (stalled and idle ones first)')
  }

  const makeRoom = (newcomer: Socket): void => {
    const now = performance.now()
    const stalled = firstWaiting(newcomer)
    if (stalled && now - open.get(stalled)!.since >= graceMs) {
      shed(stalled, 'stalled')
      return
    }
    const idler = firstIdle(now)
    const receiving = idler && now - open.get(idler)!.since >= graceMs ? undefined : firstWaiting(newcomer)
    if (receiving) shed(receiving, 'receiving')
    else if (idler) shed(idler, 'idle')
    else shed(newcomer, 'new')
  }

  server.on('connection', (socket: Socket) => {
    const connection: Connection = { since: performance.now(), active: 0, request: undefined, bytesRead: 0 }
    open.set(socket, connection)
    waiting.set(socket, connection)
    socket.once('close', () => { forget(socket) })
    if (open.size > max) makeRoom(socket)
  })

  /** A response ended (or its connection closed): with no other request pending, the connection is idle. */
  function settled (this: ServerResponse): void {
    const socket = this.req.socket
    const connection = open.get(socket)
    if (connection === undefined || --connection.active > 0) return
    waiting.delete(socket)
    connection.since = performance.now()
    connection.bytesRead = socket.bytesRead
    idle.set(socket, connection)
  }

  server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket
    const connection = open.get(socket)
    if (connection === undefined) return
    connection.active++
    connection.request = request
    if (idle.delete(socket)) {
      connection.since = performance.now()
      waiting.set(socket, connection)
    } else if (!waiting.has(socket)) {
      connection.since = performance.now()
      waiting.set(socket, connection)
    }
    response.on('close', settled)
  })
}
