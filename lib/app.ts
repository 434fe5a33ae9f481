import { randomUUID } from 'node:crypto';
import express, { type Express } from 'express';
import type Provider from 'oidc-provider';
import { clientPolicies } from './auth-server/client-policy.ts';
import { corsRoutes } from './auth-server/cors.ts';
import { metadataRoutes } from './auth-server/metadata.ts';
import { resourceScopes } from './auth-server/provider.ts';
import type { Config } from './config/types.ts';
import { errorHandler } from './http/errors.ts';
import type { IdentityClient } from './identity/index.ts';
import { interactionRoutes } from './interactions/routes.ts';
import { createMcpProxy } from './proxy/index.ts';
import type { Store } from './store/types.ts';
import { runWithRequestId, type Logger } from './telemetry/log.ts';
import type { Vault } from './vault/index.ts';
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
}

const REQUEST_ID = /^[A-Za-z0-9\-_.]{8,128}$/;

/** The Express app. Pure: no listening, connecting or exiting here — that is `start.ts`'s job. */
export function createApp(deps: AppDeps): Express {
  const { config, provider, views, log } = deps;
  const app = express();
  app.disable('x-powered-by');
  // One TLS-terminating router in front (Heroku): trust exactly that hop's X-Forwarded-*.
  app.set('trust proxy', 1);

  app.use((req, res, next) => {
    const incoming = req.get('x-request-id');
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.set('X-Request-Id', requestId);
    runWithRequestId(requestId, next);
  });

  if (config.mode === 'production') {
    // R18: every endpoint over HTTPS. The router says which scheme the client used.
    app.use((req, res, next) => {
      if (req.protocol === 'https') return next();
      res.status(403).set('Cache-Control', 'no-store').json({ error: 'invalid_request', error_description: 'HTTPS is required' });
    });
  }

  app.use(corsRoutes(config));
  app.use(metadataRoutes(config, provider));
  app.use(interactionRoutes({ ...deps, csrfKey: deps.keys.csrfKey }));
  const proxy = createMcpProxy(deps);
  app.all([config.mcp.path, `${config.mcp.path}/*rest`], proxy);
  app.use(clientPolicies({ registration: '/reg', authorization: '/auth', token: '/token' }, resourceScopes(config).join(' ')));
  app.use(provider.callback());
  app.use(errorHandler(views));
  log.debug('app created', { mcp_path: config.mcp.path });
  return app;
}
