import { Collector, type Checked, type Source } from './collector.ts';
import { readInteger, tryUrl } from './parse.ts';
import type { ProxyConfig, RateLimitConfig } from './types.ts';

const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
const MIN_MAX_BODY_BYTES = 1024;
// The Heroku proxy's defaults and units: 60 requests per 60 000 ms window.
const DEFAULT_MAX_REQUESTS = 60;
const DEFAULT_WINDOW_MS = 60_000;
/**
 * At least a second: the window is in milliseconds, as in the Heroku proxy, and a value like `60`
 * is far more likely meant as seconds than as a 60 ms window that limits nothing.
 */
const MIN_WINDOW_MS = 1_000;
const MAX_WINDOW_MS = 24 * 60 * 60 * 1_000;

/** MCP_PROXY_MAX_BODY_BYTES and MCP_PROXY_ALLOWED_ORIGINS: what `/mcp` accepts. */
export function checkProxy(source: Source): Checked<ProxyConfig | undefined> {
  const c = new Collector(source);
  const maxBodyBytes = readInteger(c, 'MCP_PROXY_MAX_BODY_BYTES', {
    min: MIN_MAX_BODY_BYTES,
    fallback: DEFAULT_MAX_BODY_BYTES,
    unit: 'bytes',
  });
  const allowedOrigins = readAllowedOrigins(c);
  const valid = maxBodyBytes !== undefined && allowedOrigins !== undefined;
  return c.done(valid ? { maxBodyBytes, allowedOrigins } : undefined);
}

/** MAX_REQUESTS per MAX_REQUESTS_WINDOW milliseconds and client, the Heroku proxy's rate limit. */
export function checkRateLimit(source: Source): Checked<RateLimitConfig | undefined> {
  const c = new Collector(source);
  const maxRequests = readInteger(c, 'MAX_REQUESTS', {
    min: 1,
    fallback: DEFAULT_MAX_REQUESTS,
    unit: 'requests per window and client',
  });
  const windowMs = readInteger(c, 'MAX_REQUESTS_WINDOW', {
    min: MIN_WINDOW_MS,
    max: MAX_WINDOW_MS,
    fallback: DEFAULT_WINDOW_MS,
    unit: 'milliseconds, e.g. 60000 for a minute',
  });
  const valid = maxRequests !== undefined && windowMs !== undefined;
  return c.done(valid ? { maxRequests, windowMs } : undefined);
}

function readAllowedOrigins(c: Collector): string[] | undefined {
  return c.readList('MCP_PROXY_ALLOWED_ORIGINS', (entry) => {
    const origin = parseOrigin(entry);
    return origin === undefined
      ? { problem: 'is not an origin scheme://host[:port] (http or https, no path)' }
      : { value: origin };
  });
}

/**
 * Browsers send the serialised origin (lower-case host, no default port), so that is what we keep
 * and what the `Origin` check compares against. `*` and `null` are refused: R6 is an allow-list.
 */
function parseOrigin(entry: string): string | undefined {
  const url = tryUrl(entry);
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) return undefined;
  if (url.username || url.password || url.search || url.hash || url.pathname !== '/') return undefined;
  if (/[?#]/.test(entry)) return undefined;
  return url.origin;
}
