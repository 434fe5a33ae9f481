import { expect } from 'chai';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';
import { readUntil } from './helpers/proxy.ts';
import { connectClient, startStack, TestOAuthClient, type Stack } from './helpers/stack.ts';

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
