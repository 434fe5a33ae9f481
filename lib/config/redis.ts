import { Collector, type Checked, type Source } from './collector.ts';
import { readBoolean } from './parse.ts';
import type { RedisConfig } from './types.ts';

const DEFAULT_KEY_PREFIX = 'mcp-auth-proxy:';
const PREFIX = 'MCP_AUTH_PROXY_REDIS_KEY_PREFIX';
/** The Heroku proxy's name for the same setting. */
const HEROKU_PREFIX = 'MCP_AUTH_PROXY_REDIS_PREFIX';

/** MCP_AUTH_PROXY_REDIS_URL / REDIS_URL, the key prefix and TLS verification. */
export function checkRedis(source: Source): Checked<RedisConfig | undefined> {
  const c = new Collector(source);
  return c.done(readRedis(c));
}

function readRedis(c: Collector): RedisConfig | undefined {
  const own = c.read('MCP_AUTH_PROXY_REDIS_URL');
  const heroku = c.read('REDIS_URL');
  const keyPrefix = readKeyPrefix(c);
  const tlsRejectUnauthorized = readBoolean(c, 'REDIS_TLS_REJECT_UNAUTHORIZED', false);

  const variable = own !== undefined ? 'MCP_AUTH_PROXY_REDIS_URL' : 'REDIS_URL';
  const raw = own ?? heroku;
  if (raw === undefined) {
    if (c.production) {
      c.report(
        'MCP_AUTH_PROXY_REDIS_URL',
        'is required in production; REDIS_URL, set by Heroku Key-Value Store, also works',
      );
    } else {
      c.warn(
        'no Redis URL: using the in-memory store (kept in .mcp-auth-proxy-dev-store.json across restarts while OIDC_PROVIDER_JWKS is unset too)',
      );
    }
    return undefined;
  }
  // The URL carries the Redis password: no message below quotes any part of it.
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  let valid = keyPrefix !== undefined;
  if (!url || (url.protocol !== 'redis:' && url.protocol !== 'rediss:') || url.hostname === '') {
    c.report(variable, 'must be a redis:// or rediss:// URL with a host');
    valid = false;
  }
  return valid && keyPrefix !== undefined ? { url: raw, keyPrefix, tlsRejectUnauthorized } : undefined;
}

/**
 * Both names are read so that a Heroku proxy's config vars keep working. Two different prefixes
 * would leave it to chance which half of the data the proxy sees, so that is refused, not ranked.
 */
function readKeyPrefix(c: Collector): string | undefined {
  const own = c.read(PREFIX);
  const heroku = c.read(HEROKU_PREFIX);
  if (own !== undefined && heroku !== undefined && own !== heroku) {
    c.report(HEROKU_PREFIX, `differs from ${PREFIX}: set only one of them (they are the same setting)`);
    return undefined;
  }
  const variable = own !== undefined ? PREFIX : HEROKU_PREFIX;
  const keyPrefix = own ?? heroku ?? DEFAULT_KEY_PREFIX;
  if (!/^[\x21-\x7e]+$/.test(keyPrefix)) {
    c.report(variable, 'must be printable ASCII without spaces');
    return undefined;
  }
  return keyPrefix;
}
