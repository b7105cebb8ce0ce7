/** A real local Redis Cluster (three masters) and a primary/replica pair watched by a Sentinel, for the tests. */
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { RedisServer, freePort } from './redis-server.js'

const run = promisify(execFile)

async function until (what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    if (await check().catch(() => false)) return
    await sleep(100)
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function ask (port: number, ...command: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(port), ...command])
  return stdout
}

export class RedisCluster {
  private constructor (readonly nodes: RedisServer[], private readonly dir: string) {}

  /** host:port,host:port, as REDIS_CLUSTER_NODES takes it. */
  get seeds (): string { return this.nodes.map((node) => node.address).join(',') }

  static async start (masters = 3): Promise<RedisCluster> {
    const dir = await mkdtemp(join(tmpdir(), 'wxtoken-cluster-'))
    const nodes: RedisServer[] = []
    for (let i = 0; i < masters; i++) {
      const port = await freePort()
      nodes.push(await RedisServer.start({
        port,
        args: ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', '2000', '--dir', dir]
      }))
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => n.address), '--cluster-replicas', '0', '--cluster-yes'])
    for (const node of nodes) {
      await until(`cluster state ok on ${node.address}`, async () => (await ask(node.port, 'cluster', 'info')).includes('cluster_state:ok'))
    }
    return new RedisCluster(nodes, dir)
  }

  async stop (): Promise<void> {
    for (const node of this.nodes) await node.stop()
    await rm(this.dir, { recursive: true, force: true })
  }
}

export class RedisSentinelSet {
  static readonly NAME = 'wxtoken-primary'
  private constructor (readonly primary: RedisServer, readonly replica: RedisServer, readonly sentinel: RedisServer, private readonly dir: string) {}

  get sentinels (): string { return this.sentinel.address }

  static async start (): Promise<RedisSentinelSet> {
    const dir = await mkdtemp(join(tmpdir(), 'wxtoken-sentinel-'))
    const primary = await RedisServer.start()
    const replica = await RedisServer.start({ args: ['--replicaof', '127.0.0.1', String(primary.port)] })
    await until('the replica to sync', async () => (await ask(replica.port, 'info', 'replication')).includes('master_link_status:up'))
    const configFile = join(dir, 'sentinel.conf')
    await writeFile(configFile, [
      `sentinel monitor ${RedisSentinelSet.NAME} 127.0.0.1 ${primary.port} 1`,
      `sentinel down-after-milliseconds ${RedisSentinelSet.NAME} 1000`,
      `sentinel failover-timeout ${RedisSentinelSet.NAME} 5000`,
      ''
    ].join('\n'))
    const sentinel = await RedisServer.start({ configFile, sentinel: true })
    const set = new RedisSentinelSet(primary, replica, sentinel, dir)
    await until('the sentinel to see the replica', async () => (await ask(sentinel.port, 'sentinel', 'replicas', RedisSentinelSet.NAME)).includes(String(replica.port)))
    return set
  }

  /** The port of the primary as the sentinel reports it now. */
  async primaryPort (): Promise<number> {
    const client = new Redis(this.sentinel.port, '127.0.0.1')
    try {
      const reply = await client.call('sentinel', 'get-master-addr-by-name', RedisSentinelSet.NAME) as [string, string]
      return Number(reply[1])
    } finally {
      client.disconnect()
    }
  }

  /** Kills the primary and waits until the sentinel has promoted the replica. */
  async failover (): Promise<void> {
    await this.primary.stop()
    await until('the sentinel to promote the replica', async () => await this.primaryPort() === this.replica.port, 30_000)
  }

  async stop (): Promise<void> {
    for (const server of [this.sentinel, this.replica, this.primary]) await server.stop()
    await rm(this.dir, { recursive: true, force: true })
  }
}
