/** The shared store: per-app keys under one hash tag (Cluster-safe), Lua for compare-and-set, pub/sub for changes. */
import type { FastifyBaseLogger } from 'fastify'
import type { Cluster, Redis } from 'ioredis'
import { safeError } from '../logger.js'
import { ChangeWaiters, StoreError, TOKEN_SLOT, generationName, parseCount, parseEntry, type TokenEntry, type TokenStore } from './types.js'

const GENERATION_TTL_MS = 7 * 24 * 3600 * 1000

/**
 * KEYS: token, generation. ARGV: expected generation, entry JSON, token TTL ms, generation TTL ms.
 * A counter that is missing, not a plain count or not even a string reads as 0, as TokenStore.generation() reads it,
 * so the write that expected 0 repairs it (SET replaces a value of any type).
 */
const COMPARE_AND_SET = `
local raw = redis.pcall('GET', KEYS[2])
local current = 0
if type(raw) == 'string' and string.len(raw) <= 15 and string.match(raw, '^%d+$') then current = tonumber(raw) end
if current ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], current + 1, 'PX', ARGV[4])
if tonumber(ARGV[3]) > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) else redis.call('DEL', KEYS[1]) end
return 1`

/** KEYS: the held key. ARGV: owner. */
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`

/**
 * KEYS: counter. ARGV: TTL ms, the amount (negative to give back), 1 to extend the TTL to at least the one given. A
 * value that cannot be counted (another type, not a number) starts again; a give-back never takes a counter below 0;
 * a counter without a TTL gets one, so none lives forever.
 */
const INCREMENT = `
local n = redis.pcall('INCRBY', KEYS[1], ARGV[2])
if type(n) ~= 'number' then
  redis.call('DEL', KEYS[1])
  n = redis.call('INCRBY', KEYS[1], ARGV[2])
end
if n < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
  n = 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or (ARGV[3] == '1' and ttl < tonumber(ARGV[1])) then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n`

/**
 * The scripts as commands of the client (ioredis defineCommand): each is sent whole (EVAL) once per connection and by
 * its SHA1 (EVALSHA) after. A new connection (Redis restarted, a failover, a Cluster node) starts again with EVAL, and
 * when a server answers NOSCRIPT (SCRIPT FLUSH) ioredis sends the script whole again. No SCRIPT LOAD: the rights are
 * EVAL and EVALSHA, as docs/security.md lists them.
 */
const SCRIPTS = {
  tokenStoreCompareAndSet: { numberOfKeys: 2, lua: COMPARE_AND_SET },
  tokenStoreRelease: { numberOfKeys: 1, lua: RELEASE },
  tokenStoreIncrement: { numberOfKeys: 1, lua: INCREMENT }
} as const

/** The names of the script commands, which a Cluster client keeps out of auto-pipelining, as it does EVAL and EVALSHA. */
export const SCRIPT_COMMANDS: readonly string[] = Object.keys(SCRIPTS)

/** The script commands of a client that defineScripts has been given; each resolves with the script's integer reply. */
interface ScriptCommands {
  tokenStoreCompareAndSet (token: string, generation: string, expected: number, entry: string, tokenTtlMs: number, generationTtlMs: number): Promise<number>
  tokenStoreRelease (key: string, owner: string): Promise<number>
  tokenStoreIncrement (key: string, ttlMs: number, by: number, extend: 0 | 1): Promise<number>
}

type ScriptedClient = (Redis | Cluster) & ScriptCommands

/** Defines the scripts on the client, once however many stores share it. */
function defineScripts (redis: Redis | Cluster): ScriptedClient {
  for (const [name, definition] of Object.entries(SCRIPTS)) {
    if (!(name in redis.scriptsSet)) redis.defineCommand(name, definition)
  }
  return redis as ScriptedClient // every command of ScriptCommands is defined just above
}

export function appKey (prefix: string, appId: string, name: string): string {
  return `${prefix}:{${appId}}:${name}`
}

export function tokenKey (prefix: string, appId: string): string {
  return appKey(prefix, appId, 'token')
}

export interface RedisStoreOptions {
  now?: () => number
  /** Where the state of pub/sub is reported (a warning when change messages stop, once per stop). */
  log?: FastifyBaseLogger
}

/** Runs a store command; any failure becomes a StoreError, so a caller can tell the store's failures from its own. */
async function command<T> (run: () => Promise<T>): Promise<T> {
  try {
    return await run()
  } catch (err) {
    throw new StoreError(err)
  }
}

/** A string value, or null when it is missing or of another type (corrupted: the next write replaces it). */
async function readString (redis: Redis | Cluster, key: string): Promise<string | null> {
  try {
    return await redis.get(key)
  } catch (err) {
    if (safeError(err).message.startsWith('WRONGTYPE')) return null
    throw new StoreError(err)
  }
}

export function createRedisStore (client: Redis | Cluster, prefix: string, { now = Date.now, log }: RedisStoreOptions = {}): TokenStore {
  const redis = defineScripts(client)
  const channel = `${prefix}:changed`
  const waiters = new ChangeWaiters()
  const pubsub = trackPubsub(redis, channel, waiters, log)
  const key = (appId: string, name: string): string => appKey(prefix, appId, name)
  /**
   * Whether two entries are read with two GETs rather than one MGET: on a Cluster (while a slot moves between nodes,
   * a multi-key command is refused with TRYAGAIN, and ioredis retries it for seconds), and once the Redis user was
   * refused MGET (an ACL rule from before it was needed).
   */
  let twoReads = client.isCluster

  /** Two stored values parsed as get() parses one. */
  function parsedPair (a: string | null, b: string | null): [TokenEntry | null, TokenEntry | null] {
    const at = now()
    return [parseEntry(a, at), parseEntry(b, at)]
  }

  /** Two entries of an app, each read as get() reads it. */
  async function readTwo (first: string, second: string): Promise<[TokenEntry | null, TokenEntry | null]> {
    const [a, b] = await Promise.all([readString(redis, first), readString(redis, second)])
    return parsedPair(a, b)
  }

  return {
    kind: 'redis',
    async get (appId, slot = TOKEN_SLOT) {
      return parseEntry(await readString(redis, key(appId, slot)), now())
    },
    async getPair (appId, slot, other) {
      if (twoReads) return await readTwo(key(appId, slot), key(appId, other))
      let values: Array<string | null>
      try {
        // MGET reads a key of another type as missing, as readString does.
        values = await redis.mget(key(appId, slot), key(appId, other))
      } catch (err) {
        // Refused the command itself (a refused key is the rule's prefix, and two GETs would be refused too).
        if (!/^NOPERM .*'mget'/i.test(safeError(err).message)) throw new StoreError(err)
        // Logged once, by the first of the reads refused at once.
        if (!twoReads) log?.warn('the Redis user may not run MGET: a ticket and its token are read with two GETs from now on (add +mget to its ACL rule, see docs/security.md)')
        twoReads = true
        return await readTwo(key(appId, slot), key(appId, other))
      }
      return parsedPair(values[0] ?? null, values[1] ?? null)
    },
    async generation (appId, slot = TOKEN_SLOT) {
      return parseCount(await readString(redis, key(appId, generationName(slot))))
    },
    async compareAndSet (appId, entry, expected, slot = TOKEN_SLOT) {
      const written = await command(() => redis.tokenStoreCompareAndSet(key(appId, slot), key(appId, generationName(slot)),
        expected, JSON.stringify(entry), entry.expiresAt - now(), GENERATION_TTL_MS))
      return written === 1
    },
    async delete (appId, slot = TOKEN_SLOT) {
      await command(() => redis.del(key(appId, slot)))
    },
    async acquire (appId, name, owner, ttlMs) {
      return await command(() => redis.set(key(appId, name), owner, 'PX', ttlMs, 'NX')) === 'OK'
    },
    async release (appId, name, owner) {
      return await command(() => redis.tokenStoreRelease(key(appId, name), owner)) === 1
    },
    async increment (appId, name, ttlMs, by = 1, extend = false) {
      return await command(() => redis.tokenStoreIncrement(key(appId, name), ttlMs, by, extend ? 1 : 0))
    },
    async getValue (appId, name) {
      return await readString(redis, key(appId, name))
    },
    async setValue (appId, name, value, ttlMs) {
      await command(() => redis.set(key(appId, name), value, 'PX', ttlMs))
    },
    async keepValue (appId, name, value, ifAbsent = false) {
      return await command(() => ifAbsent ? redis.set(key(appId, name), value, 'NX') : redis.set(key(appId, name), value)) === 'OK'
    },
    async forget (appId, name) {
      await command(() => redis.del(key(appId, name)))
    },
    async notify (subject, stamp) {
      await pubsub.publish(stamp === undefined ? subject : `${subject} ${stamp}`)
    },
    async waitForChange (subject, timeoutMs) {
      await waiters.wait(subject, timeoutMs)
    },
    onChange (listener) {
      waiters.listen(listener)
    },
    onPubsub (listener) {
      pubsub.listeners.push(listener)
    },
    get pubsubUp () {
      return pubsub.up
    },
    async ping () {
      await command(() => redis.ping())
    },
    async close () {
      waiters.wakeAll()
      await pubsub.close()
    }
  }
}

/**
 * The change channel: a subscriber connection of its own, and the state of pub/sub as a whole. Change messages
 * reach this instance only while it is subscribed and its own messages are accepted (a Redis ACL user without
 * channel rights gets neither). Every stop is reported to the listeners, and logged once at warn with what to fix;
 * while stopped, waiters fall back to polling and the token service stops trusting its process-local copies.
 * When it works again, listeners learn whether messages may have been missed meanwhile: not when Redis itself
 * restarted (its run_id changed: while it was away nobody could write, and since it came back every write goes through
 * the compare-and-set of an empty store), else yes (only this instance was cut off, and the others may have written).
 * A Cluster spreads its nodes' restarts over time, so there any gap counts as missed.
 */
function trackPubsub (redis: Redis | Cluster, channel: string, waiters: ChangeWaiters, log: FastifyBaseLogger | undefined) {
  const subscriber = 'isCluster' in redis && redis.isCluster
    ? redis.duplicate([], { lazyConnect: false, enableOfflineQueue: true, redisOptions: { ...(redis as Cluster).options.redisOptions, autoResubscribe: false } })
    : (redis as Redis).duplicate({ lazyConnect: false, enableOfflineQueue: true, maxRetriesPerRequest: null, autoResubscribe: false })
  const listeners: Array<(up: boolean, missed: boolean) => void> = []
  const state = {
    up: false,
    subscribed: false,
    publishing: true,
    /** Whether messages may have been missed since pub/sub last worked. */
    missed: false,
    reason: '',
    warned: false,
    /** The run_id of the Redis server at the last subscription ('' on a Cluster, or when INFO is refused). */
    runId: '',
    everSubscribed: false,
    closing: false
  }
  const isCluster = 'isCluster' in redis && redis.isCluster

  /** Tells the listeners of every change of state; warns once per stop that has a reason (a refusal, a lost connection). */
  function report (): void {
    const up = state.subscribed && state.publishing
    if (up !== state.up) {
      state.up = up
      if (up) {
        state.warned = false
        log?.info({ channel }, 'Redis pub/sub works: change messages reach this instance')
      }
      for (const listener of listeners) listener(up, state.missed)
      if (up) state.missed = false
    }
    if (!up && !state.warned && state.reason !== '' && !state.closing) {
      state.warned = true
      log?.warn({ channel, reason: state.reason }, `Redis pub/sub is not working (${state.reason}): change messages between instances are lost, ` +
        `so process-local token copies are not trusted and waiters poll every 250 ms. Give the Redis user the channel: ACL SETUSER <user> &${channel}`)
    }
  }

  function refused (what: string, err: unknown): void {
    state.reason = `${what} ${channel} was refused: ${safeError(err).message}`
    state.missed = true
  }

  // Connection errors are the main client's to log (it talks to the same server); the subscriber's state is reported above.
  subscriber.on('error', () => {})
  subscriber.on('close', () => {
    if (state.subscribed) state.reason = 'the subscriber connection closed'
    state.subscribed = false
    report()
  })
  subscriber.on('ready', () => {
    const server = isCluster ? Promise.resolve('') : (subscriber as Redis).info('server').then((info) => /run_id:(\w+)/.exec(info)?.[1] ?? '', () => '')
    server.then(async (runId) => {
      const restarted = runId !== '' && state.runId !== '' && runId !== state.runId
      if (state.everSubscribed && !restarted) state.missed = true
      if (runId !== '') state.runId = runId
      await subscriber.subscribe(channel)
      state.everSubscribed = true
      state.subscribed = true
      report()
    }).catch((err: unknown) => {
      refused('SUBSCRIBE', err)
      state.subscribed = false
      report()
    })
  })
  subscriber.on('message', (_channel: string, message: string) => {
    const split = message.indexOf(' ')
    if (split === -1) waiters.wake(message)
    else waiters.wake(message.slice(0, split), message.slice(split + 1))
  })

  return {
    listeners,
    get up () { return state.up },
    async publish (message: string): Promise<void> {
      try {
        await redis.publish(channel, message)
      } catch (err) {
        if (/NOPERM/.test(safeError(err).message) && state.publishing) {
          refused('PUBLISH', err)
          state.publishing = false
          report()
        }
        throw new StoreError(err)
      }
      if (!state.publishing) {
        state.publishing = true
        report()
      }
    },
    async close (): Promise<void> {
      state.closing = true
      if (subscriber.status === 'ready') {
        await subscriber.quit().catch(() => subscriber.disconnect()) // Closing anyway: a failed QUIT only needs the socket dropped.
      } else {
        subscriber.disconnect()
      }
    }
  }
}
