/** MAX_CONNECTIONS: past it, each new connection closes the open one that matters least, never a caller's being answered. */
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger } from 'fastify'
import type { Metrics } from './metrics.js'

/** Why a connection was closed to make room for a new one: the `reason` of wxtoken_connections_shed_total, in the order they are chosen. */
export const SHED_REASONS = ['stalled', 'pipelined', 'unread', 'held', 'headers', 'silent', 'idle', 'receiving', 'new'] as const
export type ShedReason = typeof SHED_REASONS[number]

/** Requests a connection may have under way at once (pipelined): past it the connection is closed at once. */
export const PIPELINE_MAX = 16

/**
 * What a connection is doing: `silent` (no byte yet), `headers` (the headers of its first request still arriving),
 * `receiving` (a request whose headers arrived and whose body is still coming, or the next request of a connection
 * kept alive), `busy` (a whole request being answered), `held` (only answers held back on purpose under way) and
 * `idle` (kept alive between requests).
 */
type State = 'silent' | 'headers' | 'receiving' | 'busy' | 'held' | 'idle'

/** The connection of a socket (or of a response), where its events find it without a lookup. */
const CONNECTION = Symbol('connection')
type Tracked<T> = T & { [CONNECTION]?: Connection }

interface Connection {
  readonly socket: Socket
  readonly limiter: Limiter
  /** Before its first request: silent or headers, in the map of that state. From then on `kept`, its state read when room is made. */
  phase: 'silent' | 'headers' | 'kept'
  /**
   * When it opened, until its first request has all arrived; then when its answers last made progress (a request
   * arrived with none under way, an answer ended, the socket drained, a hold began or ended), which while it has none
   * under way is when it began to idle; and when it was seen sending its next request since, until that request has
   * all arrived. A request pipelined behind answers under way is no progress of theirs.
   */
  since: number
  /** Requests received and not answered yet (more than one only when they are pipelined). */
  active: number
  /** Of those, the ones whose answer is held back on purpose (holdAnswer). */
  held: number
  /** Its latest request while one is under way: `complete` once the body has all arrived. */
  request: IncomingMessage | undefined
  /** socket.bytesRead when it began to idle: more means it has begun to send its next request. */
  bytesRead: number
  /** While idle: whether it was seen sending its next request (since is then when it was seen). */
  sending: boolean
  /** Ends the holds of its answers at once (it pipelined past PIPELINE_MAX, or closed). */
  release: (() => void) | undefined
  released: Promise<void> | undefined
  closed: boolean
}

export interface ConnectionLimit {
  max: number
  /** CONNECTION_GRACE_MS: how long a connection may take to send a whole request, idle, or leave its answers unread before it is shed first. */
  graceMs: number
  log: FastifyBaseLogger
  metrics: Metrics
  /** The `listener` label of wxtoken_connections_shed_total. */
  listener: 'main' | 'metrics'
}

/** The first entry of a Map (its oldest), or undefined. */
function first<T> (map: Map<Socket, T>): T | undefined {
  return map.values().next().value
}

/** The one of two connections that has been in its state longer. */
function older (a: Connection | undefined, b: Connection): Connection {
  return a === undefined || b.since < a.since ? b : a
}

/**
 * A request and an answer only count and stamp the time on their connection: no map changes on the way of a
 * request. Where each connection kept alive stands (busy, held, receiving, idle) is read only when room must be made.
 */
class Limiter {
  readonly open = new Map<Socket, Connection>()
  /** The connections before their first request, in the order they opened (silent) or sent their first byte (headers). */
  readonly silent = new Map<Socket, Connection>()
  readonly headers = new Map<Socket, Connection>()
  /** The connections that have had a request. */
  readonly kept = new Map<Socket, Connection>()

  private warnedAt = -Infinity

  constructor (private readonly options: ConnectionLimit) {
    for (const reason of SHED_REASONS) options.metrics.connectionsShed.labels(options.listener, reason).inc(0)
  }

  accept (socket: Tracked<Socket>): void {
    const connection: Connection = {
      socket,
      limiter: this,
      phase: 'silent',
      since: performance.now(),
      active: 0,
      held: 0,
      request: undefined,
      bytesRead: 0,
      sending: false,
      release: undefined,
      released: undefined,
      closed: false
    }
    this.open.set(socket, connection)
    this.silent.set(socket, connection)
    socket[CONNECTION] = connection
    socket.once('close', () => { this.forget(connection) })
    socket.on('drain', () => { this.progress(connection) })
    if (this.open.size > this.options.max) this.makeRoom(connection)
  }

  received (connection: Connection, request: IncomingMessage): void {
    if (connection.closed) return
    // Answers already under way (pipelined): a request arriving is no progress of theirs, and leaves their time as it is.
    const answering = connection.active - connection.held > 0
    connection.active++
    connection.request = request
    const seenSending = connection.sending
    connection.sending = false
    // Past PIPELINE_MAX under way the connection is closed at once, whatever the count of connections: every request
    // under way holds its answer in memory until the client reads it (one read of 64 KiB can carry 1,500 requests).
    if (connection.active > PIPELINE_MAX) {
      this.shed(connection, 'pipelined')
      return
    }
    if (connection.phase !== 'kept') {
      this[connection.phase].delete(connection.socket)
      connection.phase = 'kept'
      this.kept.set(connection.socket, connection)
      // A first request still arriving keeps the time its connection opened: slow headers and a slow body are one wait.
      if (!request.complete) return
    } else if (answering || (seenSending && !request.complete)) {
      // So does the next request of a connection seen sending it (since is when it was seen, not when its headers
      // ended); and one pipelined behind answers under way keeps the time those last made progress.
      return
    }
    connection.since = performance.now()
  }

  answered (connection: Connection): void {
    if (connection.closed) return
    if (--connection.active === 0) {
      connection.request = undefined
      connection.bytesRead = connection.socket.bytesRead
    }
    connection.since = performance.now()
  }

  /** Its answers made progress (the socket drained). */
  progress (connection: Connection): void {
    if (connection.active > 0) connection.since = performance.now()
  }

  /** Where a connection kept alive stands now; one idle seen sending its next request is receiving from then on. */
  private stateOf (connection: Connection, now: number): State {
    if (connection.active === 0) {
      if (connection.socket.bytesRead === connection.bytesRead) return 'idle'
      if (!connection.sending) {
        connection.sending = true
        connection.since = now
      }
      return 'receiving'
    }
    const arriving = connection.request?.complete === false ? 1 : 0
    if (connection.active - arriving - connection.held > 0) return 'busy'
    return arriving === 1 ? 'receiving' : 'held'
  }

  endHolds (connection: Connection): void {
    connection.release?.()
    connection.release = undefined
    connection.released = undefined
  }

  forget (connection: Connection): void {
    if (connection.closed) return
    connection.closed = true
    this.open.delete(connection.socket)
    this[connection.phase].delete(connection.socket)
    this.endHolds(connection)
  }

  /** The longest silent connection other than `newcomer`; those that have sent a byte since are moved to `headers`. */
  private firstSilent (newcomer: Connection): Connection | undefined {
    for (const connection of this.silent.values()) {
      if (connection.socket.bytesRead > 0) {
        this.silent.delete(connection.socket)
        connection.phase = 'headers'
        this.headers.set(connection.socket, connection)
      } else if (connection !== newcomer) return connection
    }
    return undefined
  }

  private makeRoom (newcomer: Connection): void {
    const now = performance.now()
    const { graceMs } = this.options
    const silent = this.firstSilent(newcomer)
    const headers = first(this.headers)
    // The longest in each state; of the busy ones, the one whose answers have waited unread without progress the longest.
    let idle: Connection | undefined
    let receiving: Connection | undefined
    let held: Connection | undefined
    let unread: Connection | undefined
    for (const connection of this.kept.values()) {
      switch (this.stateOf(connection, now)) {
        case 'idle': idle = older(idle, connection); break
        case 'receiving': receiving = older(receiving, connection); break
        case 'held': held = older(held, connection); break
        default:
          if (now - connection.since >= graceMs && connection.socket.writableLength > 0) unread = older(unread, connection)
      }
    }
    let stalled: Connection | undefined
    for (const waiting of [silent, headers, receiving]) {
      if (waiting !== undefined && now - waiting.since >= graceMs && (stalled === undefined || waiting.since < stalled.since)) stalled = waiting
    }
    if (stalled) this.shed(stalled, 'stalled')
    else if (unread) this.shed(unread, 'unread')
    else if (held) this.shed(held, 'held')
    else if (headers) this.shed(headers, 'headers')
    else if (silent) this.shed(silent, 'silent')
    else if (idle && now - idle.since >= graceMs) this.shed(idle, 'idle')
    else if (receiving) this.shed(receiving, 'receiving')
    else if (idle) this.shed(idle, 'idle')
    else this.shed(newcomer, 'new')
  }

  private shed (connection: Connection, reason: ShedReason): void {
    const { log, metrics, listener, max } = this.options
    this.forget(connection)
    connection.socket.destroy()
    metrics.connectionsShed.labels(listener, reason).inc()
    const now = Date.now()
    if (now - this.warnedAt < 60_000) return
    this.warnedAt = now
    const limit = listener === 'main' ? 'MAX_CONNECTIONS' : 'The connection limit of the metrics listener'
    if (reason === 'pipelined') log.warn({ reason, pipelineMax: PIPELINE_MAX }, `A connection had more than ${PIPELINE_MAX} requests under way at once (pipelined) and was closed`)
    else log.warn({ maxConnections: max, reason }, `${limit} reached: a connection was closed to make room (stalled, abusive and idle ones first)`)
  }
}

/**
 * Counts the server's connections and, when a new one takes the count past `max`, closes one, chosen in this order:
 * the longest waiting of those that have not sent a whole request within the grace (silent, slowloris headers, a body
 * still trickling in); one whose answers have waited unread with
 * no progress for the grace; one with only held answers under way (holdAnswer); one still sending the headers of its
 * first request (any age); a silent one (no byte yet, any age, the longest silent first: a new connection has sent no
 * byte either until its first bytes are read); the longest idle of those kept alive for more than the grace; the oldest with a request still arriving (its headers in, or the next request of a kept-alive
 * connection); the longest idle (one idle for less than the grace is likely to carry its caller's next request at
 * once); and only when every other connection is being answered, the new one. So a crowd that does nothing, opened
 * again as fast as it is closed, is shed before a caller in the middle of its request or between two, and a
 * connection whose request has all arrived is not closed until it is answered, unless it abuses that by leaving its
 * answers unread or looping on refusals. A connection with more than PIPELINE_MAX requests under way at once is
 * closed at once, at any count: each of them holds its answer in memory until the client reads it. Node's own `maxConnections` is left unset: it would close
 * the new connection, the caller's, whatever the others do. The connections yet to send a request are kept in the
 * order they opened or sent their first byte; those that have had one are read only when room must be made, so a
 * request costs the limit two counts and two time stamps. The first shedding of a minute is logged at warn.
 */
export function limitConnections (server: Server, options: ConnectionLimit): void {
  const limiter = new Limiter(options)
  server.on('connection', (socket: Socket) => { limiter.accept(socket) })

  function answered (this: Tracked<ServerResponse>): void {
    const connection = this[CONNECTION]
    if (connection !== undefined) limiter.answered(connection)
  }

  function track (request: IncomingMessage, response: Tracked<ServerResponse>): void {
    const connection = (request.socket as Tracked<Socket> | null)?.[CONNECTION]
    if (connection === undefined) return
    limiter.received(connection, request)
    response[CONNECTION] = connection
    response.on('close', answered)
  }

  // Each request is counted before the server's own request listeners (Fastify's) see it, in one call: a second
  // listener would make every request's event copy its list of listeners.
  const listeners = server.listeners('request') as Array<(request: IncomingMessage, response: ServerResponse) => void>
  server.removeAllListeners('request')
  server.on('request', function (this: Server, request: IncomingMessage, response: ServerResponse) {
    track(request, response)
    for (const listener of listeners) listener.call(this, request, response)
  })
}

/**
 * Holds back the answer to `request` until `until()` settles, as the metrics route does with a refusal, and returns
 * the hold to await; or returns undefined when the answer must not be held. While every request under way on its
 * connection is held, the connection is among the first closed to make room: a hold never protects a connection. Past PIPELINE_MAX requests under way the connection is closed, and the holds under way on it end at once: requests
 * pipelined behind a held answer never pile up. A request of no limited
 * server (app.inject) is held until `until()`.
 */
export function holdAnswer (request: IncomingMessage, until: () => Promise<void>): Promise<void> | undefined {
  const connection = (request.socket as Tracked<Socket> | null)?.[CONNECTION]
  if (connection === undefined) return until()
  if (connection.closed || connection.active > PIPELINE_MAX) return undefined
  connection.released ??= new Promise((resolve) => { connection.release = resolve })
  connection.held++
  connection.since = performance.now()
  return Promise.race([until(), connection.released]).finally(() => {
    connection.held--
    connection.since = performance.now()
  })
}
