import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Express } from 'express';
import type Provider from 'oidc-provider';
import { clientPolicies } from './auth-server/client-policy.ts';
import { corsForRefusal, corsRoutes } from './auth-server/cors.ts';
import { metadataRoutes } from './auth-server/metadata.ts';
import { resourceScopes } from './auth-server/policy.ts';
import type { Config } from './config/types.ts';
import { errorHandler, logError, rejectUndecodablePath } from './http/error-handler.ts';
import { HttpsRequired, jsonBody } from './http/errors.ts';
import { clientProtocol } from './http/forwarded.ts';
import { homeRoutes } from './http/home.ts';
import type { IdentityClient } from './identity/index.ts';
import { interactionRoutes } from './interactions/routes.ts';
import { limitByAddress } from './rate-limit/ip.ts';
import { createMcpProxy, type McpProxy, type McpServerReadiness } from './proxy/index.ts';
import type { Store } from './store/types.ts';
import type { Logger } from './telemetry/log.ts';
import { runInRequest } from './telemetry/request-context.ts';
import { beginRequest, requestTelemetry } from './telemetry/request-log.ts';
import type { Vault } from './vault/index.ts';
import { grantSecretContext } from './auth-server/token-binding.ts';
import { handBack } from './http/edge-body.ts';
import { sendJson } from './http/json.ts';
import type { Views } from './views/index.ts';
import type { KeyMaterial } from './auth-server/keys.ts';

export interface AppDeps {
  config: Config;
  provider: Provider;
  identity: IdentityClient;
  store: Store;
  vault: Vault;
  views: Views;
  keys: KeyMaterial;
  log: Logger;
  /** The supervised MCP server, when there is one: `/mcp` answers 503 while it is not ready. */
  mcpServer?: McpServerReadiness;
}

const clientUsedHttps = (req: IncomingMessage): boolean => clientProtocol(req) === 'https';

/** Answered before Express (the `/mcp` fast path skips it), so with plain Node. */
function refuseHttp(res: ServerResponse, log: Logger): void {
  const error = new HttpsRequired();
  logError(log, error);
  sendJson(res, error.status, jsonBody(error));
}

export interface Web {
  /** The Express app: everything but the `/mcp` hot path. */
  readonly app: Express;
  /** The server's request listener. */
  readonly listener: (req: IncomingMessage, res: ServerResponse) => void;
}

/**
 * The web layer. Pure: no listening, connecting or exiting here — that is `start.ts`'s job.
 *
 * `/mcp` calls from programs (no `Origin`, not a preflight) skip Express: they are every tool call,
 * and Express's routing and request decoration cost about as much CPU as the proxying itself.
 * Browser calls (CORS) and everything else go through the Express app.
 */
export function createWeb(deps: AppDeps): Web {
  const { config } = deps;
  const proxy = createMcpProxy(deps);
  const app = createApp(deps, proxy);
  const mcpPath = config.mcp.path;
  const production = config.mode === 'production';
  const isMcp = (url: string) =>
    url.startsWith(mcpPath) && (url.length === mcpPath.length || '/?'.includes(url[mcpPath.length]!));

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'OPTIONS' || req.headers.origin !== undefined || !isMcp(req.url ?? '')) {
      app(req, res);
      return;
    }
    // Its id, its log line and its span, a refused plain-http request's too. Its X-Request-Id
    // leaves with the head, whoever writes it.
    const request = beginRequest(req, res, mcpPath, true);
    if (production && !clientUsedHttps(req)) return runInRequest(request, refuseHttp, res, deps.log);
    // The proxy answers every outcome itself, its own defects included: nothing to catch here.
    runInRequest(request, proxy, req, res);
  };
  return { app, listener };
}

/** The Express app, with the `/mcp` handler mounted behind CORS for browser clients. */
export function createApp(deps: AppDeps, proxy: McpProxy): Express {
  const { config, provider, views, log } = deps;
  const app = express();
  app.disable('x-powered-by');
  // One TLS-terminating router in front (Heroku): trust exactly that hop's X-Forwarded-*.
  app.set('trust proxy', 1);

  // First: the request's id, span and log line cover everything below.
  app.use(requestTelemetry);

  // oidc-provider builds endpoint URLs from the request's host, and with `proxy = true` from
  // X-Forwarded-Host, which the router passes on from the client. BASE_URL is the one truth (R9):
  // metadata and redirects must not follow whatever host a request names.
  const publicHost = new URL(config.baseUrl).host;
  app.use((req, _res, next) => {
    req.headers.host = publicHost;
    delete req.headers['x-forwarded-host'];
    next();
  });

  if (config.mode === 'production') {
    // R18: every endpoint over HTTPS. The router says which scheme the client used.
    app.use((req, res, next) => (clientUsedHttps(req) ? next() : refuseHttp(res, log)));
  }

  app.use(rejectUndecodablePath);
  app.use(corsRoutes(config));
  app.use(metadataRoutes(config));
  app.use(homeRoutes(deps));
  app.use(limitByAddress({ store: deps.store, config: config.rateLimit, log }));
  app.use(
    interactionRoutes({
      ...deps,
      csrfKeys: deps.keys.csrfKeys,
      grantSecretCookieKey: deps.keys.grantSecretCookieKeys[0],
    }),
  );
  app.all([config.mcp.path, `${config.mcp.path}/*rest`], proxy);
  app.use(
    clientPolicies(
      { registration: '/reg', authorization: '/auth', token: '/token' },
      resourceScopes(config).join(' '),
      config.mcp.resourceUrl,
    ),
  );
  app.use(
    grantSecretContext({
      paths: { authorization: '/auth', token: '/token' },
      cookieKeys: deps.keys.grantSecretCookieKeys,
      secure: new URL(config.baseUrl).protocol === 'https:',
      log,
    }),
  );
  app.use(handBack); // the bodies the policies above read, back in the stream for oidc-provider
  app.use(provider.callback());
  app.use(errorHandler({ views, log, cors: corsForRefusal(config) }));
  log.debug('app created', { mcp_path: config.mcp.path });
  return app;
}
