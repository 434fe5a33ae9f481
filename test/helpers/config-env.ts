import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { ConfigError, loadConfig, type ConfigProblem } from '../../lib/config/index.ts';

/** Shared by the test/config*.test.ts files: environments to load and assertions on their problems. */

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

/** The problems loadConfig reports; fails the test when it does not throw. */
export function problemsOf(env: NodeJS.ProcessEnv, cwd?: string): readonly ConfigProblem[] {
  try {
    loadConfig(env, cwd);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  expect.fail('loadConfig accepted an invalid environment');
}

export function messageOf(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  expect.fail('loadConfig accepted an invalid environment');
}

/** Asserts a problem on `variable` whose text matches `pattern`. */
export function expectProblem(env: NodeJS.ProcessEnv, variable: string, pattern: RegExp): void {
  const problems = problemsOf(env);
  const matching = problems.filter((p) => p.variable === variable && pattern.test(p.problem));
  expect(matching, JSON.stringify(problems, null, 2)).to.have.length.greaterThan(0);
}
