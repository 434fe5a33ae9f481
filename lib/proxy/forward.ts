import http, { type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';

/** Thrown while reading the request body when it is larger than the proxy keeps (→ 413). */
export class BodyTooLargeError extends Error {
  readonly code = 'BODY_TOO_LARGE';
}

/**
 * The request body as it streams to the MCP server, with a copy kept so a 401 can be retried
 * after a refresh (the body is gone from the socket by then). The copy is bounded: a body over
 * the limit is refused with 413 rather than forwarded unretryable.
 */
export class KeptBody {
  readonly chunks: Buffer[] = [];
  size = 0;
  complete = false;
  constructor(readonly limit: number) {}

  add(chunk: Buffer): void {
    this.size += chunk.length;
    if (this.size > this.limit) throw new BodyTooLargeError(`request body is larger than ${this.limit} bytes`);
    this.chunks.push(chunk);
  }
}

export interface UpstreamTarget {
  url: URL;
  agent: http.Agent;
}

export function createTarget(serverUrl: URL): UpstreamTarget {
  // Keep-alive: a TCP (and TLS) handshake per tool call would dominate the proxy's added latency.
  const options = { keepAlive: true, keepAliveMsecs: 10_000, maxSockets: 512, maxFreeSockets: 64, scheduling: 'lifo' as const };
  const agent = serverUrl.protocol === 'https:' ? new https.Agent(options) : new http.Agent(options);
  return { url: serverUrl, agent };
}

/**
 * Sends one request to the MCP server. With `live`, the body streams from the client as it
 * arrives (honouring backpressure both ways) and is kept in `kept`; without it, the kept copy is
 * replayed. Resolves with the response head; the body is left for the caller to stream or drain.
 */
export function sendUpstream(
  target: UpstreamTarget,
  options: { method: string; path: string; headers: OutgoingHttpHeaders; kept: KeptBody; live?: IncomingMessage; signal: AbortSignal },
): Promise<IncomingMessage> {
  const { method, path, headers, kept, live, signal } = options;
  const transport = target.url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const request = transport.request({
      protocol: target.url.protocol,
      hostname: target.url.hostname,
      port: target.url.port,
      method,
      path,
      headers: live ? headers : { ...headers, 'content-length': String(kept.size) },
      agent: target.agent,
      signal,
    });
    request.on('response', resolve);
    request.on('error', reject);

    if (!live) {
      for (const chunk of kept.chunks) request.write(chunk);
      request.end();
      return;
    }
    if (live.readableEnded) {
      request.end();
      kept.complete = true;
      return;
    }
    live.on('data', (chunk: Buffer) => {
      try {
        kept.add(chunk);
      } catch (error) {
        live.pause();
        request.destroy(error as Error);
        return;
      }
      if (!request.write(chunk)) {
        live.pause();
        request.once('drain', () => live.resume());
      }
    });
    live.on('end', () => {
      kept.complete = true;
      request.end();
    });
    live.on('error', (error) => request.destroy(error));
  });
}

/** Waits for the client's body to be fully read (and kept), e.g. before a retry. */
export function bodyFinished(live: IncomingMessage, kept: KeptBody): Promise<void> {
  if (kept.complete || live.readableEnded) return Promise.resolve();
  return new Promise((resolve, reject) => {
    live.once('end', () => resolve());
    live.once('error', reject);
    live.once('close', () => (kept.complete ? resolve() : reject(new Error('client went away'))));
  });
}
