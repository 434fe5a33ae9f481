import { createSecretKey, hkdfSync, type KeyObject } from 'node:crypto';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader, type CompactJWEHeaderParameters } from 'jose';

/**
 * The one sealed-record format of this proxy: compact JWE (RFC 7516), `alg: dir`, `enc: A256GCM`
 * (RFC 7518 §4.5, §5.3), a standard format with a reviewed implementation (jose) instead of a
 * layout of our own. Every encrypted value we store or hand to a browser is one of these: vault
 * records, refresh-grace records, the grant-secret cookie.
 *
 * Protected header (authenticated as GCM's associated data, so none of it can be altered):
 * - `kid`: public fingerprint of the key. Tells "sealed under a key we no longer have" apart
 *   from "altered", and is checked before any decryption is attempted.
 * - `typ`: what the record is, with its schema version (`vault-record+4`, …).
 * - `ctx`: what the record is bound to (a grant id, a hashed token, an interaction uid). A
 *   record copied under another name, or a cookie replayed for another interaction, carries the
 *   wrong `ctx` and is refused even where the key would be the same. This is the compact
 *   serialisation's stand-in for external associated data, which only the JSON form has.
 *
 * Callers derive one key per purpose (HKDF with their own label): a value of one purpose never
 * opens as another, whatever its header says.
 */

export interface Sealing {
  /** 32 bytes: AES-256. */
  key: Buffer | KeyObject;
  kid: string;
  /** `typ` of the record: its kind and schema version. */
  type: string;
  /** What the record is bound to; refused on open unless equal. */
  context: string;
}

/** Why a value did not open. Callers treat each as "absent"; operators want to know which. */
export type OpenFailure = 'malformed' | 'other-key' | 'tampered';
export type Opened = { ok: true; value: unknown } | { ok: false; reason: OpenFailure };

/**
 * A public name for `key` (its `kid`): 6 bytes of HKDF under the caller's label. It reveals nothing
 * about the key and changes when the key does.
 */
export function keyIdOf(key: Buffer, label: string): string {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), label, 6)).toString('base64url');
}

const ALG = 'dir';
const ENC = 'A256GCM';
const KEY_BYTES = 32;

function secretKey(key: Buffer | KeyObject): KeyObject {
  const object = Buffer.isBuffer(key) ? createSecretKey(key) : key;
  if (object.symmetricKeySize !== KEY_BYTES) throw new Error('a sealing key must be 32 bytes');
  return object;
}

interface Header extends CompactJWEHeaderParameters {
  ctx?: unknown;
}

export async function sealJson({ key, kid, type, context }: Sealing, value: unknown): Promise<string> {
  const header: Header = { alg: ALG, enc: ENC, kid, typ: type, ctx: context };
  return new CompactEncrypt(Buffer.from(JSON.stringify(value), 'utf8'))
    .setProtectedHeader(header)
    .encrypt(secretKey(key));
}

export async function openJson({ key, kid, type, context }: Sealing, sealed: string): Promise<Opened> {
  let header: Header;
  try {
    header = decodeProtectedHeader(sealed) as Header;
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  if (header.alg !== ALG || header.enc !== ENC || header.typ !== type) return { ok: false, reason: 'malformed' };
  // The key id is public and the comparison leaks nothing; GCM's tag is what authenticates.
  if (header.kid !== kid) return { ok: false, reason: 'other-key' };
  // Compared before decrypting, and authenticated by it: an altered `ctx` fails the tag.
  if (header.ctx !== context) return { ok: false, reason: 'tampered' };
  let plaintext: Uint8Array;
  try {
    ({ plaintext } = await compactDecrypt(sealed, secretKey(key), {
      keyManagementAlgorithms: [ALG],
      contentEncryptionAlgorithms: [ENC],
    }));
  } catch (error) {
    // Altered, truncated, or sealed under another key with the same kid (a secret half that is not
    // the grant's): GCM cannot tell these apart.
    const code = (error as { code?: string }).code;
    return { ok: false, reason: code === 'ERR_JWE_DECRYPTION_FAILED' ? 'tampered' : 'malformed' };
  }
  try {
    return { ok: true, value: JSON.parse(Buffer.from(plaintext).toString('utf8')) as unknown };
  } catch {
    return { ok: false, reason: 'malformed' };
  }
}
