import { hash } from 'node:crypto';

/**
 * `h(x)` of lib/store/README.md: SHA-256, base64url. The id of an opaque access token, refresh
 * token or authorization code IS the bearer secret, and so are upstream `state` values and
 * presented refresh tokens: keys carry only this hash, so a dump, a `MONITOR` session or a leaked
 * backup yields no usable secret; a lookup hashes the presented value the same way.
 */
export function hashId(id: string): string {
  // One-shot: no Hash object per call. It runs on every `/mcp` request (the cache key of a token).
  return hash('sha256', id, 'base64url');
}
