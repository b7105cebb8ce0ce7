/**
 * The authorizer_refresh_token of each authorizer of a component: WeChat hands it out at authorization (api_query_auth)
 * and, when it rotates one, in an api_authorizer_token answer; without it the authorizer's token cannot be fetched. The
 * story for each way to lose one:
 * - Kept in the store with no expiry (keepValue) under the authorizer's owner, and in the process of every instance that
 *   saved or read it: a store flushed or restarted empty gets it back from the first instance that still holds it (at
 *   its next read; or at once, every one of the component's, when an instance missing one asks over the change channel,
 *   which it does before it reads WeChat's list).
 * - A new one WeChat answers is saved before the token that came with it is used (store and process), and every other
 *   instance is told (a change message naming a hash of it) to drop the old one it holds, so that none writes a dead one
 *   back. A save the store refuses is kept in process, marked unsaved, and written at the next read.
 * - With none anywhere (every instance restarted with the store emptied, a new store), the component's authorizer list
 *   (api_get_authorizer_list, which holds each refresh token) is read once across instances, at most once per spacing
 *   per component, and every refresh token missing from the store is written back. An authorizer the list does not
 *   hold has not authorized the component: AUTHORIZER_NOT_AUTHORIZED, with no call to WeChat until the spacing ends.
 * - One WeChat refused (61023, another deployment rotated it): the one a list read since held (kept for the spacing
 *   where the store had another), else the list read for it, at most once per spacing per component apart from the
 *   reads for missing ones (a caller asking for made-up appIds does not stop refused ones from being replaced).
 * - Removed (store and every instance) on the `unauthorized` event.
 */
import { hash, randomUUID } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from '../errors.js'
import type { Metrics } from '../metrics.js'
import type { TokenStore } from '../store/types.js'
import type { AuthorizerPage } from '../wechat/client.js'
import { componentSpace } from './verify-tickets.js'

/** The store space (hash tag) of an authorizer of a component: its refresh token and its token. */
export const authorizerSpace = (componentAppId: string, authorizerAppId: string): string => `_authorizer:${componentAppId}:${authorizerAppId}`
/** The component and authorizer of an authorizer space (`_authorizer:<component>:<authorizer>`), or undefined. */
export function parseAuthorizerSpace (space: string): { componentAppId: string, authorizerAppId: string } | undefined {
  const [head, componentAppId, authorizerAppId, ...rest] = space.split(':')
  return head === '_authorizer' && componentAppId && authorizerAppId && rest.length === 0 ? { componentAppId, authorizerAppId } : undefined
}

/** The authorizer appId of an authorizer space of this component, or undefined. */
export function authorizerOf (space: string, componentAppId: string): string | undefined {
  const head = `_authorizer:${componentAppId}:`
  return space.startsWith(head) ? space.slice(head.length) : undefined
}

const REFRESH_TOKEN = 'refresh_token'
const REFUSED = 'refresh_token_refused'
const LISTING = 'authorizer_list'
const LISTED = 'authorizer_listed'
/** When the list was last read for a refresh token WeChat refused: apart, so reads for missing ones never starve these. */
const LISTED_REFUSED = 'authorizer_listed_refused'
/** The refresh token the last list read held for an authorizer whose store already held one (it may be newer). */
const LISTED_TOKEN = 'refresh_token_listed'
/** Change messages: `authorizer_refresh|<space>` with a hash of the refresh token now held, or REMOVED. */
const CHANGE_HEAD = 'authorizer_refresh|'
const LISTED_HEAD = 'authorizer_listed|'
/** Asks every instance to write back the component's refresh tokens it holds and the store lacks; answered by WRITTEN. */
const WANTED_HEAD = 'authorizer_refresh_wanted|'
const WRITTEN_HEAD = 'authorizer_refresh_written|'
/** How long an instance missing a refresh token waits for the others to write theirs back, before WeChat's list is read. */
const WANT_WAIT_MS = 500
const REMOVED = '-'
/** The LISTED value of a read that failed (else when it ended). */
const FAILED = 'failed'
const refreshHash = (token: string): string => hash('sha256', token, 'hex').slice(0, 16)
/** How long after a failed read of the list it may be read again. */
const FAILED_LIST_WAIT_MS = 30_000
/** WeChat's largest page of api_get_authorizer_list. */
const PAGE = 500
/** The most pages read in one recovery (100,000 authorizers): a list that never ends is not followed forever. */
const MAX_PAGES = 200

export interface RefreshTokensOptions {
  store: TokenStore
  /** How often a component's authorizer list may be read, across instances. */
  listSpacingMs: number
  /** How long the lock of a list read outlives a reader that died (at least any request deadline). */
  lockLeaseMs: number
  log: FastifyBaseLogger
  metrics?: Metrics | undefined
  now?: () => number
}

interface Held { token: string, saved: boolean }

/** Reads one page of a component's authorizer list (with its component token). */
export type ListPage = (offset: number, count: number) => Promise<AuthorizerPage>

export function createRefreshTokens (opts: RefreshTokensOptions) {
  const { store, log, metrics } = opts
  const now = opts.now ?? Date.now
  /** The refresh token each authorizer space holds here (only ever ones WeChat answered, so bounded by real authorizations). */
  const held = new Map<string, Held>()
  /** When this instance last read a component's list (the spacing while the store is down). */
  const listedAt = new Map<string, number>()
  /** Refresh tokens marked refused here, by space (also in the store, for the other instances). */
  const refusedHere = new Map<string, { hash: string, until: number }>()
  /** The reads of a component's list in flight here: one for every caller of this instance. */
  const listing = new Map<string, Promise<void>>()

  /** When this instance last wrote back a component's refresh tokens for another's want (at most once a second). */
  const answeredAt = new Map<string, number>()
  store.onChange((subject, stamp) => {
    if (subject.startsWith(WANTED_HEAD)) {
      const componentAppId = subject.slice(WANTED_HEAD.length)
      if ((answeredAt.get(componentAppId) ?? -Infinity) > now() - 1000) return
      answeredAt.set(componentAppId, now())
      writeBack(componentAppId).catch(() => {})
      return
    }
    if (!subject.startsWith(CHANGE_HEAD) || stamp === undefined) return
    const space = subject.slice(CHANGE_HEAD.length)
    const mine = held.get(space)
    if (mine !== undefined && (stamp === REMOVED || refreshHash(mine.token) !== stamp)) held.delete(space)
  })

  /**
   * The refresh token of an authorizer: the store's, else this instance's (written back), else undefined. While the
   * store is down, this instance's.
   */
  async function get (componentAppId: string, authorizerAppId: string): Promise<string | undefined> {
    const space = authorizerSpace(componentAppId, authorizerAppId)
    const mine = held.get(space)
    let stored: string | null
    try {
      stored = await store.getValue(space, REFRESH_TOKEN)
    } catch (err) {
      log.warn({ componentAppId, authorizerAppId, err: (err as Error).message }, 'the store could not be read: the refresh token held here is used')
      return mine?.token
    }
    if (mine !== undefined && (!mine.saved || stored === null)) {
      // Saved here while the store refused it, or the store lost it: written back.
      const written = await store.keepValue(space, REFRESH_TOKEN, mine.token, mine.saved).catch(() => false)
      if (written) {
        mine.saved = true
        metrics?.authorizerRefreshTokens.labels('written_back').inc()
        log.info({ componentAppId, authorizerAppId }, 'an authorizer refresh token missing from the store was written back from this instance')
        return mine.token
      }
      stored = await store.getValue(space, REFRESH_TOKEN).catch(() => stored)
    }
    if (stored === null || stored.length === 0) return mine?.token
    held.set(space, { token: stored, saved: true })
    return stored
  }

  /**
   * Writes back each refresh token of the component held here that the store lacks (a flush, a restart without
   * persistence), then says so to the instance that asked.
   */
  async function writeBack (componentAppId: string): Promise<void> {
    const head = authorizerSpace(componentAppId, '')
    const mine = [...held].filter(([space]) => space.startsWith(head))
    if (mine.length === 0) return
    const written = await Promise.all(mine.map(async ([space, kept]) => await store.keepValue(space, REFRESH_TOKEN, kept.token, true).catch(() => false)))
    const count = written.filter(Boolean).length
    if (count > 0) {
      metrics?.authorizerRefreshTokens.labels('written_back').inc(count)
      log.info({ componentAppId, count }, 'authorizer refresh tokens missing from the store were written back from this instance')
    }
    await store.notify(WRITTEN_HEAD + componentAppId).catch(() => {})
  }

  /** A refresh token WeChat answered: kept here and in the store, before the token that came with it is used. */
  async function save (componentAppId: string, authorizerAppId: string, token: string): Promise<void> {
    const space = authorizerSpace(componentAppId, authorizerAppId)
    const mine: Held = { token, saved: false }
    held.set(space, mine)
    try {
      await store.keepValue(space, REFRESH_TOKEN, token)
      mine.saved = true
    } catch (err) {
      log.warn({ componentAppId, authorizerAppId, err: (err as Error).message }, 'a new authorizer refresh token is kept in process only: the store refused it (written at the next read)')
    }
    await store.notify(CHANGE_HEAD + space, refreshHash(token)).catch(() => {})
  }

  /** The authorization ended (the `unauthorized` event): the refresh token is forgotten here, in the store and everywhere. */
  async function remove (componentAppId: string, authorizerAppId: string): Promise<void> {
    const space = authorizerSpace(componentAppId, authorizerAppId)
    held.delete(space)
    await store.forget(space, REFRESH_TOKEN)
    await store.notify(CHANGE_HEAD + space, REMOVED).catch(() => {})
  }

  /**
   * Reads the component's authorizer list (every page) and writes each refresh token the store lacks; `replacing`, a
   * refresh token WeChat refused (61023), is written over when the list holds another for its authorizer.
   */
  async function readList (componentAppId: string, page: ListPage, replacing?: { authorizerAppId: string, token: string }): Promise<void> {
    let offset = 0
    let restored = 0
    for (let pages = 0; pages < MAX_PAGES; pages++) {
      const { total, authorizers } = await page(offset, PAGE)
      for (const { authorizerAppId, refreshToken } of authorizers) {
        const space = authorizerSpace(componentAppId, authorizerAppId)
        const stale = replacing?.authorizerAppId === authorizerAppId && replacing.token !== refreshToken
        if (stale) await save(componentAppId, authorizerAppId, refreshToken)
        else if (await store.keepValue(space, REFRESH_TOKEN, refreshToken, true).catch(() => false)) restored++
        // The store holds one already, maybe one WeChat has since refused: the listed one is kept for the spacing.
        else await store.setValue(space, LISTED_TOKEN, refreshToken, opts.listSpacingMs).catch(() => {})
        if (stale || !held.has(space)) held.set(space, { token: refreshToken, saved: true })
      }
      offset += authorizers.length
      if (authorizers.length === 0 || offset >= total) break
    }
    metrics?.authorizerRefreshTokens.labels('recovered').inc(restored)
    log.warn({ componentAppId, listed: offset, restored }, 'the authorizer list was read from WeChat to recover refresh tokens the store lacked')
  }

  /**
   * The refresh token of an authorizer none is held for (or whose one WeChat refused: `refused`), from WeChat's
   * authorizer list: read by one instance at most once per spacing per component for missing ones, and once more for
   * refused ones (a read for a made-up appId does not stop a refused one from being replaced), the others waiting for
   * it. Rejects with AUTHORIZER_NOT_AUTHORIZED when the list read does not hold the authorizer (or holds only the
   * refused one), and with REFRESH_IN_PROGRESS when another instance's read did not end in time.
   */
  async function recover (componentAppId: string, authorizerAppId: string, page: ListPage, deadline: number, refused?: string): Promise<string> {
    const space = componentSpace(componentAppId)
    const mark = refused === undefined ? LISTED : LISTED_REFUSED
    const notAuthorized = (): AppError => new AppError('AUTHORIZER_NOT_AUTHORIZED',
      `Authorizer ${authorizerAppId} has not authorized component ${componentAppId} (WeChat's authorizer list does not hold it, or its authorization ended)`)
    const lastRead = async (): Promise<string | null | undefined> => {
      try {
        return await store.getValue(space, mark)
      } catch {
        return (listedAt.get(componentAppId) ?? -Infinity) > now() - opts.listSpacingMs ? String(listedAt.get(componentAppId)) : null
      }
    }
    const settled = async (): Promise<string> => {
      const token = await get(componentAppId, authorizerAppId)
      if (token !== undefined && token !== refused) return token
      if (refused !== undefined) {
        // A list read since the store's was written may hold a newer one.
        const listed = await store.getValue(authorizerSpace(componentAppId, authorizerAppId), LISTED_TOKEN).catch(() => null)
        if (listed !== null && listed !== refused && !await isRefused(componentAppId, authorizerAppId, listed)) {
          await save(componentAppId, authorizerAppId, listed)
          return listed
        }
      }
      const last = await lastRead()
      if (last === FAILED) {
        throw new AppError('UPSTREAM_BACKOFF', `The authorizer list of component ${componentAppId} could not be read from WeChat: it is asked again ` +
          `${Math.round(Math.min(opts.listSpacingMs, FAILED_LIST_WAIT_MS) / 1000)} s after the last try`)
      }
      // Not read yet: another instance is reading it (or died reading it, its lock lapsing with the lock lease).
      if (last === null) throw new AppError('REFRESH_IN_PROGRESS', `Another instance is reading the authorizer list of component ${componentAppId}; it did not finish in time`)
      throw notAuthorized()
    }
    if (await lastRead() !== null) return await settled()
    if (refused === undefined && store.pubsubUp) {
      // Another instance may hold it (the store was flushed): asked first, as that costs WeChat nothing.
      const written = store.waitForChange(WRITTEN_HEAD + componentAppId, Math.min(WANT_WAIT_MS, deadline - now()))
      await store.notify(WANTED_HEAD + componentAppId).catch(() => {})
      await written
      const token = await get(componentAppId, authorizerAppId)
      if (token !== undefined) return token
    }
    const key = `${componentAppId}\0${mark}`
    let read = listing.get(key)
    if (read === undefined) {
      read = (async () => {
        const last = listedAt.get(componentAppId)
        const id = randomUUID()
        const mine = await store.acquire(space, LISTING, id, Math.min(opts.listSpacingMs, opts.lockLeaseMs))
          .catch(() => last === undefined || last <= now() - opts.listSpacingMs)
        if (!mine) {
          // Another instance reads it: its end is announced (or the wait ends at the deadline).
          if (await store.getValue(space, mark).catch(() => null) === null) await store.waitForChange(LISTED_HEAD + componentAppId, deadline - now())
          return
        }
        // A read (here or elsewhere) that ended after this caller looked at the mark, its lock released: not read again.
        if (await store.getValue(space, mark).catch(() => null) !== null) {
          await store.release(space, LISTING, id).catch(() => false)
          return
        }
        listedAt.set(componentAppId, now())
        try {
          await readList(componentAppId, page, refused === undefined ? undefined : { authorizerAppId, token: refused })
          await store.setValue(space, LISTED, String(now()), opts.listSpacingMs).catch(() => {})
          if (refused !== undefined) await store.setValue(space, LISTED_REFUSED, String(now()), opts.listSpacingMs).catch(() => {})
          await store.release(space, LISTING, id).catch(() => false)
        } catch (err) {
          metrics?.authorizerRefreshTokens.labels('list_failed').inc()
          log.error({ componentAppId, apiCode: (err as AppError).apiCode, err: (err as Error).message }, 'the authorizer list could not be read from WeChat')
          // Another try after a short wait, on any instance: a failing WeChat is not asked again for every request.
          const wait = Math.min(opts.listSpacingMs, FAILED_LIST_WAIT_MS)
          listedAt.set(componentAppId, now() - opts.listSpacingMs + wait)
          await store.setValue(space, LISTING, FAILED, wait).catch(() => {})
          await store.setValue(space, LISTED, FAILED, wait).catch(() => {})
          await store.setValue(space, LISTED_REFUSED, FAILED, wait).catch(() => {})
          throw err
        } finally {
          await store.notify(LISTED_HEAD + componentAppId).catch(() => {})
        }
      })().finally(() => listing.delete(key))
      listing.set(key, read)
    }
    await read
    return await settled()
  }

  /**
   * WeChat refused this refresh token (61023) and its list held no other: not sent again, by any instance, until the
   * list may be read again (the mark names a hash of it; it lapses with the spacing).
   */
  async function markRefused (componentAppId: string, authorizerAppId: string, token: string): Promise<void> {
    const space = authorizerSpace(componentAppId, authorizerAppId)
    refusedHere.set(space, { hash: refreshHash(token), until: now() + opts.listSpacingMs })
    await store.setValue(space, REFUSED, refreshHash(token), opts.listSpacingMs).catch(() => {})
  }

  /** Whether this refresh token was marked refused (markRefused) and the mark has not lapsed. */
  async function isRefused (componentAppId: string, authorizerAppId: string, token: string): Promise<boolean> {
    const space = authorizerSpace(componentAppId, authorizerAppId)
    const local = refusedHere.get(space)
    if (local !== undefined && local.until <= now()) refusedHere.delete(space)
    const stored = await store.getValue(space, REFUSED).catch(() => null)
    const marked = stored ?? (local !== undefined && local.until > now() ? local.hash : undefined)
    return marked === refreshHash(token)
  }

  return {
    get,
    save,
    remove,
    recover,
    markRefused,
    isRefused,
    /** Each authorizer space a refresh token is held for here. */
    spaces: () => held.keys()
  }
}

export type RefreshTokens = ReturnType<typeof createRefreshTokens>
