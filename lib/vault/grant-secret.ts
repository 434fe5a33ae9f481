import { createHash, randomBytes } from 'node:crypto';
import { inspect } from 'node:util';

const SECRET_BYTES = 32;
/** base64url of 32 bytes, no padding. */
const ENCODED = /^[A-Za-z0-9_-]{43}$/;
/** oidc-provider's opaque ids are nanoids: URL-safe alphabet, no `.`. */
const TOKEN_ID = /^[A-Za-z0-9_-]+$/;

/**
 * G, the random secret of one grant. Half of the key of the grant's vault record (the other half
 * is the server's key), carried inside every token of ours of that grant and never written to the
 * store: a copy of Redis, even with the configuration, opens no vault record without a live token.
 * Scheme: `lib/vault/README.md`.
 *
 * The bytes sit in a private field: `JSON.stringify`, `util.inspect` and the logger see
 * `[grant secret]`, so a careless log line cannot print it.
 */
export class GrantSecret {
  readonly #bytes: Buffer;
  #tag: string | undefined;

  private constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }

  static generate(): GrantSecret {
    return new GrantSecret(randomBytes(SECRET_BYTES));
  }

  /** Undefined unless `encoded` is the canonical base64url of exactly 32 bytes. */
  static decode(encoded: string): GrantSecret | undefined {
    if (!ENCODED.test(encoded)) return undefined;
    const bytes = Buffer.from(encoded, 'base64url');
    // 43 characters carry 258 bits: refuse the spellings whose last 2 bits are not zero, so one
    // secret has exactly one encoding.
    if (bytes.length !== SECRET_BYTES || bytes.toString('base64url') !== encoded) return undefined;
    return new GrantSecret(bytes);
  }

  /** The key material. Callers feed it to a KDF and keep no copy. */
  bytes(): Buffer {
    return this.#bytes;
  }

  encode(): string {
    return this.#bytes.toString('base64url');
  }

  /**
   * One-way name of the secret, for in-process maps that must not hand one caller's result to
   * another caller of the same grant id holding a different secret (someone who could write a
   * token record of their own into Redis).
   */
  get tag(): string {
    return (this.#tag ??= createHash('sha256').update(this.#bytes).digest('base64url'));
  }

  toJSON(): string {
    return '[grant secret]';
  }

  [inspect.custom](): string {
    return '[grant secret]';
  }
}

/**
 * Our opaque token values (authorization codes, access and refresh tokens) are
 * `<oidc-provider's random id>.<base64url(G)>`. The whole value is the token's id, so the store
 * keeps it only as SHA-256 (`lib/store/README.md`) and a value with an altered secret part is a
 * token nobody issued.
 */
export function tokenValueWith(id: string, secret: GrantSecret): string {
  if (!TOKEN_ID.test(id)) throw new Error('oidc-provider produced a token id this proxy cannot bind to a grant');
  return `${id}.${secret.encode()}`;
}

/** G from one of our token values; undefined for any other string (tokens of the v2 format included). */
export function grantSecretOf(tokenValue: string): GrantSecret | undefined {
  const dot = tokenValue.lastIndexOf('.');
  if (dot <= 0 || !TOKEN_ID.test(tokenValue.slice(0, dot))) return undefined;
  return GrantSecret.decode(tokenValue.slice(dot + 1));
}
