import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import type { Caller } from '../lib/proxy/authenticate.ts';
import { HotPathCache } from '../lib/proxy/cache.ts';
import { start, type RunningProxy } from '../lib/start.ts';
import { connectClient, freePort, startStack, TestOAuthClient, type Stack } from './helpers/stack.ts';

/**
 * A purpose-built upstream for the proxy tests: a plain node:http server that tells exactly what
 * reached it (raw headers, body hash) and misbehaves on demand (401s, SSE held until the test
 * says so, floods, dying mid-stream). It checks no token: it only refuses the ones it is told to.
 */

const sha256 = (value: string | Buffer) => createHash('sha256').update(value).digest('hex');

interface Seen {
  method: string;
  url: string;
  rawHeaders: string[];
  bodySha256: string;
  bodyLength: number;
  /** sha256 of the bearer token received; never the token. */
  tokenSha256: string | undefined;
  status: number;
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

interface Flood {
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

class EchoUpstream {
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
    const path = (req.url ?? '').split('?')[0];
    const token = this.tokenOf(req);
    if (path === '/mcp/early' && this.refuses(token)) {
      // Decided on the headers alone, like a server checking the token before reading the body.
      res.writeHead(401, { 'WWW-Authenticate': 'Bearer error="invalid_token"', 'Content-Length': '0' }).end();
      this.earlyAnswered.resolve();
      return;
    }
    if (path === '/mcp/sse') return void this.sse(res);
    if (path === '/mcp/hold') return this.hold(req, res);
    if (path === '/mcp/die') return this.die(res);
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

  private die(res: ServerResponse): void {
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    res.write('data: about to die\n\n', () => setImmediate(() => res.socket?.destroy()));
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
const FLOOD_CAP = 256 * 1024 * 1024;
// ---------------------------------------------------------------------------------------------

const LIMIT = 200_000;
const INSPECTOR = 'https://inspector.example';

async function login(mcpUrl: string, user = 'alice'): Promise<{ oauth: TestOAuthClient; token: string }> {
  const oauth = new TestOAuthClient({ user });
  expect(await auth(oauth, { serverUrl: mcpUrl })).to.equal('REDIRECT');
  const code = oauth.lastRedirect?.searchParams.get('code');
  if (!code) throw new Error(`no authorization code: ${oauth.lastRedirect?.href}`);
  expect(await auth(oauth, { serverUrl: mcpUrl, authorizationCode: code })).to.equal('AUTHORIZED');
  return { oauth, token: oauth.savedTokens!.access_token };
}

interface RawResponse {
  status: number;
  rawHeaders: string[];
  headers: IncomingHttpHeaders;
  body: Buffer;
}

interface SendOptions {
  method?: string;
  /** Raw name/value list, sent exactly (node:http adds only Host when absent). */
  headers?: string[];
  /** Sent with a Content-Length. */
  body?: Buffer;
  /** Sent chunked, one write each; `between` runs after the first chunk is written. */
  chunks?: Buffer[];
  between?: () => Promise<void>;
  /** Sent as the request target verbatim (a URL would resolve dot segments first). */
  rawPath?: string;
}

/** node:http rather than fetch: full control over the headers (hop-by-hop included) and the framing. */
async function send(url: string, options: SendOptions = {}): Promise<RawResponse> {
  const target = new URL(url);
  const headers = [...(options.headers ?? [])];
  if (!headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'host')) headers.push('Host', target.host);
  if (options.body && !headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'content-length')) {
    headers.push('Content-Length', String(options.body.length));
  }
  const request = http.request({
    hostname: target.hostname,
    port: target.port,
    path: options.rawPath ?? target.pathname + target.search,
    method: options.method ?? 'POST',
    headers,
    agent: false,
  });
  const answer = new Promise<RawResponse>((resolve, reject) => {
    request.on('error', reject);
    request.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode!,
          rawHeaders: res.rawHeaders,
          headers: res.headers,
          body: Buffer.concat(chunks),
        }),
      );
    });
  });
  if (options.chunks) {
    const [first, ...rest] = options.chunks;
    if (first) request.write(first);
    await options.between?.();
    for (const chunk of rest) request.write(chunk);
    request.end();
  } else {
    request.end(options.body);
  }
  return answer;
}

function json<T = Seen>(response: RawResponse): T {
  return JSON.parse(response.body.toString('utf8')) as T;
}

/** Values of a header in a raw list, case-insensitively, in order. */
function values(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name.toLowerCase()) out.push(raw[i + 1]!);
  return out;
}

/** Polls every 10 ms; fails after `ms` (a bound for a hang, not a timing assertion). */
async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  for (const started = Date.now(); !condition(); await sleep(10)) {
    if (Date.now() - started > ms) throw new Error(`${what}: not reached within ${ms} ms`);
  }
}

/** Reads an SSE body until `text` has arrived; returns everything read so far. */
async function readUntil(reader: ReadableStreamDefaultReader<Uint8Array>, text: string, sofar = ''): Promise<string> {
  const decoder = new TextDecoder();
  while (!sofar.includes(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended before ${JSON.stringify(text)}; got ${JSON.stringify(sofar)}`);
    sofar += decoder.decode(value, { stream: true });
  }
  return sofar;
}

/**
 * Counts the Redis commands touching this stack's keys while `action` runs, through MONITOR. A
 * marker command issued afterwards on another connection bounds the count: MONITOR reports
 * commands in the order Redis ran them, so once the marker shows up every earlier one has too.
 */
class StoreCommands {
  private readonly redis = new Redis(process.env.TEST_REDIS_URL!, { lazyConnect: true });
  private monitor: Awaited<ReturnType<Redis['monitor']>> | undefined;
  private lines: string[][] = [];

  constructor(private readonly prefix: string) {}

  async start(): Promise<void> {
    this.monitor = await this.redis.monitor();
    this.monitor.on('monitor', (_time: string, args: string[]) => this.lines.push(args));
  }

  async during(action: () => Promise<unknown>): Promise<string[]> {
    this.lines = [];
    await action();
    const marker = `${this.prefix}marker:${randomBytes(8).toString('hex')}`;
    const other = new Redis(process.env.TEST_REDIS_URL!);
    try {
      await other.get(marker);
    } finally {
      other.disconnect();
    }
    await until(() => this.lines.some((args) => args.includes(marker)), 'the MONITOR marker');
    return (
      this.lines
        .filter((args) => !args.includes(marker) && args.some((arg) => arg.startsWith(this.prefix)))
        // The revocation subscriber's own connection set-up is not a request's cost.
        .filter(([command]) => !['subscribe', 'unsubscribe', 'publish', 'client'].includes(command!.toLowerCase()))
        .map((args) => args[0]!.toLowerCase())
    );
  }

  async stop(): Promise<void> {
    this.monitor?.disconnect();
    this.redis.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------

describe('/mcp proxy, in front of a purpose-built upstream', function () {
  let echo: EchoUpstream;
  let stack: Stack;
  let token: string;
  let oauth: TestOAuthClient;
  let bearer: string[];

  before(async function () {
    echo = new EchoUpstream();
    await echo.listen();
    stack = await startStack({
      env: {
        MCP_SERVER_URL: echo.url,
        MCP_PROXY_MAX_BODY_BYTES: String(LIMIT),
        MCP_PROXY_ALLOWED_ORIGINS: INSPECTOR,
      },
    });
    ({ oauth, token } = await login(stack.mcpUrl));
    bearer = ['Authorization', `Bearer ${token}`];
  });
  after(async function () {
    await stack?.close();
    await echo?.close();
  });

  /** The sha256 of the upstream token the proxy currently sends for our grant. */
  async function currentUpstreamToken(): Promise<string> {
    const res = await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') });
    expect(res.status).to.equal(200);
    return json(res).tokenSha256!;
  }

  describe('header fidelity (R8)', function () {
    it('passes MCP and custom request headers untouched: case, order and repeats', async function () {
      const sent = [
        'Mcp-Session-Id',
        'session-abc',
        'MCP-Protocol-Version',
        '2025-11-25',
        'Last-Event-ID',
        'event-41',
        'Mcp-Method',
        'tools/call',
        'Mcp-Name',
        'echo',
        'Accept',
        'application/json, text/event-stream',
        'X-Custom',
        'first',
        'x-custom',
        'second',
        'Content-Type',
        'application/json',
        'User-Agent',
        'proxy-test/1.0',
      ];
      const res = await send(stack.mcpUrl, { headers: [...bearer, ...sent], body: Buffer.from('{}') });
      expect(res.status).to.equal(200);
      const seen = json(res);
      const forwarded = seen.rawHeaders;
      for (let i = 0; i < sent.length; i += 2) {
        const at = forwarded.findIndex(
          (name, j) => j % 2 === 0 && name === sent[i] && forwarded[j + 1] === sent[i + 1],
        );
        expect(at, `${sent[i]}: ${sent[i + 1]}`).to.be.at.least(0);
      }
      expect(values(forwarded, 'x-custom')).to.deep.equal(['first', 'second']);
    });

    it('R4: replaces Authorization with the upstream token; identity headers are ours, never the client’s', async function () {
      const res = await send(stack.mcpUrl, {
        headers: [
          ...bearer,
          'X-User-Id',
          'mallory',
          'X-Authorization-Scope',
          'admin',
          'x-dynamic-client-id',
          'someone-else',
          'x-user-id',
          'mallory-again',
        ],
        body: Buffer.from('{}'),
      });
      const raw = json(res).rawHeaders;
      const authorization = values(raw, 'authorization');
      expect(authorization).to.have.length(1);
      expect(authorization[0]).to.match(/^Bearer /);
      expect(authorization[0]).to.not.include(token);
      expect(values(raw, 'x-user-id')).to.deep.equal(['alice']);
      expect(values(raw, 'x-dynamic-client-id')).to.deep.equal([oauth.info!.client_id]);
      expect(values(raw, 'x-authorization-scope')).to.have.length(1);
      expect(values(raw, 'x-authorization-scope')[0]).to.not.include('admin');

      // …and the upstream token the MCP server received is no good here: we never accept an
      // upstream token as if it were ours.
      const upstream = authorization[0]!.slice('Bearer '.length);
      const replayed = await send(stack.mcpUrl, {
        headers: ['Authorization', `Bearer ${upstream}`],
        body: Buffer.from('{}'),
      });
      expect(replayed.status).to.equal(401);
    });

    it('R7: a live session id is no authentication: without a valid token nothing reaches the MCP server', async function () {
      const before = echo.seen.length;
      for (const auth of [[], ['Authorization', 'Bearer not-ours']]) {
        const res = await send(stack.mcpUrl, {
          headers: [...auth, 'Mcp-Session-Id', 'session-123'],
          body: Buffer.from('{}'),
        });
        expect(res.status).to.equal(401);
      }
      expect(echo.seen.length).to.equal(before);
    });

    it('drops hop-by-hop headers and every header named in Connection', async function () {
      const res = await send(stack.mcpUrl, {
        headers: [
          ...bearer,
          'Connection',
          'keep-alive, X-Hop',
          'X-Hop',
          'must not pass',
          'Keep-Alive',
          'timeout=5',
          'TE',
          'trailers',
          'Proxy-Authorization',
          'Basic cHJveHk6c2VjcmV0',
          'Upgrade',
          'websocket',
          'Expect',
          '100-continue',
        ],
        body: Buffer.from('{}'),
      });
      expect(res.status).to.equal(200);
      const raw = json(res).rawHeaders;
      for (const name of ['x-hop', 'keep-alive', 'te', 'proxy-authorization', 'upgrade', 'expect']) {
        expect(values(raw, name), name).to.deep.equal([]);
      }
      // Node's own connection management with the upstream, not the client's header.
      expect(values(raw, 'connection').join()).to.not.include('X-Hop');
    });

    it('rewrites Host and adds X-Forwarded-For, -Proto and -Host from what it saw', async function () {
      const res = await send(stack.mcpUrl, {
        headers: [
          ...bearer,
          'X-Forwarded-For',
          '203.0.113.7',
          'X-Forwarded-Host',
          'evil.example',
          'Forwarded',
          'for=1.2.3.4',
        ],
        body: Buffer.from('{}'),
      });
      const raw = json(res).rawHeaders;
      expect(values(raw, 'host')).to.deep.equal([new URL(echo.url).host]);
      expect(values(raw, 'x-forwarded-for')).to.have.length(1);
      expect(values(raw, 'x-forwarded-for')[0]).to.match(/^203\.0\.113\.7, (::ffff:)?127\.0\.0\.1$/);
      expect(values(raw, 'x-forwarded-proto')).to.deep.equal(['http']);
      expect(values(raw, 'x-forwarded-host')).to.deep.equal([new URL(stack.mcpUrl).host]);
      expect(values(raw, 'forwarded')).to.deep.equal([]);
    });

    it('passes the client’s cookies but never ours (session and interaction cookies)', async function () {
      const res = await send(stack.mcpUrl, {
        headers: [
          ...bearer,
          'Cookie',
          '_session=ours; affinity=a1; _session.sig=sig; _interaction=x; _interaction_resume=y; theme=dark',
        ],
        body: Buffer.from('{}'),
      });
      expect(values(json(res).rawHeaders, 'cookie')).to.deep.equal(['affinity=a1; theme=dark']);

      const onlyOurs = await send(stack.mcpUrl, {
        headers: [...bearer, 'Cookie', '_session=ours; _session.sig=sig'],
        body: Buffer.from('{}'),
      });
      expect(values(json(onlyOurs).rawHeaders, 'cookie')).to.deep.equal([]);
    });

    it('passes response headers back untouched: session id, repeated Set-Cookie, custom headers', async function () {
      const res = await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') });
      expect(res.status).to.equal(200);
      expect(values(res.rawHeaders, 'mcp-session-id')).to.deep.equal(['session-123']);
      expect(values(res.rawHeaders, 'mcp-protocol-version')).to.deep.equal(['2025-11-25']);
      expect(values(res.rawHeaders, 'x-upstream-custom')).to.deep.equal(['one', 'two']);
      expect(res.rawHeaders).to.include('Mcp-Session-Id');
      // Ours are not the MCP server's to set or clear on our origin.
      expect(values(res.rawHeaders, 'set-cookie')).to.deep.equal([
        'affinity=a1; Path=/; HttpOnly',
        'theme=dark; Path=/',
      ]);
      expect(values(res.rawHeaders, 'x-hop-response')).to.deep.equal([]);
      expect(values(res.rawHeaders, 'keep-alive').join()).to.not.include('timeout=5, ');
      // CORS on /mcp is ours to decide (R6): the MCP server's wildcard does not pass.
      expect(values(res.rawHeaders, 'access-control-allow-origin')).to.deep.equal([]);
    });

    it('one request id in both logs: ours goes to the MCP server and stays on the response', async function () {
      const res = await send(stack.mcpUrl, {
        headers: [...bearer, 'X-Request-Id', 'client-chosen-id-1'],
        body: Buffer.from('{}'),
      });
      expect(values(res.rawHeaders, 'x-request-id')).to.deep.equal(['client-chosen-id-1']);
      expect(values(json(res).rawHeaders, 'x-request-id')).to.deep.equal(['client-chosen-id-1']);
    });

    it('passes the path below /mcp and the query string through as they are', async function () {
      const res = await send(`${stack.mcpUrl}/echo/deeper?x=%20y&x=2&empty`, {
        headers: bearer,
        body: Buffer.from('{}'),
      });
      expect(res.status).to.equal(200);
      expect(json(res).url).to.equal('/mcp/echo/deeper?x=%20y&x=2&empty');
    });

    it('refuses dot segments instead of forwarding a path outside /mcp', async function () {
      const before = echo.seen.length;
      for (const path of [
        '/mcp/../admin',
        '/mcp/%2e%2e/admin',
        '/mcp/.%2E/admin',
        '/mcp/./x',
        '/mcp/..%2fadmin',
        '/mcp/%2e%2e%2fadmin',
        '/mcp/..%5cadmin',
        '/mcp/..;/admin',
        '/mcp/..\\admin',
      ]) {
        const res = await send(stack.mcpUrl, { rawPath: path, headers: bearer, body: Buffer.from('{}') });
        expect(res.status, path).to.equal(400);
        expect(json<{ error: string }>(res).error).to.equal('invalid_request');
      }
      expect(echo.seen.length).to.equal(before);
    });
  });

  describe('streaming', function () {
    it('a non-JSON body with arbitrary bytes arrives byte-identical, with Content-Length or chunked', async function () {
      const body = Buffer.concat([Buffer.from([0x00, 0xff, 0xfe, 0x0d, 0x0a, 0xc3, 0x28, 0x80]), randomBytes(70_000)]);
      const sized = await send(stack.mcpUrl, {
        headers: [...bearer, 'Content-Type', 'application/octet-stream'],
        body,
      });
      expect(json(sized)).to.include({ bodySha256: sha256(body), bodyLength: body.length });
      expect(values(json(sized).rawHeaders, 'content-length')).to.deep.equal([String(body.length)]);

      const chunks = [body.subarray(0, 3), body.subarray(3, 40_000), body.subarray(40_000)];
      const chunked = await send(stack.mcpUrl, {
        headers: [...bearer, 'Content-Type', 'application/octet-stream'],
        chunks,
      });
      expect(json(chunked)).to.include({ bodySha256: sha256(body), bodyLength: body.length });
    });

    it('a JSON body is not re-serialised: spacing, escapes and duplicate keys survive', async function () {
      const text =
        '{ "jsonrpc" :"2.0",\n\t"id":1 , "method":"tools/call", "params":{"a":"\\u00e9","a":1e2,"b":[ ]} }  ';
      const res = await send(stack.mcpUrl, {
        headers: [...bearer, 'Content-Type', 'application/json'],
        body: Buffer.from(text),
      });
      expect(json(res).bodySha256).to.equal(sha256(Buffer.from(text)));
    });

    it('bodies over Express’s 100 kB default pass', async function () {
      const body = randomBytes(LIMIT - 1);
      const res = await send(stack.mcpUrl, { headers: bearer, body });
      expect(res.status).to.equal(200);
      expect(json(res).bodySha256).to.equal(sha256(body));
    });

    it('413 with a JSON body over MCP_PROXY_MAX_BODY_BYTES declared by Content-Length; the MCP server never sees it', async function () {
      const before = echo.seen.length;
      const res = await send(stack.mcpUrl, { headers: bearer, body: randomBytes(LIMIT + 1) });
      expect(res.status).to.equal(413);
      expect(res.headers['content-type']).to.match(/^application\/json/);
      expect(json<{ error: string }>(res).error).to.equal('payload_too_large');
      expect(echo.seen.length).to.equal(before);
    });

    it('413 with a JSON body over the limit sent chunked; the upstream request is aborted', async function () {
      const before = { seen: echo.seen.length, aborted: echo.aborted };
      const chunks = Array.from({ length: 25 }, () => randomBytes(10_000));
      const res = await send(stack.mcpUrl, { headers: bearer, chunks });
      expect(res.status).to.equal(413);
      expect(json<{ error: string }>(res).error).to.equal('payload_too_large');
      await until(() => echo.aborted > before.aborted, 'the upstream saw its request aborted');
      expect(echo.seen.length, 'no complete request upstream').to.equal(before.seen);
    });

    it('SSE: the first event reaches the client before the MCP server writes the second', async function () {
      echo.sseRelease = deferred();
      echo.sseFirstWritten = deferred();
      const res = await fetch(`${stack.mcpUrl}/sse`, {
        headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
      });
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.equal('text/event-stream');
      const reader = res.body!.getReader();
      // The second event is only written once we have the first: a buffering proxy deadlocks here.
      const first = await readUntil(reader, '"first":true');
      expect(first).to.not.include('second');
      echo.sseRelease.resolve();
      const all = await readUntil(reader, '"second":true', first);
      expect(all).to.equal('id: 1\ndata: {"first":true}\n\nid: 2\ndata: {"second":true}\n\n');
      expect((await reader.read()).done).to.equal(true);
    });

    it('backpressure: a client that does not read stops the MCP server’s writes', async function () {
      this.timeout(60_000);
      const request = http.request(`${stack.mcpUrl}/flood`, {
        method: 'GET',
        headers: { authorization: `Bearer ${token}` },
        agent: false,
      });
      request.end();
      const [response] = (await once(request, 'response')) as [IncomingMessage];
      expect(response.statusCode).to.equal(200);
      // Not reading: the client's socket buffers fill, then the proxy's, then the MCP server's.
      // The MCP server's writes must then stay blocked; had the proxy kept reading, its 'drain'
      // would come within microseconds and the flood would run to FLOOD_CAP.
      await until(
        () =>
          echo.flood!.finished ||
          (echo.flood!.blockedSince !== undefined && Date.now() - echo.flood!.blockedSince > 500),
        'the upstream blocked for 500 ms',
        50_000,
      );
      const flood = echo.flood!;
      expect(flood.finished, `the upstream wrote all ${FLOOD_CAP} bytes: no backpressure`).to.equal(false);
      flood.stop();
      let received = 0;
      response.on('data', (chunk: Buffer) => (received += chunk.length));
      await once(response, 'end');
      expect(received, 'nothing lost').to.equal(flood.written);
    });

    it('a client that disconnects aborts the upstream request', async function () {
      echo.holdClosed = deferred();
      const controller = new AbortController();
      const res = await fetch(`${stack.mcpUrl}/hold`, {
        headers: { authorization: `Bearer ${token}` },
        signal: controller.signal,
      });
      await readUntil(res.body!.getReader(), 'holding');
      controller.abort();
      // Resolved by the upstream socket's 'close'; a proxy that kept it open times the test out.
      await echo.holdClosed.promise;
    });

    it('an MCP server that dies mid-stream ends the client’s stream with an error, not a hang', async function () {
      const res = await fetch(`${stack.mcpUrl}/die`, { headers: { authorization: `Bearer ${token}` } });
      const reader = res.body!.getReader();
      await readUntil(reader, 'about to die');
      const outcome = await (async () => {
        for (;;) {
          const { done } = await reader.read();
          if (done) return 'ended as if complete';
        }
      })().catch((error: Error) => error);
      // A chunked response cut short must not look complete to the client.
      expect(outcome).to.be.instanceOf(Error);
    });

    it('reuses keep-alive connections to the MCP server', async function () {
      await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') });
      const before = echo.connections;
      for (let i = 0; i < 5; i++) {
        expect((await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') })).status).to.equal(200);
      }
      expect(echo.connections - before).to.equal(0);
    });

    it('closes an idle upstream connection before the MCP server’s advertised keep-alive timeout', async function () {
      echo.keepAliveHint = 'timeout=2';
      const closed = deferred();
      try {
        // A fresh connection: the proxy's idle ones predate the hint.
        echo.server.closeIdleConnections();
        await send(`${stack.mcpUrl}/keepalive`, { headers: bearer, body: Buffer.from('{}') });
        echo.lastSocket!.once('close', () => closed.resolve());
        // The MCP server itself would keep it for 60 s; the proxy closes it about a second early
        // of the 2 s it was told. (The mocha timeout bounds a proxy that never does.)
        await closed.promise;
      } finally {
        echo.keepAliveHint = undefined;
      }
    });
  });

  describe('retry on an upstream 401', function () {
    afterEach(function () {
      echo.rejected.clear();
      echo.rejectAll = false;
    });

    for (const framing of ['Content-Length', 'chunked'] as const) {
      it(`refreshes once and replays the body byte-identical (${framing})`, async function () {
        echo.rejected.add(await currentUpstreamToken());
        const refreshes = stack.idp.stats.refreshes;
        const body = Buffer.concat([Buffer.from('{"jsonrpc":"2.0", "id":7}\r\n'), randomBytes(90_000)]);
        const seenBefore = echo.seen.length;
        const res = await send(
          stack.mcpUrl,
          framing === 'chunked'
            ? { headers: bearer, chunks: [body.subarray(0, 1000), body.subarray(1000)] }
            : { headers: bearer, body },
        );
        expect(res.status).to.equal(200);
        expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
        const [refused, replayed] = echo.seen.slice(seenBefore);
        expect(refused!.status).to.equal(401);
        expect(replayed!.status).to.equal(200);
        expect(refused!.bodySha256).to.equal(sha256(body));
        expect(replayed!.bodySha256).to.equal(sha256(body));
        expect(replayed!.tokenSha256).to.not.equal(refused!.tokenSha256);
        expect(values(replayed!.rawHeaders, 'content-length')).to.deep.equal([String(body.length)]);
        // The refreshed token is kept: the next request needs no refresh.
        expect((await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') })).status).to.equal(200);
        expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
      });
    }

    it('a body still arriving when the MCP server answers 401 is read whole, then replayed', async function () {
      echo.rejected.add(await currentUpstreamToken());
      echo.earlyAnswered = deferred();
      const body = randomBytes(120_000);
      const seenBefore = echo.seen.length;
      const res = await send(`${stack.mcpUrl}/early`, {
        headers: bearer,
        chunks: [body.subarray(0, 10), body.subarray(10)],
        // The rest of the body is sent only after the MCP server has answered 401.
        between: () => echo.earlyAnswered.promise,
      });
      expect(res.status).to.equal(200);
      const replayed = echo.seen.slice(seenBefore);
      expect(replayed).to.have.length(1);
      expect(replayed[0]!.bodySha256).to.equal(sha256(body));
    });

    it('never retries a body over the limit: 413 and no refresh, even after an early 401', async function () {
      echo.rejected.add(await currentUpstreamToken());
      echo.earlyAnswered = deferred();
      const refreshes = stack.idp.stats.refreshes;
      const seenBefore = echo.seen.length;
      const res = await send(`${stack.mcpUrl}/early`, {
        headers: bearer,
        chunks: [randomBytes(10), ...Array.from({ length: 21 }, () => randomBytes(10_000))],
        between: () => echo.earlyAnswered.promise,
      });
      expect(res.status).to.equal(413);
      expect(json<{ error: string }>(res).error).to.equal('payload_too_large');
      expect(stack.idp.stats.refreshes).to.equal(refreshes);
      expect(echo.seen.length, 'nothing replayed').to.equal(seenBefore);
    });

    it('a refreshed token refused again answers 401 invalid_token after exactly one refresh', async function () {
      echo.rejectAll = true;
      const refreshes = stack.idp.stats.refreshes;
      const res = await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') });
      expect(res.status).to.equal(401);
      expect(res.headers['www-authenticate']).to.include('error="invalid_token"');
      expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
    });
  });

  describe('Origin (R6) and query tokens (R3)', function () {
    const post = (headers: string[], path = '') =>
      send(`${stack.mcpUrl}${path}`, { headers: [...bearer, ...headers], body: Buffer.from('{}') });

    it('refuses an Origin that is not allowed with 403 and a JSON body, before anything reaches the MCP server', async function () {
      const before = echo.seen.length;
      for (const origin of ['https://evil.example', 'null', 'http://localhost:1', `${stack.baseUrl}.evil.example`]) {
        const res = await post(['Origin', origin]);
        expect(res.status, origin).to.equal(403);
        expect(json<{ error: string }>(res).error).to.equal('forbidden');
      }
      expect(echo.seen.length).to.equal(before);
    });

    it('accepts our own origin, a configured one, and requests without Origin', async function () {
      expect((await post(['Origin', new URL(stack.baseUrl).origin])).status).to.equal(200);
      expect((await post(['Origin', INSPECTOR])).status).to.equal(200);
      expect((await post([])).status).to.equal(200);
    });

    it('refuses a token in the query string, even next to a valid header', async function () {
      const before = echo.seen.length;
      const res = await post([], `?access_token=${encodeURIComponent(token)}`);
      expect(res.status).to.equal(401);
      expect(res.headers['www-authenticate']).to.include('error="invalid_request"');
      expect(echo.seen.length).to.equal(before);
    });
  });
});

// ---------------------------------------------------------------------------------------------

describe('/mcp proxy hot path: in-process cache, invalidated across instances', function () {
  let echo: EchoUpstream;
  let stack: Stack;
  let second: RunningProxy;
  let secondUrl: string;
  let monitor: StoreCommands;

  before(async function () {
    echo = new EchoUpstream();
    await echo.listen();
    stack = await startStack({ env: { MCP_SERVER_URL: echo.url } });
    // A second process of the same deployment: same BASE_URL, keys and Redis, its own port.
    const port = await freePort();
    second = await start({ ...stack.env, PORT: String(port) });
    secondUrl = `http://localhost:${port}/mcp`;
    monitor = new StoreCommands(stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!);
    await monitor.start();
  });
  after(async function () {
    await monitor?.stop();
    await second?.close();
    await stack?.close();
    await echo?.close();
  });

  afterEach(function () {
    echo.rejected.clear();
  });

  const call = (url: string, token: string) =>
    send(url, {
      headers: ['Authorization', `Bearer ${token}`],
      body: Buffer.from('{"jsonrpc":"2.0","id":1,"method":"ping"}'),
    });

  /** Repeats a request until one costs no store round trip (the subscription comes up asynchronously). */
  async function warm(url: string, token: string): Promise<void> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const commands = await monitor.during(async () => expect((await call(url, token)).status).to.equal(200));
      if (commands.length === 0) return;
    }
    throw new Error(`${url} never served a request from its cache`);
  }

  it('a cold request costs at most two store round trips, a warm one none', async function () {
    const { token } = await login(stack.mcpUrl, 'carol');
    const cold = await monitor.during(async () => expect((await call(stack.mcpUrl, token)).status).to.equal(200));
    expect(cold.length, cold.join(' ')).to.be.at.most(2);
    await warm(stack.mcpUrl, token);
    for (let i = 0; i < 5; i++) {
      const commands = await monitor.during(async () => expect((await call(stack.mcpUrl, token)).status).to.equal(200));
      expect(commands, `request ${i}`).to.deep.equal([]);
    }
  });

  it('an access token revoked at one instance (RFC 7009) is refused at once by both, though both caches were warm', async function () {
    const { token, oauth } = await login(stack.mcpUrl, 'dave');
    await warm(stack.mcpUrl, token);
    await warm(secondUrl, token);
    const revoked = await fetch(`${stack.baseUrl}/token/revocation`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, token_type_hint: 'access_token', client_id: oauth.info!.client_id }),
    });
    expect(revoked.status).to.equal(200);
    expect((await call(secondUrl, token)).status).to.equal(401);
    expect((await call(stack.mcpUrl, token)).status).to.equal(401);
  });

  it('a grant revoked through its refresh token is refused at once by both instances', async function () {
    const { token, oauth } = await login(stack.mcpUrl, 'erin');
    await warm(stack.mcpUrl, token);
    await warm(secondUrl, token);
    const revoked = await fetch(`${stack.baseUrl}/token/revocation`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: oauth.savedTokens!.refresh_token!, client_id: oauth.info!.client_id }),
    });
    expect(revoked.status).to.equal(200);
    expect((await call(secondUrl, token)).status).to.equal(401);
    expect((await call(stack.mcpUrl, token)).status).to.equal(401);
  });

  it('a grant the proxy revokes itself (upstream invalid_grant) is refused at once by the other instance', async function () {
    const { token } = await login(stack.mcpUrl, 'frank');
    await warm(stack.mcpUrl, token);
    await warm(secondUrl, token);
    echo.rejected.add(json(await call(stack.mcpUrl, token)).tokenSha256!);
    await stack.idp.revokeRefreshTokens();
    const refused = await call(stack.mcpUrl, token);
    expect(refused.status).to.equal(401);
    expect(refused.headers['www-authenticate']).to.include('error="invalid_token"');
    // Were the second instance still trusting its cache, the MCP server would now take the
    // upstream token it holds.
    echo.rejected.clear();
    const seen = echo.seen.length;
    expect((await call(secondUrl, token)).status).to.equal(401);
    expect(echo.seen.length).to.equal(seen);
  });

  it('a store outage answers 503 with Retry-After, never 401, and nothing is served from the cache meanwhile', async function () {
    this.timeout(20_000);
    // A third instance reaching Redis through a link the test can cut.
    const redis = new URL(process.env.TEST_REDIS_URL!);
    const links = new Set<Socket>();
    const link = createServer((client) => {
      const upstream = connect(Number(redis.port || 6379), redis.hostname);
      for (const socket of [client, upstream]) {
        links.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => (client.destroy(), upstream.destroy()));
      }
      client.pipe(upstream).pipe(client);
    });
    link.listen(0, '127.0.0.1');
    await once(link, 'listening');
    const redisUrl = new URL(redis.href);
    redisUrl.host = `127.0.0.1:${(link.address() as AddressInfo).port}`;
    const port = await freePort();
    const third = await start({ ...stack.env, PORT: String(port), MCP_AUTH_PROXY_REDIS_URL: redisUrl.href });
    const thirdUrl = `http://localhost:${port}/mcp`;
    try {
      const { token } = await login(stack.mcpUrl, 'heidi');
      // Warm: served without the store, so the 503 below comes from refusing to trust the cache.
      await warm(thirdUrl, token);
      link.close();
      for (const socket of links) socket.destroy();
      // The instance learns of the cut from its sockets closing; this lets that happen before the
      // request below rather than, in principle, in the same event-loop turn.
      await sleep(100);
      const res = await call(thirdUrl, token);
      expect(res.status).to.equal(503);
      expect(res.headers['retry-after']).to.match(/^\d+$/);
      expect(json<{ error: string }>(res).error).to.equal('temporarily_unavailable');
    } finally {
      await third.close();
      link.close();
    }
  });

  it('upstream credentials refreshed by one instance reach the other without a second refresh', async function () {
    const { token } = await login(stack.mcpUrl, 'grace');
    await warm(stack.mcpUrl, token);
    await warm(secondUrl, token);
    const old = json(await call(stack.mcpUrl, token)).tokenSha256!;
    echo.rejected.add(old);
    const refreshes = stack.idp.stats.refreshes;
    expect((await call(stack.mcpUrl, token)).status).to.equal(200);
    // The second instance still holds the old upstream token: the MCP server refuses it, and the
    // vault hands over the new one without asking the identity provider again.
    const res = await call(secondUrl, token);
    expect(res.status).to.equal(200);
    expect(json(res).tokenSha256).to.not.equal(old);
    expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
  });
});

// ---------------------------------------------------------------------------------------------

describe('/mcp proxy hot path with the in-memory store (development)', function () {
  let echo: EchoUpstream;
  let stack: Stack;

  before(async function () {
    echo = new EchoUpstream();
    await echo.listen();
    stack = await startStack({ redis: false, env: { MCP_SERVER_URL: echo.url } });
  });
  after(async function () {
    await stack?.close();
    await echo?.close();
  });

  it('a revoked grant is refused at once: the memory store delivers revocations in-process', async function () {
    const { token, oauth } = await login(stack.mcpUrl, 'ivan');
    const call = () => send(stack.mcpUrl, { headers: ['Authorization', `Bearer ${token}`], body: Buffer.from('{}') });
    for (let i = 0; i < 3; i++) expect((await call()).status).to.equal(200);
    const revoked = await fetch(`${stack.baseUrl}/token/revocation`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: oauth.savedTokens!.refresh_token!, client_id: oauth.info!.client_id }),
    });
    expect(revoked.status).to.equal(200);
    expect((await call()).status).to.equal(401);
  });
});

// ---------------------------------------------------------------------------------------------

describe('/mcp proxy hot-path cache rules', function () {
  const caller = (grantId: string): Caller => ({
    grantId,
    accountId: 'a',
    clientId: 'c',
    scope: 's',
    tokenExpiresAt: Date.now() + 3_600_000,
  });
  const subscription = (active = true) => ({ active, generation: 1, unsubscribe: async () => undefined });

  it('serves and stores nothing while revocations are not being received', function () {
    const sub = subscription(false);
    const cache = new HotPathCache(() => sub);
    cache.setCaller('h', caller('g'), Date.now() + 60_000, cache.stamp());
    expect(cache.caller('h')).to.equal(undefined);
    sub.active = true;
    cache.setCaller('h', caller('g'), Date.now() + 60_000, cache.stamp());
    expect(cache.caller('h')?.grantId).to.equal('g');
    sub.active = false;
    expect(cache.caller('h')).to.equal(undefined);
  });

  it('forgets everything when the subscription was re-established (messages may have been missed)', function () {
    const sub = subscription();
    const cache = new HotPathCache(() => sub);
    cache.setCaller('h', caller('g'), Date.now() + 60_000, cache.stamp());
    sub.generation += 1;
    expect(cache.caller('h')).to.equal(undefined);
  });

  it('does not store a value read while a revocation arrived, nor a revoked grant’s for a while', function () {
    const cache = new HotPathCache(() => subscription());
    const stamp = cache.stamp();
    cache.dropGrant('other-grant');
    cache.setCaller('h', caller('g'), Date.now() + 60_000, stamp);
    expect(cache.caller('h'), 'read before the revocation').to.equal(undefined);
    cache.dropGrant('g');
    cache.setCaller('h', caller('g'), Date.now() + 60_000, cache.stamp());
    expect(cache.caller('h'), 'tombstoned grant').to.equal(undefined);
  });

  it('drops every cached token of a revoked grant, and its upstream credentials', function () {
    const cache = new HotPathCache(() => subscription());
    cache.setCaller('h1', caller('g'), Date.now() + 60_000, cache.stamp());
    cache.setCaller('h2', caller('g'), Date.now() + 60_000, cache.stamp());
    cache.setCaller('h3', caller('kept'), Date.now() + 60_000, cache.stamp());
    cache.setVaultEntry(
      'g',
      'secret-tag',
      { accountId: 'a', clientId: 'c', expiresAt: 0, credentials: { accessToken: 'x' } },
      cache.stamp(),
    );
    expect(cache.vaultEntry('g', 'secret-tag')?.credentials.accessToken).to.equal('x');
    cache.dropGrant('g');
    expect([cache.caller('h1'), cache.caller('h2'), cache.vaultEntry('g', 'secret-tag')]).to.deep.equal([
      undefined,
      undefined,
      undefined,
    ]);
    expect(cache.caller('h3')?.grantId).to.equal('kept');
  });

  it('never trusts a token past its expiry, nor upstream credentials about to be refreshed', function () {
    const cache = new HotPathCache(() => subscription());
    cache.setCaller('h', caller('g'), Date.now() - 1, cache.stamp());
    expect(cache.caller('h')).to.equal(undefined);
    const expiresAt = Math.floor(Date.now() / 1000) + 30;
    cache.setVaultEntry(
      'g',
      'secret-tag',
      { accountId: 'a', clientId: 'c', expiresAt, credentials: { accessToken: 'x', expiresAt } },
      cache.stamp(),
    );
    expect(cache.vaultEntry('g', 'secret-tag')).to.equal(undefined);
  });

  it('hands a grant’s upstream credentials only to a caller with the secret that opened them', function () {
    const cache = new HotPathCache(() => subscription());
    cache.setVaultEntry(
      'g',
      'tag-of-the-grant',
      { accountId: 'a', clientId: 'c', expiresAt: 0, credentials: { accessToken: 'x' } },
      cache.stamp(),
    );
    // A token record for grant g that someone wrote into Redis carries another secret.
    expect(cache.vaultEntry('g', 'tag-of-a-forged-token')).to.equal(undefined);
    expect(cache.vaultEntry('g', 'tag-of-the-grant')?.credentials.accessToken, 'still cached').to.equal('x');
  });
});

// ---------------------------------------------------------------------------------------------

describe('/mcp proxy in front of the SDK MCP server (stateful, with sessions)', function () {
  let stack: Stack;
  let token: string;
  let client: Client;

  before(async function () {
    stack = await startStack();
    const oauth = new TestOAuthClient({ user: 'alice' });
    client = await connectClient(stack.mcpUrl, oauth);
    token = oauth.savedTokens!.access_token;
  });
  after(async function () {
    await client?.close();
    await stack?.close();
  });

  const headers = (sessionId?: string): Record<string, string> => ({
    authorization: `Bearer ${token}`,
    accept: 'application/json, text/event-stream',
    'content-type': 'application/json',
    'mcp-protocol-version': LATEST_PROTOCOL_VERSION,
    ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
  });

  /** A session opened by hand, so each test owns its streams (the SDK allows one GET stream per session). */
  async function openSession(): Promise<string> {
    const init = await fetch(stack.mcpUrl, {
      method: 'POST',
      headers: headers(),
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: {
          protocolVersion: LATEST_PROTOCOL_VERSION,
          capabilities: {},
          clientInfo: { name: 'raw', version: '1' },
        },
      }),
    });
    expect(init.status).to.equal(200);
    const sessionId = init.headers.get('mcp-session-id');
    expect(sessionId).to.be.a('string');
    await init.text();
    const initialized = await fetch(stack.mcpUrl, {
      method: 'POST',
      headers: headers(sessionId!),
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
    expect(initialized.status).to.equal(202);
    return sessionId!;
  }

  it('the session id issued at initialize goes back and forth and keeps the session', async function () {
    const transport = (client as unknown as { transport: { sessionId?: string } }).transport;
    expect(transport.sessionId).to.be.a('string');
    expect(stack.mcp.locals.sessions.has(transport.sessionId!)).to.equal(true);
    const sum = (await client.callTool({ name: 'add', arguments: { a: 1, b: 2 } })) as { content: { text: string }[] };
    expect(sum.content[0]!.text).to.equal('3');
  });

  it('SSE: slow_count’s first notification arrives while the tool still runs', async function () {
    const sessionId = await openSession();
    const res = await fetch(stack.mcpUrl, {
      method: 'POST',
      headers: headers(sessionId),
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 2,
        method: 'tools/call',
        params: { name: 'slow_count', arguments: { count: 2, delayMs: 1000 }, _meta: { progressToken: 'p' } },
      }),
    });
    expect(res.headers.get('content-type')).to.equal('text/event-stream');
    const reader = res.body!.getReader();
    const first = await readUntil(reader, 'step 1 of 2');
    // The result is a second away: had the proxy buffered, step 1 would come with it.
    expect(first).to.not.include('counted 2');
    expect(await readUntil(reader, 'counted 2', first)).to.include('step 2 of 2');
  });

  it('GET opens the session’s SSE stream; DELETE ends the session and its stream', async function () {
    const sessionId = await openSession();
    const stream = await fetch(stack.mcpUrl, { headers: { ...headers(sessionId), accept: 'text/event-stream' } });
    // The head arrives although the server has written no event yet.
    expect(stream.status).to.equal(200);
    expect(stream.headers.get('content-type')).to.equal('text/event-stream');
    expect(stream.headers.get('mcp-session-id')).to.equal(sessionId);
    const reader = stream.body!.getReader();

    const deleted = await fetch(stack.mcpUrl, { method: 'DELETE', headers: headers(sessionId) });
    expect(deleted.status).to.equal(200);
    expect(stack.mcp.locals.sessions.has(sessionId)).to.equal(false);
    for (;;) if ((await reader.read()).done) break;

    const after = await fetch(stack.mcpUrl, {
      method: 'POST',
      headers: headers(sessionId),
      body: JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/list' }),
    });
    expect(after.status).to.equal(404);
  });
});
