import { once } from 'node:events';
import http, { type RequestListener } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createWeb, type AppDeps } from '../../lib/app.ts';
import { deleteVaultOnGrantRevoked } from '../../lib/auth-server/grant-events.ts';
import { deriveKeyMaterial } from '../../lib/auth-server/keys.ts';
import { createProvider } from '../../lib/auth-server/provider.ts';
import { loadConfig } from '../../lib/config/index.ts';
import { createIdentityClient } from '../../lib/identity/index.ts';
import { createStore } from '../../lib/store/index.ts';
import { log } from '../../lib/telemetry/log.ts';
import { createVault } from '../../lib/vault/index.ts';
import { createViews } from '../../lib/views/index.ts';

export interface Web {
  /** The `/mcp` URL of this instance. */
  mcpUrl: string;
  close(): Promise<void>;
}

/**
 * Another web instance of a started stack (same configuration: BASE_URL, keys, Redis), built
 * from the same parts as `start()` but with dependencies `start()` does not pass yet (`extra`),
 * listening on a port of its own.
 */
export async function startWeb(
  env: NodeJS.ProcessEnv,
  extra: Partial<AppDeps>,
  /** Wraps the request listener, e.g. to observe what it does synchronously. */
  wrap: (listener: RequestListener) => RequestListener = (listener) => listener,
): Promise<Web> {
  const config = loadConfig(env);
  const store = createStore(config.redis);
  await store.check();
  const keys = deriveKeyMaterial(config.provider.jwks!);
  const views = createViews(config.provider.viewsPath);
  const provider = createProvider({ config, store, keys, views, log });
  const identity = await createIdentityClient(config.identity!, {
    redirectUri: `${config.baseUrl}${config.callbackPath}`,
    allowInsecure: true,
    log,
  });
  const vault = createVault({ store, identity, keys: keys.vaultKeys, log });
  deleteVaultOnGrantRevoked(provider, vault, log);
  const { listener } = createWeb({ config, provider, identity, store, vault, views, keys, log, ...extra });
  const server = http.createServer(wrap(listener)).listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    mcpUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}${config.mcp.path}`,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await store.close();
    },
  };
}
