import t from 'tap'
import { createLogger } from '../src/logger.js'
import { createScheduler } from '../src/official-account/scheduler.js'
import { createMemoryStore } from '../src/store/memory-store.js'
import { StoreError } from '../src/store/types.js'
import type { TokenService } from '../src/official-account/token-service.js'
import { LogCapture } from './helpers/build.js'

t.test('one failing app does not stop the scheduler\'s tick for the others', async (t) => {
  const [failing, second, third] = ['wx00000000000000d0', 'wx00000000000000d1', 'wx00000000000000d2']
  const store = createMemoryStore()
  t.teardown(() => store.close())
  const refreshed: string[] = []
  const tokens = {
    async refreshIfDue (appId: string) {
      if (appId === failing) throw new StoreError(new Error('the store refused this app\'s key'))
      refreshed.push(appId)
    }
  } as unknown as TokenService
  const logs = new LogCapture()
  const scheduler = createScheduler({ store, tokens, appIds: [failing, second, third], intervalMs: 1000, log: createLogger('info', logs) })
  t.equal(await scheduler.tick(), true, 'this instance led the tick')
  t.same(refreshed, [second, third], 'the apps after the failing one were refreshed')
  t.match(logs.records, [{ level: 40, appId: failing, msg: 'scheduled refresh failed' }], 'the failure is logged with its appId')
})
