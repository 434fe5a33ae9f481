import { expect } from 'chai';
import type { EchoUpstream } from './helpers/echo-upstream.ts';
import { INSPECTOR, json, send, startEchoStack, values } from './helpers/proxy.ts';
import type { Stack, TestOAuthClient } from './helpers/stack.ts';

describe('/mcp proxy: headers, paths and origins, in front of a purpose-built upstream', function () {
  let echo: EchoUpstream;
  let stack: Stack;
  let token: string;
  let oauth: TestOAuthClient;
  let bearer: string[];

  before(async function () {
    ({ echo, stack, oauth, token, bearer } = await startEchoStack());
  });
  after(async function () {
    await stack?.close();
    await echo?.close();
  });

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

    it('a request without an id gets one of ours: the same upstream and back, once', async function () {
      const res = await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') });
      expect(res.status).to.equal(200);
      const [id, ...more] = values(res.rawHeaders, 'x-request-id');
      expect(more).to.deep.equal([]);
      expect(id).to.match(/^[0-9a-f-]{36}$/);
      expect(values(json(res).rawHeaders, 'x-request-id')).to.deep.equal([id]);
    });

    it('the answers the proxy makes itself carry the request id too, once', async function () {
      const refused = await send(stack.mcpUrl, { headers: ['X-Request-Id', 'client-chosen-id-2'] });
      expect(refused.status).to.equal(401);
      expect(values(refused.rawHeaders, 'x-request-id')).to.deep.equal(['client-chosen-id-2']);
      const generated = await send(stack.mcpUrl, { headers: ['Authorization', 'Bearer not-ours'] });
      expect(generated.status).to.equal(401);
      expect(values(generated.rawHeaders, 'x-request-id')).to.have.length(1);
    });

    it('a browser’s call (through Express, with CORS) carries the request id once, with the CORS headers', async function () {
      const res = await send(stack.mcpUrl, {
        headers: [...bearer, 'Origin', INSPECTOR, 'X-Request-Id', 'client-chosen-id-3'],
        body: Buffer.from('{}'),
      });
      expect(res.status).to.equal(200);
      expect(values(res.rawHeaders, 'x-request-id')).to.deep.equal(['client-chosen-id-3']);
      expect(values(res.rawHeaders, 'access-control-allow-origin')).to.deep.equal([INSPECTOR]);
      expect(values(json(res).rawHeaders, 'x-request-id')).to.deep.equal(['client-chosen-id-3']);
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
