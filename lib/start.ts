import { once } from 'node:events';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import { createWeb } from './app.ts';
import { deleteVaultOnGrantRevoked } from './auth-server/grant-events.ts';
import { deriveKeyMaterial } from './auth-server/keys.ts';
import { createProvider } from './auth-server/provider.ts';
import { loadConfig } from './config/index.ts';
import type { Config, IdentityConfig } from './config/types.ts';
import { createIdentityClient } from './identity/index.ts';
import { startMcpServer, type McpServerExit, type McpServerProcess } from './mcp-server/process.ts';
import { developmentJwks, devStoreFile } from './store/dev-file.ts';
import { createStore } from './store/index.ts';
import { log, redactUrl } from './telemetry/log.ts';
import { createVault } from './vault/index.ts';
import { brandOf, createViews } from './views/index.ts';

export interface RunningProxy {
  readonly config: Config;
  readonly server: Server;
  /** Resolves when the MCP server child exits on its own: the proxy cannot serve without it. */
  readonly mcpServerExited: Promise<McpServerExit> | undefined;
  close(): Promise<void>;
}

/** A start-up failure with a one-line, operator-facing message (no stack trace needed). */
export class StartupError extends Error {
  readonly code = 'STARTUP_FAILED';
}

/**
 * Process wiring, in order: configuration → store → identity provider → MCP server → listen.
 * Each step that can fail on the outside world fails with one line naming what and where.
 */
export async function start(
  env: NodeJS.ProcessEnv = process.env,
  options: { signal?: AbortSignal } = {},
): Promise<RunningProxy> {
  const config = loadConfig(env);
  for (const warning of config.warnings) log.warn(warning);
  const cleanups: Array<() => Promise<unknown>> = [];
  const closeAll = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  };

  try {
    const store = createStore(config.redis, { file: devStoreFile(config) });
    cleanups.push(() => store.close());
    try {
      await store.check();
    } catch (error) {
      throw new StartupError((error as Error).message);
    }
    log.info('store ready', { store: store.kind, url: config.redis ? redactUrl(config.redis.url) : undefined });

    const keys = deriveKeyMaterial(config.provider.jwks ?? (await developmentJwks(store)));
    const redirectUri = `${config.baseUrl}${config.callbackPath}`;

    let identityConfig: IdentityConfig;
    let allowInsecure = config.localInsecure;
    if (config.identity) {
      identityConfig = config.identity;
    } else {
      // Development only (configuration refuses a missing identity provider in production).
      const { startDevIdentityProvider } = await import('./dev/identity-provider.ts');
      const dev = await startDevIdentityProvider({
        redirectUris: [redirectUri],
        tokenEndpointAuthMethod: 'client_secret_post',
      });
      cleanups.push(() => dev.close());
      identityConfig = {
        serverUrl: new URL(dev.issuer),
        metadataFile: undefined,
        clientId: dev.clientId,
        clientSecret: dev.clientSecret,
        scope: 'openid profile offline_access',
      };
      allowInsecure = true;
    }
    let identity;
    try {
      identity = await createIdentityClient(identityConfig, { redirectUri, allowInsecure, log });
    } catch (error) {
      throw new StartupError((error as Error).message);
    }
    log.info('identity provider ready', { issuer: identity.issuer });

    let mcpServer: McpServerProcess | undefined;
    if (config.mcp.run) {
      try {
        mcpServer = await startMcpServer({
          run: config.mcp.run,
          url: config.mcp.serverUrl,
          env,
          log,
          signal: options.signal,
        });
      } catch (error) {
        throw new StartupError(`MCP server did not start: ${(error as Error).message}`);
      }
      const child = mcpServer;
      cleanups.push(() => child.stop());
    }

    const views = createViews(config.provider.viewsPath, brandOf(config));
    const provider = createProvider({ config, store, keys, views, log });
    const vault = createVault({ store, identity, key: keys.vaultKey, log });
    deleteVaultOnGrantRevoked(provider, vault, log);
    const web = createWeb({ config, provider, identity, store, vault, views, keys, log });

    const server = createServer(web.listener).listen(config.port);
    await Promise.race([
      once(server, 'listening'),
      once(server, 'error').then(([error]) => {
        throw new StartupError(`cannot listen on port ${config.port}: ${(error as Error).message}`);
      }),
    ]);
    // Streamable HTTP GET streams stay open for as long as the client likes.
    server.requestTimeout = 0;
    server.headersTimeout = 60_000;
    server.keepAliveTimeout = 65_000;
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    log.info('proxy listening', { url: config.baseUrl, mcp: config.mcp.resourceUrl });

    return {
      config,
      server,
      mcpServerExited: mcpServer?.exited,
      close: closeAll,
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

export function connectInstructions(config: Config): string {
  const url = config.mcp.resourceUrl;
  return [
    '',
    `MCP endpoint: ${url}`,
    'Connect MCP Inspector (then press Connect; log in as any name at the development identity provider):',
    `  npx -y @modelcontextprotocol/inspector --transport http --server-url ${url}`,
    'or through mcp-remote:',
    `  npx -y @modelcontextprotocol/inspector npx -y mcp-remote ${url}`,
    '',
  ].join('\n');
}
