import { createHash, hkdfSync } from 'node:crypto';
import { exportJWK, generateKeyPair, type JSONWebKeySet, type JWK } from 'jose';

/**
 * Signing keys and the secrets derived from them.
 *
 * OIDC_PROVIDER_JWKS is the one secret the operator manages. Cookie signing keys, the CSRF key and
 * the vault's root key are derived from its private material with HKDF, each under its own label,
 * so no derived secret can stand in for another.
 *
 * Derived *per private key*, in the order of the set, like oidc-provider's cookie keys (keygrip):
 * the first key's secrets make everything new, every key's secrets open or verify what was made
 * earlier. Adding a key in front (`mcp-auth-proxy jwks --add`) therefore logs nobody out, and
 * retiring a key ends only what is still sealed under it (`lib/vault/README.md`, key rotation).
 */

/**
 * The secrets of one purpose, one per private key of the set, in its order: the first makes new
 * values (signs, seals), each one is accepted where a value made earlier is read back.
 */
export type KeyRing = readonly [Buffer, ...Buffer[]];

export interface KeyMaterial {
  readonly jwks: JSONWebKeySet;
  /** oidc-provider's `cookies.keys`: the first signs, all verify. */
  readonly cookieKeys: string[];
  /** Keys the CSRF tokens of interaction forms. */
  readonly csrfKeys: KeyRing;
  /** Roots of the vault's per-grant keys. */
  readonly vaultKeys: KeyRing;
  /**
   * Seal the cookie that carries a new grant's secret from the upstream callback to the resume
   * endpoint (`lib/auth-server/grant-secret-cookie.ts`).
   */
  readonly grantSecretCookieKeys: KeyRing;
}

export async function ephemeralJwks(): Promise<JSONWebKeySet> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { keys: [{ ...jwk, alg: 'RS256', use: 'sig', kid: `dev-${Date.now().toString(36)}` }] };
}

/** The private members of one key, as the derivation has always spelled them. */
function entryOf(key: JWK): string {
  return [key.kid ?? '', key.d ?? '', key.p ?? '', key.q ?? ''].join('.');
}

/**
 * Input keying material of one key. For a set of one key this is byte for byte what the
 * derivation over the whole set gave before it was made per key, so a one-key deployment keeps
 * every cookie and vault record across the upgrade.
 */
function ikmOf(key: JWK): Buffer {
  return createHash('sha256').update(entryOf(key)).digest();
}

/**
 * The derivation before it was made per key: one hash over every key of the set. For a set of two
 * or more keys it differs from each key's own, so values made by that code under such a set open
 * only with it. Accepted, never used to make anything; remove once every deployment has run the
 * per-key code for `TTL.Grant` (30 days), the longest any value made under it lives (a vault
 * record; sessions live 14 days, everything else minutes).
 */
function wholeSetIkm(jwks: JSONWebKeySet): Buffer {
  const parts = (jwks.keys as JWK[]).map(entryOf).filter((entry) => entry.length > 3);
  return createHash('sha256').update(parts.join('|')).digest();
}

function derive(ikm: Buffer, label: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, 'mcp-remote-auth-proxy', label, 32));
}

export function deriveKeyMaterial(jwks: JSONWebKeySet): KeyMaterial {
  const own = (jwks.keys as JWK[]).filter((key) => typeof key.d === 'string' && key.d !== '').map(ikmOf);
  if (own.length === 0) throw new Error('OIDC_PROVIDER_JWKS holds no private key material');
  const legacy = wholeSetIkm(jwks);
  const ikms = own.some((ikm) => ikm.equals(legacy)) ? own : [...own, legacy];
  const ring = (label: string) => ikms.map((ikm) => derive(ikm, label)) as unknown as KeyRing;
  return {
    jwks,
    cookieKeys: ring('cookie-signing').map((key) => key.toString('base64url')),
    csrfKeys: ring('interaction-csrf'),
    vaultKeys: ring('vault-kek'),
    grantSecretCookieKeys: ring('grant-secret-cookie'),
  };
}
