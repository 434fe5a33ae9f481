import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import { createWeb, type Web } from './app.ts';
import { deleteVaultOnGrantRevoked } from './auth-server/grant-events.ts';
import { deriveKeyMaterial } from './auth-server/keys.ts';
import { createProvider } from './auth-server/provider.ts';
import { loadConfig } from './config/index.ts';
import type { Config } from './config/types.ts';
import type { IdentityClient } from './identity/index.ts';
import { createDrainer } from './lifecycle/drain.ts';
import { cached, createHealth, type CheckState } from './lifecycle/health.ts';
import { Cleanups, connectIdentity, openStore, StartupError } from './lifecycle/steps.ts';
import { acceptsConnections, startMcpServer } from './mcp-server/process.ts';
import { superviseMcpServer, type McpServerSupervisor, type SuperviseOptions } from './mcp-server/supervisor.ts';
import { developmentJwks } from './store/dev-file.ts';
import type { Store } from './store/types.ts';
import { log } from './telemetry/log.ts';
import { createVault } from './vault/index.ts';
import { brandOf, createViews } from './views/index.ts';

export { StartupError } from './lifecycle/steps.ts';

export interface RunningProxy {
  readonly config: Config;
  readonly server: Server;
  /** The supervised MCP server; undefined when MCP_SERVER_URL names one that runs elsewhere. */
  readonly mcpServer: McpServerSupervisor | undefined;
  /** Resolves with a one-line reason once the proxy cannot serve any more (the MCP server keeps dying). */
  readonly failed: Promise<string>;
  /**
   * Graceful stop: stop accepting, let in-flight requests finish until the shutdown deadline,
   * then stop the MCP server and close the store.
   */
  close(): Promise<void>;
}

/**
 * Limits on receiving a request (its head, then its body). Node applies them until a request has
 * been read in full, so a response that streams for minutes (an SSE stream on `/mcp`, a long
 * tool call) is never cut by them; a client that trickles a body (slowloris) is, with a 408.
 */
export interface HttpTimeouts {
  readonly headersMs: number;
  readonly requestMs: number;
  /** Longer than the router's idle timeout (Heroku: 55 s), so the router closes first, never us. */
  readonly keepAliveMs: number;
}

const DEFAULT_TIMEOUTS: HttpTimeouts = { headersMs: 20_000, requestMs: 30_000, keepAliveMs: 65_000 };
/** The MCP server gets this long to exit after the drain; Heroku's SIGKILL comes at 30 s. */
const MCP_STOP_GRACE_MS = 3_000;

export interface StartOptions {
  /** Aborted while starting (SIGTERM): what has started is stopped and start() rejects. */
  readonly signal?: AbortSignal;
  /** Configuration already loaded from `env` (the entry point loads it first). */
  readonly config?: Config;
  readonly timeouts?: Partial<HttpTimeouts>;
  readonly restarts?: Pick<SuperviseOptions, 'backoffMs' | 'maxCrashes' | 'crashWindowMs'>;
}

/**
 * Process wiring, in order: configuration → listen → store → identity provider → MCP server →
 * ready. The port is bound first: the platform wants it within 60 s and a taken port must fail
 * at once; until the last step `/readyz` and every route but the health routes answer 503.
 */
export async function start(env: NodeJS.ProcessEnv = process.env, options: StartOptions = {}): Promise<RunningProxy> {
  const config = options.config ?? loadConfig(env);
  for (const warning of config.warnings) log.warn(warning);
  const cleanups = new Cleanups();

  let store: Store | undefined;
  let identity: IdentityClient | undefined;
  let mcpServer: McpServerSupervisor | undefined;
  let web: Web | undefined;
  let closing: Promise<void> | undefined;
  const externalMcp = cached(async () => ((await acceptsConnections(config.mcp.serverUrl)) ? 'ok' : 'failing'));
  const health = createHealth(
    // Not ready while draining either: a balancer that asks stops sending new work here.
    () => web !== undefined && closing === undefined,
    [
      { name: 'store', state: storeProbe(() => store) },
      { name: 'identity_provider', state: () => (identity ? 'ok' : 'starting') },
      {
        name: 'mcp_server',
        state: (): CheckState | Promise<CheckState> => {
          if (!config.mcp.run) return externalMcp();
          if (!mcpServer) return 'starting';
          return mcpServer.isReady() ? 'ok' : 'failing';
        },
      },
    ],
  );

  const server = httpServer({ ...DEFAULT_TIMEOUTS, ...options.timeouts });
  const drainer = createDrainer(server);
  server.on(
    'request',
    drainer.track((req: IncomingMessage, res: ServerResponse) => {
      if (health.handle(req, res)) return;
      if (!web) return health.notReady(res);
      web.listener(req, res);
    }),
  );
  await listen(server, config.port);
  cleanups.add(() => drainer.drain(0));

  try {
    store = await openStore(config, cleanups);
    const keys = deriveKeyMaterial(config.provider.jwks ?? (await developmentJwks(store)));
    identity = await connectIdentity(config, cleanups);
    if (config.mcp.run) {
      mcpServer = await startSupervised(config, env, options);
      const supervisor = mcpServer;
      cleanups.add(() => supervisor.stop(MCP_STOP_GRACE_MS));
    }

    const views = createViews(config.provider.viewsPath, brandOf(config));
    const provider = createProvider({ config, store, keys, views, log });
    const vault = createVault({ store, identity, keys: keys.vaultKeys, log });
    deleteVaultOnGrantRevoked(provider, vault, log);
    web = createWeb({ config, provider, identity, store, vault, views, keys, log, mcpServer });
    log.info('proxy ready', { url: config.baseUrl, mcp: config.mcp.resourceUrl });
  } catch (error) {
    await cleanups.run();
    throw error;
  }

  const supervisor = mcpServer;
  return {
    config,
    server,
    mcpServer,
    failed: supervisor ? supervisor.gaveUp : new Promise<string>(() => undefined),
    close: () =>
      (closing ??= (async () => {
        // Exits of the MCP server are expected from here on: the platform signals it too.
        supervisor?.retire();
        const { ended } = await drainer.drain(config.shutdownTimeoutMs);
        if (ended > 0) log.warn('requests still running at the shutdown deadline were ended', { count: ended });
        await cleanups.run();
      })()),
  };
}

function httpServer(timeouts: HttpTimeouts): Server {
  return createServer({
    // Node refuses a head timeout longer than the whole request's.
    headersTimeout: Math.min(timeouts.headersMs, timeouts.requestMs),
    requestTimeout: timeouts.requestMs,
    keepAliveTimeout: timeouts.keepAliveMs,
    // How often those two are checked (Node's default, 30 s, would double them).
    connectionsCheckingInterval: Math.max(50, Math.min(5_000, Math.floor(timeouts.requestMs / 4))),
  });
}

async function listen(server: Server, port: number): Promise<void> {
  const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    server.once('error', resolve);
    server.listen(port, () => {
      server.off('error', resolve);
      resolve(undefined);
    });
  });
  if (error) {
    const why =
      error.code === 'EADDRINUSE'
        ? 'another process is already listening there'
        : error.code === 'EACCES'
          ? 'permission denied'
          : error.message;
    throw new StartupError(`cannot listen on port ${port} (PORT): ${why}`);
  }
  log.info('proxy listening', { port });
}

/** Live readiness of the store: `starting` until its start-up check has passed. */
function storeProbe(current: () => Store | undefined): () => CheckState | Promise<CheckState> {
  const probe = cached(async () => {
    await current()!.check();
    return 'ok';
  });
  return () => (current() ? probe() : 'starting');
}

async function startSupervised(config: Config, env: NodeJS.ProcessEnv, options: StartOptions) {
  try {
    return await superviseMcpServer({
      run: config.mcp.run!,
      url: config.mcp.serverUrl,
      env,
      log,
      signal: options.signal,
      ...options.restarts,
    });
  } catch (error) {
    throw new StartupError(`MCP server did not start: ${(error as Error).message}`, { cause: error });
  }
}

/** Release phase: everything a web dyno needs at start-up is there, and the MCP server launches. */
export const RELEASE_VERIFIED = 'Verified release launches';
/** The release phase must finish within 60 s; a stuck step fails before the platform kills us. */
const RELEASE_DEADLINE_MS = 55_000;

/**
 * MCP_AUTH_PROXY_VERIFY_RELEASE=true (the buildpack's release process): run the start-up steps
 * without serving anything — configuration, store, identity provider discovery, MCP server up
 * until it accepts connections, then everything stopped again. Rejects with a StartupError naming
 * the failed (or stuck) step.
 */
export async function verifyRelease(
  env: NodeJS.ProcessEnv = process.env,
  options: { config?: Config; signal?: AbortSignal; deadlineMs?: number } = {},
): Promise<void> {
  const config = options.config ?? loadConfig(env);
  for (const warning of config.warnings) log.warn(warning);
  const cleanups = new Cleanups();
  const deadlineMs = options.deadlineMs ?? RELEASE_DEADLINE_MS;
  let step = 'the store';
  let timer: NodeJS.Timeout | undefined;
  const stuck = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new StartupError(`release verification did not finish within ${deadlineMs / 1000} s (stuck at ${step})`),
        ),
      deadlineMs,
    );
  });
  const steps = async () => {
    await openStore(config, cleanups);
    step = 'the identity provider';
    await connectIdentity(config, cleanups);
    if (!config.mcp.run) {
      log.info('no MCP server to start: MCP_SERVER_URL names one that runs elsewhere');
    } else {
      step = 'the MCP server';
      let child;
      try {
        child = await startMcpServer({
          run: config.mcp.run,
          url: config.mcp.serverUrl,
          env,
          log,
          signal: options.signal,
        });
      } catch (error) {
        throw new StartupError(`MCP server did not start: ${(error as Error).message}`, { cause: error });
      }
      await child.stop('SIGTERM', MCP_STOP_GRACE_MS);
    }
  };
  try {
    await Promise.race([steps(), stuck]);
  } finally {
    clearTimeout(timer);
    await cleanups.run();
  }
}

export function connectInstructions(config: Config): string {
  const url = config.mcp.resourceUrl;
  return [
    '',
    `MCP endpoint: ${url}`,
    'Connect MCP Inspector (then press Connect; log in as any name at the development identity provider):',
    `  npm run inspector -- --transport http --server-url ${url}`,
    `Other clients: open ${config.baseUrl}/ in a browser, or see "Connect a client" in the README.`,
    '',
  ].join('\n');
}
