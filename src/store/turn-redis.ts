/** A single Redis connection that writes the commands of an event-loop turn in one socket write. */
import type { Socket } from 'node:net'
import { Redis, type Command } from 'ioredis'

/**
 * The client of a single node (REDIS_URL) or of Sentinel's master: the first command of an event-loop turn corks the
 * connection's socket, and the socket is uncorked once the turn's I/O callbacks have run (setImmediate), so every
 * command of the turn (the token reads of every request that arrived in it, above all) leaves in one write.
 *
 * ioredis's auto-pipelining also makes one write of a turn's commands, but queues them in a Pipeline object that is
 * sent only once the previous one has been answered: under load each read then lived for about two Redis round trips,
 * long enough to outlive two young-generation collections and be promoted, and the old generation filled and was
 * marked twice a second. Written at the end of their own turn, the reads live for one round trip and die young.
 * A Cluster keeps auto-pipelining: it routes each turn's commands to their nodes.
 */
export class TurnRedis extends Redis {
  /** The socket corked in this turn, until it is uncorked. */
  private corked: Socket | undefined = undefined

  override sendCommand (command: Command, stream?: Parameters<Redis['sendCommand']>[1]): unknown {
    if (this.corked === undefined && stream === undefined && this.status === 'ready' && this.stream.writable) {
      const socket = this.stream as Socket
      socket.cork()
      this.corked = socket
      setImmediate(() => {
        this.corked = undefined
        socket.uncork()
      })
    }
    return super.sendCommand(command, stream)
  }
}
