/**
 * Proactive refresh of the configured apps (their tokens, and the tickets they ever fetched): each tick, one instance
 * (elected by a lock in the store) does the work.
 */
import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { safeError } from '../logger.js'
import type { TokenStore } from '../store/types.js'
import type { TicketService } from './ticket-service.js'
import type { TokenService } from './token-service.js'

export interface SchedulerOptions {
  store: TokenStore
  /** What keeps each app's credential: the token service (for the Official Accounts' apps), or another product's. */
  tokens: Pick<TokenService, 'refreshIfDue'>
  tickets?: TicketService
  /** The owners to keep: a fixed list, or one read anew at each tick (authorizers known to this instance, say). */
  appIds: Iterable<string>
  intervalMs: number
  log: FastifyBaseLogger
  /** The name of the tick's lock: one per scheduler, so that schedulers of different products do not take turns. */
  leader?: string
}

/** The scheduler's own key space in the store (a pseudo appId that no WeChat appId can equal). */
const SCHEDULER_SPACE = '_scheduler'

export function createScheduler (opts: SchedulerOptions) {
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let stopped = false

  /** One tick: if this instance wins the tick's lock, refresh every configured app that is due. */
  async function tick (): Promise<boolean> {
    const owner = randomUUID()
    if (!await opts.store.acquire(SCHEDULER_SPACE, opts.leader ?? 'leader', owner, Math.max(1000, opts.intervalMs - 500))) return false
    for (const appId of [...opts.appIds]) {
      if (stopped) break
      const log = opts.log.child({ appId })
      // One app's failure (its key unreadable, say) must not keep the others from their refresh.
      await opts.tokens.refreshIfDue(appId, log).catch((err: unknown) => log.warn({ err: safeError(err) }, 'scheduled refresh failed'))
      await opts.tickets?.refreshIfDue(appId, log).catch((err: unknown) => log.warn({ err: safeError(err) }, 'scheduled ticket refresh failed'))
    }
    return true
  }

  function schedule (delayMs: number): void {
    if (stopped) return
    timer = setTimeout(() => {
      running = tick()
        .then(() => undefined, (err: unknown) => opts.log.warn({ err: safeError(err) }, 'scheduler tick failed'))
        .finally(() => schedule(opts.intervalMs * (0.8 + Math.random() * 0.4)))
    }, delayMs)
    timer.unref()
  }

  return {
    tick,
    start (): void { schedule(Math.random() * Math.min(1000, opts.intervalMs)) },
    async stop (): Promise<void> {
      stopped = true
      clearTimeout(timer)
      await running
    }
  }
}

/**
 * Runs a scheduler for the owners of a credential on an app (from ready to close) when SCHEDULER_INTERVAL_SECONDS
 * asks for one and there is something to keep: the products' common start.
 */
export function scheduleRefreshes (app: FastifyInstance, opts: Omit<SchedulerOptions, 'store' | 'log' | 'intervalMs'> & { intervalSeconds: number, component: string }): void {
  if ((Array.isArray(opts.appIds) && opts.appIds.length === 0) || opts.intervalSeconds <= 0) return
  const scheduler = createScheduler({ ...opts, store: app.store, intervalMs: opts.intervalSeconds * 1000, log: app.log.child({ component: opts.component }) })
  app.addHook('onReady', async () => { scheduler.start() })
  app.addHook('preClose', async () => { await scheduler.stop() })
}
