/**
 * WeCom (企业微信) access tokens: one per application, as WeCom's documentation requires, kept by the same lifecycle
 * as every credential (hot cache, store, one fetch per herd over every instance, refresh ahead, outage copies, a daily
 * budget, remembered refusals, backoff). The owner of a token is opaque to the engine: the corpId and a keyed
 * fingerprint of the application's secret, never the secret, so two applications of one corp never share or
 * overwrite a token. Only the applications of WECOM_APPS are served: a caller must send one of their secrets, and
 * nothing a caller sends makes the service call WeCom for anything else.
 */
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from '../errors.js'
import { fingerprint, sameString } from '../fingerprint.js'
import type { Metrics } from '../metrics.js'
import type { TokenStore } from '../store/types.js'
import { wecomTokenCredential } from '../tokens/credential.js'
import { createConfiguredEngine } from '../tokens/configured-engine.js'
import type { Source } from '../tokens/lifecycle.js'
import type { CallContext } from '../tokens/refresher.js'
import type { ServedToken } from '../tokens/rules.js'
import type { RefreshOutcome } from '../tokens/with-token.js'
import type { WechatClient } from '../wechat/client.js'

/** What every WeCom service is built with. */
export interface WecomServiceOptions {
  store: TokenStore
  /** The client of WECOM_API_BASE. */
  wecom: WechatClient
  requestDeadlineMs: number
  lockLeaseMs: number
  negativeCacheSeconds: number
  hotCacheMs: number
  hotCacheMaxApps: number
  fingerprintKey?: string | undefined
  metrics?: Metrics | undefined
  now?: () => number
}

export interface WecomTokenServiceOptions extends WecomServiceOptions {
  /** WECOM_APPS: corpId to agentId to secret. */
  apps: ReadonlyMap<string, ReadonlyMap<string, string>>
  dailyBudget: number
  serveMarginSeconds: number
}

/** A configured application: its agentId and secret, the secret's fingerprint, and the owner of its token. */
export interface WecomApplication {
  agentId: string
  secret: string
  fp: string
  owner: string
}

/** Applications whose last served token is kept in process, to answer while the store is down. */
const OUTAGE_COPIES = 10_000
/**
 * WeCom answers the same token to every fetch until it expires: asked earlier, it gives back the token it gave, with
 * less time left. So nothing can be refreshed ahead, and a token is served until its last seconds (a margin as wide
 * as the Official Account's would leave callers without one for its last minutes, every fetch answering the same
 * token with too little left); the first request after it expires fetches the next, once for any herd.
 */
const WECOM_SERVE_MARGIN_MS = 5_000

export function createWecomTokenService (opts: WecomTokenServiceOptions) {
  const { store, wecom, metrics } = opts
  const now = opts.now ?? Date.now
  const credential = wecomTokenCredential(opts.dailyBudget)
  /** The token's owner for a corp and a secret's fingerprint. */
  const ownerOf = (corpId: string, fp: string): string => `${corpId}:${fp.slice(0, 22)}`
  /** corpId to its applications: each secret with its fingerprint and the owner of its token, computed once. */
  const configured = new Map<string, WecomApplication[]>()
  for (const [corpId, agents] of opts.apps) {
    configured.set(corpId, [...agents].map(([agentId, secret]) => {
      const fp = fingerprint(corpId, secret, opts.fingerprintKey)
      return { agentId, secret, fp, owner: ownerOf(corpId, fp) }
    }))
  }

  /** The configured application a secret is of, compared with each of the corp's in constant time (no early exit). */
  function applicationOf (corpId: string, secret: string): WecomApplication | undefined {
    let found: WecomApplication | undefined
    for (const application of configured.get(corpId) ?? []) if (sameString(application.secret, secret) && found === undefined) found = application
    return found
  }
  // No forced refresh and no unverified secret here: every secret is a configured one.
  const engine = createConfiguredEngine({
    credential,
    store,
    negativeCacheSeconds: opts.negativeCacheSeconds,
    marginMs: Math.min(opts.serveMarginSeconds * 1000, WECOM_SERVE_MARGIN_MS),
    aheadMs: 0,
    requestDeadlineMs: opts.requestDeadlineMs,
    lockLeaseMs: opts.lockLeaseMs,
    hotMs: opts.hotCacheMs,
    hotMax: opts.hotCacheMaxApps,
    outageMax: OUTAGE_COPIES,
    metrics,
    now
  })
  const { lifecycle, guards } = engine

  /** The configured application of a secret (APP_NOT_CONFIGURED, SECRET_MISMATCH). */
  function admit (corpId: string, secret: string): WecomApplication {
    if (!configured.has(corpId)) throw new AppError('APP_NOT_CONFIGURED', `corpId ${corpId} is not one of the configured WECOM_APPS`)
    const application = applicationOf(corpId, secret)
    if (application === undefined) throw new AppError('SECRET_MISMATCH', `corpSecret is not the secret of an application of corpId ${corpId} in WECOM_APPS`)
    return application
  }

  function sourceFor (corpId: string, secret: string, owner: string, fp: string, ctx: CallContext): Source {
    return {
      verified: async () => true,
      fetch: (deadline) => async (control) => await wecom.fetchWecomToken(corpId, secret, { ...control, deadline }),
      // WeCom answers the same token to every fetch in its lifetime, so a direct fetch cannot break other instances.
      outage: async () => await directFetch(corpId, secret, owner, fp, ctx)
    }
  }

  /** While the store is down and this instance has no usable copy: a direct fetch under process-local guards. */
  async function directFetch (corpId: string, secret: string, owner: string, fp: string, ctx: CallContext): Promise<ServedToken> {
    return await engine.directFetch(owner, fp, ctx, async (control) => await wecom.fetchWecomToken(corpId, secret, control))
  }

  /** The hot-cache answer, synchronously, for a configured corp and secret. */
  function fromHot (corpId: string, secret: string): ServedToken | undefined {
    const application = applicationOf(corpId, secret)
    return application === undefined ? undefined : lifecycle.fromHot(application.owner, secret)
  }

  /** The access token of the WeCom application whose secret this is. */
  async function getToken (corpId: string, secret: string, ctx: CallContext): Promise<ServedToken> {
    const { owner, fp } = admit(corpId, secret)
    return await lifecycle.get(owner, secret, fp, sourceFor(corpId, secret, owner, fp, ctx), ctx)
  }

  /** The same, for a caller that looked in the hot cache already (the route). */
  async function afterHotMiss (corpId: string, secret: string, ctx: CallContext): Promise<ServedToken> {
    const { owner, fp } = admit(corpId, secret)
    return await lifecycle.afterHotMiss(owner, secret, fp, sourceFor(corpId, secret, owner, fp, ctx), ctx)
  }

  /**
   * WeCom refused this token on a call made with it (40014, 42001: ended early): fetch the application's token again,
   * only while the refused one is still the stored one. WeCom answers the same token until it ends, so this is a
   * normal fetch; a fetch that gives the refused token back is stored as it is (the caller then reports it refused
   * again).
   */
  async function refreshReported (corpId: string, secret: string, reported: string, ctx: CallContext): Promise<RefreshOutcome> {
    const { owner, fp } = admit(corpId, secret)
    return await engine.refreshReported(owner, secret, fp, reported, sourceFor(corpId, secret, owner, fp, ctx), ctx)
  }

  /** The configured applications by the owner of their token: what the scheduler keeps a token for. */
  const byOwner = new Map([...configured].flatMap(([corpId, applications]) =>
    applications.map((application) => [application.owner, { corpId, ...application }] as const)))

  /**
   * For the scheduler: fetch the token of a configured application that has none (at start, after it expired), so
   * that no caller waits for it. Nothing is refreshed ahead: WeCom would give the same token back.
   */
  async function refreshIfDue (owner: string, log: FastifyBaseLogger): Promise<void> {
    const application = byOwner.get(owner)
    if (application === undefined) return
    const { corpId, secret, fp } = application
    await lifecycle.refreshIfDue(owner, fp, sourceFor(corpId, secret, owner, fp, { log, origin: 'background' }), true, log)
  }

  return {
    credential,
    admit,
    /** The configured application of a secret, or undefined (constant time: the hot path of every WeCom route). */
    applicationOf,
    fromHot,
    getToken,
    afterHotMiss,
    refreshReported,
    refusedAgainRecently: async (corpId: string, secret: string) => await guards.refusedAgainRecently(admit(corpId, secret).owner),
    rememberRefusedAgain: async (corpId: string, secret: string, message: string) => { await guards.rememberRefusedAgain(admit(corpId, secret).owner, message) },
    refreshIfDue,
    owners: () => [...byOwner.keys()],
    /** The configured application whose token this owner holds, or undefined. */
    applicationByOwner: (owner: string) => byOwner.get(owner),
    known: lifecycle.known,
    close: engine.close
  }
}

export type WecomTokenService = ReturnType<typeof createWecomTokenService>
