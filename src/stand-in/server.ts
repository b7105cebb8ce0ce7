/**
 * What the stand-ins share: an HTTP server on a free loopback port that reads each request's body and hands it to the
 * stand-in's own `respond`, a clock that tests move forward, and request counters.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

/** A fault a test injects into a stand-in's answers. */
export type MockFault =
  | { kind: 'errcode', errcode: number, errmsg?: string }
  | { kind: 'latency', ms: number }
  | { kind: 'hang' }
  | { kind: 'http', status: number }
  | { kind: 'drop' }
  | { kind: 'garbage' }
  | { kind: 'redirect', location: string }

export abstract class StandIn {
  private readonly server = createServer((req, res) => { this.handle(req, res) })
  private offsetMs = 0

  /** Answers a request whose body has arrived (as UTF-8 text, and as it came); a rejection destroys the connection. */
  protected abstract respond (req: IncomingMessage, res: ServerResponse, rawBody: string, bytes: Buffer): Promise<void>

  private handle (req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const bytes = Buffer.concat(chunks)
      this.respond(req, res, bytes.toString('utf8'), bytes).catch(() => res.destroy())
    })
  }

  /** Answers a request another stand-in received (one that plays part of the same host's API). */
  async serve (req: IncomingMessage, res: ServerResponse, rawBody: string, bytes: Buffer): Promise<void> {
    await this.respond(req, res, rawBody, bytes)
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

  /**
   * Plays a fault: true when it answered (or hung up, or will never answer), false when the request is to be answered
   * as usual (after the latency). `error` makes the stand-in's errcode answer.
   */
  protected async fault (fault: MockFault | undefined, req: IncomingMessage, res: ServerResponse,
    error: (errcode: number, errmsg?: string) => Record<string, unknown>): Promise<boolean> {
    switch (fault?.kind) {
      case undefined: return false
      case 'hang': return true
      case 'drop': req.socket.destroy(); return true
      case 'http': res.writeHead(fault.status, { 'content-type': 'text/html' }).end('<html>error</html>'); return true
      case 'garbage': res.writeHead(200, { 'content-type': 'text/html' }).end('<html>not json'); return true
      case 'redirect': res.writeHead(302, { location: fault.location, 'content-type': 'text/html' }).end('<html>moved</html>'); return true
      case 'errcode': this.send(res, error(fault.errcode, fault.errmsg)); return true
      case 'latency': await new Promise((resolve) => setTimeout(resolve, fault.ms)); return false
    }
  }

  /** A JSON answer, as WeChat sends it. */
  protected send (res: ServerResponse, payload: Record<string, unknown>): void {
    res.writeHead(200, { 'content-type': 'application/json; encoding=utf-8' }).end(JSON.stringify(payload))
  }

  protected count (map: Map<string, number>, key: string): void {
    map.set(key, (map.get(key) ?? 0) + 1)
  }
}
