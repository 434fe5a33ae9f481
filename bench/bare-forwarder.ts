/**
 * The benchmark's yardstick, not part of the product: a forwarder that does nothing but forward
 * (no token check, no header policy, no retry, no logging), with the same keep-alive agent
 * settings as the proxy. Measured beside the proxy, it shows how much of the throughput lost
 * through the proxy any Node.js hop costs on this machine, and how much is the proxy's own work.
 *
 * Usage: node bench/bare-forwarder.ts <listen port> <MCP server URL>
 */
import http from 'node:http';

const [port, upstream] = [Number(process.argv[2]), new URL(process.argv[3]!)];
const agent = new http.Agent({ keepAlive: true, maxSockets: 512, maxFreeSockets: 64, scheduling: 'lifo' });
const DROPPED = new Set(['host', 'connection', 'keep-alive', 'transfer-encoding']);

http
  .createServer((req, res) => {
    const headers: string[] = [];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (!DROPPED.has(req.rawHeaders[i]!.toLowerCase())) headers.push(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
    }
    headers.push('Host', upstream.host);
    const forwarded = http.request(
      { hostname: upstream.hostname, port: upstream.port, method: req.method, path: upstream.pathname, headers, agent },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forwarded.on('error', () => res.destroy());
    req.pipe(forwarded);
  })
  .listen(port, '127.0.0.1');

process.on('SIGTERM', () => process.exit(0));
