import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { createWeb } from '../lib/app.ts';
import { deriveKeyMaterial, ephemeralJwks } from '../lib/auth-server/keys.ts';
import { createProvider } from '../lib/auth-server/provider.ts';
import { loadConfig, type Config } from '../lib/config/index.ts';
import type { IdentityClient } from '../lib/identity/index.ts';
import { createStore, type Store } from '../lib/store/index.ts';
import { log } from '../lib/telemetry/log.ts';
import { createVault } from '../lib/vault/index.ts';
import { createViews } from '../lib/views/index.ts';

/**
 * R18: in production every endpoint is HTTPS only. Heroku's router terminates TLS and tells the
 * dyno which scheme the client used in X-Forwarded-Proto; a request that did not come over TLS
 * has already exposed whatever it carries (codes, tokens, cookies), and answering it would teach
 * the client that plain http works. The web layer is built in-process in production mode, exactly
 * as `start()` wires it, and served on a loopback listener that plays the part of the dyno.
 */

const BASE_URL = 'https://proxy.example';
const HTTPS_REQUIRED = { error: 'invalid_request', error_description: 'HTTPS is required' };
const CHALLENGE_METADATA = `${BASE_URL}/.well-known/oauth-protected-resource/mcp`;

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * node:http rather than fetch: the test decides exactly which headers are sent (fetch may add
 * Origin, and never lets a caller set Host). Host is the public one, as Heroku's router forwards it.
 */
function request(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const sent = { host: new URL(BASE_URL).host, ...headers };
    const req = http.request({ host: '127.0.0.1', port, method, path, headers: sent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

const INITIALIZE = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'https-test', version: '1' } },
});
const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

function expectHttpsRequired(answer: Answer, what: string): void {
  expect(answer.status, `${what}: ${answer.body}`).to.equal(403);
  expect(answer.headers['content-type'], what).to.match(/^application\/json/);
  expect(JSON.parse(answer.body), what).to.deep.equal(HTTPS_REQUIRED);
}

describe('R18: production serves every endpoint over HTTPS only (X-Forwarded-Proto)', function () {
  const prefix = `test-https-${randomBytes(6).toString('hex')}:`;
  let mcpServer: Server;
  /** Every request the MCP server behind the proxy received: none may come from a refused one. */
  let mcpRequests = 0;
  let store: Store;
  let web: Server;
  let port: number;
  let config: Config;

  before(async function () {
    mcpServer = http.createServer((_req, res) => {
      mcpRequests += 1;
      res.writeHead(500).end();
    });
    mcpServer.listen(0, '127.0.0.1');
    await once(mcpServer, 'listening');
    const mcpPort = (mcpServer.address() as AddressInfo).port;

    config = loadConfig({
      NODE_ENV: 'production',
      BASE_URL,
      PORT: '0',
      MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
      MCP_AUTH_PROXY_REDIS_URL: process.env.TEST_REDIS_URL,
      MCP_AUTH_PROXY_REDIS_KEY_PREFIX: prefix,
      OIDC_PROVIDER_JWKS: JSON.stringify(await ephemeralJwks()),
      IDENTITY_SERVER_URL: 'https://idp.example',
      IDENTITY_CLIENT_ID: 'x',
    });
    expect(config.mode).to.equal('production');

    store = createStore(config.redis);
    await store.check();
    const keys = deriveKeyMaterial(config.provider.jwks!);
    const views = createViews(config.provider.viewsPath);
    const provider = createProvider({ config, store, keys, views, log });
    // No request below reaches the upstream identity provider: each is refused, or answered, first.
    const unreachable = (what: string) => () => Promise.reject(new Error(`identity client called: ${what}`));
    const identity: IdentityClient = {
      issuer: 'https://idp.example',
      scope: 'openid',
      authorizationUrl: unreachable('authorizationUrl'),
      exchange: unreachable('exchange'),
      refresh: unreachable('refresh'),
    };
    const vault = createVault({ store, identity, keys: keys.vaultKeys, log });
    const { listener } = createWeb({ config, provider, identity, store, vault, views, keys, log });
    web = http.createServer(listener).listen(0, '127.0.0.1');
    await once(web, 'listening');
    port = (web.address() as AddressInfo).port;
  });

  after(async function () {
    web?.closeAllConnections();
    await new Promise((resolve) => web?.close(resolve));
    mcpServer?.closeAllConnections();
    await new Promise((resolve) => mcpServer?.close(resolve));
    await store?.close();
    const redis = new Redis(process.env.TEST_REDIS_URL!);
    try {
      let cursor = '0';
      do {
        const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
        if (found.length) await redis.del(...found);
        cursor = next;
      } while (cursor !== '0');
    } finally {
      redis.disconnect();
    }
  });

  describe('authorization server metadata (RFC 8414)', function () {
    it('is refused with 403 "HTTPS is required" when the router says nothing of the scheme', async function () {
      expectHttpsRequired(
        await request(port, 'GET', '/.well-known/oauth-authorization-server'),
        'no X-Forwarded-Proto',
      );
    });

    it('is refused when the router says the client used http', async function () {
      const answer = await request(port, 'GET', '/.well-known/oauth-authorization-server', {
        'x-forwarded-proto': 'http',
      });
      expectHttpsRequired(answer, 'X-Forwarded-Proto: http');
    });

    it('is served over https, with the https issuer', async function () {
      const answer = await request(port, 'GET', '/.well-known/oauth-authorization-server', {
        'x-forwarded-proto': 'https',
      });
      expect(answer.status, answer.body).to.equal(200);
      const metadata = JSON.parse(answer.body) as { issuer: string; token_endpoint: string };
      expect(metadata.issuer).to.equal(BASE_URL);
      expect(metadata.token_endpoint).to.equal(`${BASE_URL}/token`);
    });

    it('R9: endpoint URLs follow BASE_URL, not a Host or X-Forwarded-Host the request names', async function () {
      for (const headers of <Record<string, string>[]>[
        { host: 'evil.example', 'x-forwarded-proto': 'https' },
        { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' },
        { host: '127.0.0.1', 'x-forwarded-proto': 'https' },
      ]) {
        for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
          const answer = await request(port, 'GET', path, headers);
          const metadata = JSON.parse(answer.body) as Record<string, string>;
          expect(metadata.issuer).to.equal(BASE_URL);
          for (const endpoint of ['authorization_endpoint', 'token_endpoint', 'registration_endpoint', 'jwks_uri']) {
            expect(metadata[endpoint], `${endpoint} with ${JSON.stringify(headers)}`).to.match(
              new RegExp(`^${BASE_URL}/`),
            );
          }
        }
      }
    });
  });

  describe('/mcp from programs (no Origin: the fast path outside Express)', function () {
    it('is refused with 403 before any token check when the router says nothing of the scheme', async function () {
      const answer = await request(port, 'POST', '/mcp', MCP_HEADERS, INITIALIZE);
      expectHttpsRequired(answer, 'no X-Forwarded-Proto');
      expect(answer.headers['www-authenticate'], 'no challenge that would send a client to log in').to.equal(undefined);
    });

    it('is refused with 403 when the router says the client used http, even with a bearer token', async function () {
      const answer = await request(
        port,
        'POST',
        '/mcp',
        {
          ...MCP_HEADERS,
          'x-forwarded-proto': 'http',
          authorization: `Bearer ${randomBytes(32).toString('base64url')}`,
        },
        INITIALIZE,
      );
      expectHttpsRequired(answer, 'X-Forwarded-Proto: http');
    });

    it('over https without a token answers 401 with the https resource_metadata challenge', async function () {
      const answer = await request(port, 'POST', '/mcp', { ...MCP_HEADERS, 'x-forwarded-proto': 'https' }, INITIALIZE);
      expect(answer.status, answer.body).to.equal(401);
      expect(answer.headers['www-authenticate']).to.match(/^Bearer /);
      expect(answer.headers['www-authenticate']).to.contain(`resource_metadata="${CHALLENGE_METADATA}"`);
    });
  });

  describe('/mcp from browsers (Origin: through Express and CORS)', function () {
    const origin = { origin: BASE_URL };

    it('is refused with 403 when the router says nothing of the scheme', async function () {
      expectHttpsRequired(await request(port, 'POST', '/mcp', { ...MCP_HEADERS, ...origin }, INITIALIZE), 'no proto');
    });

    it('is refused with 403 when the router says the client used http', async function () {
      const answer = await request(
        port,
        'POST',
        '/mcp',
        { ...MCP_HEADERS, ...origin, 'x-forwarded-proto': 'http' },
        INITIALIZE,
      );
      expectHttpsRequired(answer, 'X-Forwarded-Proto: http');
    });

    it('over https without a token answers 401 with the https resource_metadata challenge', async function () {
      const answer = await request(
        port,
        'POST',
        '/mcp',
        { ...MCP_HEADERS, ...origin, 'x-forwarded-proto': 'https' },
        INITIALIZE,
      );
      expect(answer.status, answer.body).to.equal(401);
      expect(answer.headers['www-authenticate']).to.contain(`resource_metadata="${CHALLENGE_METADATA}"`);
    });
  });

  describe('every other endpoint', function () {
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const endpoints: Array<[method: string, path: string, headers?: Record<string, string>, body?: string]> = [
      ['GET', '/.well-known/openid-configuration'],
      ['GET', '/.well-known/oauth-protected-resource'],
      ['GET', '/.well-known/oauth-protected-resource/mcp'],
      ['GET', '/jwks'],
      ['GET', '/auth?client_id=x&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&scope=openid'],
      ['POST', '/token', form, 'grant_type=authorization_code&code=abc&client_id=x'],
      ['POST', '/token/revocation', form, 'token=abc&client_id=x'],
      ['POST', '/reg', { 'content-type': 'application/json' }, '{"redirect_uris":["http://127.0.0.1/cb"]}'],
      ['GET', '/interaction/xyz'],
      ['POST', '/interaction/xyz/confirm', form, 'csrf=abc'],
      ['GET', '/interaction/identity/callback?code=abc&state=def'],
      ['OPTIONS', '/mcp', { origin: BASE_URL, 'access-control-request-method': 'POST' }],
      ['GET', '/nowhere'],
    ];

    for (const [method, path, headers = {}, body] of endpoints) {
      it(`${method} ${path.split('?')[0]} is refused with 403 over http`, async function () {
        expectHttpsRequired(await request(port, method, path, headers, body), 'no X-Forwarded-Proto');
        const answer = await request(port, method, path, { ...headers, 'x-forwarded-proto': 'http' }, body);
        expectHttpsRequired(answer, 'X-Forwarded-Proto: http');
      });
    }

    it('GET /interaction/xyz over https reaches the interaction routes (an unknown interaction, not a 403)', async function () {
      const answer = await request(port, 'GET', '/interaction/xyz', { 'x-forwarded-proto': 'https' });
      expect(answer.status, answer.body).to.not.equal(403);
      expect(answer.body).to.not.contain('HTTPS is required');
    });

    it('no refused request reached the MCP server', function () {
      expect(mcpRequests).to.equal(0);
    });
  });
});
