/**
 * The process-local caches and what keeps them honest. The hot cache answers a token just served without reading the
 * store; the outage copies answer while the store is down and refill a store that lost everything (classic mode).
 * Both hold only what the store held, and forget it as soon as a change message says the store holds something else.
 *
 * Every change message is numbered as it arrives, and the last one heard per app remembered: what a read (or a write)
 * returns is kept only if no message naming another entry of the app arrived while it was in flight, so a read that
 * raced a replacement cannot put the old token back. Without pub/sub none of this can be known: the hot cache is off
 * and no copy is put back into the store; after a gap in which a change may have been missed, only copies the store
 * confirmed since may be put back.
 */
import { sameString } from '../fingerprint.js'
import { NO_CHANGE, stampOf, type TokenEntry } from '../store/types.js'

export interface LocalCachesOptions {
  /** How long a served token is answered from process memory; 0: never. */
  hotMs: number
  hotMax: number
  copiesMax: number
  /** A hot token is not answered past its serving margin. */
  marginMs: number
  now: () => number
}

/** A token in the hot cache, with the secret verified for it and the time it stops being answered from here. */
interface Hot { entry: TokenEntry, secret: string, until: number }

/** The last change message heard for an app: its stamp (undefined from an older version), and its number. */
interface Heard { stamp: string | undefined, seq: number }

/** The last token served per app, and when the store last showed it as current. */
class Copy {
  constructor (readonly entry: TokenEntry, public keptAt: number) {}
}

/** Whether two entries come from the same write (what their stamps say, without making the strings). */
function sameWrite (a: TokenEntry, b: TokenEntry): boolean {
  return a.generation === b.generation && a.fetchedAt === b.fetchedAt
}

/** A Map used as a bounded cache: the oldest insertion goes first. */
function setBounded<V> (map: Map<string, V>, key: string, value: V, max: number): void {
  if (!map.has(key) && map.size >= max) map.delete(map.keys().next().value as string)
  map.set(key, value)
}

export function createLocalCaches (opts: LocalCachesOptions) {
  const { now, hotMs } = opts
  const hot = new Map<string, Hot>()
  const copies = new Map<string, Copy>()
  const heard = new Map<string, Heard>()
  const heardMax = Math.max(opts.hotMax, opts.copiesMax) * 2
  /** Numbers the change messages as they arrive. */
  let seq = 0
  /** The number at the last change of the state of pub/sub: nothing read before it is kept. */
  let pubsubSeq = 0
  let pubsubUp = false
  const pubsubWaiters = new Set<() => void>()
  /** Copies kept before this time may be superseded by a change this instance did not hear of. */
  let trustedSince = Infinity

  return {
    /** The number of the last message, taken before a store read or write whose result is to be kept. */
    mark: (): number => seq,

    /**
     * A change message: drop what it supersedes. NO_CHANGE (a refresh that wrote nothing) changes nothing; a message
     * without a stamp (from an older version) drops all the app's copies.
     */
    changed (appId: string, stamp: string | undefined): void {
      if (stamp === NO_CHANGE) return
      setBounded(heard, appId, { stamp, seq: ++seq }, heardMax)
      const kept = hot.get(appId)
      if (kept !== undefined && (stamp === undefined || stampOf(kept.entry) !== stamp)) hot.delete(appId)
      const copy = copies.get(appId)
      if (copy !== undefined && (stamp === undefined || stampOf(copy.entry) !== stamp)) copies.delete(appId)
    },

    /** Change messages started (`missed`: a change may have been written meanwhile) or stopped reaching this instance. */
    pubsub (up: boolean, missed: boolean): void {
      pubsubSeq = ++seq
      if (!up) hot.clear()
      else if (missed || trustedSince === Infinity) trustedSince = now()
      pubsubUp = up
      if (up) for (const wake of pubsubWaiters) wake()
    },

    /** Resolves once change messages reach this instance, or after timeoutMs (a store back before its subscriber). */
    async untilPubsub (timeoutMs: number): Promise<void> {
      if (pubsubUp) return
      await new Promise<void>((resolve) => {
        const wake = (): void => {
          clearTimeout(timer)
          pubsubWaiters.delete(wake)
          resolve()
        }
        const timer = setTimeout(wake, timeoutMs)
        pubsubWaiters.add(wake)
      })
    },

    /** The hot answer for this appId and secret, if there is one, with the time it was looked up. */
    hot (appId: string, secret: string): { entry: TokenEntry, at: number } | undefined {
      const kept = hot.get(appId)
      if (kept === undefined) return undefined
      const at = now()
      if (kept.until <= at || !sameString(kept.secret, secret)) return undefined
      return { entry: kept.entry, at }
    },

    /**
     * Keeps what the store showed as current (read or written after `mark` was taken) for outages and, when `hotToo`,
     * in the hot cache for hotMs (never past the serving margin), with the verified secret. Refused when a message
     * naming another entry of the app arrived meanwhile, or pub/sub started or stopped.
     */
    keep (appId: string, secret: string, entry: TokenEntry, mark: number, hotToo: boolean): void {
      const last = heard.get(appId)
      if (pubsubSeq > mark || (last !== undefined && last.seq > mark && last.stamp !== stampOf(entry))) return
      const at = now()
      const copy = copies.get(appId)
      if (copy !== undefined && sameWrite(copy.entry, entry)) copy.keptAt = at
      else {
        copies.delete(appId)
        setBounded(copies, appId, new Copy(entry, at), opts.copiesMax)
      }
      if (hotToo && hotMs > 0 && pubsubUp) {
        setBounded(hot, appId, { entry, secret, until: Math.min(at + hotMs, entry.expiresAt - opts.marginMs) }, opts.hotMax)
      }
    },

    /** Forgets the app's hot answer (what it was made with changed). */
    forgetHot (appId: string): void {
      hot.delete(appId)
    },

    /** Keeps a token fetched while the store was down (never stored, so never put back into the store). */
    keepUnstored (appId: string, entry: TokenEntry): void {
      copies.delete(appId)
      setBounded(copies, appId, new Copy(entry, -Infinity), opts.copiesMax)
    },

    /** The app's copy, to answer while the store is down. */
    copy (appId: string): TokenEntry | undefined {
      return copies.get(appId)?.entry
    },

    /** The app's copy if it may be put back into a store that lost it: no change can have superseded it unheard. */
    restorable (appId: string): TokenEntry | undefined {
      const copy = copies.get(appId)
      if (copy === undefined || !pubsubUp || copy.entry.generation === 0 || copy.keptAt < trustedSince) return undefined
      return copy.entry
    },

    /** Each app this instance has served, with its token's expiry (for the seconds-left gauge). */
    known (): Array<[string, number]> {
      return [...copies].map(([appId, copy]) => [appId, copy.entry.expiresAt])
    }
  }
}

export type LocalCaches = ReturnType<typeof createLocalCaches>
