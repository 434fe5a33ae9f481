import { expect } from 'chai';
import { codeFlow, mcpInitialize, registerClient, tokenRequest } from './helpers/oauth.ts';
import { type Stack, useStack } from './helpers/stack.ts';

/**
 * Each popular MCP client, doing registration and the authorization code flow the way it really
 * does them, quirks included (issue 3's client table; README "Compatibility").
 */
describe('client profiles', function () {
  let stack: Stack;
  useStack((started) => (stack = started), { redis: false });

  async function assertWorks(accessToken: string) {
    const res = await mcpInitialize(stack.mcpUrl, accessToken);
    expect(res.status, await res.clone().text()).to.equal(200);
  }

  it('Claude.ai / Claude Desktop: public client registering client_secret_post, refresh without scope', async function () {
    const redirectUri = 'https://claude.ai/api/mcp/auth_callback';
    const reg = await registerClient(stack.baseUrl, {
      client_name: 'Claude',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
      scope: 'openid offline_access',
    });
    expect(reg.status).to.equal(201);
    expect(reg.body.client_secret).to.be.a('string');
    const { redirect, token } = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId: reg.body.client_id!,
      clientSecret: reg.body.client_secret,
      redirectUri,
      scope: 'openid offline_access',
      state: 'claude-state-123456',
      resource: stack.mcpUrl,
    });
    expect(redirect.origin + redirect.pathname).to.equal(redirectUri);
    expect(token.status).to.equal(200);
    await assertWorks(token.body.access_token);
    const refreshed = await tokenRequest(stack.baseUrl, {
      grant_type: 'refresh_token',
      refresh_token: token.body.refresh_token!,
      client_id: reg.body.client_id!,
      client_secret: reg.body.client_secret!,
    });
    expect(refreshed.status, JSON.stringify(refreshed.body)).to.equal(200);
    await assertWorks(refreshed.body.access_token);
  });

  it('Cursor: cursor://, https and loopback redirects together with application_type web; no state', async function () {
    const reg = await registerClient(stack.baseUrl, {
      client_name: 'Cursor',
      application_type: 'web',
      redirect_uris: [
        'cursor://anysphere.cursor-mcp/oauth/callback',
        'https://cursor.com/oauth/callback',
        'http://localhost:8787/callback',
      ],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    });
    expect(reg.status, JSON.stringify(reg.body)).to.equal(201);
    const { redirect, token } = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId: reg.body.client_id!,
      redirectUri: 'cursor://anysphere.cursor-mcp/oauth/callback',
    });
    expect(redirect.protocol).to.equal('cursor:');
    expect(redirect.searchParams.has('state')).to.equal(false);
    expect(token.status).to.equal(200);
    await assertWorks(token.body.access_token);
  });

  it('VS Code: registers http://127.0.0.1:33418/ and http://127.0.0.1/, then uses a random port', async function () {
    const reg = await registerClient(stack.baseUrl, {
      client_name: 'Visual Studio Code',
      redirect_uris: ['http://127.0.0.1:33418/', 'http://127.0.0.1/'],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
    });
    expect(reg.status, JSON.stringify(reg.body)).to.equal(201);
    const { token } = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId: reg.body.client_id!,
      redirectUri: 'http://127.0.0.1:54873/',
      state: 'vscode',
      resource: stack.mcpUrl,
    });
    expect(token.status).to.equal(200);
    await assertWorks(token.body.access_token);
  });

  it('Codex CLI: resource with a trailing slash, random loopback port', async function () {
    const reg = await registerClient(stack.baseUrl, {
      client_name: 'Codex',
      redirect_uris: ['http://127.0.0.1/callback'],
      token_endpoint_auth_method: 'none',
    });
    expect(reg.status, JSON.stringify(reg.body)).to.equal(201);
    const { token } = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId: reg.body.client_id!,
      redirectUri: 'http://127.0.0.1:41234/callback',
      state: 'codex',
      resource: `${stack.mcpUrl}/`,
      tokenResource: `${stack.mcpUrl}/`,
    });
    expect(token.status, JSON.stringify(token.body)).to.equal(200);
    await assertWorks(token.body.access_token);
  });

  it('MCP Inspector / mcp-remote: path-suffixed PRM first, short state, localhost callback on any port', async function () {
    const prm = await fetch(`${stack.baseUrl}/.well-known/oauth-protected-resource/mcp`);
    expect(prm.status).to.equal(200);
    const reg = await registerClient(stack.baseUrl, {
      client_name: 'MCP Inspector',
      redirect_uris: ['http://localhost:6274/oauth/callback'],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
    });
    expect(reg.status).to.equal(201);
    for (const redirectUri of ['http://localhost:6274/oauth/callback', 'http://localhost:3334/oauth/callback']) {
      const { token } = await codeFlow({
        baseUrl: stack.baseUrl,
        clientId: reg.body.client_id!,
        redirectUri,
        state: 'x',
        scope: 'openid',
        resource: stack.mcpUrl,
      });
      expect(token.status).to.equal(200);
      await assertWorks(token.body.access_token);
    }
  });
});
