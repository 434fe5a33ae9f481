import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { expect } from 'chai';
import { afterEach, beforeEach, describe, it } from 'mocha';
import express from 'express';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import {
  createExampleMcpServer,
  sha256Hex,
  type ExampleMcpServerApp,
  type ExampleMcpServerOptions,
} from '../lib/dev/example-mcp-server.ts';

async function listen(app: express.Express): Promise<{ server: Server; origin: string }> {
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  return {
    server,
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
  };
}

async function close(server: Server): Promise<void> {
  // Open SSE streams would keep close() waiting forever.
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

function textOf(result: Awaited<ReturnType<Client['callTool']>>): string {
  const content = result.content as { type: string; text: string }[];
  return content[0]!.text;
}

describe('example MCP server', () => {
  const servers: Server[] = [];
  const clients: Client[] = [];

  async function start(opts: ExampleMcpServerOptions = {}): Promise<{ app: ExampleMcpServerApp; url: URL }> {
    const app = createExampleMcpServer(opts);
    const { server, origin } = await listen(app);
    servers.push(server);
    return { app, url: new URL(`${origin}${opts.path ?? '/mcp'}`) };
  }

  async function connect(url: URL, headers: Record<string, string> = {}): Promise<Client> {
    const client = new Client({
      name: 'example-mcp-server-test',
      version: '1.0.0',
    });
    await client.connect(new StreamableHTTPClientTransport(url, { requestInit: { headers } }));
    clients.push(client);
    return client;
  }

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.close()));
    await Promise.all(servers.splice(0).map(close));
  });

  describe('without authorization (development)', () => {
    it('lists its tools', async () => {
      const { url } = await start();
      const client = await connect(url);
      const { tools } = await client.listTools();
      expect(tools.map((tool) => tool.name)).to.have.members(['echo', 'add', 'whoami', 'slow_count']);
    });

    it('calls echo and add', async () => {
      const { url } = await start();
      const client = await connect(url);
      expect(
        textOf(
          await client.callTool({
            name: 'echo',
            arguments: { text: 'héllo ✓' },
          }),
        ),
      ).to.equal('héllo ✓');
      expect(textOf(await client.callTool({ name: 'add', arguments: { a: 2, b: 40.5 } }))).to.equal('42.5');
    });

    it('whoami reports the token hash and proxy headers, never the token', async () => {
      const { app, url } = await start();
      const token = 'upstream-access-token-123';
      const client = await connect(url, {
        authorization: `Bearer ${token}`,
        'x-authorization-scope': 'openid profile',
        'x-dynamic-client-id': 'client-abc',
        'x-user-id': 'user-42',
      });
      const text = textOf(await client.callTool({ name: 'whoami', arguments: {} }));
      expect(text).to.not.contain(token);
      expect(JSON.parse(text)).to.deep.equal({
        tokenSha256: sha256Hex(token),
        scope: 'openid profile',
        dynamicClientId: 'client-abc',
        userId: 'user-42',
      });
      expect([...app.locals.seenTokenHashes]).to.deep.equal([sha256Hex(token)]);
    });

    it('whoami reports nulls for a caller with no token or headers', async () => {
      const { url } = await start();
      const client = await connect(url);
      const text = textOf(await client.callTool({ name: 'whoami', arguments: {} }));
      expect(JSON.parse(text)).to.deep.equal({
        tokenSha256: null,
        scope: null,
        dynamicClientId: null,
        userId: null,
      });
    });

    it('slow_count streams its notifications on the POST response before the result', async () => {
      const { url } = await start();
      const client = await connect(url);
      const events: { kind: string; at: number }[] = [];
      client.setNotificationHandler(LoggingMessageNotificationSchema, (notification) => {
        events.push({
          kind: `log:${String(notification.params.data)}`,
          at: Date.now(),
        });
      });
      const result = await client.callTool({ name: 'slow_count', arguments: { count: 4, delayMs: 150 } }, undefined, {
        onprogress: (progress) =>
          events.push({
            kind: `progress:${progress.progress}/${progress.total}`,
            at: Date.now(),
          }),
      });
      const resultAt = Date.now();
      expect(textOf(result)).to.equal('counted 4');
      expect(events.map((e) => e.kind)).to.deep.equal([
        'log:step 1 of 4',
        'progress:1/4',
        'log:step 2 of 4',
        'progress:2/4',
        'log:step 3 of 4',
        'progress:3/4',
        'log:step 4 of 4',
        'progress:4/4',
      ]);
      // Three more 150 ms steps follow the first notification: arriving that much before the
      // result shows the response was streamed, not buffered until the end.
      expect(resultAt - events[0]!.at).to.be.at.least(300);
    });

    it('rejects out-of-range slow_count arguments', async () => {
      const { url } = await start();
      const client = await connect(url);
      const result = await client.callTool({
        name: 'slow_count',
        arguments: { count: 21, delayMs: 0 },
      });
      expect(result.isError).to.equal(true);
    });

    it('keeps a session per Mcp-Session-Id and ends it on DELETE', async () => {
      const { app, url } = await start();
      const transport = new StreamableHTTPClientTransport(url);
      const client = new Client({ name: 'session-test', version: '1.0.0' });
      await client.connect(transport);
      clients.push(client);
      const sessionId = transport.sessionId!;
      expect(app.locals.sessions.has(sessionId)).to.equal(true);

      await transport.terminateSession();
      expect(app.locals.sessions.has(sessionId)).to.equal(false);
      const afterDelete = await fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-session-id': sessionId,
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      expect(afterDelete.status).to.equal(404);
    });

    it('refuses a non-initialize POST without a session, and GET without or with an unknown session', async () => {
      const { url } = await start();
      const post = await fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      });
      expect(post.status).to.equal(400);
      expect((await fetch(url, { headers: { accept: 'text/event-stream' } })).status).to.equal(400);
      const unknown = await fetch(url, {
        headers: { accept: 'text/event-stream', 'mcp-session-id': 'nope' },
      });
      expect(unknown.status).to.equal(404);
    });
  });

  describe('protected by a userinfo endpoint', () => {
    const GOOD = 'good-upstream-token';
    let userinfoUrl: string;
    let userinfoCalls: number;
    let userinfoStatus: number | undefined;

    beforeEach(async () => {
      userinfoCalls = 0;
      userinfoStatus = undefined;
      const idp = express();
      idp.get('/userinfo', (req, res) => {
        userinfoCalls++;
        if (userinfoStatus) return void res.status(userinfoStatus).end();
        if (req.headers.authorization === `Bearer ${GOOD}`) return void res.json({ sub: 'user-42' });
        res.status(401).set('WWW-Authenticate', 'Bearer error="invalid_token"').end();
      });
      const { server, origin } = await listen(idp);
      servers.push(server);
      userinfoUrl = `${origin}/userinfo`;
    });

    async function initialize(url: URL, authorization?: string): Promise<Response> {
      return fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          ...(authorization ? { authorization } : {}),
        },
        body: JSON.stringify({
          jsonrpc: '2.0',
          id: 1,
          method: 'initialize',
          params: {
            protocolVersion: '2025-06-18',
            capabilities: {},
            clientInfo: { name: 't', version: '1' },
          },
        }),
      });
    }

    async function expectInvalidToken(response: Response): Promise<void> {
      expect(response.status).to.equal(401);
      expect(response.headers.get('www-authenticate')).to.equal('Bearer error="invalid_token"');
      expect(await response.json()).to.deep.equal({ error: 'invalid_token' });
    }

    it('answers 401 invalid_token without a bearer token, without asking userinfo', async () => {
      const { url } = await start({ userinfoUrl });
      await expectInvalidToken(await initialize(url));
      await expectInvalidToken(await initialize(url, `Basic ${Buffer.from('a:b').toString('base64')}`));
      expect(userinfoCalls).to.equal(0);
    });

    it('answers 401 invalid_token to a token userinfo rejects, on every method', async () => {
      const { url } = await start({ userinfoUrl });
      await expectInvalidToken(await initialize(url, 'Bearer wrong-token'));
      await expectInvalidToken(await fetch(url, { headers: { authorization: 'Bearer wrong-token' } }));
      await expectInvalidToken(
        await fetch(url, {
          method: 'DELETE',
          headers: { authorization: 'Bearer wrong-token' },
        }),
      );
    });

    it('serves a client whose token userinfo accepts', async () => {
      const { app, url } = await start({ userinfoUrl });
      const client = await connect(url, { authorization: `Bearer ${GOOD}` });
      const text = textOf(await client.callTool({ name: 'whoami', arguments: {} }));
      expect(JSON.parse(text).tokenSha256).to.equal(sha256Hex(GOOD));
      // initialize, notifications/initialized, tools/call — plus the client's optional GET
      // stream, whose timing is the client's business.
      expect(userinfoCalls).to.be.at.least(3);
      expect([...app.locals.seenTokenHashes]).to.deep.equal([sha256Hex(GOOD)]);
    });

    it('sees a revocation on the very next request (no cache by default)', async () => {
      const { url } = await start({ userinfoUrl });
      const client = await connect(url, { authorization: `Bearer ${GOOD}` });
      await client.callTool({ name: 'echo', arguments: { text: 'before' } });
      userinfoStatus = 401;
      let failure: unknown;
      try {
        await client.callTool({ name: 'echo', arguments: { text: 'after' } });
      } catch (error) {
        failure = error;
      }
      expect(failure).to.have.property('code', 401);
      expect(String(failure)).to.contain('invalid_token');
    });

    it('with userinfoCacheMs, asks userinfo once per token within the window', async () => {
      const { url } = await start({ userinfoUrl, userinfoCacheMs: 1000 });
      expect((await initialize(url, `Bearer ${GOOD}`)).status).to.equal(200);
      expect((await initialize(url, `Bearer ${GOOD}`)).status).to.equal(200);
      expect(userinfoCalls).to.equal(1);
      await expectInvalidToken(await initialize(url, 'Bearer wrong-token'));
      await expectInvalidToken(await initialize(url, 'Bearer wrong-token'));
      expect(userinfoCalls).to.equal(3);
    });

    it('answers 503, not 401, when userinfo itself fails', async () => {
      const { url } = await start({ userinfoUrl });
      userinfoStatus = 500;
      const response = await initialize(url, `Bearer ${GOOD}`);
      expect(response.status).to.equal(503);
    });

    it('refuses a cache window longer than one second', () => {
      expect(() => createExampleMcpServer({ userinfoUrl, userinfoCacheMs: 5000 })).to.throw(RangeError);
    });
  });

  it('serves a custom path only', async () => {
    const { url } = await start({ path: '/custom/mcp' });
    const client = await connect(url);
    expect(textOf(await client.callTool({ name: 'echo', arguments: { text: 'x' } }))).to.equal('x');
    expect((await fetch(new URL('/mcp', url), { method: 'POST' })).status).to.equal(404);
  });
});
