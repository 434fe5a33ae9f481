import { connect, type Socket } from 'node:net';
import { expect } from 'chai';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { connectClient, freePortPair, TestOAuthClient } from './helpers/stack.ts';
import { canConnect, eventually, isAlive, WebProcess } from './helpers/web-process.ts';

/**
 * SIGTERM on a deploy, through the real entry point in development mode (embedded identity
 * provider, the example MCP server as its child process): nothing in flight is dropped.
 */

/** A keep-alive connection that has finished one request and sits idle; resolves when the server closes it. */
async function idleConnection(port: number): Promise<{ socket: Socket; closed: Promise<void> }> {
  const socket = connect({ host: '127.0.0.1', port });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const answered = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  socket.write(`GET /healthz HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: keep-alive\r\n\r\n`);
  await answered;
  return { socket, closed };
}

interface Running {
  proxy: WebProcess;
  port: number;
  mcpUrl: string;
  oauth: TestOAuthClient;
  client: Client;
  mcpPid: number;
}

async function startProxy(env: NodeJS.ProcessEnv = {}): Promise<Running> {
  const port = await freePortPair();
  const proxy = new WebProcess({ PORT: String(port), ...env });
  await proxy.waitFor(/MCP endpoint/);
  const mcpUrl = `http://localhost:${port}/mcp`;
  const oauth = new TestOAuthClient({ user: 'dev' });
  const client = await connectClient(mcpUrl, oauth);
  return { proxy, port, mcpUrl, oauth, client, mcpPid: proxy.mcpServerPid()! };
}

describe('shutdown on SIGTERM (lib/main.ts)', function () {
  this.timeout(90_000);
  const running: Running[] = [];
  afterEach(async () => {
    for (const { proxy, client } of running.splice(0)) {
      await client.close().catch(() => undefined);
      proxy.kill();
    }
  });

  it('lets a streaming tool call finish, closes idle connections at once, stops the MCP server, exits 0', async function () {
    // The SDK client keeps a GET stream open too: it is ended at this deadline.
    const run = await startProxy({ MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: '8000' });
    running.push(run);
    const { proxy, port, client, mcpPid } = run;
    const idle = await idleConnection(port);

    let progressed!: () => void;
    const firstStep = new Promise<void>((resolve) => (progressed = resolve));
    let finished = false;
    const call = client
      .callTool({ name: 'slow_count', arguments: { count: 6, delayMs: 500 } }, undefined, {
        onprogress: () => progressed(),
      })
      .finally(() => (finished = true));
    await firstStep;
    proxy.child.kill('SIGTERM');

    await idle.closed;
    expect(finished, 'the idle connection closed before the call ended').to.equal(false);
    await eventually(async () => !(await canConnect(port)));
    expect(finished, 'new connections refused while the call runs').to.equal(false);

    const result = (await call) as { content: { text: string }[] };
    expect(result.content[0]!.text).to.equal('counted 6');
    expect(await proxy.exited).to.equal(0);
    await eventually(() => !isAlive(mcpPid));
    expect(proxy.stderr).to.not.match(/\n\s+at /);
  });

  it('ends a call still running at the deadline cleanly, then exits 0', async function () {
    const run = await startProxy({ MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: '1000' });
    running.push(run);
    const { proxy, mcpUrl, oauth, client, mcpPid } = run;
    const response = await fetch(mcpUrl, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${oauth.savedTokens!.access_token}`,
        'mcp-session-id': (client.transport as StreamableHTTPClientTransport).sessionId!,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 99,
        method: 'tools/call',
        params: { name: 'slow_count', arguments: { count: 20, delayMs: 1000 } },
      }),
    });
    expect(response.headers.get('content-type')).to.match(/^text\/event-stream/);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    while (!text.includes('step 1 of 20')) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended early: ${text}`);
      text += decoder.decode(value, { stream: true });
    }
    proxy.child.kill('SIGTERM');

    // A clean end: the stream finishes (no network error), without the result it never got.
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    expect(text).to.not.contain('counted 20');
    expect(await proxy.exited).to.equal(0);
    expect(proxy.stderr).to.contain('requests still running at the shutdown deadline were ended');
    await eventually(() => !isAlive(mcpPid));
  });

  it('an MCP server that dies of the same SIGTERM (as on Heroku) is no crash', async function () {
    const run = await startProxy();
    running.push(run);
    const { proxy, mcpPid } = run;
    // The platform signals every process of the dyno; the child may well go first.
    process.kill(mcpPid, 'SIGTERM');
    proxy.child.kill('SIGTERM');
    expect(await proxy.exited).to.equal(0);
    expect(proxy.stdout + proxy.stderr).to.not.match(/restarting|mcp server started.*\n[^]*mcp server started/);
    expect(isAlive(mcpPid)).to.equal(false);
  });
});
