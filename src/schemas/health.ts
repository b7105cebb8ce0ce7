/** Schemas of the health routes. */
import { Type } from '@sinclair/typebox'

export const HealthSchema = Type.Object({
  status: Type.String({ description: 'live: ok. ready: ready, degraded (serving, but the store or pub/sub is down) or closing (503).' }),
  store: Type.Optional(Type.String({ description: 'redis or memory' })),
  storeUp: Type.Optional(Type.Boolean({ description: 'The token store answered a PING just now.' })),
  pubsubUp: Type.Optional(Type.Boolean({ description: 'Change messages between instances reach this one.' }))
})
