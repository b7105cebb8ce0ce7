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

  static async open (port: number): Promise<RawConnection> {
    const socket = connect(port, '127.0.0.1')
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
