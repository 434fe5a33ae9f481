/**
 * A process run by test/telemetry.tracing.test.ts with the tracing preload, the way the proxy
 * runs: `node --import tsx --import ./lib/telemetry/tracing.ts test/helpers/telemetry-child.ts`.
 *
 * It serves one kind of request through the span API, as the proxy's `/mcp` path will: request
 * span → a real Redis command → a refresh that fails (`withSpan`) → an MCP call span whose
 * `traceparent` goes to a loopback stand-in for the MCP server. Reports on stdout:
 * `ready <port>`, `tracing <on|off>`, `upstream-traceparent <value>`, and our log lines.
 * SIGTERM flushes the traces within a deadline and exits.
 */
import { once } from 'node:events';
import { createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { log } from '../../lib/telemetry/log.ts';
import { runInRequest } from '../../lib/telemetry/request-context.ts';
import { beginRequest } from '../../lib/telemetry/request-log.ts';
import {
  endMcpCallSpan,
  injectTraceparent,
  startMcpCallSpan,
  tracingEnabled,
  withSpan,
} from '../../lib/telemetry/spans.ts';
import { shutdownTracing } from '../../lib/telemetry/tracing-handle.ts';

const redis = new Redis(process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/0', { lazyConnect: true });
await redis.connect();
const key = `${process.env.TEST_KEY_PREFIX}:sealed`;

const upstream = createServer((req, res) => {
  process.stdout.write(`upstream-traceparent ${req.headers.traceparent ?? 'none'}\n`);
  res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"jsonrpc":"2.0","id":1,"result":{}}');
});
upstream.listen(0, '127.0.0.1');
await once(upstream, 'listening');
const upstreamPort = (upstream.address() as AddressInfo).port;

class RefreshError extends Error {
  readonly code = 'IDENTITY_TRANSIENT';
}

const server = createServer((req, res) => {
  const tracked = beginRequest(req, res, '/mcp');
  runInRequest(tracked, async () => {
    // A sealed token as the store would write it: its value must never be exported.
    await redis.set(key, process.env.TEST_SEALED_VALUE!, 'PX', 60_000);
    await withSpan('upstream.refresh', { 'grant.id_hash': 'abc', refresh_token: process.env.TEST_SECRET }, () =>
      Promise.reject(new RefreshError(`refresh failed for ${process.env.TEST_SECRET}`)),
    ).catch(() => undefined);
    log.info('calling the MCP server', { authorization: req.headers.authorization });
    const call = startMcpCallSpan(req);
    const headers = [
      'Host',
      `127.0.0.1:${upstreamPort}`,
      'Content-Type',
      'application/json',
      'Content-Length',
      '2',
      'Authorization',
      `Bearer ${process.env.TEST_SECRET}`,
    ];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (req.rawHeaders[i]!.toLowerCase() === 'traceparent') headers.push('traceparent', req.rawHeaders[i + 1]!);
    }
    injectTraceparent(headers, call);
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      request({ host: '127.0.0.1', port: upstreamPort, method: 'POST', path: '/mcp', headers }, resolve)
        .on('error', reject)
        .end('{}');
    });
    endMcpCallSpan(call, 'ok', response.statusCode);
    res.writeHead(response.statusCode ?? 502, { 'Content-Type': 'application/json' });
    response.pipe(res);
  }).catch((error: unknown) => {
    process.stderr.write(`child failed: ${String(error)}\n`);
    res.writeHead(500).end();
  });
});
server.listen(0, '127.0.0.1');
await once(server, 'listening');

process.on('SIGTERM', () => {
  server.close();
  upstream.close();
  void (async () => {
    await redis.del(key);
    redis.disconnect();
    await shutdownTracing(Number(process.env.TEST_FLUSH_MS ?? 5_000));
    process.exit(0);
  })();
});

process.stdout.write(`tracing ${tracingEnabled ? 'on' : 'off'}\n`);
process.stdout.write(`ready ${(server.address() as AddressInfo).port}\n`);
