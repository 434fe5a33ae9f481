import { createHash, randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import express from 'express';
import * as z from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { log } from '../telemetry/log.ts';

/**
 * The example MCP server: what `npm start` runs when no MCP server is configured, and the real
 * MCP server behind the proxy in the test suite. Development only.
 *
 * `whoami` and `app.locals.seenTokenHashes` let tests see exactly which upstream credential and
 * which proxy-added headers arrived here, without the server ever holding a token in plain text
 * anywhere it could print.
 */

export interface ExampleMcpServerOptions {
  /**
   * Every request must carry a bearer token that this userinfo endpoint accepts, the way a real
   * upstream-protected MCP server would check it. Absent → no authorization at all.
   */
  readonly userinfoUrl?: string;
  /** MCP endpoint path. Default `/mcp`. */
  readonly path?: string;
  /**
   * Remember accepted tokens for this long (0..1000 ms). Default 0: every request asks userinfo,
   * so tests of expiry and revocation see the 401 at once.
   */
  readonly userinfoCacheMs?: number;
}

export interface ExampleMcpServerLocals {
  /** sha256 hex of every bearer token presented, valid or not. */
  readonly seenTokenHashes: Set<string>;
  /** Open MCP sessions, by Mcp-Session-Id. */
  readonly sessions: Map<string, StreamableHTTPServerTransport>;
}

export type ExampleMcpServerApp = express.Express & {
  locals: ExampleMcpServerLocals;
};

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value).digest('hex');
}

export function createExampleMcpServer(opts: ExampleMcpServerOptions = {}): ExampleMcpServerApp {
  const path = opts.path ?? '/mcp';
  const cacheMs = opts.userinfoCacheMs ?? 0;
  if (!(cacheMs >= 0 && cacheMs <= 1000)) {
    throw new RangeError('userinfoCacheMs must be between 0 and 1000');
  }

  const app = express() as ExampleMcpServerApp;
  const seenTokenHashes = new Set<string>();
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  // Keyed by the token's hash so no plain token lingers in memory longer than its request.
  const acceptedUntil = new Map<string, number>();
  Object.assign(app.locals, { seenTokenHashes, sessions });

  app.use(path, (req, res, next) => {
    const token = bearerToken(req.headers.authorization);
    if (token) seenTokenHashes.add(sha256Hex(token));
    if (!opts.userinfoUrl) return next();
    if (!token) return invalidToken(res);
    checkToken(opts.userinfoUrl, token, cacheMs, acceptedUntil).then((verdict) => {
      if (verdict === 'valid') return next();
      if (verdict === 'invalid') return invalidToken(res);
      // Not the token's fault: a 401 here would send the proxy into a pointless refresh.
      res.status(503).json({ error: 'temporarily_unavailable' });
    }, next);
  });

  app.post(path, express.json({ limit: '10mb' }), async (req, res) => {
    const sessionId = req.header('mcp-session-id');
    let transport = sessionId ? sessions.get(sessionId) : undefined;
    if (!transport) {
      if (sessionId) return sessionNotFound(res);
      if (!isInitializeRequest(req.body)) {
        res.status(400).json(jsonRpcError(-32000, 'Bad Request: No valid session ID provided'));
        return;
      }
      const created = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        // Registered from the transport's own callback, not after handleRequest returns: the
        // client may send its next request before the initialize response has finished.
        onsessioninitialized: (id) => void sessions.set(id, created),
      });
      created.onclose = () => {
        if (created.sessionId) sessions.delete(created.sessionId);
      };
      await buildMcpServer().connect(created);
      transport = created;
    }
    await transport.handleRequest(req, res, req.body);
  });

  const existingSession: express.RequestHandler = async (req, res) => {
    const sessionId = req.header('mcp-session-id');
    if (!sessionId) {
      res.status(400).json(jsonRpcError(-32000, 'Bad Request: Mcp-Session-Id header is required'));
      return;
    }
    const transport = sessions.get(sessionId);
    if (!transport) return sessionNotFound(res);
    await transport.handleRequest(req, res);
  };
  app.get(path, existingSession);
  app.delete(path, existingSession);

  app.use(((error, _req, res, _next) => {
    log.error('example MCP server request failed', { error });
    if (!res.headersSent) res.status(500).json(jsonRpcError(-32603, 'Internal server error'));
    else res.end();
  }) as express.ErrorRequestHandler);

  return app;
}

function buildMcpServer(): McpServer {
  const server = new McpServer({ name: 'example-mcp-server', version: '1.0.0' }, { capabilities: { logging: {} } });

  server.registerTool(
    'echo',
    {
      description: 'Returns the text it is given',
      inputSchema: { text: z.string() },
    },
    ({ text }) => ({ content: [{ type: 'text', text }] }),
  );

  server.registerTool(
    'add',
    {
      description: 'Adds two numbers',
      inputSchema: { a: z.number(), b: z.number() },
    },
    ({ a, b }) => ({ content: [{ type: 'text', text: String(a + b) }] }),
  );

  server.registerTool(
    'whoami',
    {
      description: 'What this server knows about the caller (a hash of the token, never the token)',
    },
    (extra) => {
      const headers = extra.requestInfo?.headers ?? {};
      const header = (name: string): string | undefined => {
        const value = headers[name];
        return Array.isArray(value) ? value.join(', ') : value;
      };
      const token = bearerToken(header('authorization'));
      const caller = {
        tokenSha256: token ? sha256Hex(token) : null,
        scope: header('x-authorization-scope') ?? null,
        dynamicClientId: header('x-dynamic-client-id') ?? null,
        userId: header('x-user-id') ?? null,
      };
      return { content: [{ type: 'text', text: JSON.stringify(caller) }] };
    },
  );

  server.registerTool(
    'slow_count',
    {
      description: 'Counts to `count`, one step every `delayMs`, notifying progress at each step',
      inputSchema: {
        count: z.number().int().min(1).max(20),
        delayMs: z.number().int().min(0).max(2000),
      },
    },
    async ({ count, delayMs }, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (let step = 1; step <= count; step++) {
        if (extra.signal.aborted) break;
        await sleep(delayMs);
        // extra.sendNotification ties each notification to this request, so it streams on the
        // POST's own SSE response — the path through the proxy that buffering would break.
        // (server.sendLoggingMessage would put it on the session's GET stream instead.)
        await extra.sendNotification({
          method: 'notifications/message',
          params: {
            level: 'info',
            logger: 'slow_count',
            data: `step ${step} of ${count}`,
          },
        });
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: {
              progressToken,
              progress: step,
              total: count,
              message: `step ${step}`,
            },
          });
        }
      }
      return { content: [{ type: 'text', text: `counted ${count}` }] };
    },
  );

  return server;
}

async function checkToken(
  userinfoUrl: string,
  token: string,
  cacheMs: number,
  acceptedUntil: Map<string, number>,
): Promise<'valid' | 'invalid' | 'unavailable'> {
  const key = sha256Hex(token);
  if (cacheMs > 0 && (acceptedUntil.get(key) ?? 0) > Date.now()) return 'valid';
  let response: Response;
  try {
    response = await fetch(userinfoUrl, {
      headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
      signal: AbortSignal.timeout(5_000),
    });
    await response.body?.cancel();
  } catch {
    return 'unavailable';
  }
  if (response.ok) {
    if (cacheMs > 0) acceptedUntil.set(key, Date.now() + cacheMs);
    return 'valid';
  }
  acceptedUntil.delete(key);
  return response.status >= 500 ? 'unavailable' : 'invalid';
}

function bearerToken(authorization: string | undefined): string | undefined {
  const match = /^Bearer[ ]+([^ ]+)[ ]*$/i.exec(authorization ?? '');
  return match?.[1];
}

function invalidToken(res: express.Response): void {
  res.status(401).set('WWW-Authenticate', 'Bearer error="invalid_token"').json({ error: 'invalid_token' });
}

function sessionNotFound(res: express.Response): void {
  // 404 tells a client its session is gone and it must initialize again (MCP, Session Management).
  res.status(404).json(jsonRpcError(-32001, 'Session not found'));
}

function jsonRpcError(code: number, message: string): object {
  return { jsonrpc: '2.0', error: { code, message }, id: null };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const port = Number(process.env.PORT ?? 3001);
  // Loopback only: the proxy in front is the one public entrance. No DNS-rebinding Host check
  // (createMcpExpressApp's default) because the proxy forwards requests for its own public host.
  const server = createExampleMcpServer().listen(port, '127.0.0.1', () => {
    log.info(`example MCP server listening on http://127.0.0.1:${port}/mcp`);
  });
  server.on('error', (error) => {
    log.error('example MCP server could not listen', { error, port });
    process.exitCode = 1;
  });
}
