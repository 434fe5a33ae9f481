/**
 * A second yardstick for `npm run bench` (BENCH_LEAN=1), not part of the product: the bare
 * forwarder plus the per-request work the proxy does on a warm tool call, each done the plainest
 * way, to tell what that work costs from what the proxy's way of doing it costs:
 *
 * - the bearer token's SHA-256 and a cache lookup (the proxy's cache key);
 * - a request id (a UUID), sent to the MCP server and back to the client as X-Request-Id;
 * - the client's headers minus hop-by-hop ones and those the proxy sets, then Host,
 *   Authorization, X-Forwarded-For, -Proto, -Host and the three identity headers;
 * - the response's headers minus hop-by-hop ones and Set-Cookie, as one raw list to writeHead().
 *
 * Left out, as the bare forwarder leaves them out: the checks that refuse a request (origin,
 * scopes, rate limit, body size, readiness), the copy of the body kept for a replay after a
 * refresh, the abort of the upstream request when the client leaves, the head of a silent event
 * stream, the request's log context and the drain's bookkeeping. So this is a lower bound, not a
 * proxy: what the proxy could cost if its structure cost nothing.
 *
 * Usage: node bench/lean-forwarder.ts <listen port> <MCP server URL>
 */
import { hash, randomUUID } from 'node:crypto';
import http from 'node:http';

const [port, upstream] = [Number(process.argv[2]), new URL(process.argv[3]!)];
const agent = new http.Agent({
  keepAlive: true,
  maxSockets: 512,
  maxFreeSockets: 64,
  scheduling: 'lifo',
  timeout: 60_000,
});
const REQUEST_DROPPED = new Set([
  ...['host', 'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization'],
  ...['authorization', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-id'],
  ...['x-user-id', 'x-dynamic-client-id', 'x-authorization-scope'],
]);
const RESPONSE_DROPPED = new Set(['connection', 'keep-alive', 'transfer-encoding', 'set-cookie']);
const identities = new Map<string, string[]>();

http
  .createServer((req, res) => {
    const authorization = req.headers.authorization ?? '';
    const key = hash('sha256', authorization.slice('Bearer '.length), 'base64url');
    let identity = identities.get(key);
    if (!identity) {
      identity = ['X-Authorization-Scope', 'openid', 'X-Dynamic-Client-Id', 'bench', 'X-User-Id', 'bench'];
      identities.set(key, identity);
    }
    const requestId = randomUUID();
    const headers: string[] = [];
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      if (!REQUEST_DROPPED.has(raw[i]!.toLowerCase())) headers.push(raw[i]!, raw[i + 1]!);
    }
    headers.push(
      ...['Host', upstream.host, 'Authorization', authorization],
      ...['X-Forwarded-For', req.socket.remoteAddress ?? '', 'X-Forwarded-Proto', 'http'],
      ...['X-Forwarded-Host', req.headers.host ?? '', 'X-Request-Id', requestId],
      ...identity,
    );
    const forwarded = http.request(
      { hostname: upstream.hostname, port: upstream.port, method: req.method, path: upstream.pathname, headers, agent },
      (answer) => {
        const head: string[] = [];
        const answered = answer.rawHeaders;
        for (let i = 0; i < answered.length; i += 2) {
          if (!RESPONSE_DROPPED.has(answered[i]!.toLowerCase())) head.push(answered[i]!, answered[i + 1]!);
        }
        head.push('X-Request-Id', requestId);
        res.writeHead(answer.statusCode ?? 502, head);
        answer.pipe(res);
      },
    );
    forwarded.on('error', () => res.destroy());
    req.pipe(forwarded);
  })
  .listen(port, '127.0.0.1');

process.on('SIGTERM', () => process.exit(0));
