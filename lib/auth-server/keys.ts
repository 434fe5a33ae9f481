import { createHash, hkdfSync } from 'node:crypto';
import { exportJWK, generateKeyPair, type JSONWebKeySet, type JWK } from 'jose';

/**
 * Signing keys and the secrets derived from them.
 *
 * OIDC_PROVIDER_JWKS is the one secret the operator manages. Cookie signing keys, the CSRF key and
 * the vault's key-encryption key are derived from its private material with HKDF, each under its
 * own label, so no derived secret can stand in for another and rotating the JWKS rotates them all.
 */
export interface KeyMaterial {
  readonly jwks: JSONWebKeySet;
  /** Signs oidc-provider's cookies (`cookies.keys`). */
  readonly cookieKeys: string[];
  /** Keys the CSRF tokens of interaction forms. */
  readonly csrfKey: Buffer;
  /** Root of the vault's per-grant keys. */
  readonly vaultKey: Buffer;
  /**
   * Seals the cookie that carries a new grant's secret from the upstream callback to the resume
   * endpoint (`lib/auth-server/grant-secret-cookie.ts`).
   */
  readonly grantSecretCookieKey: Buffer;
}

export async function ephemeralJwks(): Promise<JSONWebKeySet> {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { keys: [{ ...jwk, alg: 'RS256', use: 'sig', kid: `dev-${Date.now().toString(36)}` }] };
}

function privateMaterial(jwks: JSONWebKeySet): Buffer {
  const parts = (jwks.keys as JWK[])
    .map((key) => [key.kid ?? '', key.d ?? '', key.p ?? '', key.q ?? ''].join('.'))
    .filter((entry) => entry.length > 3);
  if (parts.length === 0) throw new Error('OIDC_PROVIDER_JWKS holds no private key material');
  return createHash('sha256').update(parts.join('|')).digest();
}

function derive(ikm: Buffer, label: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, 'mcp-remote-auth-proxy', label, 32));
}

export function deriveKeyMaterial(jwks: JSONWebKeySet): KeyMaterial {
  const ikm = privateMaterial(jwks);
  return {
    jwks,
    cookieKeys: [derive(ikm, 'cookie-signing').toString('base64url')],
    csrfKey: derive(ikm, 'interaction-csrf'),
    vaultKey: derive(ikm, 'vault-kek'),
    grantSecretCookieKey: derive(ikm, 'grant-secret-cookie'),
  };
}
