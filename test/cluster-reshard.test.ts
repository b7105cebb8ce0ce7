/**
 * A Cluster while an app's slot moves to another node (resharding, key by key): a ticket and its token, read together,
 * may then be on two nodes, and Redis refuses a multi-key command over them (TRYAGAIN) where a GET of each is
 * redirected (ASK).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { APP_SECRET, build, post, startMock } from './helpers/build.js'
import { RedisCluster } from './helpers/redis-topologies.js'

const run = promisify(execFile)
const TICKET = '/api/v3/get-wechat-jsapi-ticket'
const appIdFor = (i: number) => `wx${i.toString(16).padStart(16, 'c')}`
interface TicketData { ticket: string }

async function cli (port: number, ...command: string[]): Promise<string> {
  return (await run('redis-cli', ['-p', String(port), ...command])).stdout.trim()
}

t.test('cluster: while the app\'s slot migrates (its token moved, its ticket not yet), a ticket is still served from the store', async (t) => {
  const own = await RedisCluster.start()
  t.teardown(() => own.stop())
  const { mock, url } = await startMock(t, { autoRegister: true })
  const prefix = 'migrating'
  const env = { REDIS_CLUSTER_NODES: own.seeds, REDIS_KEY_PREFIX: prefix, HOT_CACHE_MS: '0', REDIS_COMMAND_TIMEOUT_MS: '1000' }
  const appId = appIdFor(77)
  const body = { appId, appSecret: APP_SECRET }
  const warm = (await build(t, { upstream: url, env })).app
  const ticket = (await post<TicketData>(warm, TICKET, body)).body.data!.ticket
  await warm.close()

  // Resharding, as redis-cli --cluster reshard does it key by key: the slot is MIGRATING on its owner and IMPORTING on
  // the target, and the token key has already been moved.
  const tokenKey = `${prefix}:{${appId}}:token`
  const any = own.nodes[0]!.port
  const slot = await cli(any, 'cluster', 'keyslot', tokenKey)
  const ids = new Map<number, string>()
  for (const node of own.nodes) ids.set(node.port, await cli(node.port, 'cluster', 'myid'))
  let source = 0
  for (const node of own.nodes) if (Number(await cli(node.port, 'cluster', 'countkeysinslot', slot)) > 0) source = node.port
  t.ok(source, 'the slot\'s owner found')
  const target = own.nodes.find((node) => node.port !== source)!.port
  await cli(target, 'cluster', 'setslot', slot, 'importing', ids.get(source)!)
  await cli(source, 'cluster', 'setslot', slot, 'migrating', ids.get(target)!)
  t.equal(await cli(source, 'migrate', '127.0.0.1', String(target), '', '0', '5000', 'keys', tokenKey), 'OK', 'the token key moved')
  const admin = new Redis(source, '127.0.0.1')
  t.teardown(() => admin.disconnect())
  t.equal(await admin.exists(`${prefix}:{${appId}}:jsapi_ticket`), 1, 'the ticket key not yet')

  // A cold instance (no copy of its own to fall back on) reads the ticket.
  const { app } = await build(t, { upstream: url, env })
  const got = await post<TicketData>(app, TICKET, body)
  t.equal(got.body.statusCode, 200, `served during the migration (${got.body.apiCode ?? ''} ${got.body.message})`)
  t.equal(got.body.data?.ticket, ticket, 'the stored ticket')
  t.equal(mock.calls('getticket'), 1, 'not fetched again')
})
