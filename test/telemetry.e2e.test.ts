import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import { expect } from 'chai';
import type { KoaContextWithOIDC } from 'oidc-provider';
import { ephemeralJwks } from '../lib/auth-server/keys.ts';
import { createExampleMcpServer } from '../lib/dev/example-mcp-server.ts';
import { startDevIdentityProvider, type DevIdentityProvider } from '../lib/dev/identity-provider.ts';
import { DEFAULT_SERVICE_NAME } from '../lib/telemetry/tracing-settings.ts';
import type { TokenResponse } from './helpers/oauth.ts';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './helpers/otlp-receiver.ts';
import { recordCookies, recordTokens, Secrets } from './helpers/secrets.ts';
import { connectClient, freePort, TestOAuthClient } from './helpers/stack.ts';
import { WebProcess } from './helpers/web-process.ts';

/**
 * Traces as an operator gets them: the real proxy process (`npm start`'s command line, tracing
 * configured by OTEL_* alone) exporting to a loopback OTLP/HTTP receiver, through an MCP client's
 * whole login at the development identity provider, a tool call, and a tool call whose upstream
 * token has expired (refresh, replay). Every secret met on the way is then looked for in every
 * byte exported.
 */

/**
 * An MCP client that mirrors the JSON-RPC method and tool name into `Mcp-Method` / `Mcp-Name`
 * headers, as the MCP specification's header mirroring asks: what the proxy names its spans by.
 */
const mirroringFetch: FetchLike = (url, init) => {
  const headers = new Headers(init?.headers);
  if (typeof init?.body === 'string') {
    try {
      const message = JSON.parse(init.body) as { method?: string; params?: { name?: string } };
      if (message.method) headers.set('Mcp-Method', message.method);
      if (message.method === 'tools/call' && message.params?.name) headers.set('Mcp-Name', message.params.name);
    } catch {
      // Not JSON-RPC: nothing to mirror.
    }
  }
  return fetch(url, { ...init, headers });
};

describe('tracing a whole login and tool calls (the real proxy process, OTLP/HTTP)', function () {
  this.timeout(90_000);
  const secrets = new Secrets();
  const apiKey = `hny-${randomBytes(16).toString('hex')}`;
  const prefix = `test-${randomBytes(6).toString('hex')}:`;
  /** The headers of every request the MCP server received. */
  const atMcpServer: IncomingHttpHeaders[] = [];
  let receiver: OtlpReceiver;
  let idp: DevIdentityProvider | undefined;
  let mcpServer: Server | undefined;
  let proxy: WebProcess | undefined;
  let spans: ReceivedSpan[];
  let proxyOutput: string;

  before(async function () {
    receiver = await startOtlpReceiver();
    const port = await freePort();
    const baseUrl = `http://localhost:${port}`;
    idp = await startDevIdentityProvider({
      redirectUris: [`${baseUrl}/interaction/identity/callback`],
      tokenEndpointAuthMethod: 'client_secret_post',
    });
    const upstream = idp;
    upstream.provider.on('authorization.success', (_ctx: KoaContextWithOIDC, out?: Record<string, unknown>) => {
      secrets.add('upstream authorization code', out?.code);
      secrets.add('upstream state', out?.state);
    });
    upstream.provider.on('grant.success', (ctx: KoaContextWithOIDC) => {
      secrets.add('upstream code_verifier', ctx.oidc.params?.code_verifier);
      recordTokens(secrets, 'upstream', ctx.body as TokenResponse);
    });

    // The example MCP server, checking upstream tokens at the identity provider (so an expired
    // one is refused and the proxy refreshes), recording what it is sent.
    const mcp = createExampleMcpServer({ userinfoUrl: `${upstream.issuer}/me` });
    mcpServer = createServer((req, res) => {
      atMcpServer.push(req.headers);
      mcp(req, res);
    });
    mcpServer.listen(0, '127.0.0.1');
    await once(mcpServer, 'listening');

    const jwks = JSON.stringify(await ephemeralJwks());
    secrets.add('configuration IDENTITY_CLIENT_SECRET', upstream.clientSecret);
    proxy = new WebProcess({
      BASE_URL: baseUrl,
      PORT: String(port),
      LOCAL_INSECURE: 'true',
      LOG_LEVEL: 'info',
      APP_NAME: 'traced-app',
      MCP_SERVER_URL: `http://127.0.0.1:${(mcpServer.address() as AddressInfo).port}/mcp`,
      IDENTITY_SERVER_URL: upstream.issuer,
      IDENTITY_CLIENT_ID: upstream.clientId,
      IDENTITY_CLIENT_SECRET: upstream.clientSecret,
      IDENTITY_SCOPE: 'openid profile offline_access',
      OIDC_PROVIDER_JWKS: jwks,
      MCP_AUTH_PROXY_REDIS_URL: process.env.TEST_REDIS_URL,
      MCP_AUTH_PROXY_REDIS_KEY_PREFIX: prefix,
      MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: '3000',
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_HEADERS: `x-honeycomb-team=${apiKey}`,
    });
    await proxy.waitFor(/MCP endpoint/);

    const oauth = new TestOAuthClient({
      user: 'alice',
      metadata: { token_endpoint_auth_method: 'client_secret_post' },
    });
    recordCookies(oauth.browser, secrets);
    const client = await connectClient(`${baseUrl}/mcp`, oauth, { fetch: mirroringFetch });
    secrets.add('client_secret', oauth.info?.client_secret);
    secrets.addToken('authorization code', oauth.lastRedirect?.searchParams.get('code'));
    secrets.add('PKCE code_verifier', oauth.verifier);
    recordTokens(secrets, 'login', oauth.savedTokens!);

    const first = (await client.callTool({ name: 'echo', arguments: { text: 'hello' } })) as {
      content: { text: string }[];
    };
    expect(first.content[0]!.text).to.equal('hello');
    // The upstream token dies: the MCP server refuses it, the proxy refreshes and replays.
    await upstream.expireAccessTokens();
    const second = (await client.callTool({ name: 'echo', arguments: { text: 'again' } })) as {
      content: { text: string }[];
    };
    expect(second.content[0]!.text).to.equal('again');
    await client.close();

    // SIGTERM: main.ts flushes the spans before it exits.
    proxy.child.kill('SIGTERM');
    expect(await proxy.exited, 'proxy exit code').to.equal(0);
    spans = receiver.spans();
    proxyOutput = proxy.stdout + proxy.stderr;
  });

  after(async function () {
    proxy?.kill();
    mcpServer?.closeAllConnections();
    await new Promise((resolve) => mcpServer?.close(resolve));
    await idp?.close();
    await receiver?.close();
  });

  const named = (name: string) => spans.filter((s) => s.name === name);
  const byId = (id: string) => spans.find((s) => s.spanId === id);
  const childrenOf = (span: ReceivedSpan) => spans.filter((s) => s.parentSpanId === span.spanId);

  it('exports before exit, with the service name and the exporter headers from OTEL_*', function () {
    expect(spans.length).to.be.greaterThan(10);
    for (const span of spans) expect(span.resource['service.name'], span.name).to.equal(DEFAULT_SERVICE_NAME);
    expect(receiver.exports.every((e) => e.headers['x-honeycomb-team'] === apiKey)).to.equal(true);
  });

  it('links every span to a parent of its own trace, and starts each trace at a request span', function () {
    for (const span of spans) {
      if (span.parentSpanId === '') {
        expect(span.kind, `root ${span.name}`).to.equal(2);
        continue;
      }
      const parent = byId(span.parentSpanId);
      expect(parent, `parent of ${span.name}`).to.exist;
      expect(parent!.traceId, `trace of ${span.name}`).to.equal(span.traceId);
    }
  });

  it('traces the login: registration, authorization, the callback with its code exchange, the token request', function () {
    expect(named('POST /reg'), 'registration').to.have.length.greaterThan(0);
    expect(
      spans.some((s) => s.name.startsWith('GET /auth')),
      'authorization',
    ).to.equal(true);
    const exchange = named('upstream.code_exchange');
    expect(exchange).to.have.length(1);
    expect(exchange[0]!.attributes).to.include({ outcome: 'ok' });
    const callback = byId(exchange[0]!.parentSpanId)!;
    expect(callback.name).to.equal('GET /interaction/identity/callback');
    expect(callback.attributes).to.include({ 'http.route': '/interaction/identity/callback' });
    // Only the names of the callback's query parameters: never its code or state.
    expect(callback.attributes['url.path']).to.match(/^\/interaction\/identity\/callback\?/);
    expect(callback.attributes['url.path']).to.include('code').and.not.include('=');

    const token = named('POST /token');
    expect(token, 'token requests').to.have.length.greaterThan(0);
    expect(token[0]!.attributes).to.include({ 'http.response.status_code': 200, 'http.route': '/token' });
    const redisUnderToken = token.flatMap(childrenOf).filter((s) => s.scope.includes('ioredis'));
    expect(redisUnderToken, 'Redis commands of the token request').to.have.length.greaterThan(0);
  });

  it('traces a tool call: the request, its MCP call named after the tool, whose context the MCP server got', function () {
    const calls = named('mcp tools/call echo');
    expect(calls.map((c) => c.attributes['mcp.proxy.outcome'])).to.deep.equal(['ok', 'refreshed']);
    const [call] = calls;
    expect(call!.kind).to.equal(3);
    expect(call!.attributes).to.include({
      'mcp.method.name': 'tools/call',
      'gen_ai.tool.name': 'echo',
      'http.response.status_code': 200,
    });
    const request = byId(call!.parentSpanId)!;
    expect(request.name).to.equal('POST /mcp');
    expect(request.attributes).to.include({ 'http.route': '/mcp', 'http.response.status_code': 200 });

    // W3C trace context on to the MCP server, naming the call span: its own spans join the trace.
    const traceparent = `00-${call!.traceId}-${call!.spanId}-01`;
    const received = atMcpServer.find((headers) => headers.traceparent === traceparent);
    expect(received, 'the MCP server got the call span as traceparent').to.exist;
    // And the request's id, as in the proxy's log line for it.
    expect(received!['x-request-id']).to.equal(request.attributes['request.id']);
    const line = proxyOutput
      .split('\n')
      .find((l) => l.includes(`request_id=${String(request.attributes['request.id'])}`));
    expect(line).to.include('msg=request').and.include(`trace_id=${request.traceId}`).and.include('app=traced-app');

    // A cold request asks the store: its Redis commands are the request's children.
    const redisUnderMcp = named('POST /mcp')
      .flatMap(childrenOf)
      .filter((s) => s.scope.includes('ioredis'));
    expect(redisUnderMcp, 'Redis commands of an MCP request').to.have.length.greaterThan(0);
    for (const span of redisUnderMcp) expect(span.attributes['db.query.text']).to.equal(span.name);
  });

  it('traces the upstream refresh inside the tool call that needed it', function () {
    const refreshed = named('mcp tools/call echo')[1]!;
    const refresh = named('upstream.refresh');
    expect(refresh).to.have.length(1);
    expect(refresh[0]!.attributes).to.include({ outcome: 'ok' });
    expect(refresh[0]!.traceId).to.equal(refreshed.traceId);
    expect(refresh[0]!.parentSpanId).to.equal(refreshed.parentSpanId);
  });

  it('logs one line per request, with APP_NAME, the environment and the request id', function () {
    const requestLines = proxyOutput.split('\n').filter((line) => line.includes(' msg=request '));
    expect(requestLines).to.have.length(spans.filter((s) => s.kind === 2).length);
    for (const line of requestLines) {
      expect(line).to.match(
        /^level=info msg=request app=traced-app env=development method=[A-Z]+ path=\S+ status=\d{3} duration_ms=[\d.]+ request_id=\S+ trace_id=[0-9a-f]{32}/,
      );
    }
    // oidc-provider reads the bodies our edge policies looked at as its own: no notice about them.
    expect(proxyOutput).to.not.include('already parsed request body');
  });

  it('exports no token, code, secret, cookie or key', function () {
    expect(secrets.labels()).to.include.members([
      'client_secret',
      'authorization code',
      'login access token',
      'login refresh token',
      'upstream access token',
      'upstream refresh token',
      'upstream authorization code',
    ]);
    const exported = receiver.rawText();
    expect(secrets.leaks([exported], '')).to.deep.equal([]);
    expect(exported.includes(apiKey), 'the exporter API key').to.equal(false);
    expect(exported.includes(prefix), 'a Redis key').to.equal(false);
    // Nor in the proxy's own output.
    expect(secrets.leaks(proxyOutput.split('\n'), '')).to.deep.equal([]);
  });
});

describe('tracing: a collector that never answers does not hold the shutdown', function () {
  this.timeout(60_000);
  let proxy: WebProcess | undefined;
  const sockets: Socket[] = [];
  // Accepts connections and reads nothing back: an export to it never completes on its own.
  const blackHole = createTcpServer((socket) => sockets.push(socket.on('error', () => undefined)));

  after(async function () {
    proxy?.kill();
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => blackHole.close(resolve));
  });

  it('exits 0 soon after MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS, not after the exporter gives up', async function () {
    blackHole.listen(0, '127.0.0.1');
    await once(blackHole, 'listening');
    const port = await freePort();
    proxy = new WebProcess({
      PORT: String(port),
      MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: '1000',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(blackHole.address() as AddressInfo).port}`,
      // The exporter's own limit, far beyond ours: only our deadline can end the flush in time.
      OTEL_EXPORTER_OTLP_TIMEOUT: '30000',
    });
    await proxy.waitFor(/MCP endpoint/);
    // Spans to flush: a few requests.
    for (let i = 0; i < 3; i++)
      await (await fetch(`http://localhost:${port}/.well-known/oauth-authorization-server`)).text();
    const signalled = Date.now();
    proxy.child.kill('SIGTERM');
    expect(await proxy.exited).to.equal(0);
    // 1 s of timeout, the MCP server's stop, and slack for a loaded machine: far below the 30 s
    // the exporter would have waited.
    expect(Date.now() - signalled).to.be.below(15_000);
    expect(sockets.length, 'the proxy tried to export').to.be.greaterThan(0);
  });
});
