import { createDecipheriv } from 'node:crypto';

/**
 * Read path for the hand-written AES-256-GCM layouts written before `sealed-json.ts` (vault `v3`,
 * refresh-grace `v1`, grant-secret cookie `v1`). Nothing writes them any more; each owner parses
 * its own layout and calls this. Remove once no record of them can be alive: vault records live
 * as long as their grant (30 days), the others at most ten minutes.
 */
export interface LegacyParts {
  /** base64url, 12 bytes */
  iv: string;
  /** base64url */
  ciphertext: string;
  /** base64url, 16 bytes */
  tag: string;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

/** The plaintext, or undefined when the parts are malformed or do not authenticate. */
export function openLegacyGcm(key: Buffer, aad: Buffer, parts: LegacyParts): Buffer | undefined {
  if (![parts.iv, parts.ciphertext, parts.tag].every((part) => B64URL.test(part))) return undefined;
  const iv = Buffer.from(parts.iv, 'base64url');
  const tag = Buffer.from(parts.tag, 'base64url');
  if (iv.length !== 12 || tag.length !== 16) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: 16 });
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(Buffer.from(parts.ciphertext, 'base64url')), decipher.final()]);
  } catch {
    return undefined;
  }
}
