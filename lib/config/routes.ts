/**
 * Paths the proxy serves itself (discovery, interactions, oidc-provider's routes). A path
 * configured under one of them (the MCP path, the identity callback) would be shadowed by, or
 * shadow, an OAuth endpoint. `/request` is oidc-provider's pushed authorization request endpoint,
 * on by default.
 */
export const RESERVED_PATHS = [
  '/.well-known',
  '/interaction',
  '/auth',
  '/token',
  '/reg',
  '/jwks',
  '/me',
  '/session',
  '/request',
  // Health routes for the platform and the pages' icon.
  '/healthz',
  '/readyz',
  '/favicon.ico',
  '/favicon.svg',
];

/**
 * The reserved prefix `path` equals or lies under, if any. Compared without case: Express routes
 * are case-insensitive by default, so `/Token` reaches the `/token` handler.
 */
export function reservedPrefixOf(path: string): string | undefined {
  return RESERVED_PATHS.find((own) => isUnder(path, own));
}

/** True when one path is the other or lies under it: a router would hand one's requests to the other. */
export function overlaps(a: string, b: string): boolean {
  return isUnder(a, b) || isUnder(b, a);
}

function isUnder(path: string, prefix: string): boolean {
  const lower = path.toLowerCase();
  const base = prefix.toLowerCase();
  return lower === base || lower.startsWith(base + '/');
}
