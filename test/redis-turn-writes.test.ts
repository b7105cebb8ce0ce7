/**
 * The service's single-node Redis client writes the commands of an event-loop turn in one socket write, and never
 * holds a turn's commands back until an earlier turn's are answered (as auto-pipelining did, which kept every read
 * alive for two round trips). Seen on the client's real socket, against a real redis-server.
 */
import t, { type Test } from 'tap'
import type { Socket } from 'node:net'
import { loadConfig } from '../src/config.js'
import { createRedisClient } from '../src/plugins/store.js'
import { createRedisStore } from '../src/store/redis-store.js'
import { RedisServer } from './helpers/redis-server.js'
import { until } from './helpers/until.js'

const redisServer = await RedisServer.start()
t.teardown(() => redisServer.stop())

/** The service's client and store, and the text of every write its socket hands to the kernel. */
async function service (t: Test, prefix: string) {
  const client = createRedisClient(loadConfig({ REDIS_URL: redisServer.url }))!
  await client.connect()
  const store = createRedisStore(client, prefix)
  t.teardown(async () => {
    await store.close()
    client.disconnect()
  })
  const socket = (client as unknown as { stream: Socket & { _write: Function, _writev: Function } }).stream
  const writes: string[] = []
  const write = socket._write.bind(socket)
  const writev = socket._writev.bind(socket)
  socket._write = (chunk: Buffer | string, encoding: BufferEncoding, done: (err?: Error | null) => void) => {
    writes.push(chunk.toString())
    write(chunk, encoding, done)
  }
  socket._writev = (chunks: Array<{ chunk: Buffer | string }>, done: (err?: Error | null) => void) => {
    writes.push(chunks.map(({ chunk }) => chunk.toString()).join(''))
    writev(chunks, done)
  }
  return { client, store, writes }
}

t.test('the token reads of one turn leave in one socket write', async (t) => {
  const { store, writes } = await service(t, 'turn')
  const appIds = ['wx0000000000000001', 'wx0000000000000002', 'wx0000000000000003', 'wx0000000000000004', 'wx0000000000000005']
  const reads = await Promise.all(appIds.map(async (appId) => await store.get(appId)))
  t.same(reads, appIds.map(() => null), 'every read answered')
  const carrying = writes.filter((text) => appIds.some((appId) => text.includes(appId)))
  t.equal(carrying.length, 1, 'one write carried them')
  for (const appId of appIds) t.ok(carrying[0]?.includes(`{${appId}}`), `with the read of ${appId}`)
})

t.test('a read is written in its own turn while an earlier one is still unanswered', async (t) => {
  const { store, writes } = await service(t, 'unanswered')
  // Nothing is answered while the server is stopped; what the client writes waits in the kernel's buffers.
  redisServer.freeze()
  t.teardown(() => { redisServer.thaw() })
  let firstAnswered = false
  const first = store.get('wx00000000000000a1').then(() => { firstAnswered = true })
  t.ok(await until(() => writes.some((text) => text.includes('wx00000000000000a1'))), 'the first read was written')
  const second = store.get('wx00000000000000a2')
  t.ok(await until(() => writes.some((text) => text.includes('wx00000000000000a2'))), 'the second read was written')
  t.equal(firstAnswered, false, 'before the first was answered')
  redisServer.thaw()
  t.same(await Promise.all([first, second]), [undefined, null], 'both answered once Redis resumes')
})
