/** The store contract: every store (memory, Redis single node, Cluster, Sentinel) must pass it. */
import type { TokenEntry, TokenStore } from '../../src/store/types.js'
import { fingerprint } from '../../src/fingerprint.js'
import type { Test } from 'tap'
import { APP_ID, APP_SECRET, TestClock, type Teardown } from './build.js'

export function entry (clock: TestClock, lifeMs: number, generation: number, token = 'tok_' + 'a'.repeat(120)): TokenEntry {
  return {
    accessToken: token,
    expiresAt: clock.now() + lifeMs,
    mode: 'stable',
    secretFingerprint: fingerprint(APP_ID, APP_SECRET),
    sentAt: clock.now(),
    fetchedAt: clock.now(),
    generation
  }
}

/** One contract, every store. */
export function storeContract (t: Test, name: string, make: (t: Teardown, clock: TestClock) => Promise<TokenStore>) {
  t.test(`${name} store contract`, async (t) => {
    t.test('a miss is null, generation 0', async (t) => {
      const store = await make(t, new TestClock())
      t.equal(await store.get(APP_ID), null)
      t.equal(await store.generation(APP_ID), 0)
    })

    t.test('compare-and-set writes only over the generation it saw', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      const first = entry(clock, 60_000, 1, 'first')
      t.equal(await store.compareAndSet(APP_ID, first, 0), true)
      t.same(await store.get(APP_ID), first)
      t.equal(await store.generation(APP_ID), 1)
      t.equal(await store.compareAndSet(APP_ID, entry(clock, 60_000, 1, 'stale'), 0), false, 'a writer that saw generation 0 is refused')
      t.equal((await store.get(APP_ID))?.accessToken, 'first')
      t.equal(await store.compareAndSet(APP_ID, entry(clock, 60_000, 2, 'second'), 1), true)
      t.equal((await store.get(APP_ID))?.accessToken, 'second')
      t.equal(await store.get('wxffffffffffffffff'), null, 'entries are per appId')
    })

    t.test('an entry is gone once its token expires; the generation stays', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      await store.compareAndSet(APP_ID, entry(clock, 300, 1), 0)
      t.ok(await store.get(APP_ID))
      await new Promise((resolve) => setTimeout(resolve, 400))
      t.equal(await store.get(APP_ID), null)
      t.equal(await store.generation(APP_ID), 1)
    })

    t.test('an already expired entry is not stored', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      t.equal(await store.compareAndSet(APP_ID, entry(clock, -1, 1), 0), true)
      t.equal(await store.get(APP_ID), null)
    })

    t.test('delete removes the token', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      await store.compareAndSet(APP_ID, entry(clock, 60_000, 1), 0)
      await store.delete(APP_ID)
      t.equal(await store.get(APP_ID), null)
    })

    t.test('each slot of an app has its own entry and generation; the token\'s is the default', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      t.equal(await store.compareAndSet(APP_ID, entry(clock, 60_000, 1, 'token-1'), 0), true)
      t.equal(await store.get(APP_ID, 'jsapi_ticket'), null, 'no ticket yet')
      t.equal(await store.generation(APP_ID, 'jsapi_ticket'), 0)
      t.equal(await store.compareAndSet(APP_ID, entry(clock, 60_000, 1, 'ticket-1'), 0, 'jsapi_ticket'), true, 'its own generation')
      t.equal(await store.compareAndSet(APP_ID, entry(clock, 60_000, 1, 'ticket-x'), 0, 'jsapi_ticket'), false)
      t.equal((await store.get(APP_ID, 'jsapi_ticket'))?.accessToken, 'ticket-1')
      t.equal((await store.get(APP_ID))?.accessToken, 'token-1', 'the token untouched')
      t.equal((await store.get(APP_ID, 'token'))?.accessToken, 'token-1', 'and the default slot is the token\'s')
      t.equal(await store.get(APP_ID, 'wx_card_ticket'), null)
      await store.delete(APP_ID, 'jsapi_ticket')
      t.equal(await store.get(APP_ID, 'jsapi_ticket'), null)
      t.equal(await store.generation(APP_ID, 'jsapi_ticket'), 1)
      t.equal((await store.get(APP_ID))?.accessToken, 'token-1')
    })

    t.test('two slots are read in one, each as get() reads it', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      t.same(await store.getPair(APP_ID, 'jsapi_ticket', 'token'), [null, null], 'neither yet')
      const token = entry(clock, 60_000, 1, 'token-1')
      await store.compareAndSet(APP_ID, token, 0)
      t.same(await store.getPair(APP_ID, 'jsapi_ticket', 'token'), [null, token], 'the token alone')
      const ticket = entry(clock, 300, 1, 'ticket-1')
      await store.compareAndSet(APP_ID, ticket, 0, 'jsapi_ticket')
      t.same(await store.getPair(APP_ID, 'jsapi_ticket', 'token'), [ticket, token], 'each in its place')
      t.same(await store.getPair(APP_ID, 'token', 'jsapi_ticket'), [token, ticket], 'in the order asked')
      t.same(await store.getPair('wxffffffffffffffff', 'jsapi_ticket', 'token'), [null, null], 'of this app only')
      await new Promise((resolve) => setTimeout(resolve, 400))
      t.same(await store.getPair(APP_ID, 'jsapi_ticket', 'token'), [null, token], 'an expired entry is gone')
    })

    t.test('a lock is held by one owner, released only by it, and lapses with its lease', async (t) => {
      const store = await make(t, new TestClock())
      t.equal(await store.acquire(APP_ID, 'lock', 'a', 300), true)
      t.equal(await store.acquire(APP_ID, 'lock', 'b', 300), false)
      t.equal(await store.release(APP_ID, 'lock', 'b'), false, 'not by another owner')
      t.equal(await store.release(APP_ID, 'lock', 'a'), true)
      t.equal(await store.acquire(APP_ID, 'lock', 'b', 200), true)
      await new Promise((resolve) => setTimeout(resolve, 300))
      t.equal(await store.acquire(APP_ID, 'lock', 'c', 200), true, 'the lapsed lease is taken over')
      t.equal(await store.release(APP_ID, 'lock', 'b'), false, 'the lapsed owner cannot release the new one')
    })

    t.test('counters count and lapse', async (t) => {
      const store = await make(t, new TestClock())
      t.equal(await store.increment(APP_ID, 'calls', 200), 1)
      t.equal(await store.increment(APP_ID, 'calls', 200), 2)
      await new Promise((resolve) => setTimeout(resolve, 300))
      t.equal(await store.increment(APP_ID, 'calls', 200), 1)
    })

    t.test('a counter gives back by a negative amount, and one first written that way lapses too', async (t) => {
      const store = await make(t, new TestClock())
      t.equal(await store.increment(APP_ID, 'calls', 60_000, 3), 3)
      t.equal(await store.increment(APP_ID, 'calls', 60_000, -1), 2)
      t.equal(await store.getValue(APP_ID, 'calls'), '2')
      t.equal(await store.increment(APP_ID, 'calls', 60_000, -5), 0, 'never below 0')
      t.equal(await store.increment(APP_ID, 'refunds', 200, -1), 0, 'a missing counter starts from 0')
      await new Promise((resolve) => setTimeout(resolve, 300))
      t.equal(await store.getValue(APP_ID, 'refunds'), null, 'and has a TTL')
    })

    t.test('a counter\'s TTL is extended only when asked, and only upwards', async (t) => {
      const store = await make(t, new TestClock())
      await store.increment(APP_ID, 'pending', 200)
      await store.increment(APP_ID, 'pending', 60_000)
      await store.increment(APP_ID, 'kept', 60_000)
      await store.increment(APP_ID, 'kept', 200, 1, true)
      await store.increment(APP_ID, 'extended', 200)
      await store.increment(APP_ID, 'extended', 60_000, 1, true)
      await new Promise((resolve) => setTimeout(resolve, 300))
      t.equal(await store.getValue(APP_ID, 'pending'), null, 'not extended by a plain increment')
      t.equal(await store.getValue(APP_ID, 'kept'), '2', 'not shortened by an extending one')
      t.equal(await store.getValue(APP_ID, 'extended'), '2', 'extended when asked')
    })

    t.test('values are kept for their TTL', async (t) => {
      const store = await make(t, new TestClock())
      t.equal(await store.getValue(APP_ID, 'negative'), null)
      await store.setValue(APP_ID, 'negative', '{"x":1}', 200)
      t.equal(await store.getValue(APP_ID, 'negative'), '{"x":1}')
      await new Promise((resolve) => setTimeout(resolve, 300))
      t.equal(await store.getValue(APP_ID, 'negative'), null)
    })

    t.test('a kept value has no expiry, is written once with ifAbsent, and outlives a flood of small values', async (t) => {
      const clock = new TestClock()
      const store = await make(t, clock)
      t.equal(await store.keepValue(APP_ID, 'refresh_token', 'first'), true)
      t.equal(await store.keepValue(APP_ID, 'refresh_token', 'second', true), false, 'not written over with ifAbsent')
      t.equal(await store.getValue(APP_ID, 'refresh_token'), 'first')
      t.equal(await store.keepValue(APP_ID, 'refresh_token', 'third'), true, 'written over without')
      clock.advance(400 * 24 * 3600 * 1000)
      for (let i = 0; i < 200; i++) await store.setValue(`flood${i}`, 'x', '1', 60_000)
      t.equal(await store.getValue(APP_ID, 'refresh_token'), 'third', 'still there a year later, whatever else was written')
      await store.forget(APP_ID, 'refresh_token')
      t.equal(await store.getValue(APP_ID, 'refresh_token'), null, 'forgotten')
      t.equal(await store.keepValue(APP_ID, 'refresh_token', 'fourth', true), true, 'written with ifAbsent once gone')
      await store.setValue(APP_ID, 'refresh_token', 'timed', 200)
      t.equal(await store.getValue(APP_ID, 'refresh_token'), 'timed', 'a timed write replaces it')
    })

    t.test('notify wakes a waiter at once; otherwise the wait times out', async (t) => {
      const store = await make(t, new TestClock())
      const started = Date.now()
      await store.waitForChange(APP_ID, 100)
      t.ok(Date.now() - started >= 90, 'timed out')
      await new Promise((resolve) => setTimeout(resolve, 100))
      const woken = Date.now()
      const waiting = store.waitForChange(APP_ID, 5000)
      setTimeout(() => { store.notify(APP_ID).catch(() => {}) }, 50)
      await waiting
      t.ok(Date.now() - woken < 2000, `woken after ${Date.now() - woken} ms`)
    })

    t.test('ping answers', async (t) => {
      const store = await make(t, new TestClock())
      await t.resolves(store.ping())
    })
  })
}
