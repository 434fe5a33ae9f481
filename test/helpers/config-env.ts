import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Shared by the test/config*.test.ts files: environments to load (config-problems.ts asserts on them). */

export function privateJwk(
  type: 'ec' | 'rsa' | 'ed25519',
  options: object = { namedCurve: 'P-256' },
): Record<string, unknown> {
  const { privateKey } =
    type === 'ec'
      ? generateKeyPairSync('ec', options as { namedCurve: string })
      : type === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ed25519');
  return privateKey.export({ format: 'jwk' }) as Record<string, unknown>;
}

export const EC_KEY: Record<string, unknown> = { ...privateJwk('ec'), kid: 'signing-1' };
export const JWKS = JSON.stringify({ keys: [EC_KEY] });

/** A scratch directory (with `server/`, `views/` and a GitHub-like `metadata.json`), per describe. */
export const fixture = { tmp: '', metadataFile: '' };

/** Call inside a top-level describe: creates the fixture before its tests and removes it after. */
export function useConfigFixture(): void {
  before(() => {
    fixture.tmp = mkdtempSync(join(tmpdir(), 'config-test-'));
    mkdirSync(join(fixture.tmp, 'server'));
    mkdirSync(join(fixture.tmp, 'views'));
    fixture.metadataFile = join(fixture.tmp, 'metadata.json');
    writeFileSync(
      fixture.metadataFile,
      JSON.stringify({
        issuer: 'https://github.com',
        authorization_endpoint: 'https://github.com/login/oauth/authorize',
        token_endpoint: 'https://github.com/login/oauth/access_token',
      }),
    );
  });

  after(() => rmSync(fixture.tmp, { recursive: true, force: true }));
}

/**
 * Heroku Identity's metadata document, written to `name` in the fixture as the Heroku proxy's
 * template ships it: its issuer has a trailing slash, IDENTITY_SERVER_URL has none.
 */
export function writeHerokuIdentityMetadata(name: string): string {
  const file = join(fixture.tmp, name);
  writeFileSync(
    file,
    JSON.stringify({
      issuer: 'https://identity.example.com/',
      authorization_endpoint: 'https://identity.example.com/oauth/authorize',
      token_endpoint: 'https://identity.example.com/oauth/token',
      scopes_supported: 'global',
    }),
  );
  return file;
}

/** The Config both production() and the empty environment get for every setting they leave unset. */
export const UNSET_SETTINGS = {
  proxy: { maxBodyBytes: 4194304, allowedOrigins: [] },
  cimd: { allowedHosts: [] },
  telemetry: {
    enabled: false,
    tracesEndpoint: undefined,
    headers: {},
    serviceName: 'unnamed_mcp_remote_auth_proxy',
  },
  rateLimit: { maxRequests: 60, windowMs: 60000 },
  branding: { title: undefined, faviconUrl: undefined },
  callbackPath: '/interaction/identity/callback',
  appName: undefined,
  shutdownTimeoutMs: 25000,
  verifyRelease: false,
} as const;

/** A complete, valid production environment; tests break one thing at a time. */
export function production(overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    NODE_ENV: 'production',
    PORT: '5000',
    BASE_URL: 'https://proxy.example.com/',
    MCP_SERVER_URL: 'http://127.0.0.1:8080/mcp',
    MCP_SERVER_RUN_COMMAND: 'node',
    MCP_SERVER_RUN_ARGS_JSON: '["server.js", "--stdio=false"]',
    MCP_SERVER_RUN_DIR: fixture.tmp,
    MCP_SERVER_RUN_ENV_JSON: '{"PORT":"8080","MODE":"remote"}',
    MCP_AUTH_PROXY_REDIS_URL: 'rediss://:redis-password@redis.example.com:6380',
    OIDC_PROVIDER_JWKS: JWKS,
    IDENTITY_SERVER_URL: 'https://idp.example.com',
    IDENTITY_CLIENT_ID: 'proxy-client',
    IDENTITY_CLIENT_SECRET: 'client-secret',
    ...overrides,
  };
}
