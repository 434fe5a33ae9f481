import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingMessage } from 'node:http';
import { expect } from 'chai';
import { deferred, FLOOD_CAP, sha256, type EchoUpstream } from './helpers/echo-upstream.ts';
import { json, LIMIT, readUntil, send, until, useEchoStack, values } from './helpers/proxy.ts';
import type { Stack } from './helpers/stack.ts';

describe('/mcp proxy: streaming, in front of a purpose-built upstream', function () {
  let echo: EchoUpstream, stack: Stack, token: string, bearer: string[];
  useEchoStack((running) => ({ echo, stack, token, bearer } = running));

  it('a non-JSON body with arbitrary bytes arrives byte-identical, with Content-Length or chunked', async function () {
    const body = Buffer.concat([Buffer.from([0x00, 0xff, 0xfe, 0x0d, 0x0a, 0xc3, 0x28, 0x80]), randomBytes(70_000)]);
    const sized = await send(stack.mcpUrl, {
      headers: [...bearer, 'Content-Type', 'application/octet-stream'],
      body,
    });
    expect(json(sized)).to.include({ bodySha256: sha256(body), bodyLength: body.length });
    expect(values(json(sized).rawHeaders, 'content-length')).to.deep.equal([String(body.length)]);

    const chunks = [body.subarray(0, 3), body.subarray(3, 40_000), body.subarray(40_000)];
    const chunked = await send(stack.mcpUrl, {
      headers: [...bearer, 'Content-Type', 'application/octet-stream'],
      chunks,
    });
    expect(json(chunked)).to.include({ bodySha256: sha256(body), bodyLength: body.length });
  });

  it('a JSON body is not re-serialised: spacing, escapes and duplicate keys survive', async function () {
    const text = '{ "jsonrpc" :"2.0",\n\t"id":1 , "method":"tools/call", "params":{"a":"\\u00e9","a":1e2,"b":[ ]} }  ';
    const res = await send(stack.mcpUrl, {
      headers: [...bearer, 'Content-Type', 'application/json'],
      body: Buffer.from(text),
    });
    expect(json(res).bodySha256).to.equal(sha256(Buffer.from(text)));
  });

  it('bodies over Express’s 100 kB default pass', async function () {
    const body = randomBytes(LIMIT - 1);
    const res = await send(stack.mcpUrl, { headers: bearer, body });
    expect(res.status).to.equal(200);
    expect(json(res).bodySha256).to.equal(sha256(body));
  });

  it('413 with a JSON body over MCP_PROXY_MAX_BODY_BYTES declared by Content-Length; the MCP server never sees it', async function () {
    const before = echo.seen.length;
    const res = await send(stack.mcpUrl, {
      headers: [...bearer, 'X-Request-Id', 'declared-413-id'],
      body: randomBytes(LIMIT + 1),
    });
    expect(res.status).to.equal(413);
    expect(res.headers['content-type']).to.match(/^application\/json/);
    expect(json<{ error: string }>(res).error).to.equal('payload_too_large');
    expect(values(res.rawHeaders, 'x-request-id')).to.deep.equal(['declared-413-id']);
    expect(echo.seen.length).to.equal(before);
  });

  it('413 with a JSON body over the limit sent chunked; the upstream request is aborted', async function () {
    const before = { seen: echo.seen.length, aborted: echo.aborted };
    const chunks = Array.from({ length: 25 }, () => randomBytes(10_000));
    const res = await send(stack.mcpUrl, { headers: [...bearer, 'X-Request-Id', 'chunked-413-id'], chunks });
    expect(res.status).to.equal(413);
    expect(json<{ error: string }>(res).error).to.equal('payload_too_large');
    // Noticed in the body's 'data' events, outside the request's context: still named.
    expect(values(res.rawHeaders, 'x-request-id')).to.deep.equal(['chunked-413-id']);
    await until(() => echo.aborted > before.aborted, 'the upstream saw its request aborted');
    expect(echo.seen.length, 'no complete request upstream').to.equal(before.seen);
  });

  it('SSE: the first event reaches the client before the MCP server writes the second', async function () {
    echo.sseRelease = deferred();
    echo.sseFirstWritten = deferred();
    const res = await fetch(`${stack.mcpUrl}/sse`, {
      headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    });
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.equal('text/event-stream');
    const reader = res.body!.getReader();
    // The second event is only written once we have the first: a buffering proxy deadlocks here.
    const first = await readUntil(reader, '"first":true');
    expect(first).to.not.include('second');
    echo.sseRelease.resolve();
    const all = await readUntil(reader, '"second":true', first);
    expect(all).to.equal('id: 1\ndata: {"first":true}\n\nid: 2\ndata: {"second":true}\n\n');
    expect((await reader.read()).done).to.equal(true);
  });

  it('SSE: the head of a stream that stays silent reaches the client at once', async function () {
    const controller = new AbortController();
    // fetch resolves on the head; a proxy holding it back until a first event times the test out.
    const res = await fetch(`${stack.mcpUrl}/silent`, {
      headers: { authorization: `Bearer ${token}` },
      signal: controller.signal,
    });
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.equal('text/event-stream');
    controller.abort();
  });

  it('backpressure: a client that does not read stops the MCP server’s writes', async function () {
    this.timeout(60_000);
    const request = http.request(`${stack.mcpUrl}/flood`, {
      method: 'GET',
      headers: { authorization: `Bearer ${token}` },
      agent: false,
    });
    request.end();
    const [response] = (await once(request, 'response')) as [IncomingMessage];
    expect(response.statusCode).to.equal(200);
    // Not reading: the client's socket buffers fill, then the proxy's, then the MCP server's.
    // The MCP server's writes must then stay blocked; had the proxy kept reading, its 'drain'
    // would come within microseconds and the flood would run to FLOOD_CAP.
    await until(
      () =>
        echo.flood!.finished || (echo.flood!.blockedSince !== undefined && Date.now() - echo.flood!.blockedSince > 500),
      'the upstream blocked for 500 ms',
      50_000,
    );
    const flood = echo.flood!;
    expect(flood.finished, `the upstream wrote all ${FLOOD_CAP} bytes: no backpressure`).to.equal(false);
    flood.stop();
    let received = 0;
    response.on('data', (chunk: Buffer) => (received += chunk.length));
    await once(response, 'end');
    expect(received, 'nothing lost').to.equal(flood.written);
  });

  it('a client that disconnects aborts the upstream request', async function () {
    echo.holdClosed = deferred();
    const controller = new AbortController();
    const res = await fetch(`${stack.mcpUrl}/hold`, {
      headers: { authorization: `Bearer ${token}` },
      signal: controller.signal,
    });
    await readUntil(res.body!.getReader(), 'holding');
    controller.abort();
    // Resolved by the upstream socket's 'close'; a proxy that kept it open times the test out.
    await echo.holdClosed.promise;
  });

  it('reuses keep-alive connections to the MCP server', async function () {
    await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') });
    const before = echo.connections;
    for (let i = 0; i < 5; i++) {
      expect((await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') })).status).to.equal(200);
    }
    expect(echo.connections - before).to.equal(0);
  });

  it('closes an idle upstream connection before the MCP server’s advertised keep-alive timeout', async function () {
    echo.keepAliveHint = 'timeout=2';
    const closed = deferred();
    try {
      // A fresh connection: the proxy's idle ones predate the hint.
      echo.server.closeIdleConnections();
      await send(`${stack.mcpUrl}/keepalive`, { headers: bearer, body: Buffer.from('{}') });
      echo.lastSocket!.once('close', () => closed.resolve());
      // The MCP server itself would keep it for 60 s; the proxy closes it about a second early
      // of the 2 s it was told. (The mocha timeout bounds a proxy that never does.)
      await closed.promise;
    } finally {
      echo.keepAliveHint = undefined;
    }
  });
});
