/** Raw HTTP/1.1 over a TCP socket: the server reads exactly the bytes a test writes, request line included. */
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Envelope } from './build.js'

export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: string
}

/** Listens on a free loopback port and returns it. */
export async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return (app.server.address() as AddressInfo).port
}

/** The envelope in a response's body; throws when there was no response. */
export function envelopeOf (res: RawResponse | undefined): Envelope {
  if (!res) throw new Error('no response')
  return JSON.parse(res.body) as Envelope
}

/** A POST with a JSON body, written by hand: `target` goes on the request line as it is. */
export function rawPost (target: string, body: unknown, headers: Record<string, string> = {}): string {
  const payload = JSON.stringify(body)
  const lines = Object.entries({ host: 'localhost', 'content-type': 'application/json', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`)
  return `POST ${target} HTTP/1.1\r\n${lines.join('')}content-length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`
}

/** One client connection; reads the responses the server writes on it, one after the other. */
export class RawConnection {
  private buffer = Buffer.alloc(0)
  private waiter: (() => void) | undefined
  closed = false
  readonly done: Promise<void>

  private constructor (readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffer = Buffer.concat([this.buffer, chunk])
      this.waiter?.()
    })
    socket.on('error', () => { /* a reset is an outcome the tests read through `closed` */ })
    this.done = new Promise((resolve) => socket.once('close', () => {
      this.closed = true
      this.waiter?.()
      resolve()
    }))
  }

  /** With `allowHalfOpen`, it goes on sending after the server half-closes, as a client that writes the whole body first does. */
  static async open (port: number, options: { allowHalfOpen?: boolean } = {}): Promise<RawConnection> {
    const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: options.allowHalfOpen ?? false })
    await once(socket, 'connect')
    return new RawConnection(socket)
  }

  write (data: string | Buffer): void {
    this.socket.write(data)
  }

  /** The next complete response (by content-length), or undefined if the connection closes first. */
  async response (timeoutMs = 5000): Promise<RawResponse | undefined> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const parsed = this.parse()
      if (parsed) return parsed
      if (this.closed) return undefined
      if (Date.now() >= deadline) throw new Error(`no response within ${timeoutMs} ms`)
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now())
        this.waiter = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.waiter = undefined
    }
  }

  /** Whatever bytes arrived and were not read as a response. */
  get unread (): string { return this.buffer.toString('latin1') }

  destroy (): void { this.socket.destroy() }

  private parse (): RawResponse | undefined {
    const end = this.buffer.indexOf('\r\n\r\n')
    if (end === -1) return undefined
    const [statusLine = '', ...lines] = this.buffer.subarray(0, end).toString('latin1').split('\r\n')
    const headers: Record<string, string> = {}
    for (const line of lines) {
      const split = line.indexOf(':')
      headers[line.slice(0, split).trim().toLowerCase()] = line.slice(split + 1).trim()
    }
    const length = Number(headers['content-length'] ?? 0)
    if (this.buffer.length < end + 4 + length) return undefined
    const body = this.buffer.subarray(end + 4, end + 4 + length).toString('utf8')
    this.buffer = this.buffer.subarray(end + 4 + length)
    return { status: Number(statusLine.split(' ')[1]), headers, body }
  }
}

/** Opens a connection, writes `data`, and reads one response. */
export async function exchange (port: number, data: string | Buffer): Promise<RawResponse | undefined> {
  const connection = await RawConnection.open(port)
  try {
    connection.write(data)
    return await connection.response()
  } finally {
    connection.destroy()
  }
}

/** Resolves once `condition` holds, checked every few milliseconds; throws with `what` after `timeoutMs`. */
export async function until (condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!await condition()) {
    if (Date.now() >= deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

/**
 * Connections that never complete a request: `size` of them, each sending `send` (nothing by default, or part of
 * the headers) and, with `reconnect`, opened again as soon as it is closed, as an attacker does.
 */
export class Crowd {
  opened = 0
  closed = 0
  private stopped = false
  private readonly sockets = new Set<Socket>()

  constructor (private readonly port: number, private readonly options: { size: number, reconnect: boolean, send?: string }) {
    for (let i = 0; i < options.size; i++) this.open()
  }

  /** Resolves once `n` connections were opened in all, reopened ones included. */
  async opens (n: number): Promise<void> {
    await until(() => this.opened >= n, `${n} crowd connections opened (${this.opened} so far)`)
  }

  /** Closes every connection of the crowd and opens no more. */
  async stop (): Promise<void> {
    this.stopped = true
    const closing = [...this.sockets].map(async (socket) => { if (!socket.destroyed) await once(socket, 'close') })
    for (const socket of this.sockets) socket.destroy()
    await Promise.all(closing)
  }

  private open (): void {
    const socket = connect(this.port, '127.0.0.1')
    this.sockets.add(socket)
    socket.on('connect', () => {
      this.opened++
      if (this.options.send) socket.write(this.options.send)
    })
    socket.on('error', () => { /* a shed connection may be reset: it is opened again */ })
    socket.on('close', () => {
      this.closed++
      this.sockets.delete(socket)
      if (this.options.reconnect && !this.stopped) setImmediate(() => { if (!this.stopped) this.open() })
    })
  }
}
