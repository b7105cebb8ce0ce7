/**
 * The process-local caches and what keeps them honest. The hot cache answers a token just served without reading the
 * store; the outage copies answer while the store is down and refill a store that lost everything. Both hold only
 * what the store held, and forget it as soon as a change message says the store holds something else.
 *
 * Each change message names the entry written (its stamp). The latest stamp seen per app is remembered, so that a read
 * that was in flight when the message arrived cannot put the entry it read back into a cache. Without pub/sub none of
 * this can be known: the hot cache is off and no copy is put back into the store.
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

/** The last token served per app, and when the store last showed it as current. */
class Copy {
  constructor (readonly entry: TokenEntry, public keptAt: number) {}
}

/** Whether two entries come from the same write (what their stamps say, without making the strings). */
function sameWrite (a: TokenEntry, b: TokenEntry): boolean {
  return a.generation === b.generation && a.fetchedAt === b.fetchedAt
}

/** After Redis itself was away, copies kept before may be put back into an empty store for this long. */
const RESTORE_GRACE_MS = 60_000

/** A Map used as a bounded cache: the oldest insertion goes first. */
function setBounded<V> (map: Map<string, V>, key: string, value: V, max: number): void {
  if (!map.has(key) && map.size >= max) map.delete(map.keys().next().value as string)
  map.set(key, value)
}

export function createLocalCaches (opts: LocalCachesOptions) {
  const { now, hotMs } = opts
  const hot = new Map<string, Hot>()
  const copies = new Map<string, Copy>()
  /** The stamp of the last change message per app (or of this instance's own last write). */
  const latest = new Map<string, string>()
  const latestMax = Math.max(opts.hotMax, opts.copiesMax) * 2
  let pubsubUp = false
  /** Copies kept before this time are not put back into the store... */
  let confirmedSince = Infinity
  /** ...except until this time, right after Redis itself came back. */
  let graceUntil = -Infinity

  /** Whether an entry read or written just now is still the latest this instance knows of. */
  function current (appId: string, entry: TokenEntry): boolean {
    const stamp = latest.get(appId)
    return stamp === undefined || stamp === stampOf(entry)
  }

  return {
    /**
     * A change message: drop what it supersedes. NO_CHANGE (a refresh that wrote nothing) changes nothing; a message
     * without a stamp (from an older version) drops the app's hot token.
     */
    changed (appId: string, stamp: string | undefined): void {
      if (stamp === NO_CHANGE) return
      if (stamp === undefined) {
        hot.delete(appId)
        return
      }
      setBounded(latest, appId, stamp, latestMax)
      const kept = hot.get(appId)
      if (kept !== undefined && stampOf(kept.entry) !== stamp) hot.delete(appId)
      const copy = copies.get(appId)
      if (copy !== undefined && stampOf(copy.entry) !== stamp) copies.delete(appId)
    },

    /** This instance wrote `entry`: it is the latest, whatever message arrives first. */
    wrote (appId: string, entry: TokenEntry): void {
      setBounded(latest, appId, stampOf(entry), latestMax)
    },

    pubsub (up: boolean, missed: boolean): void {
      pubsubUp = up
      if (!up) {
        hot.clear()
        return
      }
      confirmedSince = now()
      graceUntil = missed ? -Infinity : now() + RESTORE_GRACE_MS
    },

    /** The hot answer for this appId and secret, if there is one. */
    hot (appId: string, secret: string, at: number): TokenEntry | undefined {
      const kept = hot.get(appId)
      if (kept === undefined || kept.until <= at || !sameString(kept.secret, secret)) return undefined
      return kept.entry
    },

    /**
     * Keeps what the store showed as current (or what this instance just wrote) for outages and, when `hotToo`, in
     * the hot cache for hotMs (never past the serving margin), with the verified secret. Refused when a change
     * message for another entry arrived meanwhile.
     */
    keep (appId: string, secret: string, entry: TokenEntry, hotToo: boolean): void {
      if (!current(appId, entry)) return
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

    /** Keeps a token fetched while the store was down (never stored, so never put back into the store). */
    keepUnstored (appId: string, entry: TokenEntry): void {
      copies.delete(appId)
      setBounded(copies, appId, new Copy(entry, -Infinity), opts.copiesMax)
    },

    /** The app's copy, to answer while the store is down. */
    copy (appId: string): TokenEntry | undefined {
      return copies.get(appId)?.entry
    },

    /** The app's copy if it may be put back into a store that lost it: no change message can have superseded it unseen. */
    restorable (appId: string): TokenEntry | undefined {
      const copy = copies.get(appId)
      if (copy === undefined || !pubsubUp || copy.entry.generation === 0) return undefined
      return copy.keptAt >= confirmedSince || now() < graceUntil ? copy.entry : undefined
    },

    /** Each app this instance has served, with its token's expiry (for the seconds-left gauge). */
    known (): Array<[string, number]> {
      return [...copies].map(([appId, copy]) => [appId, copy.entry.expiresAt])
    }
  }
}

export type LocalCaches = ReturnType<typeof createLocalCaches>
