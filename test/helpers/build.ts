/** Test helpers: a ready app built from the factory with its logs captured, torn down with the test. */
import { Writable } from 'node:stream'
import tap from 'tap'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../src/app.js'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/logger.js'
import { MockWechat, type MockWechatOptions } from '../../src/stand-in/wechat.js'
import { MockWecom, type MockWecomOptions } from '../../src/stand-in/wecom.js'
import { MockOpenPlatform, type MockComponent } from '../../src/stand-in/open-platform.js'

export const APP_ID = 'wx0123456789abcdef'
export const APP_SECRET = '0123456789abcdef0123456789abcdef'
export const OTHER_SECRET = 'fedcba9876543210fedcba9876543210'
/** Caller keys the tests use; like the secrets, they must never be logged. */
export const CALLER_KEYS = ['caller-key-5f1c9e0a7b3d', 'caller-key-second-77aa']
/** A WeCom corp with two applications, each with its own secret (43 characters, as WeCom's). */
export const CORP_ID = 'ww0123456789abcdef'
export const AGENT_ID = '1000002'
export const AGENT_SECRET = 'WeComAgentSecret0000000000000000000000000a1'
export const OTHER_AGENT_ID = '1000003'
export const OTHER_AGENT_SECRET = 'WeComAgentSecret1111111111111111111111111b2'

/** Every log capture and every WeChat and WeCom stand-in of this test process, searched when the process's tests end. */
const captures: LogCapture[] = []
const mocks: MockWechat[] = []
const wecomMocks: MockWecom[] = []
const openPlatformMocks: MockOpenPlatform[] = []
/** Personal data a test sent or got back (an iv, encrypted or decrypted data), searched for likewise. */
export const personal: string[] = []

tap.after(() => {
  const secrets = [APP_SECRET, OTHER_SECRET, APP_SECRET.toUpperCase(), AGENT_SECRET, OTHER_AGENT_SECRET, ...CALLER_KEYS]
  // Credentials (tokens, tickets) and personal data (phone and login codes, numbers, session keys, openids, unionids,
  // and whatever a test adds to `personal`: the iv, encrypted and decrypted data of the decrypt route) are never logged either.
  const credentials = [...personal, ...mocks.flatMap((mock) => [...mock.issuedTokens(), ...mock.issuedTickets(), ...mock.codesMinted, ...mock.phonesAnswered, ...mock.sessionsAnswered]),
    ...wecomMocks.flatMap((mock) => [...mock.issuedTokens(), ...mock.issuedTickets()]),
    ...openPlatformMocks.flatMap((mock) => mock.secrets())]
  let leaks = 0
  for (const capture of captures) {
    for (const line of capture.lines) {
      if (secrets.some((s) => line.includes(s)) || credentials.some((credential) => line.includes(credential))) leaks++
    }
  }
  if (leaks > 0) {
    process.exitCode = 1
    throw new Error(`${leaks} trace-level log lines of this file's scenarios hold a secret, a token, a ticket, or personal data (a code, a number, a session key, an openid, open data)`)
  }
  // Strict log pipelines refuse a JSON object that names a key twice (a binding of the logger repeated in a line).
  const repeated = captures.flatMap((capture) => capture.lines).filter((line) => repeatedKeys(line).length > 0)
  if (repeated.length > 0) {
    process.exitCode = 1
    throw new Error(`${repeated.length} log lines name a key twice, the first: ${repeatedKeys(repeated[0]!).join(', ')}`)
  }
})

/** The keys a JSON text names twice in one object, at any depth. */
export function repeatedKeys (json: string): string[] {
  const repeated: string[] = []
  const objects: Array<Set<string> | null> = []
  let expectKey = false
  for (let i = 0; i < json.length; i++) {
    const c = json[i]
    if (c === '"') {
      let end = i + 1
      while (json[end] !== '"') end += json[end] === '\\' ? 2 : 1
      const keys = objects.at(-1)
      if (expectKey && keys) {
        const key = json.slice(i + 1, end)
        if (keys.has(key)) repeated.push(key)
        keys.add(key)
      }
      expectKey = false
      i = end
    } else if (c === '{') {
      objects.push(new Set())
      expectKey = true
    } else if (c === '[') {
      objects.push(null)
    } else if (c === '}' || c === ']') {
      objects.pop()
    } else if (c === ',') {
      expectKey = objects.at(-1) != null
    }
  }
  return repeated
}

export interface Teardown { teardown: (fn: () => unknown) => void }

/** Every line the app logged, as text and parsed. */
export class LogCapture extends Writable {
  readonly lines: string[] = []
  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean))
    callback()
  }

  get text (): string { return this.lines.join('\n') }
  get records (): Array<Record<string, unknown>> { return this.lines.map((line) => JSON.parse(line)) }
}

/** A clock tests can move forward. */
export class TestClock {
  offset = 0
  readonly now = (): number => Date.now() + this.offset
  advance (ms: number): void { this.offset += ms }
  /**
   * Moves forward to the next 01:00 in Beijing (17:00 UTC), where daily budgets (counted from 00:00 Beijing time) have
   * 23 hours to go: a test that moves the clock a few hours on never crosses into the next budget day, whatever the
   * time it runs at.
   */
  toEarlyBeijingDay (): void { this.advance(untilEarlyBeijingDay(this.now())) }
}

/**
 * How far a clock reading `now` is from the next 01:00 in Beijing (17:00 UTC): moved there, a clock (a TestClock, or a
 * stand-in's through its advance()) has 23 hours of the budget or quota day left.
 */
export function untilEarlyBeijingDay (now: number): number {
  const day = 24 * 3600_000
  const target = 17 * 3600_000
  return ((target - (now % day)) % day + day) % day
}

export async function startMock (t: Teardown, options: MockWechatOptions = {}): Promise<{ mock: MockWechat, url: string }> {
  const mock = new MockWechat({ apps: { [APP_ID]: APP_SECRET }, ...options })
  const url = await mock.start()
  mocks.push(mock)
  t.teardown(() => mock.close())
  return { mock, url }
}

/** A component of the Open Platform stand-in, as WECHAT_COMPONENTS lists it. */
export const COMPONENT: MockComponent = {
  appId: 'wxc0c0c0c0c0c0c0c0',
  appSecret: 'c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0',
  token: 'ComponentPushToken1',
  encodingAESKey: 'abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG'
}

/**
 * WeChat's stand-in with the Open Platform's behind it (its /cgi-bin/component/ calls, as on WeChat's own host),
 * knowing COMPONENT unless told otherwise.
 */
export async function startOpenPlatformMock (t: Teardown, components: MockComponent[] = [COMPONENT]): Promise<{ mock: MockWechat, platform: MockOpenPlatform, url: string }> {
  const { mock, url } = await startMock(t)
  const platform = new MockOpenPlatform({ components, wechat: mock, startPushDelayMs: 50 })
  mock.delegateComponents(platform)
  openPlatformMocks.push(platform)
  t.teardown(() => platform.close())
  return { mock, platform, url }
}

/** The WeCom stand-in, knowing CORP_ID with its two applications unless told otherwise. */
export async function startWecomMock (t: Teardown, options: MockWecomOptions = {}): Promise<{ mock: MockWecom, url: string }> {
  const mock = new MockWecom({ corps: { [CORP_ID]: { [AGENT_ID]: AGENT_SECRET, [OTHER_AGENT_ID]: OTHER_AGENT_SECRET } }, ...options })
  const url = await mock.start()
  wecomMocks.push(mock)
  t.teardown(() => mock.close())
  return { mock, url }
}

export interface BuildOptions {
  env?: Record<string, string>
  clock?: TestClock
  upstream?: string
}

export async function build (t: Teardown, options: BuildOptions = {}): Promise<{ app: FastifyInstance, logs: LogCapture }> {
  const config = loadConfig({
    LOG_LEVEL: 'trace',
    WECHAT_RETRY_BASE_MS: '10',
    ...(options.upstream ? { WECHAT_API_BASE: options.upstream } : {}),
    ...options.env
  })
  const logs = new LogCapture()
  captures.push(logs)
  const app = await buildApp(config, {
    logger: createLogger(config.LOG_LEVEL, logs),
    ...(options.clock ? { now: options.clock.now } : {})
  })
  await app.ready()
  t.teardown(() => app.close())
  return { app, logs }
}

/** POSTs a JSON body to a route through inject and returns the parsed envelope with the response. */
export async function post<D = TokenData> (app: FastifyInstance, url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await app.inject({
    method: 'POST',
    url,
    headers: { 'content-type': 'application/json', ...headers },
    payload: typeof body === 'string' ? body : JSON.stringify(body)
  })
  return { res, body: res.json() as Envelope<D> }
}

export interface TokenData { accessToken: string, expiresAt: string, expiresIn: number }

export interface Envelope<D = TokenData> {
  statusCode: number
  message: string
  apiCode?: number
  requestId: string
  data?: D
}
