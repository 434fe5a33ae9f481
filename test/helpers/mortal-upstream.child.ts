/**
 * An MCP server stand-in run as its own process, so that a test can kill it mid-call (see
 * mortal-upstream.ts). Listens on 127.0.0.1 at the port given as its argument and says so on stdout.
 * - `/mcp/stream`: an SSE head and one event, then the stream stays open;
 * - `/mcp/hang`: says `holding` on stdout once it has the request, and never answers;
 * - anything else: 200 `{"ok":true}`.
 */
import http from 'node:http';

const server = http.createServer((req, res) => {
  const path = (req.url ?? '').split('?')[0];
  req.resume();
  if (path === '/mcp/stream') {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    res.write('id: 1\ndata: {"n":1}\n\n');
    return;
  }
  if (path === '/mcp/hang') return void process.stdout.write('holding\n');
  req.on('end', () => res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"ok":true}'));
});
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.stdout.write('listening\n'));
