/**
 * GenAuth's Mini Program decrypt route: a wx.login code exchanged for the user's session key (jscode2session), which
 * decrypts the data the Mini Program got from WeChat.
 *
 * A code works once, for five minutes, and may be spent by WeChat even when its answer is lost: it is claimed across
 * instances before it is sent (a keyed fingerprint of it, never the code, kept half an hour), so it reaches WeChat once
 * however often or concurrently it is sent; a later request with it gets WECHAT_CODE_USED without asking WeChat. A code
 * that was never sent (refused here, a connection that did not open) is released, to be sent again.
 *
 * The call goes through the guards, under the Mini Program's name: a daily budget of its own (SESSION_DAILY_BUDGET),
 * a backoff across instances while WeChat fails, refusals about the app (its appId, the server's IP, WeChat's quota)
 * remembered. While the store is down, claims and guards are kept in process; an instance keeps its own claims in
 * process always, so that it does not send a code again as the store goes down or comes back.
 *
 * The session key, the code, the iv, the encrypted and the decrypted data, the openid and unionid are never logged,
 * stored, counted by value or repeated in an error message; the session key is dropped once the data is decrypted.
 */
import type { ApiCodeName } from '../api-codes.js'
import { AppError } from '../errors.js'
import { fingerprint } from '../fingerprint.js'
import type { Metrics } from '../metrics.js'
import { createMemoryStore } from '../store/memory-store.js'
import { StoreError, type TokenStore } from '../store/types.js'
import type { CallContext, TokenService } from '../official-account/token-service.js'
import { loginGuarded } from '../tokens/credential.js'
import { configuredOnly, createGuards, type Guards } from '../tokens/guards.js'
import type { LoginSession, WechatClient } from '../wechat/client.js'
import { miniProgramLookup } from './mini-programs.js'
import { decryptOpenData, encryptedBytes, ivBytes } from './open-data.js'

export interface DecryptServiceOptions {
  tokens: TokenService
  store: TokenStore
  wechat: WechatClient
  /** WECHAT_IDENTIFIERS: identifier to appId. */
  identifiers: ReadonlyMap<string, string>
  /** WECHAT_APPS: appId to secret. */
  apps: ReadonlyMap<string, string>
  /** SESSION_DAILY_BUDGET. */
  dailyBudget: number
  negativeCacheSeconds: number
  requestDeadlineMs: number
  fingerprintKey?: string | undefined
  metrics?: Metrics
  now?: () => number
}

/**
 * A wx.login code works for five minutes; its claim lives half an hour, so that a request repeated later (a client's
 * retry with a long backoff) is answered here rather than spending a call on WeChat's 40029.
 */
const CLAIM_MS = 30 * 60_000
/** The value of a claim: only its presence counts. */
const CLAIMED = '1'

const REFUSAL_REASONS: Partial<Record<ApiCodeName, string>> = { SESSION_KEY_MISMATCH: 'session_key', DATA_APP_MISMATCH: 'app' }

export function createDecryptService (opts: DecryptServiceOptions) {
  const now = opts.now ?? Date.now
  const login = loginGuarded(opts.dailyBudget)
  const miniProgramOf = miniProgramLookup(opts.identifiers, opts.apps)
  const secrets = new Map([...opts.apps].map(([appId, secret]) => [appId, fingerprint(appId, secret, opts.fingerprintKey)]))
  /**
   * This instance's own claims, kept whether or not the store is up (bounded; the oldest go first): a code it sent while
   * the store was down is not sent again once the store is back, nor one it sent before the store went down. Another
   * instance sending a code meanwhile gets WeChat's 40163.
   */
  const claims = createMemoryStore(now, { maxValues: 10_000 })
  /** While the store is down: guards in process (bounded). */
  const local = createMemoryStore(now, { maxValues: 10_000 })
  // Logins spend no forced refresh and check no unverified secret: the configured secret is the only one.
  const guardOptions = configuredOnly(opts.negativeCacheSeconds, now, opts.metrics)
  const sharedGuards = createGuards(opts.store, guardOptions)
  const localGuards = createGuards(local, guardOptions)

  /** The name of a code's claim: a keyed fingerprint, which says nothing of the code to a reader of the store. */
  function claimName (appId: string, code: string): string {
    return `login:${fingerprint(appId, `\0wx.login\0${code}`, opts.fingerprintKey).slice(0, 22)}`
  }

  /**
   * Claims a code, in the shared store (unless it is down) and in process; WECHAT_CODE_USED when claimed before. Says
   * whether the shared store holds the claim, and which guards the call goes through.
   */
  async function claim (appId: string, name: string): Promise<{ shared: boolean, guards: Guards }> {
    let claimed: boolean
    let shared = true
    try {
      claimed = await opts.store.acquire(appId, name, CLAIMED, CLAIM_MS)
    } catch (err) {
      if (!(err instanceof StoreError)) throw err
      shared = false
      claimed = true
    }
    // A claim the shared store refused is another's, which it may release: it is not kept here. A claim it granted
    // stays when this instance claimed the code before (it was sent, or is being sent): the code is spent either way.
    if (claimed) claimed = await claims.acquire(appId, name, CLAIMED, CLAIM_MS)
    if (!claimed) {
      throw new AppError('WECHAT_CODE_USED', 'This wx.login code was sent to WeChat before, and a code works once. ' +
        'Call wx.login again, then get the encrypted data, and send both')
    }
    return { shared, guards: shared ? sharedGuards : localGuards }
  }

  /** Exchanges a code for the user's session, once: a code never sent is released, to be sent again. */
  async function session (appId: string, secret: string, code: string, ctx: CallContext): Promise<LoginSession> {
    const name = claimName(appId, code)
    const { shared, guards } = await claim(appId, name)
    const deadline = ctx.deadline ?? now() + opts.requestDeadlineMs
    let sent = false
    try {
      const spend = { credential: login, appId, fp: secrets.get(appId) ?? '', verified: true, origin: ctx.origin, forced: false }
      return await guards.call(spend, async (control) => await opts.wechat.fetchSession(appId, secret, code, {
        ...control,
        deadline,
        beforeAttempt: async () => {
          await control.beforeAttempt?.()
          sent = true
        },
        notSent: async () => {
          sent = false
          await control.notSent?.()
        }
      }))
    } catch (err) {
      if (!sent) {
        await claims.release(appId, name, CLAIMED)
        if (shared) await opts.store.release(appId, name, CLAIMED).catch(() => {})
      }
      throw err
    }
  }

  /**
   * The data a Mini Program got from WeChat, decrypted with the session of `code`. The iv and encryptedData are checked
   * before the code is spent.
   */
  async function decrypt (identifier: string, code: string, iv: string, encryptedData: string, ctx: CallContext): Promise<Record<string, unknown>> {
    const { appId, secret } = miniProgramOf(identifier)
    const ivRaw = ivBytes(iv)
    const encrypted = encryptedBytes(encryptedData)
    const { sessionKey } = await session(appId, secret, code, ctx)
    try {
      return decryptOpenData(sessionKey, ivRaw, encrypted, appId)
    } catch (err) {
      const reason = err instanceof AppError ? REFUSAL_REASONS[err.kind] : undefined
      if (reason) opts.metrics?.decryptRefusals.labels(reason).inc()
      throw err
    } finally {
      sessionKey.fill(0)
    }
  }

  return { miniProgramOf, decrypt, close: async () => { await Promise.all([claims.close(), local.close()]) } }
}

export type DecryptService = ReturnType<typeof createDecryptService>
