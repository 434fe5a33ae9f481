import { once } from 'node:events';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * A loopback server answering per path (404 elsewhere) that counts TCP connections and requests
 * per path: what outbound-fetch tests need to tell whether, and how often, something was fetched.
 */
export interface PathServer {
  readonly port: number;
  /** `http(s)://127.0.0.1:<port>` */
  readonly origin: string;
  /** Requests per path. */
  readonly hits: Map<string, number>;
  /** TCP connections accepted, whatever came of them. */
  connections: number;
  serve(path: string, handler: Handler): void;
  json(path: string, body: unknown, headers?: Record<string, string>): void;
  close(): Promise<void>;
}

/** Plain HTTP, or HTTPS with `tls` (a key and certificate in PEM). */
export async function startPathServer(tls?: { key: Buffer; cert: Buffer }): Promise<PathServer> {
  const handlers = new Map<string, Handler>();
  const hits = new Map<string, number>();
  const route = (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const handler = handlers.get(path);
    if (handler) handler(req, res);
    else res.writeHead(404).end();
  };
  const server = tls ? createHttpsServer(tls, route) : createHttpServer(route);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const pathServer: PathServer = {
    port,
    origin: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    hits,
    connections: 0,
    serve: (path, handler) => void handlers.set(path, handler),
    json(path, body, headers = {}) {
      handlers.set(path, (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
      });
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  server.on('connection', () => (pathServer.connections += 1));
  return pathServer;
}
