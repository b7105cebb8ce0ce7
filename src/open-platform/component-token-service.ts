/**
 * The component_access_token of each component of WECHAT_COMPONENTS, kept by the same lifecycle as every credential
 * (hot cache, store, one fetch per herd over every instance, refresh ahead, outage copies, a daily budget, backoff).
 * Its owner is the component's space (`_component:<appId>`), apart from any Official Account's token of the same
 * appId. It is fetched with the component's secret and the verify ticket WeChat last pushed (verify-tickets.ts):
 * with no usable ticket nothing is sent to WeChat (apiCode 4009) and WeChat is asked to push one; a ticket WeChat
 * refuses (61005, 61006) is set aside and a push asked for, never sent again.
 */
import type { FastifyBaseLogger } from 'fastify'
import { AppError } from '../errors.js'
import { componentTokenCredential } from '../tokens/credential.js'
import type { Source } from '../tokens/lifecycle.js'
import type { CallContext } from '../tokens/refresher.js'
import type { ServedToken } from '../tokens/rules.js'
import type { FetchedToken, FetchOptions } from '../wechat/client.js'
import { WechatApiError } from '../wechat/errcodes.js'
import type { ComponentConfig } from '../config.js'
import { componentKind, type ComponentKindOptions } from './component-kind.js'
import { componentSpace, type VerifyTickets } from './verify-tickets.js'

export interface ComponentTokenServiceOptions extends ComponentKindOptions {
  tickets: VerifyTickets
}

export function createComponentTokenService (opts: ComponentTokenServiceOptions) {
  const { wechat, tickets } = opts
  const credential = componentTokenCredential(opts.dailyBudget)
  const { now, fps, engine, lifecycle, admit } = componentKind(opts, credential, 1_000)

  /**
   * One fetch with the usable ticket: none, and nothing is sent (no budget spent); refused by WeChat, and the ticket
   * is set aside. Either way WeChat is asked to push one.
   */
  async function fetchWithTicket (component: ComponentConfig, control: Omit<FetchOptions, 'forceRefresh'>): Promise<FetchedToken> {
    const ticket = await tickets.usable(component.appId)
    if (ticket === undefined) {
      tickets.requestPush(component.appId, 'no usable component_verify_ticket').catch(() => {})
      throw new AppError('COMPONENT_TICKET_MISSING', `No usable component_verify_ticket is held for component ${component.appId}: WeChat was asked to push one`)
    }
    try {
      return await wechat.fetchComponentToken(component.appId, component.appSecret, ticket.ticket, control)
    } catch (err) {
      if (err instanceof WechatApiError && err.kind === 'COMPONENT_TICKET_MISSING') {
        await tickets.refuse(component.appId, ticket)
        tickets.requestPush(component.appId, `WeChat refused the component_verify_ticket (errcode ${err.errcode})`).catch(() => {})
      }
      throw err
    }
  }

  function sourceFor (component: ComponentConfig, owner: string, fp: string, ctx: CallContext): Source {
    return {
      verified: async () => true,
      fetch: (deadline) => async (control) => await fetchWithTicket(component, { ...control, deadline }),
      outage: async () => await directFetch(component, owner, fp, ctx)
    }
  }

  /** While the store is down and this instance has no usable copy: a direct fetch under process-local guards. */
  async function directFetch (component: ComponentConfig, owner: string, fp: string, ctx: CallContext): Promise<ServedToken> {
    return await engine.directFetch(owner, fp, ctx, async (control) => await fetchWithTicket(component, control))
  }

  /** The hot-cache answer, synchronously, for a configured component. */
  function fromHot (appId: string): ServedToken | undefined {
    const component = opts.components.get(appId)
    return component === undefined ? undefined : lifecycle.fromHot(componentSpace(appId), component.appSecret)
  }

  /** The component's token, for a caller that looked in the hot cache already (the route). */
  async function afterHotMiss (appId: string, ctx: CallContext): Promise<ServedToken> {
    const { component, fp } = admit(appId)
    const owner = componentSpace(appId)
    return await lifecycle.afterHotMiss(owner, component.appSecret, fp, sourceFor(component, owner, fp, ctx), ctx)
  }

  /** For the scheduler: fetch a component's token when it has none or it is due, so that no caller waits for it. */
  async function refreshIfDue (owner: string, log: FastifyBaseLogger): Promise<void> {
    const appId = owner.slice(componentSpace('').length)
    const component = opts.components.get(appId)
    const fp = fps.get(appId)
    if (component === undefined || fp === undefined) return
    await lifecycle.refreshIfDue(owner, fp, sourceFor(component, owner, fp, { log, origin: 'background' }), true, log)
  }

  /**
   * A new pre-auth code of the component, for an authorization link: fetched with its token at every call (a code is
   * not shared between links), within the caller's rate limit.
   */
  async function preAuthCode (appId: string, ctx: CallContext): Promise<ServedToken> {
    const token = fromHot(appId) ?? await afterHotMiss(appId, ctx)
    const code = await wechat.fetchPreAuthCode(appId, token.accessToken, { deadline: ctx.deadline ?? now() + opts.requestDeadlineMs })
    return { accessToken: code.accessToken, expiresAt: code.expiresAt, expiresIn: Math.max(0, Math.floor((code.expiresAt - now()) / 1000)) }
  }

  return {
    credential,
    preAuthCode,
    fromHot,
    afterHotMiss,
    getToken: async (appId: string, ctx: CallContext) => fromHot(appId) ?? await afterHotMiss(appId, ctx),
    refreshIfDue,
    owners: () => [...opts.components.keys()].map(componentSpace),
    known: lifecycle.known,
    close: engine.close
  }
}

export type ComponentTokenService = ReturnType<typeof createComponentTokenService>
