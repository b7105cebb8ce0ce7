/** Starts a real redis-server on a free loopback port, and stops or restarts it on demand (outage tests). */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'

export async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  server.close()
  await once(server, 'close')
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

export interface RedisServerOptions {
  /** More redis-server arguments (cluster mode, replicaof). */
  args?: string[]
  /** A config file to start from, for Sentinel (which rewrites it), together with `sentinel`. */
  configFile?: string
  sentinel?: boolean
  port?: number
}

/** Every server's working directory, removed when the test process exits. */
const dirs: string[] = []
process.once('exit', () => { for (const dir of dirs) rmSync(dir, { recursive: true, force: true }) })

export class RedisServer {
  private child: ChildProcess | undefined
  /** Its own working directory, so nothing it writes (dump.rdb, nodes.conf) lands in the project. */
  private readonly dir = mkdtempSync(join(tmpdir(), 'wxtoken-redis-'))
  private constructor (readonly port: number, private readonly options: RedisServerOptions) {
    dirs.push(this.dir)
  }

  get url (): string { return `redis://127.0.0.1:${this.port}` }
  get address (): string { return `127.0.0.1:${this.port}` }

  static async start (options: RedisServerOptions = {}): Promise<RedisServer> {
    const server = new RedisServer(options.port ?? await freePort(), options)
    await server.restart()
    return server
  }

  async restart (): Promise<void> {
    if (this.child) return
    const { configFile, sentinel, args = [] } = this.options
    const child = spawn('redis-server', [
      ...(configFile ? [configFile] : []),
      '--port', String(this.port), '--bind', '127.0.0.1', '--loglevel', 'warning', '--dir', this.dir,
      ...(sentinel ? ['--sentinel'] : ['--save', '', '--appendonly', 'no']),
      ...args
    ], { stdio: 'ignore' })
    this.child = child
    child.once('exit', () => { if (this.child === child) this.child = undefined })
    const probe = new Redis(this.port, '127.0.0.1', { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 })
    probe.on('error', () => {})
    try {
      for (let i = 0; i < 100; i++) {
        try {
          await probe.connect()
          await probe.ping()
          return
        } catch {
          probe.disconnect()
          await sleep(50)
        }
      }
      throw new Error(`redis-server did not start on port ${this.port}`)
    } finally {
      probe.disconnect()
    }
  }

  async stop (): Promise<void> {
    const child = this.child
    if (!child) return
    this.child = undefined
    const exited = once(child, 'exit')
    child.kill('SIGKILL')
    await exited
  }

  /** Stops the server's process where it stands (SIGSTOP): connections stay open, and nothing is answered until thaw. */
  freeze (): void {
    this.child?.kill('SIGSTOP')
  }

  thaw (): void {
    this.child?.kill('SIGCONT')
  }

  /** A fresh client for looking at what the service wrote. */
  client (): Redis {
    return new Redis(this.port, '127.0.0.1')
  }
}
