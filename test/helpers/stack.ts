import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type { Server } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { UnauthorizedError, type OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import type {
  OAuthClientInformationMixed,
  OAuthClientMetadata,
  OAuthTokens,
} from '@modelcontextprotocol/sdk/shared/auth.js';
import { Redis } from 'ioredis';
import { ephemeralJwks } from '../../lib/auth-server/keys.ts';
import { createExampleMcpServer, type ExampleMcpServerApp } from '../../lib/dev/example-mcp-server.ts';
import { startDevIdentityProvider, type DevIdentityProvider } from '../../lib/dev/identity-provider.ts';
import { start, type RunningProxy, type StartOptions } from '../../lib/start.ts';
import { createBrowser, type Browser } from './browser.ts';

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A port whose next port is free too (development mode puts the example MCP server there). */
export async function freePortPair(): Promise<number> {
  for (;;) {
    const port = await freePort();
    const server = createServer();
    const next = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port + 1, '127.0.0.1', () => resolve(true));
    });
    if (next) {
      await new Promise((resolve) => server.close(resolve));
      return port;
    }
  }
}

export interface Stack {
  baseUrl: string;
  mcpUrl: string;
  env: NodeJS.ProcessEnv;
  idp: DevIdentityProvider;
  mcp: ExampleMcpServerApp;
  proxy: RunningProxy;
  /**
   * Stops the proxy and starts it again on the same port and store. `changes` replace variables of
   * `env` from then on (e.g. an OIDC_PROVIDER_JWKS with a key added); without them, same keys.
   */
  restart(changes?: NodeJS.ProcessEnv): Promise<void>;
  close(): Promise<void>;
}

export interface StackOptions {
  /** Default true: the real Redis from .env-test. false: the in-memory store. */
  redis?: boolean;
  /** Extra or overriding variables; a function sees the started IdP (e.g. to write a metadata file). */
  env?:
    | NodeJS.ProcessEnv
    | ((parts: { idp: DevIdentityProvider; baseUrl: string }) => NodeJS.ProcessEnv | Promise<NodeJS.ProcessEnv>);
  /** Default true: the example MCP server accepts only tokens the IdP's userinfo endpoint accepts. */
  checkUpstreamTokens?: boolean;
  /** Options of the development identity provider, e.g. a shorter token lifetime. */
  idp?: Partial<Parameters<typeof startDevIdentityProvider>[0]>;
  /** Options of `start()` itself, e.g. shorter HTTP timeouts. */
  start?: StartOptions;
}

/**
 * The whole system on loopback: the development identity provider as the real upstream IdP, the
 * example MCP server demanding valid upstream tokens (checked at the IdP's userinfo endpoint),
 * and the proxy started through the same `start()` the web process uses.
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const port = await freePort();
  // localhost, not 127.0.0.1: browsers share cookies across ports of one host, and the IdP
  // listens on 127.0.0.1.
  const baseUrl = `http://localhost:${port}`;
  const idp = await startDevIdentityProvider({
    redirectUris: [`${baseUrl}/interaction/identity/callback`],
    tokenEndpointAuthMethod: 'client_secret_post',
    ...options.idp,
  });
  const mcp = createExampleMcpServer(options.checkUpstreamTokens === false ? {} : { userinfoUrl: `${idp.issuer}/me` });
  const mcpServer: Server = mcp.listen(0, '127.0.0.1');
  await once(mcpServer, 'listening');
  const mcpPort = (mcpServer.address() as AddressInfo).port;
  const prefix = `test-${randomBytes(6).toString('hex')}:`;

  const env: NodeJS.ProcessEnv = {
    BASE_URL: baseUrl,
    PORT: String(port),
    LOCAL_INSECURE: 'true',
    LOG_LEVEL: process.env.STACK_LOG_LEVEL ?? 'warn',
    MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
    IDENTITY_SERVER_URL: idp.issuer,
    IDENTITY_CLIENT_ID: idp.clientId,
    IDENTITY_CLIENT_SECRET: idp.clientSecret,
    IDENTITY_SCOPE: 'openid profile offline_access',
    OIDC_PROVIDER_JWKS: JSON.stringify(await ephemeralJwks()),
    // Tests log in many times a minute from one address; test/rate-limit.test.ts sets its own.
    MAX_REQUESTS: '100000',
    // close() ends open streams at once, as before graceful shutdown existed; test/shutdown.test.ts covers the drain.
    MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: '0',
    ...(options.redis === false
      ? {}
      : { MCP_AUTH_PROXY_REDIS_URL: process.env.TEST_REDIS_URL, MCP_AUTH_PROXY_REDIS_KEY_PREFIX: prefix }),
    ...(typeof options.env === 'function' ? await options.env({ idp, baseUrl }) : options.env),
  };

  const stack: Stack = {
    baseUrl,
    mcpUrl: `${baseUrl}/mcp`,
    env,
    idp,
    mcp,
    proxy: await start(env, options.start),
    async restart(changes) {
      await stack.proxy.close();
      Object.assign(env, changes);
      stack.proxy = await start(env, options.start);
    },
    async close() {
      await stack.proxy.close();
      mcpServer.closeAllConnections();
      await new Promise((resolve) => mcpServer.close(resolve));
      await idp.close();
      if (options.redis !== false) await deleteKeys(prefix);
    },
  };
  return stack;
}

/** Call inside a describe: a stack for its tests, handed to `take` once started before them and closed after them. */
export function useStack(take: (stack: Stack) => void, options: StackOptions = {}): void {
  let stack: Stack | undefined;
  before(async function () {
    stack = await startStack(options);
    take(stack);
  });
  after(async function () {
    await stack?.close();
  });
}

async function deleteKeys(prefix: string): Promise<void> {
  const redis = new Redis(process.env.TEST_REDIS_URL!);
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
      if (keys.length) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/**
 * The browser step of an MCP client's login: follow the authorization URL to our consent page,
 * confirm, log in at the upstream IdP as `user`, and stop at the client's redirect URI.
 * Returns that final redirect (its Location carries `code` and `iss`, or `error`).
 */
export async function authorizeInBrowser(
  browser: Browser,
  authorizationUrl: string,
  redirectUri: string,
  options: { user?: string; decision?: 'confirm' | 'cancel' } = {},
): Promise<URL> {
  const stopAt = (url: string) => url.startsWith(redirectUri);
  let page = await browser.follow(authorizationUrl, { stopAt });
  if (page.location && stopAt(page.location)) return new URL(page.location);
  if (!page.body.includes('Allow and sign in'))
    throw new Error(`expected the consent page, got ${page.status} at ${page.url}`);
  const consentForm = options.decision === 'cancel' ? 1 : 0;
  page = await browser.submitForm(page.body, page.url, {}, { form: consentForm, stopAt });
  if (page.location && stopAt(page.location)) return new URL(page.location);
  // Upstream login form of the development identity provider.
  page = await browser.submitForm(page.body, page.url, { login: options.user ?? 'alice' }, { stopAt });
  if (!page.location || !stopAt(page.location))
    throw new Error(`login did not come back to the client: ${page.status} at ${page.url}`);
  return new URL(page.location);
}

/** An MCP SDK OAuth client provider whose "browser" is the scripted one above. */
export class TestOAuthClient implements OAuthClientProvider {
  info: OAuthClientInformationMixed | undefined;
  savedTokens: OAuthTokens | undefined;
  verifier = '';
  lastRedirect: URL | undefined;
  readonly browser: Browser = createBrowser();

  constructor(
    readonly options: { redirectUrl?: string; user?: string; metadata?: Partial<OAuthClientMetadata> } = {},
  ) {}

  get redirectUrl(): string {
    return this.options.redirectUrl ?? 'http://127.0.0.1:33418/callback';
  }
  get clientMetadata(): OAuthClientMetadata {
    return {
      client_name: 'Test MCP Client',
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      ...this.options.metadata,
    } as OAuthClientMetadata;
  }
  clientInformation() {
    return this.info;
  }
  saveClientInformation(info: OAuthClientInformationMixed) {
    this.info = info;
  }
  tokens() {
    return this.savedTokens;
  }
  saveTokens(tokens: OAuthTokens) {
    this.savedTokens = tokens;
  }
  async redirectToAuthorization(url: URL) {
    this.lastRedirect = await authorizeInBrowser(this.browser, url.href, this.redirectUrl, { user: this.options.user });
  }
  saveCodeVerifier(verifier: string) {
    this.verifier = verifier;
  }
  codeVerifier() {
    return this.verifier;
  }
}

/** Connects an SDK client, doing the OAuth dance when the proxy asks for it. */
export async function connectClient(
  mcpUrl: string,
  oauth: TestOAuthClient,
  options: { fetch?: FetchLike } = {},
): Promise<Client> {
  const client = new Client({ name: 'proxy-e2e', version: '1.0.0' });
  try {
    await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { ...options, authProvider: oauth }));
    return client;
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  const code = oauth.lastRedirect?.searchParams.get('code');
  if (!code) throw new Error(`no authorization code: ${oauth.lastRedirect?.href}`);
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { ...options, authProvider: oauth });
  await transport.finishAuth(code);
  await client.connect(transport);
  return client;
}
