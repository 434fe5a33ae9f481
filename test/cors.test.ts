import { expect } from 'chai';
import type { Client, KoaContextWithOIDC } from 'oidc-provider';
import { clientBasedCors } from '../lib/auth-server/cors.ts';
import { createBrowser } from './helpers/browser.ts';
import { authorizationUrl, pkce } from './helpers/oauth.ts';
import { authorizeInBrowser, type Stack, useStack } from './helpers/stack.ts';

/** Where MCP Inspector's page lives, and the redirect URI it registers there. */
const INSPECTOR = 'http://localhost:6274';
const INSPECTOR_CALLBACK = `${INSPECTOR}/oauth/callback`;
const EVIL = 'https://evil.example';

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

describe('CORS for browser-based MCP clients (MCP Inspector)', function () {
  let stack: Stack;
  useStack((started) => (stack = started), { redis: false, env: { MCP_PROXY_ALLOWED_ORIGINS: INSPECTOR } });

  async function send(
    method: string,
    path: string,
    headers: Record<string, string>,
    body?: string | URLSearchParams,
  ): Promise<Answer> {
    const res = await fetch(`${stack.baseUrl}${path}`, { method, headers, body, redirect: 'manual' });
    return { status: res.status, headers: res.headers, body: await res.text() };
  }

  /** A browser's preflight for a cross-origin request with these headers. */
  const preflight = (path: string, origin: string, method: string, requestHeaders: string) =>
    send('OPTIONS', path, {
      origin,
      'access-control-request-method': method,
      'access-control-request-headers': requestHeaders,
    });

  const allowsOrigin = (answer: Answer, origin: string) => {
    const acao = answer.headers.get('access-control-allow-origin');
    return acao === '*' || acao === origin;
  };

  const allowedHeaders = (answer: Answer) =>
    (answer.headers.get('access-control-allow-headers') ?? '')
      .toLowerCase()
      .split(',')
      .map((h) => h.trim());

  async function registerInspector(): Promise<string> {
    const res = await send(
      'POST',
      '/reg',
      { origin: INSPECTOR, 'content-type': 'application/json' },
      JSON.stringify({
        redirect_uris: [INSPECTOR_CALLBACK, `${INSPECTOR_CALLBACK}/debug`],
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        client_name: 'MCP Inspector',
      }),
    );
    expect(res.status).to.equal(201);
    return (JSON.parse(res.body) as { client_id: string }).client_id;
  }

  /** The Inspector's login: the browser part, then the code exchange from the Inspector's page. */
  async function inspectorLogin(clientId: string): Promise<{ access_token: string; refresh_token: string }> {
    const { verifier, challenge } = pkce();
    const url = authorizationUrl(stack.baseUrl, clientId, INSPECTOR_CALLBACK, challenge, {
      scope: 'openid offline_access',
      state: 'inspector-state',
    });
    const back = await authorizeInBrowser(createBrowser(), url, INSPECTOR_CALLBACK);
    const exchanged = await send(
      'POST',
      '/token',
      { origin: INSPECTOR, 'content-type': 'application/x-www-form-urlencoded' },
      new URLSearchParams({
        grant_type: 'authorization_code',
        code: back.searchParams.get('code')!,
        code_verifier: verifier,
        redirect_uri: INSPECTOR_CALLBACK,
        client_id: clientId,
      }),
    );
    expect(exchanged.status, exchanged.body).to.equal(200);
    expect(exchanged.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
    return JSON.parse(exchanged.body) as { access_token: string; refresh_token: string };
  }

  describe('discovery documents: any origin, preflight included (the SDK sends MCP-Protocol-Version)', function () {
    const documents = [
      '/.well-known/oauth-protected-resource/mcp',
      '/.well-known/oauth-protected-resource',
      '/.well-known/oauth-authorization-server',
      '/.well-known/openid-configuration',
      '/jwks',
    ];
    for (const path of documents) {
      it(path, async function () {
        const pre = await preflight(path, INSPECTOR, 'GET', 'mcp-protocol-version');
        expect(pre.status, 'preflight').to.be.oneOf([200, 204]);
        expect(allowsOrigin(pre, INSPECTOR), 'preflight allows the origin').to.equal(true);
        expect(allowedHeaders(pre)).to.include('mcp-protocol-version');
        const get = await send('GET', path, { origin: INSPECTOR, 'mcp-protocol-version': '2025-06-18' });
        expect(get.status).to.equal(200);
        expect(allowsOrigin(get, INSPECTOR), 'response readable cross-origin').to.equal(true);
      });
    }
  });

  describe('registration (RFC 7591): open to any origin', function () {
    it('answers the preflight and the registration with CORS headers', async function () {
      const pre = await preflight('/reg', INSPECTOR, 'POST', 'content-type');
      expect(pre.status).to.equal(204);
      expect(allowsOrigin(pre, INSPECTOR)).to.equal(true);
      expect(pre.headers.get('access-control-allow-methods')).to.contain('POST');
      expect(allowedHeaders(pre)).to.include('content-type');
      expect(pre.headers.get('access-control-allow-credentials')).to.equal(null);
      await registerInspector();
    });

    it('a refused registration is readable too (the page must see the error)', async function () {
      const res = await send(
        'POST',
        '/reg',
        { origin: INSPECTOR, 'content-type': 'application/json' },
        JSON.stringify({ redirect_uris: ['javascript:alert(1)'] }),
      );
      expect(res.status).to.equal(400);
      expect(allowsOrigin(res, INSPECTOR)).to.equal(true);
    });
  });

  describe('token and revocation endpoints: the client’s own origin only', function () {
    let clientId: string;
    let tokens: { access_token: string; refresh_token: string };

    before(async function () {
      clientId = await registerInspector();
      tokens = await inspectorLogin(clientId);
    });

    for (const path of ['/token', '/token/revocation']) {
      it(`answers the preflight of ${path}`, async function () {
        const pre = await preflight(path, INSPECTOR, 'POST', 'content-type,mcp-protocol-version');
        expect(pre.status).to.equal(204);
        expect(pre.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
        expect(pre.headers.get('access-control-allow-methods')).to.contain('POST');
        expect(allowedHeaders(pre)).to.include.members(['content-type', 'mcp-protocol-version']);
      });
    }

    it('a refresh from the page of the client’s redirect URI is readable', async function () {
      const res = await send(
        'POST',
        '/token',
        { origin: INSPECTOR, 'content-type': 'application/x-www-form-urlencoded' },
        new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: clientId }),
      );
      expect(res.status, res.body).to.equal(200);
      expect(res.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
      tokens = JSON.parse(res.body) as typeof tokens;
    });

    it('the same request from another origin is refused and not readable', async function () {
      const res = await send(
        'POST',
        '/token',
        { origin: EVIL, 'content-type': 'application/x-www-form-urlencoded' },
        new URLSearchParams({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: clientId }),
      );
      expect(res.status).to.equal(400);
      expect(JSON.parse(res.body)).to.include({ error: 'invalid_request' });
      expect(res.headers.get('access-control-allow-origin')).to.equal(null);
    });

    it('revocation from another origin is refused; from the client’s own origin it works', async function () {
      const params = () => new URLSearchParams({ token: tokens.refresh_token, client_id: clientId });
      const evil = await send(
        'POST',
        '/token/revocation',
        { origin: EVIL, 'content-type': 'application/x-www-form-urlencoded' },
        params(),
      );
      expect(evil.status).to.equal(400);
      expect(evil.headers.get('access-control-allow-origin')).to.equal(null);
      const own = await send(
        'POST',
        '/token/revocation',
        { origin: INSPECTOR, 'content-type': 'application/x-www-form-urlencoded' },
        params(),
      );
      expect(own.status).to.equal(200);
      expect(own.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
    });
  });

  describe('/mcp: allowed origins only (R6, MCP_PROXY_ALLOWED_ORIGINS)', function () {
    it('answers an allowed origin’s preflight without a token', async function () {
      const pre = await preflight(
        '/mcp',
        INSPECTOR,
        'POST',
        'authorization,content-type,mcp-protocol-version,mcp-session-id,last-event-id',
      );
      expect(pre.status).to.equal(204);
      expect(pre.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
      expect(pre.headers.get('vary')).to.match(/origin/i);
      const methods = pre.headers.get('access-control-allow-methods') ?? '';
      for (const method of ['GET', 'POST', 'DELETE']) expect(methods).to.contain(method);
      expect(allowedHeaders(pre)).to.include.members([
        'authorization',
        'content-type',
        'mcp-protocol-version',
        'mcp-session-id',
        'last-event-id',
      ]);
      expect(pre.headers.get('access-control-allow-credentials')).to.equal(null);
    });

    it('refuses another origin’s preflight (403, no CORS headers)', async function () {
      const pre = await preflight('/mcp', EVIL, 'POST', 'authorization,content-type');
      expect(pre.status).to.equal(403);
      expect(pre.headers.get('access-control-allow-origin')).to.equal(null);
    });

    it('a 401 to an allowed origin is readable, WWW-Authenticate exposed', async function () {
      const res = await send(
        'POST',
        '/mcp',
        { origin: INSPECTOR, 'content-type': 'application/json' },
        '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      );
      expect(res.status).to.equal(401);
      expect(res.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
      const exposed = (res.headers.get('access-control-expose-headers') ?? '').toLowerCase();
      for (const header of ['www-authenticate', 'mcp-session-id', 'mcp-protocol-version'])
        expect(exposed).to.contain(header);
    });

    it('an authenticated call from an allowed origin gets its Mcp-Session-Id readable', async function () {
      const { access_token } = await inspectorLogin(await registerInspector());
      const res = await send(
        'POST',
        '/mcp',
        {
          origin: INSPECTOR,
          authorization: `Bearer ${access_token}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
        },
        JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'initialize',
          params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'inspector', version: '1' } },
        }),
      );
      expect(res.status, res.body).to.equal(200);
      expect(res.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
      expect(res.headers.get('mcp-session-id')).to.be.a('string');
      expect((res.headers.get('access-control-expose-headers') ?? '').toLowerCase()).to.contain('mcp-session-id');
    });

    it('another origin gets 403 and no CORS headers (R6)', async function () {
      const res = await send(
        'POST',
        '/mcp',
        { origin: EVIL, 'content-type': 'application/json' },
        '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      );
      expect(res.status).to.equal(403);
      expect(res.headers.get('access-control-allow-origin')).to.equal(null);
    });
  });

  describe('refusals made before oidc-provider are readable too (not "Failed to fetch")', function () {
    const form = { 'content-type': 'application/x-www-form-urlencoded' };

    it('a foreign resource at the token endpoint: invalid_target, readable by the calling page', async function () {
      const res = await send(
        'POST',
        '/token',
        { origin: INSPECTOR, ...form },
        new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: 'not-looked-at',
          client_id: 'any',
          resource: 'https://other.example/mcp',
        }),
      );
      expect(res.status).to.equal(400);
      expect(JSON.parse(res.body)).to.include({ error: 'invalid_target' });
      expect(res.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
      expect(res.headers.get('vary')).to.match(/origin/i);
    });

    it('an oversized token request: 413, readable', async function () {
      const res = await send(
        'POST',
        '/token',
        { origin: INSPECTOR, ...form },
        new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'x'.repeat(70_000) }),
      );
      expect(res.status).to.equal(413);
      expect(JSON.parse(res.body)).to.include({ error: 'invalid_request' });
      expect(res.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
    });

    it('an undecodable registration path: 400 in JSON, readable', async function () {
      const res = await send('GET', '/reg/%ff', { origin: INSPECTOR });
      expect(res.status).to.equal(400);
      expect(JSON.parse(res.body)).to.include({ error: 'invalid_request' });
      expect(res.headers.get('access-control-allow-origin')).to.equal('*');
    });

    it('an undecodable /mcp path: readable by an allowed origin, not by another (R6)', async function () {
      const allowed = await send('POST', '/mcp/%ff', { origin: INSPECTOR });
      expect(allowed.status).to.equal(400);
      expect(JSON.parse(allowed.body)).to.include({ error: 'invalid_request' });
      expect(allowed.headers.get('access-control-allow-origin')).to.equal(INSPECTOR);
      const evil = await send('POST', '/mcp/%ff', { origin: EVIL });
      expect(evil.status).to.equal(400);
      expect(evil.headers.get('access-control-allow-origin')).to.equal(null);
    });

    it('pages never get CORS, refused or not', async function () {
      const res = await send('GET', '/interaction/%ff', { origin: INSPECTOR });
      expect(res.status).to.equal(400);
      expect(res.headers.get('access-control-allow-origin')).to.equal(null);
    });
  });

  describe('never on pages a user navigates to', function () {
    it('no CORS on /interaction/* (consent page and callback), preflight or not', async function () {
      const clientId = await registerInspector();
      const url = authorizationUrl(stack.baseUrl, clientId, INSPECTOR_CALLBACK);
      const browser = createBrowser();
      const consent = await browser.follow(url);
      expect(consent.body, 'reached the consent page').to.contain('Allow and sign in');
      const interactionPath = new URL(consent.url).pathname;
      expect(interactionPath).to.match(/^\/interaction\//);

      const paths = [interactionPath, '/interaction/identity/callback?code=x&state=y', '/interaction/unknown-uid'];
      for (const path of paths) {
        for (const answer of [
          await send('GET', path, { origin: INSPECTOR }),
          await preflight(path, INSPECTOR, 'POST', 'content-type'),
          await preflight(path, INSPECTOR, 'GET', 'mcp-protocol-version'),
        ]) {
          expect(answer.headers.get('access-control-allow-origin'), path).to.equal(null);
          expect(answer.headers.get('access-control-allow-credentials'), path).to.equal(null);
        }
      }
      const auth = await send('GET', `/auth?${new URL(url).search.slice(1)}`, { origin: INSPECTOR });
      expect(auth.headers.get('access-control-allow-origin'), '/auth').to.equal(null);
    });
  });

  describe('clientBasedCors (oidc-provider clientBasedCORS)', function () {
    const client = (redirectUris: string[]) => ({ redirectUris }) as unknown as Client;
    const ctx = {} as KoaContextWithOIDC;

    it('allows exactly the origins of the client’s redirect URIs', function () {
      const inspector = client([INSPECTOR_CALLBACK, 'https://app.example.com/cb']);
      expect(clientBasedCors(ctx, INSPECTOR, inspector)).to.equal(true);
      expect(clientBasedCors(ctx, 'https://app.example.com', inspector)).to.equal(true);
      expect(clientBasedCors(ctx, 'http://localhost:6275', inspector), 'other port').to.equal(false);
      expect(clientBasedCors(ctx, 'https://localhost:6274', inspector), 'other scheme').to.equal(false);
      expect(clientBasedCors(ctx, EVIL, inspector)).to.equal(false);
    });

    it('never allows the opaque origin `null` (sandboxed frames, file:, custom schemes)', function () {
      expect(clientBasedCors(ctx, 'null', client(['cursor://anysphere.cursor-mcp/oauth/callback']))).to.equal(false);
      expect(clientBasedCors(ctx, 'null', client([INSPECTOR_CALLBACK]))).to.equal(false);
    });
  });
});
