/**
 * What the stand-ins share: an HTTP server on a free loopback port that reads each request's body and hands it to the
 * stand-in's own `respond`, a clock that tests move forward, and request counters.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export abstract class StandIn {
  private readonly server = createServer((req, res) => { this.handle(req, res) })
  private offsetMs = 0

  /** Answers a request whose body has arrived (as UTF-8 text); a rejection destroys the connection. */
  protected abstract respond (req: IncomingMessage, res: ServerResponse, rawBody: string): Promise<void>

  private handle (req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      this.respond(req, res, Buffer.concat(chunks).toString('utf8')).catch(() => res.destroy())
    })
  }

  /** Listens on a free loopback port; returns the base URL to give the client. */
  async start (port = 0, host = '127.0.0.1'): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => resolve())
    })
    const address = this.server.address() as AddressInfo
    return `http://${host}:${address.port}`
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }

  /** This stand-in's clock: real time, moved forward by advance(). */
  now (): number { return Date.now() + this.offsetMs }
  /** Moves this stand-in's clock forward (expiry, limits, quota days). */
  advance (ms: number): void { this.offsetMs += ms }

  protected count (map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1)
  }
}
