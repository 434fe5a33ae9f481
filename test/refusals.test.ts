import { expect } from 'chai';
import { captureLogs } from '../lib/telemetry/log.ts';
import { registerClient, tokenRequest } from './helpers/oauth.ts';
import { startStack, type Stack } from './helpers/stack.ts';

/**
 * Malformed and refused requests (R16, R17): a client's mistake is a 4xx with a reason, in JSON on
 * API routes and as the error page on routes a browser navigates to; never a 500 or a stack
 * trace; and every refusal leaves exactly one log line saying why, without the secret it carried.
 */
describe('malformed and refused requests', function () {
  let stack: Stack;
  let lines: string[];
  let restore: (() => void) | undefined;

  before(async function () {
    stack = await startStack({ redis: false });
  });
  after(async function () {
    await stack?.close();
  });
  beforeEach(function () {
    lines = [];
    restore = captureLogs((line) => lines.push(line));
  });
  afterEach(function () {
    restore?.();
  });

  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${stack.baseUrl}${path}`, { headers, redirect: 'manual' });
  const linesWith = (text: string) => lines.filter((line) => line.includes(text));

  function expectNoStackTrace(): void {
    expect(lines.join('\n')).to.not.match(/\n\s+at |level=error/);
  }

  describe('paths that are not valid percent-encoding', function () {
    for (const path of ['/interaction/%ff', '/interaction/%ff/confirm', '/auth/%ff']) {
      it(`${path}: a 400 error page`, async function () {
        const res = await get(path, { accept: 'text/html' });
        expect(res.status).to.equal(400);
        expect(res.headers.get('content-type')).to.match(/text\/html/);
        const page = await res.text();
        expect(page).to.contain('not valid percent-encoding');
        expect(page).to.contain('invalid_request');
        expectNoStackTrace();
        expect(linesWith('msg="request refused"')).to.have.length(1);
      });
    }

    for (const [method, path] of [
      ['GET', '/reg/%ff'],
      ['POST', '/reg/%E0%A4%A'],
      ['POST', '/token/%ff'],
      ['GET', '/.well-known/oauth-protected-resource/%ff'],
    ] as const) {
      it(`${method} ${path}: 400 invalid_request in JSON`, async function () {
        const res = await fetch(`${stack.baseUrl}${path}`, { method });
        expect(res.status).to.equal(400);
        expect(res.headers.get('cache-control')).to.equal('no-store');
        expect(await res.json()).to.deep.equal({
          error: 'invalid_request',
          error_description: 'The request path is not valid percent-encoding.',
        });
        expectNoStackTrace();
        const logged = linesWith('msg="request refused"');
        expect(logged).to.have.length(1);
        expect(logged[0]).to.match(/status=400 error=invalid_request description=".*percent-encoding\."/);
      });
    }
  });

  describe('every refusal at the authorization server is logged once, with its reason', function () {
    it('our own, before oidc-provider: a foreign resource at the token endpoint', async function () {
      const secret = 'refresh-token-value-never-logged';
      const res = await tokenRequest(stack.baseUrl, {
        grant_type: 'refresh_token',
        refresh_token: secret,
        resource: 'https://other.example/mcp',
      });
      expect(res.status).to.equal(400);
      expect(res.body.error).to.equal('invalid_target');
      const logged = linesWith('refused');
      expect(logged).to.have.length(1);
      expect(logged[0]).to.match(/msg="request refused" .*error=invalid_target description="resource must be /);
      expect(lines.join('\n')).to.not.contain(secret);
    });

    it('oidc-provider’s token endpoint: invalid_grant with its detail, the refresh token not logged', async function () {
      const client = await registerClient(stack.baseUrl, {
        redirect_uris: ['http://127.0.0.1/cb'],
        token_endpoint_auth_method: 'none',
      });
      lines.length = 0;
      const secret = 'an-unknown-refresh-token-value';
      const res = await tokenRequest(stack.baseUrl, {
        grant_type: 'refresh_token',
        refresh_token: secret,
        client_id: client.body.client_id!,
      });
      expect(res.status).to.equal(400);
      expect(res.body.error).to.equal('invalid_grant');
      const logged = linesWith('refused');
      expect(logged).to.have.length(1);
      expect(logged[0]).to.match(/msg="oauth request refused" .*event=grant\.error error=invalid_grant/);
      expect(logged[0]).to.contain(`client_id=${client.body.client_id}`);
      expect(logged[0]).to.match(/detail="refresh token not found"/);
      expect(lines.join('\n')).to.not.contain(secret);
    });

    it('oidc-provider’s registration read: an unknown client', async function () {
      const res = await fetch(`${stack.baseUrl}/reg/unknown-client`, {
        headers: { authorization: 'Bearer not-a-registration-access-token' },
      });
      expect(res.status).to.equal(401);
      const logged = linesWith('refused');
      expect(logged).to.have.length(1);
      expect(logged[0]).to.match(/event=registration_read\.error error=invalid_token/);
      expect(lines.join('\n')).to.not.contain('not-a-registration-access-token');
    });

    it('oidc-provider’s authorization endpoint: an unknown client, shown as a page', async function () {
      const res = await get('/auth?client_id=nobody&response_type=code&redirect_uri=https%3A%2F%2Fx.example%2Fcb');
      expect(res.status).to.equal(400);
      const logged = linesWith('refused');
      expect(logged).to.have.length(1);
      expect(logged[0]).to.match(/event=authorization\.error error=invalid_client/);
    });

    it('a malformed registration body', async function () {
      const res = await fetch(`${stack.baseUrl}/reg`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"software_statement": "do-not-log-me", "redirect_uris": [',
      });
      expect(res.status).to.equal(400);
      expect(await res.json()).to.deep.equal({
        error: 'invalid_client_metadata',
        error_description: 'The request body is not parseable.',
      });
      const logged = linesWith('refused');
      expect(logged).to.have.length(1);
      expect(logged[0]).to.match(/msg="request refused" .*status=400 error=invalid_client_metadata/);
      expect(lines.join('\n')).to.not.contain('do-not-log-me');
      expectNoStackTrace();
    });
  });
});
