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
];

/** The reserved prefix `path` equals or lies under, if any. */
export function reservedPrefixOf(path: string): string | undefined {
  return RESERVED_PATHS.find((own) => path === own || path.startsWith(own + '/'));
}

/** True when one path is the other or lies under it: a router would hand one's requests to the other. */
export function overlaps(a: string, b: string): boolean {
  return a === b || a.startsWith(b + '/') || b.startsWith(a + '/');
}
