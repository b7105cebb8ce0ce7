/** What the connection limits shed, read from the registry: GET /metrics is limited to a few scrapes a second. */
import type { FastifyInstance } from 'fastify'

/** Connections a listener closed to make room, by reason (wxtoken_connections_shed_total). */
export async function shed (app: FastifyInstance, listener: 'main' | 'metrics' = 'main'): Promise<Record<string, number>> {
  const { values } = await app.metrics.connectionsShed.get()
  return Object.fromEntries(values.filter((value) => value.labels.listener === listener).map((value) => [String(value.labels.reason), value.value]))
}
