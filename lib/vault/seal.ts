import { createHash, hkdfSync, timingSafeEqual } from 'node:crypto';
import { inspect } from 'node:util';
import { openLegacyGcm } from '../crypto/legacy-gcm.ts';
import {
  keyIdOf,
  openJson,
  sealJson,
  type Opened as OpenedJson,
  type OpenFailure,
  type Sealing,
} from '../crypto/sealed-json.ts';
import type { UpstreamCredentials } from '../identity/index.ts';
import type { GrantSecret } from './grant-secret.ts';

export type { OpenFailure } from '../crypto/sealed-json.ts';

/**
 * The vault's record. Its key needs both the server's root key (from OIDC_PROVIDER_JWKS) and the
 * grant's secret G, which only the grant's own tokens carry; the scheme is written down in
 * `lib/vault/README.md`.
 */
export interface VaultEntry {
  accountId: string;
  clientId: string;
  /** Epoch seconds; the record lives as long as the grant it belongs to. */
  expiresAt: number;
  credentials: UpstreamCredentials;
  /**
   * Epoch seconds at which `credentials` were obtained from the upstream (login or refresh): with
   * `credentials.expiresAt` it gives the upstream token's lifetime, which sizes the early-refresh
   * margin. Absent in records written before it existed.
   */
  obtainedAt?: number;
  /**
   * Epoch seconds at which the upstream answered a refresh with `invalid_grant`. The record is
   * kept (its access token may still work for a few seconds) but is never refreshed again: the
   * next refresh fails as terminal without asking the upstream, and the grant is revoked.
   */
  upstreamRefusedAt?: number;
}

/** `typ` of the record's JWE: the fourth record format (v3 and before were layouts of our own). */
export const RECORD_TYPE = 'vault-record+4';

export type Opened = { ok: true; entry: VaultEntry } | { ok: false; reason: OpenFailure };

const LABEL = 'mcp-auth-proxy vault';

function hkdf(ikm: Buffer, salt: Buffer, info: string, length: number): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, length));
}

/**
 * Public fingerprint of the root key, written into every record (`kid`). It names the root that
 * opens the record (one per key of OIDC_PROVIDER_JWKS, `openUnder`), tells "sealed under a key
 * since retired" apart from "altered", and reveals nothing about the key: it is one more HKDF
 * output under its own label.
 */
export function keyId(root: Buffer): string {
  return keyIdOf(root, `${LABEL} key id`);
}

/**
 * One AES-256 key per grant, from the root key *and* the grant's secret: neither alone opens a
 * record, so Redis plus the configuration still needs a live token of the grant. Both are 32
 * uniformly random bytes of fixed length, so their concatenation is unambiguous. The grant id is
 * the salt: a record moved under another grant's key meets a different key as well as a
 * different bound context, and no single key ever approaches GCM's random-IV limit.
 */
function recordKey(root: Buffer, grantId: string, secret: GrantSecret, version: 'v3' | 'v4'): Buffer {
  const ikm = Buffer.concat([root, secret.bytes()]);
  return hkdf(ikm, Buffer.from(grantId), `${LABEL} record ${version}`, 32);
}

/**
 * Threat: someone who can write to Redis copies grant A's record under `vault:<B>` hoping B's
 * tokens open it (or replays an older record of A). The grant id is bound twice: it salts the
 * key, and it is the JWE's `ctx`, authenticated with the ciphertext. A replayed older record of
 * the same grant does open: it holds credentials that grant was issued, nothing more.
 */
function sealing(root: Buffer, grantId: string, secret: GrantSecret): Sealing {
  return { key: recordKey(root, grantId, secret, 'v4'), kid: keyId(root), type: RECORD_TYPE, context: grantId };
}

/** Plain data only: what reaches the cipher is never an object that carries the shield below. */
function plain(entry: VaultEntry): VaultEntry {
  const { accessToken, refreshToken, expiresAt, scope, tokenType } = entry.credentials;
  return {
    accountId: entry.accountId,
    clientId: entry.clientId,
    expiresAt: entry.expiresAt,
    credentials: { accessToken, refreshToken, expiresAt, scope, tokenType },
    ...(entry.obtainedAt === undefined ? {} : { obtainedAt: entry.obtainedAt }),
    ...(entry.upstreamRefusedAt === undefined ? {} : { upstreamRefusedAt: entry.upstreamRefusedAt }),
  };
}

/** A compact JWE (`lib/crypto/sealed-json.ts`). */
export function seal(root: Buffer, grantId: string, secret: GrantSecret, entry: VaultEntry): Promise<string> {
  return sealJson(sealing(root, grantId, secret), plain(entry));
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
    typeof entry.credentials.accessToken === 'string' &&
    (entry.obtainedAt === undefined || typeof entry.obtainedAt === 'number')
  );
}

/**
 * Format v3, `v3.<kid>.<iv>.<ciphertext>.<tag>`, written until the JWE replaced it: same key
 * inputs under its own HKDF label, `v3.<kid>.<grantId>` as associated data. Read so that grants
 * made before the change keep working; nothing writes it.
 */
function openV3(root: Buffer, grantId: string, secret: GrantSecret, sealed: string): OpenedJson {
  const parts = sealed.split('.');
  if (parts.length !== 5) return { ok: false, reason: 'malformed' };
  const [, kid, iv, ciphertext, tag] = parts as [string, string, string, string, string];
  if (kid !== keyId(root)) return { ok: false, reason: 'other-key' };
  const aad = Buffer.from(`v3.${kid}.${grantId}`);
  const text = openLegacyGcm(recordKey(root, grantId, secret, 'v3'), aad, { iv, ciphertext, tag });
  if (!text) return { ok: false, reason: 'tampered' };
  try {
    return { ok: true, value: JSON.parse(text.toString('utf8')) as unknown };
  } catch {
    return { ok: false, reason: 'malformed' };
  }
}

export async function open(root: Buffer, grantId: string, secret: GrantSecret, sealed: string): Promise<Opened> {
  // Older formats than v3 (v1, and v2 keyed by the server key alone) are not read: the user logs
  // in again once.
  const opened = sealed.startsWith('v3.')
    ? openV3(root, grantId, secret, sealed)
    : await openJson(sealing(root, grantId, secret), sealed);
  if (!opened.ok) return opened;
  if (!isEntry(opened.value)) return { ok: false, reason: 'malformed' };
  shield(opened.value.credentials);
  return { ok: true, entry: opened.value };
}

/** `open`, and whether the record was sealed under the current root (the one `seal` uses). */
export type OpenedUnder = { ok: true; entry: VaultEntry; current: boolean } | { ok: false; reason: OpenFailure };

/**
 * `open` under whichever of `roots` sealed the record: one root per key of OIDC_PROVIDER_JWKS, the
 * first the current one (`KeyMaterial.vaultKeys`). The record's `kid` names its root, so the
 * others answer `other-key` without decrypting; `other-key` overall means no root of ours
 * sealed it (its key was retired).
 */
export async function openUnder(
  roots: readonly Buffer[],
  grantId: string,
  secret: GrantSecret,
  sealed: string,
): Promise<OpenedUnder> {
  for (const [index, root] of roots.entries()) {
    const opened = await open(root, grantId, secret, sealed);
    if (opened.ok) return { ...opened, current: index === 0 };
    if (opened.reason !== 'other-key') return opened;
  }
  return { ok: false, reason: 'other-key' };
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
