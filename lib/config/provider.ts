import { isAbsolute } from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { Collector, type Checked, type Source } from './collector.ts';
import { parseJwks } from './keys.ts';
import { isDirectory, parseScope } from './parse.ts';
import type { ProviderConfig } from './types.ts';

const DEFAULT_PROVIDER_SCOPE = 'openid offline_access';

/** OIDC_PROVIDER_JWKS, OIDC_PROVIDER_VIEWS_PATH and PROVIDER_SCOPE: the authorization server MCP clients see. */
export function checkProvider(source: Source): Checked<ProviderConfig | undefined> {
  const c = new Collector(source);
  return c.done(readProvider(c));
}

function readProvider(c: Collector): ProviderConfig | undefined {
  let valid = true;

  let jwks: JSONWebKeySet | undefined;
  const rawJwks = c.read('OIDC_PROVIDER_JWKS', { json: true });
  if (rawJwks === undefined) {
    if (c.production) {
      c.report('OIDC_PROVIDER_JWKS', 'is required in production');
      valid = false;
    } else {
      c.warn(
        'OIDC_PROVIDER_JWKS is unset: signing with a development key (kept in .mcp-auth-proxy-dev-store.json without Redis; new at every start with Redis, so issued tokens stop verifying)',
      );
    }
  } else {
    jwks = parseJwks(c, rawJwks);
    valid &&= jwks !== undefined;
  }

  let viewsPath: string | undefined;
  const rawViews = c.read('OIDC_PROVIDER_VIEWS_PATH');
  if (rawViews !== undefined) {
    if (!isAbsolute(rawViews)) {
      c.report('OIDC_PROVIDER_VIEWS_PATH', 'must be an absolute path');
      valid = false;
    } else if (!isDirectory(rawViews)) {
      c.report('OIDC_PROVIDER_VIEWS_PATH', `must be an existing directory; ${rawViews} is not`);
      valid = false;
    } else {
      viewsPath = rawViews;
    }
  }

  // Commas too: the Heroku proxy splits PROVIDER_SCOPE on spaces or commas.
  const scopes = parseScope(c, 'PROVIDER_SCOPE', c.read('PROVIDER_SCOPE') ?? DEFAULT_PROVIDER_SCOPE, /[ ,]+/);
  if (scopes && !scopes.includes('openid')) {
    c.report('PROVIDER_SCOPE', 'must include openid');
    valid = false;
  }
  return valid && scopes ? { jwks, viewsPath, scopes } : undefined;
}
