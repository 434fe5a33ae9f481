import { connect } from 'node:net';
import { expect } from 'chai';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { connectClient, startStack, TestOAuthClient, type Stack } from './helpers/stack.ts';
import { sleep } from './helpers/web-process.ts';

/**
 * Slow clients: a request must arrive (head and body) within the request timeout, on every route;
 * what the proxy sends back, an SSE stream or a long tool call, is never limited by it.
 */
const REQUEST_TIMEOUT_MS = 1_000;

/** Sends a request head and `sent` of `length` body bytes, then nothing; resolves with what came back once closed. */
function trickle(baseUrl: string, path: string, headers: string, sent: number, length: number): Promise<string> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname === 'localhost' ? '127.0.0.1' : hostname, port: Number(port) });
    let received = '';
    socket.on('data', (chunk) => (received += chunk.toString()));
    socket.on('error', () => undefined);
    socket.once('close', () => resolve(received));
    socket.once('connect', () => {
      socket.write(
        `POST ${path} HTTP/1.1\r\nHost: ${new URL(baseUrl).host}\r\n${headers}` +
          `Content-Length: ${length}\r\n\r\n${'{'.padEnd(sent, ' ')}`,
      );
    });
  });
}

describe('slow requests', function () {
  this.timeout(60_000);
  let stack: Stack;
  let oauth: TestOAuthClient;
  let client: Client;

  before(async function () {
    stack = await startStack({ start: { timeouts: { requestMs: REQUEST_TIMEOUT_MS } } });
    oauth = new TestOAuthClient({ user: 'slow' });
    client = await connectClient(stack.mcpUrl, oauth);
  });
  after(async function () {
    await client?.close();
    await stack?.close();
  });

  const bodies: Record<string, () => string> = {
    '/reg': () => 'Content-Type: application/json\r\n',
    '/token': () => 'Content-Type: application/x-www-form-urlencoded\r\n',
    // With a valid token: without one the proxy answers 401 before reading any body.
    '/mcp': () =>
      `Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n` +
      `Authorization: Bearer ${oauth.savedTokens!.access_token}\r\n`,
  };
  for (const [path, headers] of Object.entries(bodies)) {
    it(`a body that stops halfway to ${path} is cut with 408 after the request timeout`, async function () {
      const answer = await trickle(stack.baseUrl, path, headers(), 10, 1_000);
      expect(answer).to.match(/^HTTP\/1\.1 408 /);
    });
  }

  it('a head that never ends is cut too', async function () {
    const { port } = new URL(stack.baseUrl);
    const closed = await new Promise<string>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: Number(port) });
      let received = '';
      socket.on('data', (chunk) => (received += chunk.toString()));
      socket.on('error', () => undefined);
      socket.once('close', () => resolve(received));
      socket.once('connect', () => socket.write('GET /.well-known/oauth-authorization-server HTTP/1.1\r\nHost: x\r\n'));
    });
    expect(closed).to.match(/^HTTP\/1\.1 408 /);
  });

  it('a streaming tool call longer than the request timeout completes', async function () {
    let steps = 0;
    const result = (await client.callTool({ name: 'slow_count', arguments: { count: 5, delayMs: 500 } }, undefined, {
      onprogress: () => void steps++,
    })) as { content: { text: string }[] };
    expect(result.content[0]!.text).to.equal('counted 5');
    expect(steps).to.equal(5);
  });

  it('a GET SSE stream stays open past the request timeout', async function () {
    const authorization = `Bearer ${oauth.savedTokens!.access_token}`;
    // A session of its own: the SDK client's session already has its one GET stream.
    const initialized = await fetch(stack.mcpUrl, {
      method: 'POST',
      headers: { authorization, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'slow', version: '1' } },
      }),
    });
    await initialized.body?.cancel();
    const response = await fetch(stack.mcpUrl, {
      headers: {
        authorization,
        'mcp-session-id': initialized.headers.get('mcp-session-id')!,
        accept: 'text/event-stream',
      },
    });
    expect(response.status).to.equal(200);
    expect(response.headers.get('content-type')).to.match(/^text\/event-stream/);
    const reader = response.body!.getReader();
    // Events may come (a priming event, keep-alives); the stream must neither end nor break.
    const open = sleep(3 * REQUEST_TIMEOUT_MS).then(() => 'open' as const);
    let outcome: 'open' | 'data' | 'ended' | 'cut';
    do {
      outcome = await Promise.race([
        reader.read().then(
          ({ done }) => (done ? ('ended' as const) : ('data' as const)),
          () => 'cut' as const,
        ),
        open,
      ]);
    } while (outcome === 'data');
    expect(outcome).to.equal('open');
    await reader.cancel();
  });
});
