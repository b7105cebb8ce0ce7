/**
 * The component_verify_ticket of each component: WeChat pushes one every 10 minutes to the callback, each valid 12
 * hours, and no API gives one back. It is what the component's token is fetched with, so losing it stops the component
 * until the next push; the story for each way to lose it:
 * - Kept in the store under the component's space (`_component:<appId>`) until 12 hours after WeChat made it, and in
 *   the process of every instance that received it or read it: a store flushed or restarted empty gets it back from
 *   the first instance that still holds it (written back at its next read, or as soon as an instance that has none
 *   asks every instance for it over the change channel, which it does before it answers 4009).
 * - The latest made wins (by its CreateTime): a push WeChat sends again late does not replace a newer ticket. Two
 *   instances may receive two pushes at once and write in either order (a read, then a write: no store script); both
 *   tickets are valid for 12 hours, so the one left is a good one either way, and the next push settles it.
 * - A ticket WeChat refused (61005 expired, 61006 invalid) is not sent again: the component's token is not fetched
 *   with it, in a loop or otherwise, until a new one arrives.
 * - With none usable, WeChat is asked to push one (api_start_push_ticket), at most once a minute per component across
 *   instances (a lock in the store; in process while the store is down).
 */
import { hash } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import type { TokenStore } from '../store/types.js'
import type { WechatClient } from '../wechat/client.js'

/** How long WeChat's component_verify_ticket is valid after it made it. */
export const TICKET_LIFE_MS = 12 * 3600 * 1000
/** How often WeChat may be asked to push a ticket, per component, across instances. */
export const PUSH_REQUEST_SPACING_MS = 60_000

export interface VerifyTicket {
  ticket: string
  /** When WeChat made it (the push's CreateTime), epoch milliseconds. */
  createdAt: number
}

export interface VerifyTicketsOptions {
  store: TokenStore
  wechat: Pick<WechatClient, 'startPushTicket'>
  /** The components' secrets by appId (for api_start_push_ticket). */
  secrets: ReadonlyMap<string, string>
  requestDeadlineMs: number
  log: FastifyBaseLogger
  now?: () => number
}

/** The store space of a component: its ticket, its push requests, its token (one hash tag). */
export const componentSpace = (appId: string): string => `_component:${appId}`
const TICKET = 'verify_ticket'
const REFUSED = 'verify_ticket_refused'
const PUSH_REQUESTED = 'push_requested'
/** The change messages that tell every instance a ticket was refused: `component_ticket|<appId>`, with a hash of it. */
const REFUSAL_HEAD = 'component_ticket|'
const refusalSubject = (appId: string): string => REFUSAL_HEAD + appId
const ticketHash = (ticket: string): string => hash('sha256', ticket, 'hex').slice(0, 16)
/** Asks every instance to write back the ticket it holds when the store lacks it (or holds an older one); answered by WRITTEN. */
const WANTED_HEAD = 'component_ticket_wanted|'
const WRITTEN_HEAD = 'component_ticket_written|'
/** How long an instance with no ticket waits for another to write its own back. */
const WANT_WAIT_MS = 500

function parseTicket (raw: string | null): VerifyTicket | undefined {
  if (raw === null) return undefined
  try {
    const value = JSON.parse(raw) as Partial<VerifyTicket> | null
    return typeof value?.ticket === 'string' && value.ticket.length > 0 && value.ticket.length <= 512 && Number.isSafeInteger(value.createdAt)
      ? { ticket: value.ticket, createdAt: value.createdAt! }
      : undefined
  } catch {
    return undefined
  }
}

export function createVerifyTickets (opts: VerifyTicketsOptions) {
  const { store, log } = opts
  const now = opts.now ?? Date.now
  /** The newest ticket this instance received or read, per component. */
  const local = new Map<string, VerifyTicket>()
  /** Tickets WeChat refused, per component (also in the store, for the other instances). */
  const refusedHere = new Map<string, string>()
  /** When this instance last asked WeChat to push, per component (the spacing while the store is down). */
  const askedAt = new Map<string, number>()
  const newer = (a: VerifyTicket | undefined, b: VerifyTicket | undefined): VerifyTicket | undefined =>
    a === undefined ? b : b === undefined ? a : (b.createdAt > a.createdAt ? b : a)
  const alive = (ticket: VerifyTicket): boolean => ticket.createdAt + TICKET_LIFE_MS > now()

  function keep (appId: string, ticket: VerifyTicket): void {
    const held = local.get(appId)
    if (held === undefined || ticket.createdAt >= held.createdAt) local.set(appId, ticket)
  }

  async function write (appId: string, ticket: VerifyTicket): Promise<void> {
    const ttl = ticket.createdAt + TICKET_LIFE_MS - now()
    if (ttl > 0) await store.setValue(componentSpace(appId), TICKET, JSON.stringify(ticket), ttl)
  }

  /** A ticket WeChat pushed: kept here, and in the store unless the store holds a newer one. */
  async function receive (appId: string, ticket: VerifyTicket): Promise<void> {
    if (!alive(ticket)) return
    keep(appId, ticket)
    const stored = parseTicket(await store.getValue(componentSpace(appId), TICKET))
    if (stored === undefined || ticket.createdAt >= stored.createdAt) await write(appId, ticket)
  }

  /**
   * The newest ticket held (here or in the store) that is still valid and not refused by WeChat, or undefined. One
   * held here and missing from the store (flushed, or an older one there) is written back.
   */
  async function usable (appId: string): Promise<VerifyTicket | undefined> {
    const found = await usableHere(appId)
    if (found !== undefined || !store.pubsubUp) return found
    // None here or in the store (flushed, restarted empty): another instance may hold one, and is asked for it first.
    const written = store.waitForChange(WRITTEN_HEAD + appId, WANT_WAIT_MS)
    await store.notify(WANTED_HEAD + appId).catch(() => {})
    await written
    return await usableHere(appId)
  }

  async function usableHere (appId: string): Promise<VerifyTicket | undefined> {
    let stored: VerifyTicket | undefined
    let refused: string | undefined = refusedHere.get(appId)
    try {
      stored = parseTicket(await store.getValue(componentSpace(appId), TICKET))
      refused = await store.getValue(componentSpace(appId), REFUSED) ?? refused
    } catch (err) {
      log.warn({ componentAppId: appId, err: (err as Error).message }, 'the component_verify_ticket could not be read from the store: the one held here is used')
    }
    const held = local.get(appId)
    const best = newer(stored, held)
    if (best === undefined || !alive(best) || best.ticket === refused) return undefined
    keep(appId, best)
    if (best !== stored) {
      await write(appId, best).catch(() => {})
      log.info({ componentAppId: appId }, 'the component_verify_ticket was missing from the store (or older there): written back from this instance')
    }
    return best
  }

  /**
   * WeChat refused this ticket (61005, 61006): not used again, here or on any instance. The others are told (a change
   * message naming a hash of it) as well as the store, so that one still holding it does not write it back to a store
   * that lost the refusal.
   */
  async function refuse (appId: string, ticket: VerifyTicket): Promise<void> {
    refusedHere.set(appId, ticket.ticket)
    const ttl = ticket.createdAt + TICKET_LIFE_MS - now()
    if (ttl > 0) await store.setValue(componentSpace(appId), REFUSED, ticket.ticket, ttl).catch(() => {})
    await store.notify(refusalSubject(appId), ticketHash(ticket.ticket)).catch(() => {})
  }

  store.onChange((subject, stamp) => {
    if (subject.startsWith(WANTED_HEAD)) {
      const appId = subject.slice(WANTED_HEAD.length)
      const held = local.get(appId)
      if (held === undefined || !alive(held) || held.ticket === refusedHere.get(appId)) return
      receive(appId, held).then(async () => { await store.notify(WRITTEN_HEAD + appId) }).catch(() => {})
      return
    }
    if (!subject.startsWith(REFUSAL_HEAD) || stamp === undefined) return
    const appId = subject.slice(REFUSAL_HEAD.length)
    const held = local.get(appId)
    if (held !== undefined && ticketHash(held.ticket) === stamp) refusedHere.set(appId, held.ticket)
  })

  /**
   * Asks WeChat to push a ticket (api_start_push_ticket), unless this component asked within the last minute (on any
   * instance). Resolves whether it was asked now; never rejects.
   */
  async function requestPush (appId: string, why: string): Promise<boolean> {
    const secret = opts.secrets.get(appId)
    if (secret === undefined) return false
    const last = askedAt.get(appId)
    if (last !== undefined && now() - last < PUSH_REQUEST_SPACING_MS) return false
    askedAt.set(appId, now())
    const mine = await store.acquire(componentSpace(appId), PUSH_REQUESTED, String(now()), PUSH_REQUEST_SPACING_MS).catch(() => true)
    if (!mine) return false
    try {
      await opts.wechat.startPushTicket(appId, secret, { deadline: now() + opts.requestDeadlineMs })
      log.warn({ componentAppId: appId, why }, 'asked WeChat to push a component_verify_ticket (api_start_push_ticket)')
      return true
    } catch (err) {
      log.warn({ componentAppId: appId, why, err: (err as Error).message }, 'WeChat refused to push a component_verify_ticket (api_start_push_ticket)')
      return false
    }
  }

  return { receive, usable, refuse, requestPush, held: (appId: string) => local.get(appId) }
}

export type VerifyTickets = ReturnType<typeof createVerifyTickets>
