import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import type { UpstreamCredentials } from '../identity/index.ts';
import type { GrantSecret } from './grant-secret.ts';

/**
 * The vault's record format. Its key needs both the server's root key (from OIDC_PROVIDER_JWKS)
 * and the grant's secret G, which only the grant's own tokens carry; the scheme is written down in
 * `lib/vault/README.md`.
 */
export interface VaultEntry {
  accountId: string;
  clientId: string;
  /** Epoch seconds; the record lives as long as the grant it belongs to. */
  expiresAt: number;
  credentials: UpstreamCredentials;
  /**
   * Epoch seconds at which the upstream answered a refresh with `invalid_grant`. The record is
   * kept (its access token may still work for a few seconds) but is never refreshed again: the
   * next refresh fails as terminal without asking the upstream, and the grant is revoked.
   */
  upstreamRefusedAt?: number;
}

export const RECORD_VERSION = 'v3';

/** Why a record did not open. Callers treat every reason as "absent"; operators want to know which. */
export type OpenFailure = 'malformed' | 'other-key' | 'tampered';
export type Opened = { ok: true; entry: VaultEntry } | { ok: false; reason: OpenFailure };

const LABEL = 'mcp-auth-proxy vault';
const B64URL = /^[A-Za-z0-9_-]+$/;
const IV_BYTES = 12;
const TAG_BYTES = 16;

function hkdf(root: Buffer, info: Buffer | string, length: number): Buffer {
  return Buffer.from(hkdfSync('sha256', root, Buffer.alloc(0), info, length));
}

/**
 * Public fingerprint of the root key, written into every record. It tells "sealed under a key we
 * no longer have" (OIDC_PROVIDER_JWKS rotated) apart from "altered", and reveals nothing about
 * the key: it is one more HKDF output under its own label.
 */
export function keyId(root: Buffer): string {
  return hkdf(root, `${LABEL} key id`, 6).toString('base64url');
}

/**
 * One AES-256 key per grant, from the root key *and* the grant's secret: neither alone opens a
 * record, so Redis plus the configuration still needs a live token of the grant. Both are 32
 * uniformly random bytes of fixed length, so their concatenation is unambiguous. The grant id is
 * the salt: a record moved under another grant's key meets a different key as well as different
 * associated data, and no single key ever approaches GCM's random-IV limit.
 */
function recordKey(root: Buffer, grantId: string, secret: GrantSecret): Buffer {
  const ikm = Buffer.concat([root, secret.bytes()]);
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.from(grantId), `${LABEL} record ${RECORD_VERSION}`, 32));
}

/** Binds the ciphertext to its format version, its key and the grant it was written for. */
function associatedData(kid: string, grantId: string): Buffer {
  return Buffer.from(`${RECORD_VERSION}.${kid}.${grantId}`);
}

/** Plain data only: what reaches the cipher is never an object that carries the shield below. */
function plain(entry: VaultEntry): VaultEntry {
  const { accessToken, refreshToken, expiresAt, scope, tokenType } = entry.credentials;
  return {
    accountId: entry.accountId,
    clientId: entry.clientId,
    expiresAt: entry.expiresAt,
    credentials: { accessToken, refreshToken, expiresAt, scope, tokenType },
    ...(entry.upstreamRefusedAt === undefined ? {} : { upstreamRefusedAt: entry.upstreamRefusedAt }),
  };
}

/** `v3.<kid>.<iv>.<ciphertext>.<tag>`, each part base64url. */
export function seal(root: Buffer, grantId: string, secret: GrantSecret, entry: VaultEntry): string {
  const kid = keyId(root);
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', recordKey(root, grantId, secret), iv);
  cipher.setAAD(associatedData(kid, grantId));
  const body = Buffer.concat([cipher.update(JSON.stringify(plain(entry)), 'utf8'), cipher.final()]);
  return [RECORD_VERSION, kid, iv, body, cipher.getAuthTag()]
    .map((part) => (typeof part === 'string' ? part : part.toString('base64url')))
    .join('.');
}

function isEntry(value: unknown): value is VaultEntry {
  const entry = value as VaultEntry | null;
  return (
    typeof entry === 'object' &&
    entry !== null &&
    typeof entry.accountId === 'string' &&
    typeof entry.clientId === 'string' &&
    typeof entry.expiresAt === 'number' &&
    typeof entry.credentials === 'object' &&
    entry.credentials !== null &&
    typeof entry.credentials.accessToken === 'string'
  );
}

export function open(root: Buffer, grantId: string, secret: GrantSecret, sealed: string): Opened {
  const parts = sealed.split('.');
  if (parts.length !== 5 || parts[0] !== RECORD_VERSION || !parts.slice(1).every((p) => B64URL.test(p))) {
    // Older formats (v1, and v2 keyed by the server key alone) included: they are not read, the
    // user logs in again once.
    return { ok: false, reason: 'malformed' };
  }
  const [, kid, iv, body, tag] = parts as [string, string, string, string, string];
  // The key id is public and the comparison leaks nothing; GCM's tag check (constant-time in
  // OpenSSL) is what authenticates the record.
  if (kid !== keyId(root)) return { ok: false, reason: 'other-key' };
  const ivBytes = Buffer.from(iv, 'base64url');
  const tagBytes = Buffer.from(tag, 'base64url');
  if (ivBytes.length !== IV_BYTES || tagBytes.length !== TAG_BYTES) return { ok: false, reason: 'malformed' };
  let text: string;
  try {
    const decipher = createDecipheriv('aes-256-gcm', recordKey(root, grantId, secret), ivBytes, {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(associatedData(kid, grantId));
    decipher.setAuthTag(tagBytes);
    text = Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8');
  } catch {
    // Altered, truncated, copied from another grant's key, or opened with a secret that is not
    // this grant's: GCM cannot tell these apart, and none is a live token's doing.
    return { ok: false, reason: 'tampered' };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  if (!isEntry(value)) return { ok: false, reason: 'malformed' };
  shield(value.credentials);
  return { ok: true, entry: value };
}

/**
 * Upstream tokens must not reach a log line, a span attribute or an error (issue 4, item 4). The
 * logger redacts by field name only, so `log.info('…', { entry })` would print a nested token.
 * Credentials handed out by the vault therefore serialise (JSON, `util.inspect`) without their
 * tokens; reading `credentials.accessToken` directly is unaffected.
 */
export function shield(credentials: UpstreamCredentials): UpstreamCredentials {
  const redacted = () => ({
    accessToken: '[redacted]',
    refreshToken: credentials.refreshToken === undefined ? undefined : '[redacted]',
    expiresAt: credentials.expiresAt,
    scope: credentials.scope,
    tokenType: credentials.tokenType,
  });
  for (const key of ['toJSON', inspect.custom] as const) {
    if (!Object.prototype.hasOwnProperty.call(credentials, key)) {
      Object.defineProperty(credentials, key, { value: redacted, enumerable: false });
    }
  }
  return credentials;
}

/**
 * Token equality without an early exit. The tokens compared are the vault's own, not attacker
 * input, but they are secrets: hashing first also hides their lengths.
 */
export function sameToken(a: string, b: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(a), digest(b));
}
