/** The pure serving rules: when a token may be served, when it is due for a refresh, and the Beijing day quotas count in. */
import { sameString } from '../fingerprint.js'
import type { TokenEntry } from '../store/types.js'

const DAY_MS = 24 * 3600 * 1000
const BEIJING_OFFSET_MS = 8 * 3600 * 1000
/** WeChat renews a stable token in its last five minutes; asking earlier returns the same token. */
export const STABLE_RENEWAL_WINDOW_MS = 290_000
/** A token fetched this recently is not refreshed ahead again, whatever it has left. */
const MIN_REFRESH_SPACING_MS = 30_000

/** The token the caller gets: the entry's token, its expiry (epoch ms) and its whole seconds left. */
export interface ServedToken {
  accessToken: string
  expiresAt: number
  expiresIn: number
}

/** The day WeChat counts quotas in (00:00 Beijing time), as YYYY-MM-DD. */
export function beijingDay (epochMs: number): string {
  return new Date(epochMs + BEIJING_OFFSET_MS).toISOString().slice(0, 10)
}

/** The clock hour (UTC) an hourly budget counts in, as YYYY-MM-DDTHH. */
export function utcHour (epochMs: number): string {
  return new Date(epochMs).toISOString().slice(0, 13)
}

/** Milliseconds until the next Beijing midnight. */
export function msToBeijingMidnight (epochMs: number): number {
  return DAY_MS - ((epochMs + BEIJING_OFFSET_MS) % DAY_MS)
}

/**
 * An entry for this secret (fingerprint) with more than minLifeMs left; or, when WeChat gave it with no more than
 * minLifeMs left, with any time left. An upstream that answers the credential it issued until that expires (WeCom's
 * gettoken, say) would only give the same one again: fetching it again for every request of its last seconds would
 * spend the budget on nothing.
 */
export function usable (entry: TokenEntry | null | undefined, fp: string, minLifeMs: number, now: number): entry is TokenEntry {
  if (entry == null || !sameString(entry.secretFingerprint, fp)) return false
  return entry.expiresAt - now > (entry.expiresAt - entry.fetchedAt > minLifeMs ? minLifeMs : 0)
}

/** Whether a served entry should be refreshed in the background, refreshing ahead by aheadMs (stable mode: at most 290 s). */
export function refreshDue (entry: TokenEntry, aheadMs: number, now: number): boolean {
  const ahead = entry.mode === 'stable' ? Math.min(aheadMs, STABLE_RENEWAL_WINDOW_MS) : aheadMs
  return entry.expiresAt - now < ahead && now - entry.fetchedAt > MIN_REFRESH_SPACING_MS
}

export function served (entry: TokenEntry, at: number): ServedToken {
  return {
    accessToken: entry.accessToken,
    expiresAt: entry.expiresAt,
    expiresIn: Math.max(0, Math.floor((entry.expiresAt - at) / 1000))
  }
}
