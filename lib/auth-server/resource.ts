/**
 * RFC 8707 resource indicators name our MCP endpoint. Clients spell it loosely: Codex CLI adds a
 * trailing slash, some clients uppercase the scheme or host. Those are the same resource (RFC 3986
 * §6.2.2 case and path normalization); anything else is another resource and is refused.
 */
export function normalizeResource(value: string): string | undefined {
  const url = URL.parse(value);
  if (!url || url.hash || url.search || url.username || url.password) return undefined;
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined;
  const path = url.pathname.replace(/\/+$/, '');
  return `${url.protocol}//${url.host}${path}`;
}

export function isOurResource(value: string, resourceUrl: string): boolean {
  return normalizeResource(value) === resourceUrl;
}
