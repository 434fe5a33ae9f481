import { hkdfSync } from 'node:crypto';
import { openLegacyGcm } from '../crypto/legacy-gcm.ts';
import { keyIdOf, openJson, sealJson, type Sealing } from '../crypto/sealed-json.ts';
import { GrantSecret } from '../vault/grant-secret.ts';

/**
 * Carries a grant's secret G from the upstream callback to the resume endpoint `/auth/:uid`,
 * where the authorization code is minted: in the browser that logged in, never through the store
 * (`lib/vault/README.md`).
 */
export const GRANT_SECRET_COOKIE = '_grant_secret';

interface CookieContent {
  /** base64url(G) */
  g: string;
  grant: string;
  /** Epoch seconds; the cookie's Max-Age says the same to the browser. */
  exp: number;
}

export interface GrantSecretCookie {
  /** `Path` of the cookie: the pathname of the interaction's `returnTo` (the resume endpoint). */
  path: string;
  /** The interaction's uid: the cookie opens only for it. */
  uid: string;
  grantId: string;
  secret: GrantSecret;
  maxAgeSeconds: number;
  secure: boolean;
}

export function cookieAttributes(path: string, maxAge: number, secure: boolean): string {
  return `Path=${path}; Max-Age=${maxAge}; HttpOnly; SameSite=Lax${secure ? '; Secure' : ''}`;
}

/**
 * Threat: a cookie lifted from one login (or planted by another site of the same registrable
 * domain) replayed at another interaction's resume, which would mint that interaction's code
 * with a G of the attacker's choosing. The interaction's uid is the JWE's bound context, so a
 * cookie opens only at the resume of the interaction it was made for.
 */
function sealing(key: Buffer, uid: string): Sealing {
  const cookieKey = Buffer.from(hkdfSync('sha256', key, '', 'grant-secret-cookie v2', 32));
  return {
    key: cookieKey,
    kid: keyIdOf(key, 'grant-secret-cookie key id'),
    type: 'grant-secret-cookie+2',
    context: uid,
  };
}

/**
 * The `Set-Cookie` value the upstream callback sends with its redirect to the resume endpoint.
 * Sealed (JWE, `lib/crypto/sealed-json.ts`) under `key`, the first of
 * `KeyMaterial.grantSecretCookieKeys` (derived from OIDC_PROVIDER_JWKS), bound to the
 * interaction's uid: the browser holds G for a moment without being able to read it, an altered
 * cookie does not open, and a cookie of another interaction does not open for this one. Only the
 * browser that logged in has it (HttpOnly, scoped to one resume path); SameSite=Lax still sends it
 * on the top-level redirect back from the identity provider.
 */
export async function grantSecretCookie(key: Buffer, cookie: GrantSecretCookie): Promise<string> {
  const maxAge = Math.max(1, Math.floor(cookie.maxAgeSeconds));
  const content: CookieContent = {
    g: cookie.secret.encode(),
    grant: cookie.grantId,
    exp: Math.floor(Date.now() / 1000) + maxAge,
  };
  const value = await sealJson(sealing(key, cookie.uid), content);
  return `${GRANT_SECRET_COOKIE}=${value}; ${cookieAttributes(cookie.path, maxAge, cookie.secure)}`;
}

/**
 * `v1.<iv>.<ciphertext>.<tag>`, the layout before the JWE: AES-256-GCM under the cookie key
 * itself, `grant-secret-cookie v1\0<uid>` as associated data. A login in progress at deployment
 * carries one for at most the interaction's ten minutes.
 */
function openV1(key: Buffer, uid: string, value: string): unknown {
  const [, iv, ciphertext, tag, ...rest] = value.split('.');
  if (!iv || !ciphertext || !tag || rest.length) return undefined;
  const plain = openLegacyGcm(key, Buffer.from(`grant-secret-cookie v1\0${uid}`), { iv, ciphertext, tag });
  try {
    return plain && (JSON.parse(plain.toString('utf8')) as unknown);
  } catch {
    return undefined;
  }
}

/**
 * G and its grant from a cookie value, if it was made for interaction `uid` and has not expired.
 * Every key of `keys` is tried (`KeyMaterial.grantSecretCookieKeys`): a login that was under way
 * when a signing key was added still resumes. The JWE's `kid` names its key, so the others are
 * passed over without decrypting.
 */
export async function openGrantSecretCookie(
  keys: readonly Buffer[],
  uid: string,
  value: string,
): Promise<{ secret: GrantSecret; grantId: string } | undefined> {
  for (const key of keys) {
    const opened = await openWith(key, uid, value);
    if (opened) return opened;
  }
  return undefined;
}

async function openWith(
  key: Buffer,
  uid: string,
  value: string,
): Promise<{ secret: GrantSecret; grantId: string } | undefined> {
  let content: Partial<CookieContent> | undefined;
  if (value.startsWith('v1.')) content = openV1(key, uid, value) as Partial<CookieContent> | undefined;
  else {
    const opened = await openJson(sealing(key, uid), value);
    content = opened.ok ? (opened.value as Partial<CookieContent>) : undefined;
  }
  if (typeof content !== 'object' || content === null) return undefined;
  const secret = typeof content.g === 'string' ? GrantSecret.decode(content.g) : undefined;
  if (!secret || typeof content.grant !== 'string' || typeof content.exp !== 'number') return undefined;
  if (content.exp <= Math.floor(Date.now() / 1000)) return undefined;
  return { secret, grantId: content.grant };
}

/** Every value sent under `name` (a browser may send one name for several paths). */
export function cookieValues(header: string | undefined, name: string): string[] {
  if (!header) return [];
  const values: string[] = [];
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=');
    if (eq !== -1 && pair.slice(0, eq).trim() === name) values.push(pair.slice(eq + 1).trim());
  }
  return values;
}
