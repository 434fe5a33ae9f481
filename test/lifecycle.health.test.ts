import { expect } from 'chai';
import { freePort, startStack, type Stack } from './helpers/stack.ts';

/** The health routes once the proxy runs: no token, no secrets, and only GET and HEAD. */
describe('health routes', function () {
  let stack: Stack;
  let unreachableMcp: Stack;

  before(async function () {
    stack = await startStack();
    // MCP_SERVER_URL names a server that runs elsewhere and is down: the proxy serves, /readyz says so.
    const nobody = await freePort();
    unreachableMcp = await startStack({ env: { MCP_SERVER_URL: `http://127.0.0.1:${nobody}/mcp` } });
  });
  after(async function () {
    await stack?.close();
    await unreachableMcp?.close();
  });

  it('GET /readyz is 200 with every check ok, and HEAD answers the same without a body', async function () {
    const get = await fetch(`${stack.baseUrl}/readyz?verbose=1`);
    expect(get.status).to.equal(200);
    expect(get.headers.get('cache-control')).to.equal('no-store');
    expect(await get.json()).to.deep.equal({
      status: 'ready',
      checks: { store: { state: 'ok' }, identity_provider: { state: 'ok' }, mcp_server: { state: 'ok' } },
    });
    const head = await fetch(`${stack.baseUrl}/healthz`, { method: 'HEAD' });
    expect(head.status).to.equal(200);
    expect(await head.text()).to.equal('');
  });

  it('other methods get 405 with Allow', async function () {
    for (const path of ['/healthz', '/readyz']) {
      const response = await fetch(`${stack.baseUrl}${path}`, { method: 'POST' });
      expect(response.status, path).to.equal(405);
      expect(response.headers.get('allow'), path).to.equal('GET, HEAD');
    }
  });

  it('a path that only begins like a health route is not one', async function () {
    for (const path of ['/healthzz', '/readyz/more']) {
      const response = await fetch(`${stack.baseUrl}${path}`);
      expect(response.status, path).to.equal(404);
      expect(await response.text(), path).to.not.include('"status"');
    }
  });

  it('an MCP server that does not accept connections makes /readyz 503 without naming where it is', async function () {
    const response = await fetch(`${unreachableMcp.baseUrl}/readyz`);
    expect(response.status).to.equal(503);
    expect(response.headers.get('retry-after')).to.match(/^\d+$/);
    const body = await response.text();
    expect(JSON.parse(body).checks.mcp_server).to.deep.equal({ state: 'failing' });
    expect(body).to.not.contain('127.0.0.1');
    // The rest of the proxy serves: only `/mcp` depends on that server.
    expect((await fetch(`${unreachableMcp.baseUrl}/.well-known/oauth-authorization-server`)).status).to.equal(200);
  });
});
