/** Waiting in tests for the condition that is asserted next, never for a side effect that precedes it. */
import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Polls `condition` until it holds or `timeoutMs` has passed, and says whether it held: assert that, so a condition
 * that never comes fails the test instead of hanging it.
 */
export async function until (condition: () => boolean | Promise<boolean>, timeoutMs = 5000, everyMs = 10): Promise<boolean> {
  const end = Date.now() + timeoutMs
  while (!await condition()) {
    if (Date.now() >= end) return false
    await sleep(everyMs)
  }
  return true
}

/**
 * Resolves when a change message for `subject` (an appId, for its token) announcing an entry of generation
 * `generation` or later reaches this store.
 */
export async function nextChange (store: { onChange: (listener: (subject: string, stamp: string | undefined) => void) => void },
  subject: string, generation: number): Promise<void> {
  await new Promise<void>((resolve) => {
    store.onChange((heard, stamp) => { if (heard === subject && Number(stamp?.split('.')[0]) >= generation) resolve() })
  })
}
