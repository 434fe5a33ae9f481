import { createHash } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A purpose-built upstream for the proxy tests: a plain node:http server that tells exactly what
 * reached it (raw headers, body hash) and misbehaves on demand (401s, SSE held until the test
 * says so, floods, dying mid-stream or before answering). It checks no token: it only refuses
 * the ones it is told to.
 */

export const sha256 = (value: string | Buffer) => createHash('sha256').update(value).digest('hex');

export interface Seen {
  method: string;
  url: string;
  rawHeaders: string[];
  bodySha256: string;
  bodyLength: number;
  /** sha256 of the bearer token received; never the token. */
  tokenSha256: string | undefined;
  status: number;
}

export interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

export function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

export interface Flood {
  written: number;
  /** Epoch ms since which write() has returned false without a 'drain'; undefined while flowing. */
  blockedSince: number | undefined;
  finished: boolean;
  stop(): void;
}

/** Sent with every echo answer: what the proxy must pass back, and what it must not. */
const ECHO_RESPONSE_HEADERS = [
  'Mcp-Session-Id',
  'session-123',
  'MCP-Protocol-Version',
  '2025-11-25',
  'X-Upstream-Custom',
  'one',
  'X-Upstream-Custom',
  'two',
  'Set-Cookie',
  'affinity=a1; Path=/; HttpOnly',
  'Set-Cookie',
  'theme=dark; Path=/',
  'Set-Cookie',
  '_session=planted; Path=/',
  'Set-Cookie',
  '_interaction.sig=planted; Path=/',
  'Access-Control-Allow-Origin',
  '*',
  'Connection',
  'X-Hop-Response',
  'X-Hop-Response',
  'must not pass',
  'Keep-Alive',
  'timeout=5',
  'X-Request-Id',
  'upstream-request-id',
];

export class EchoUpstream {
  readonly server: Server;
  url = '';
  readonly seen: Seen[] = [];
  /** Upstream tokens (sha256) answered with 401. */
  readonly rejected = new Set<string>();
  rejectAll = false;
  connections = 0;
  /** Requests whose body never ended (the proxy aborted them). */
  aborted = 0;
  /** `/mcp/sse`: the second event waits for this. */
  sseRelease = deferred();
  /** `/mcp/sse`: resolved once the first event has been written. */
  sseFirstWritten = deferred();
  /** `/mcp/hold`: resolved when the proxy closed the request. */
  holdClosed = deferred();
  /** `/mcp/early`: resolved once the 401 was sent (before the body was read). */
  earlyAnswered = deferred();
  flood: Flood | undefined;
  /** Sent as `Keep-Alive` on answers to `/mcp/keepalive`, while the server itself keeps idle sockets 60 s. */
  keepAliveHint: string | undefined;
  /** The socket of the last `/mcp/keepalive` request. */
  lastSocket: Socket | undefined;
  /** Every request's path and the proxy's port it came from: which connection carried it. */
  readonly arrivals: { path: string; remotePort: number | undefined }[] = [];

  constructor() {
    this.server = http.createServer((req, res) => this.handle(req, res));
    this.server.keepAliveTimeout = 60_000;
    this.server.on('connection', () => (this.connections += 1));
  }

  async listen(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/mcp`;
  }

  async close(): Promise<void> {
    this.flood?.stop();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  /** The last request's entry whose url starts with `prefix`. */
  last(prefix = '/mcp'): Seen {
    const found = [...this.seen].reverse().find((s) => s.url.startsWith(prefix));
    if (!found) throw new Error(`the upstream saw no request to ${prefix}`);
    return found;
  }

  private tokenOf(req: IncomingMessage): string | undefined {
    const match = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    return match ? sha256(match[1]!) : undefined;
  }

  private refuses(token: string | undefined): boolean {
    return this.rejectAll || (token !== undefined && this.rejected.has(token));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0]!;
    this.arrivals.push({ path, remotePort: req.socket.remotePort });
    const token = this.tokenOf(req);
    if (path === '/mcp/early' && this.refuses(token)) {
      // Decided on the headers alone, like a server checking the token before reading the body.
      res.writeHead(401, { 'WWW-Authenticate': 'Bearer error="invalid_token"', 'Content-Length': '0' }).end();
      this.earlyAnswered.resolve();
      return;
    }
    if (path === '/mcp/sse') return void this.sse(res);
    if (path === '/mcp/silent') {
      // An SSE head and nothing more, until the client goes.
      res.writeHead(200, { 'Content-Type': 'text/event-stream' }).flushHeaders();
      return;
    }
    if (path === '/mcp/hold') return this.hold(req, res);
    if (path === '/mcp/die') return this.die(req, res);
    if (path === '/mcp/reset') return void req.socket.destroy();
    if (path === '/mcp/flood') return this.startFlood(res);
    if (path === '/mcp/keepalive') {
      this.lastSocket = req.socket;
      req.resume();
      req.on('end', () =>
        res.writeHead(200, { 'Keep-Alive': this.keepAliveHint ?? 'timeout=60', 'Content-Length': '0' }).end(),
      );
      return;
    }

    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('close', () => {
      if (!req.complete) this.aborted += 1;
    });
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const status = this.refuses(token) ? 401 : 200;
      const seen: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        rawHeaders: req.rawHeaders,
        bodySha256: sha256(body),
        bodyLength: body.length,
        tokenSha256: token,
        status,
      };
      this.seen.push(seen);
      const json = JSON.stringify(seen);
      if (status === 401) {
        res
          .writeHead(401, { 'WWW-Authenticate': 'Bearer error="invalid_token"', 'Content-Type': 'application/json' })
          .end(json);
        return;
      }
      res.writeHead(200, [...ECHO_RESPONSE_HEADERS, 'Content-Type', 'application/json']).end(json);
    });
  }

  private async sse(res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    res.write('id: 1\ndata: {"first":true}\n\n');
    this.sseFirstWritten.resolve();
    await this.sseRelease.promise;
    res.end('id: 2\ndata: {"second":true}\n\n');
  }

  private hold(req: IncomingMessage, res: ServerResponse): void {
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    res.write('data: holding\n\n');
    req.socket.once('close', () => this.holdClosed.resolve());
  }

  /**
   * Writes part of an answer, then destroys the connection. `?type=` sets the Content-Type
   * (default text/event-stream), `?length=` a Content-Length larger than what is written, and
   * `?partial=` text written after the first event (an event cut off in the middle).
   */
  private die(req: IncomingMessage, res: ServerResponse): void {
    const query = new URL(req.url ?? '', 'http://upstream').searchParams;
    const head: Record<string, string> = { 'Content-Type': query.get('type') ?? 'text/event-stream' };
    if (query.has('length')) head['Content-Length'] = query.get('length')!;
    res.writeHead(200, head);
    res.write(`data: about to die\n\n${query.get('partial') ?? ''}`, () => setImmediate(() => res.socket?.destroy()));
  }

  /** Writes 64 KiB chunks as fast as its socket takes them, honouring backpressure, until stopped. */
  private startFlood(res: ServerResponse): void {
    const chunk = Buffer.alloc(64 * 1024, 'x');
    let stopped = false;
    const flood: Flood = {
      written: 0,
      blockedSince: undefined,
      finished: false,
      stop: () => (stopped = true),
    };
    this.flood = flood;
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    const pump = () => {
      flood.blockedSince = undefined;
      while (!stopped && flood.written < FLOOD_CAP) {
        flood.written += chunk.length;
        if (!res.write(chunk)) {
          flood.blockedSince = Date.now();
          res.once('drain', pump);
          return;
        }
      }
      flood.finished = true;
      res.end();
    };
    pump();
  }
}

/** A proxy that buffered without bound would let the flood write all of this. */
export const FLOOD_CAP = 256 * 1024 * 1024;
