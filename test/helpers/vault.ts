import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import {
  IdentityError,
  type IdentityClient,
  type IdentityErrorCode,
  type UpstreamCredentials,
} from '../../lib/identity/index.ts';
import { createRedisStore, type Store } from '../../lib/store/index.ts';
import { GrantSecret, type VaultEntry } from '../../lib/vault/index.ts';
import { dumpRedis } from './redis.ts';

/** Shared by the test/vault-*.test.ts files. */
export const REDIS_URL = process.env.TEST_REDIS_URL!;
export const random = (bytes = 16) => randomBytes(bytes).toString('base64url');
export const epoch = () => Math.floor(Date.now() / 1000);
/** The grant secret G of the unit tests' grants; the end-to-end tests read each grant's from its token. */
export const secret = GrantSecret.generate();

export function redisStore(keyPrefix: string): Store {
  return createRedisStore({ url: REDIS_URL, keyPrefix, tlsRejectUnauthorized: false });
}

export async function dumpPrefix(prefix: string): Promise<Map<string, string>> {
  const redis = new Redis(REDIS_URL);
  try {
    return await dumpRedis(redis, prefix);
  } finally {
    redis.disconnect();
  }
}

export async function deletePrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL);
  try {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

export function entryWith(credentials: Partial<UpstreamCredentials> = {}): VaultEntry {
  return {
    accountId: 'alice@example.test',
    clientId: 'client-abc',
    expiresAt: epoch() + 3600,
    credentials: { accessToken: `at-${random()}`, refreshToken: `rt-${random()}`, tokenType: 'bearer', ...credentials },
  };
}

/**
 * An upstream token obtained an hour ago with `secondsLeft` to go: due for the early refresh
 * whatever its margin (60 s, or a quarter of its lifetime).
 */
export function nearExpiryEntry(secondsLeft = 30): VaultEntry {
  return { ...entryWith({ expiresAt: epoch() + secondsLeft }), obtainedAt: epoch() - 3600 + secondsLeft };
}

/**
 * A stand-in for the upstream IdP's refresh, for the lock and hand-off cases that need a refresh
 * to be slow or to fail on cue. The real IdP is used end to end further down.
 */
export class FakeIdentity implements IdentityClient {
  readonly issuer = 'https://idp.invalid';
  readonly scope = 'openid';
  readonly presented: string[] = [];
  delayMs = 0;
  failWith: IdentityErrorCode | undefined;
  expiresIn = 3600;

  async authorizationUrl(): Promise<URL> {
    throw new Error('not used');
  }
  async exchange(): Promise<never> {
    throw new Error('not used');
  }
  async refresh(refreshToken: string): Promise<UpstreamCredentials> {
    this.presented.push(refreshToken);
    await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    if (this.failWith) throw new IdentityError(this.failWith, `simulated ${this.failWith}`);
    return {
      accessToken: `at-${random()}`,
      refreshToken: `rt-${random()}`,
      expiresAt: epoch() + this.expiresIn,
      tokenType: 'bearer',
    };
  }
}

export async function codeOf(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return error instanceof IdentityError ? error.code : `not an IdentityError: ${String(error)}`;
  }
}
