/** What the Open Platform tests share: authorizing accounts through the stand-in, and an SDK cache in memory. */
import type { FastifyInstance } from 'fastify'
import { CacheInterface } from 'node-easywechat'
import type { MockOpenPlatform } from '../../src/stand-in/open-platform.js'
import { COMPONENT } from './build.js'
import { until } from './until.js'

/** The instance's count of a refresh-token outcome (read from the counter: /metrics renders once a second). */
export async function refreshTokenCount (app: FastifyInstance, outcome: string): Promise<number> {
  return (await app.metrics.authorizerRefreshTokens.get()).values.find((value) => value.labels.outcome === outcome)?.value ?? 0
}

/**
 * Authorizes each account by the pushed `authorized` event (its callback being `app`'s), and waits until the service
 * exchanged the code and kept the refresh token.
 */
export async function authorizeAll (app: FastifyInstance, platform: MockOpenPlatform, appIds: string[], componentAppId = COMPONENT.appId): Promise<boolean> {
  const before = await refreshTokenCount(app, 'authorized')
  for (const appId of appIds) if (!await platform.pushEvent(componentAppId, 'authorized', appId)) return false
  return await until(async () => await refreshTokenCount(app, 'authorized') === before + appIds.length, 10_000)
}

/** A cache per SDK instance, in memory (node-easywechat's default is files in the working directory, shared). */
export class MemoryCache extends CacheInterface {
  private readonly values = new Map<string, { value: unknown, until: number }>()
  override async get (key: string): Promise<unknown> {
    const kept = this.values.get(key)
    return kept !== undefined && (kept.until === 0 || kept.until > Date.now()) ? kept.value : null
  }

  override async has (key: string): Promise<boolean> { return await this.get(key) !== null }
  override async set (key: string, value: unknown, lifetime = 0): Promise<boolean> {
    this.values.set(key, { value, until: lifetime > 0 ? Date.now() + lifetime * 1000 : 0 })
    return true
  }

  override async delete (key: string): Promise<boolean> { return this.values.delete(key) }
}
