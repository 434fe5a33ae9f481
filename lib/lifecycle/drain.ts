import type { IncomingMessage, Server, ServerResponse } from 'node:http';

/**
 * Graceful shutdown of the HTTP server. On a deploy Heroku sends SIGTERM, routes new requests to
 * the new dynos, and kills this one 30 s later: what is in flight (a long tool call, an SSE
 * stream) gets until the deadline to finish, idle keep-alive connections are closed at once so
 * their clients reconnect to a new dyno, and whatever is still running at the deadline is ended.
 */

export interface Drainer {
  /** Wraps the server's request listener to know which responses are in flight. */
  track(
    listener: (req: IncomingMessage, res: ServerResponse) => void,
  ): (req: IncomingMessage, res: ServerResponse) => void;
  /** Stops accepting connections and resolves once every one is closed, `deadlineMs` at most (plus a moment). */
  drain(deadlineMs: number): Promise<DrainResult>;
}

export interface DrainResult {
  /** Responses still running at the deadline, ended by us. */
  readonly ended: number;
}

/** After the deadline, how long ended responses get to flush before their sockets are destroyed. */
const FLUSH_MS = 1_000;

/**
 * The responses in flight, as a list each response enters and leaves once. Not a Set: measured on
 * Node 24 (`npm run bench`, issue 8), a Set every response passes through made each young-generation
 * collection about three times as costly and promoted enough garbage to quadruple the full ones:
 * a third more CPU per `/mcp` request and some 40 MiB more resident memory. A linked list of small
 * nodes costs neither.
 */
class InFlight implements Iterable<ServerResponse> {
  private head: InFlightNode | undefined;
  size = 0;

  add(res: ServerResponse): InFlightNode {
    const node: InFlightNode = { res, prev: undefined, next: this.head };
    if (this.head) this.head.prev = node;
    this.head = node;
    this.size++;
    return node;
  }

  remove(node: InFlightNode): void {
    if (node.prev) node.prev.next = node.next;
    else this.head = node.next;
    if (node.next) node.next.prev = node.prev;
    node.prev = node.next = undefined;
    this.size--;
  }

  /** Safe while responses leave: each node's successor is read before its response is handed out. */
  *[Symbol.iterator](): Iterator<ServerResponse> {
    for (let node = this.head; node;) {
      const next = node.next;
      yield node.res;
      node = next;
    }
  }
}

interface InFlightNode {
  readonly res: ServerResponse;
  prev: InFlightNode | undefined;
  next: InFlightNode | undefined;
}

export function createDrainer(server: Server): Drainer {
  const inFlight = new InFlight();
  let draining = false;
  let settled: (() => void) | undefined;

  // A connection whose response finished is idle; closing it now (not at its keep-alive timeout)
  // sends its client to another dyno for the next request.
  const closeIdle = () => setImmediate(() => server.closeIdleConnections());

  return {
    track(listener) {
      return (req, res) => {
        const node = inFlight.add(res);
        // `on`, not `once`: 'close' comes once, and `once` costs a wrapper and a removal per request.
        res.on('close', () => {
          inFlight.remove(node);
          if (!draining) return;
          closeIdle();
          if (inFlight.size === 0) settled?.();
        });
        if (draining) res.setHeader('Connection', 'close');
        listener(req, res);
      };
    },

    async drain(deadlineMs) {
      draining = true;
      for (const res of inFlight) if (!res.headersSent) res.setHeader('Connection', 'close');
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const idle = new Promise<void>((resolve) => {
        settled = resolve;
        if (inFlight.size === 0) resolve();
      });
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), deadlineMs)));
      const outcome = await Promise.race([idle.then(() => 'done' as const), expired]);
      clearTimeout(timer);

      let ended = 0;
      if (outcome === 'deadline') {
        for (const res of inFlight) {
          ended++;
          endResponse(res);
        }
      }
      // Connections with no request at all (opened, never used) hold server.close() back too.
      server.closeIdleConnections();
      const flushed = new Promise<void>((resolve) => setTimeout(resolve, FLUSH_MS).unref());
      await Promise.race([closed, flushed]);
      server.closeAllConnections();
      await closed;
      return { ended };
    },
  };
}

/**
 * A response that started (an SSE stream, a streamed tool call) ends with its proper terminator,
 * so the client sees a finished stream and reconnects; one that has not started has no clean
 * ending we could give without racing its handler's own answer, so its connection is closed.
 */
function endResponse(res: ServerResponse): void {
  if (!res.headersSent) {
    res.destroy();
    return;
  }
  // The handler may still be streaming into it: its writes after the end are dropped, not thrown.
  res.on('error', () => undefined);
  res.end();
}
