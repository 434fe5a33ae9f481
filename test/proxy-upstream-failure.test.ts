import { once } from 'node:events';
import http, { type IncomingMessage } from 'node:http';
import { expect } from 'chai';
import type { EchoUpstream } from './helpers/echo-upstream.ts';
import { MortalUpstream } from './helpers/mortal-upstream.ts';
import { json, login, readUntil, send, startEchoStack, useEchoStack } from './helpers/proxy.ts';
import { freePort, startStack, type Stack } from './helpers/stack.ts';
import { startWeb, type Web } from './helpers/web.ts';

interface ErrorBody {
  error: string;
  error_description: string;
}

/** Reads a fetch body to its end: 'complete' when it ended as a complete response, else the error. */
async function readToEnd(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<{ text: string; end: unknown }> {
  const decoder = new TextDecoder();
  let text = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return { text, end: 'complete' };
      text += decoder.decode(value, { stream: true });
    }
  } catch (error) {
    return { text, end: error };
  }
}

describe('/mcp proxy: an MCP server that fails mid-call (purpose-built upstream)', function () {
  let stack: Stack, token: string, bearer: string[];
  useEchoStack((running) => ({ stack, token, bearer } = running));

  const get = (path: string) => fetch(`${stack.mcpUrl}${path}`, { headers: { authorization: `Bearer ${token}` } });

  it('an event stream cut short upstream ends cleanly for the client: no reset, nothing added', async function () {
    const res = await get('/die');
    expect(res.status).to.equal(200);
    const { text, end } = await readToEnd(res.body!.getReader());
    expect(end).to.equal('complete');
    expect(text).to.equal('data: about to die\n\n');
  });

  it('an event cut off in the middle reaches the client as the unfinished prefix the MCP server wrote', async function () {
    // An SSE client drops an event without its blank line at the end of the stream: the client
    // sees the stream end, never a made-up event.
    const res = await get(`/die?partial=${encodeURIComponent('id: 2\ndata: {"cut')}`);
    const { text, end } = await readToEnd(res.body!.getReader());
    expect(end).to.equal('complete');
    expect(text).to.equal('data: about to die\n\nid: 2\ndata: {"cut');
  });

  for (const [what, query] of [
    ['a chunked body that is not an event stream', '?type=application/octet-stream'],
    ['a body shorter than its Content-Length', '?type=application/json&length=1000'],
    ['an event stream with a Content-Length', '?length=1000'],
  ] as const) {
    it(`${what}, cut short upstream, is cut short for the client too: never ended as if complete`, async function () {
      const res = await get(`/die${query}`);
      const reader = res.body!.getReader();
      await readUntil(reader, 'about to die');
      const { end } = await readToEnd(reader);
      expect(end).to.be.instanceOf(Error);
    });
  }

  it('an MCP server that resets the connection before answering: 502 bad_gateway in JSON', async function () {
    const res = await send(`${stack.mcpUrl}/reset`, { headers: bearer, body: Buffer.from('{}') });
    expect(res.status).to.equal(502);
    expect(res.headers['content-type']).to.match(/^application\/json/);
    expect(json<ErrorBody>(res).error).to.equal('bad_gateway');
  });
});

describe('/mcp proxy: an MCP server process killed mid-call', function () {
  this.timeout(30_000);
  let upstream: MortalUpstream;
  let stack: Stack;
  let token: string;

  before(async function () {
    upstream = new MortalUpstream(await freePort());
    await upstream.start();
    stack = await startStack({ env: { MCP_SERVER_URL: upstream.url } });
    ({ token } = await login(stack.mcpUrl));
  });
  afterEach(async function () {
    if (!upstream.running) await upstream.start();
  });
  after(async function () {
    await upstream?.kill();
    await stack?.close();
  });

  const call = (path = '') =>
    send(`${stack.mcpUrl}${path}`, { headers: ['Authorization', `Bearer ${token}`], body: Buffer.from('{}') });

  it('an open event stream ends cleanly with the events already sent', async function () {
    const res = await fetch(`${stack.mcpUrl}/stream`, { headers: { authorization: `Bearer ${token}` } });
    const reader = res.body!.getReader();
    const first = await readUntil(reader, '{"n":1}\n\n');
    await upstream.kill();
    const { text, end } = await readToEnd(reader);
    expect(end).to.equal('complete');
    expect(first + text).to.equal('id: 1\ndata: {"n":1}\n\n');
  });

  it('a call waiting for its answer gets 502 bad_gateway in JSON', async function () {
    const pending = call('/hang');
    await upstream.said('holding');
    await upstream.kill();
    const res = await pending;
    expect(res.status).to.equal(502);
    expect(json<ErrorBody>(res).error).to.equal('bad_gateway');
  });

  it('a call whose body is still arriving gets 502, and the client’s connection is not left stuck', async function () {
    // One socket: the call after the failed one goes over the same connection if it is kept.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const request = http.request(`${stack.mcpUrl}/hang`, {
        method: 'POST',
        agent,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      });
      request.on('error', () => undefined); // the rest of the body may meet a closed connection
      const responded = once(request, 'response') as Promise<[IncomingMessage]>;
      request.write('{"jsonrpc":"2.0",');
      await upstream.said('holding');
      await upstream.kill();
      const [response] = await responded;
      expect(response.statusCode).to.equal(502);
      response.resume();
      await once(response, 'end');
      // The client only now sends the rest of the body the proxy no longer has a use for.
      request.end('"id":1}');
      await upstream.start();
      const next = await send(stack.mcpUrl, {
        headers: ['Authorization', `Bearer ${token}`],
        body: Buffer.from('{}'),
        agent,
      });
      expect(next.status).to.equal(200);
    } finally {
      agent.destroy();
    }
  });

  it('while it is down, calls get 502 in JSON; once it is back, they pass again', async function () {
    expect((await call()).status).to.equal(200);
    await upstream.kill();
    const down = await call();
    expect(down.status).to.equal(502);
    expect(json<ErrorBody>(down).error).to.equal('bad_gateway');
    await upstream.start();
    const back = await call();
    expect(back.status).to.equal(200);
    expect(json<{ ok: boolean }>(back).ok).to.equal(true);
  });
});

describe('/mcp proxy: while the MCP server is (re)starting', function () {
  let echo: EchoUpstream;
  let stack: Stack;
  let token: string;
  let web: Web;
  let ready = false;

  before(async function () {
    ({ echo, stack, token } = await startEchoStack());
    web = await startWeb(stack.env, { mcpServer: { isReady: () => ready } });
  });
  after(async function () {
    await web?.close();
    await stack?.close();
    await echo?.close();
  });

  const call = (headers: string[]) => send(web.mcpUrl, { headers, body: Buffer.from('{}') });

  it('answers 503 with Retry-After in JSON and forwards nothing; once ready, forwards', async function () {
    ready = false;
    const seen = echo.seen.length;
    const res = await call(['Authorization', `Bearer ${token}`]);
    expect(res.status).to.equal(503);
    expect(res.headers['retry-after']).to.match(/^[1-9]\d*$/);
    expect(res.headers['content-type']).to.match(/^application\/json/);
    expect(json<ErrorBody>(res).error).to.equal('temporarily_unavailable');
    expect(echo.seen.length).to.equal(seen);

    ready = true;
    expect((await call(['Authorization', `Bearer ${token}`])).status).to.equal(200);
    expect(echo.seen.length).to.equal(seen + 1);
  });

  it('still answers who may call first: no token is 401 with the challenge, not 503', async function () {
    ready = false;
    const res = await call([]);
    expect(res.status).to.equal(401);
    expect(res.headers['www-authenticate']).to.match(/^Bearer resource_metadata=/);
  });
});
