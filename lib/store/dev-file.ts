import { resolve } from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { ephemeralJwks } from '../auth-server/keys.ts';
import type { Store } from './types.ts';

/**
 * Zero-configuration development (`npm start` with no Redis and no OIDC_PROVIDER_JWKS) keeps its
 * store in this git-ignored file of the working directory, so a restart does not strand the
 * clients that registered (MCP Inspector keeps its client_id across runs). Production refuses to
 * run without Redis and a configured JWKS, so it never gets here.
 */
export const DEV_STORE_FILE = '.mcp-auth-proxy-dev-store.json';

export function devStoreFile(config: { redis: unknown; provider: { jwks: unknown } }, cwd = process.cwd()) {
  return config.redis === undefined && config.provider.jwks === undefined ? resolve(cwd, DEV_STORE_FILE) : undefined;
}

const DEV_JWKS_KEY = 'dev:signing-jwks';

/**
 * The development signing key, kept in the (memory) store: registrations, sessions and sealed
 * tokens outliving a restart are worthless if the keys they are bound to do not. Only ever the
 * in-memory store: a private key has no business in a shared Redis.
 */
export async function developmentJwks(store: Store): Promise<JSONWebKeySet> {
  if (store.kind !== 'memory') return ephemeralJwks();
  const saved = await store.get(DEV_JWKS_KEY);
  if (saved) return JSON.parse(saved) as JSONWebKeySet;
  const jwks = await ephemeralJwks();
  await store.set(DEV_JWKS_KEY, JSON.stringify(jwks));
  return jwks;
}
