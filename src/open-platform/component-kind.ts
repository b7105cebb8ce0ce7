/**
 * What the component's token and its authorizers' tokens share: the components of WECHAT_COMPONENTS, each secret's
 * fingerprint (what their stored entries are checked against), the engine of a credential whose secret is configured
 * here, and the admission of a componentAppId.
 */
import type { ComponentConfig } from '../config.js'
import { AppError } from '../errors.js'
import { fingerprint } from '../fingerprint.js'
import type { Metrics } from '../metrics.js'
import type { TokenStore } from '../store/types.js'
import { createConfiguredEngine } from '../tokens/configured-engine.js'
import type { Credential } from '../tokens/credential.js'
import type { WechatClient } from '../wechat/client.js'

export interface ComponentKindOptions {
  store: TokenStore
  wechat: WechatClient
  components: ReadonlyMap<string, ComponentConfig>
  /** COMPONENT_DAILY_BUDGET: upstream calls per owner (a component, an authorizer) a day. */
  dailyBudget: number
  requestDeadlineMs: number
  lockLeaseMs: number
  negativeCacheSeconds: number
  refreshAheadSeconds: number
  serveMarginSeconds: number
  hotCacheMs: number
  hotCacheMaxApps: number
  fingerprintKey?: string | undefined
  metrics?: Metrics | undefined
  now?: () => number
}

export function componentKind (opts: ComponentKindOptions, credential: Credential, outageMax: number) {
  const now = opts.now ?? Date.now
  /** Each component's secret fingerprint, computed once. */
  const fps = new Map([...opts.components].map(([appId, component]) => [appId, fingerprint(appId, component.appSecret, opts.fingerprintKey)]))
  const engine = createConfiguredEngine({
    credential,
    store: opts.store,
    negativeCacheSeconds: opts.negativeCacheSeconds,
    marginMs: opts.serveMarginSeconds * 1000,
    aheadMs: opts.refreshAheadSeconds * 1000,
    requestDeadlineMs: opts.requestDeadlineMs,
    lockLeaseMs: opts.lockLeaseMs,
    hotMs: opts.hotCacheMs,
    hotMax: opts.hotCacheMaxApps,
    outageMax,
    metrics: opts.metrics,
    now
  })

  /** The configured component and its fingerprint (APP_NOT_CONFIGURED otherwise). */
  function admit (appId: string): { component: ComponentConfig, fp: string } {
    const component = opts.components.get(appId)
    const fp = fps.get(appId)
    if (component === undefined || fp === undefined) throw new AppError('APP_NOT_CONFIGURED', `componentAppId ${appId} is not one of the configured WECHAT_COMPONENTS`)
    return { component, fp }
  }

  return { now, fps, engine, lifecycle: engine.lifecycle, admit }
}
