import { expect } from 'chai';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { connectClient, freePort, startStack, TestOAuthClient, type Stack } from './helpers/stack.ts';

/**
 * IDENTITY_CALLBACK_PATH reaches both ends: the redirect URI sent to the identity provider (which
 * only accepts the one registered) and the route that receives the browser coming back.
 */
describe('configuration: a login through a non-default IDENTITY_CALLBACK_PATH', function () {
  const callbackPath = '/oauth/identity-done';
  let stack: Stack;
  let baseUrl: string;
  let client: Client | undefined;

  before(async function () {
    const port = await freePort();
    baseUrl = `http://localhost:${port}`;
    stack = await startStack({
      // The upstream knows only the custom path: a redirect URI on the default one is refused there.
      idp: { redirectUris: [`${baseUrl}${callbackPath}`] },
      env: { PORT: String(port), BASE_URL: baseUrl, IDENTITY_CALLBACK_PATH: callbackPath },
    });
  });

  after(async function () {
    await client?.close();
    await stack?.close();
  });

  it('logs in upstream through the configured path and calls a tool', async function () {
    expect(stack.proxy.config.callbackPath).to.equal(callbackPath);
    const oauth = new TestOAuthClient({ user: 'carol' });
    client = await connectClient(`${baseUrl}/mcp`, oauth);
    const result = (await client.callTool({ name: 'whoami', arguments: {} })) as { content: { text: string }[] };
    expect(JSON.parse(result.content[0]!.text)).to.include({ userId: 'carol' });
  });

  it('serves the callback on the configured path only', async function () {
    const custom = await fetch(`${baseUrl}${callbackPath}`, { redirect: 'manual' });
    const standard = await fetch(`${baseUrl}/interaction/identity/callback`, { redirect: 'manual' });
    // Without a state the callback handler answers with its own error page; elsewhere nothing answers.
    expect(custom.status).to.equal(400);
    expect(standard.status).to.equal(404);
  });
});
