/** Schemas of the health routes. */
import { Type } from '@sinclair/typebox'

export const HealthSchema = Type.Object({
  status: Type.String(),
  store: Type.Optional(Type.String())
})
