import { Router, type Request, type RequestHandler } from 'express';
import { edgeBody } from '../http/edge-body.ts';
import { normalizeResource } from './resource.ts';
import { InvalidTarget } from '../http/errors.ts';
import { LOOPBACK_REDIRECT_HOSTS } from '../http/loopback.ts';

/** Private-use URI scheme (RFC 8252 §7.1): `cursor://…`, `vscode://…`, `com.example.app:/…`. */
function isPrivateUse(url: URL): boolean {
  return url.protocol !== 'http:' && url.protocol !== 'https:';
}

function isLoopbackHttp(url: URL): boolean {
  return url.protocol === 'http:' && LOOPBACK_REDIRECT_HOSTS.has(url.hostname);
}

/**
 * Which application type a registration really describes. MCP clients are native apps whatever
 * they declare: Cursor registers `cursor://…`, `https://…` and `http://localhost:8787/…` together
 * with `application_type: web`; VS Code and MCP Inspector register loopback URIs and omit the
 * type (RFC 7591 default: web). oidc-provider rightly refuses private-use schemes for web clients
 * and grants RFC 8252 §7.3 loopback port flexibility to native clients only, so such a client
 * would either fail to register or fail on its first random port. A client with any loopback or
 * private-use redirect URI is registered as native; that loosens nothing dangerous — oidc-provider
 * still refuses plain http off loopback and `javascript:`/`data:` schemes for native clients, and
 * PKCE (required for all) protects a code caught by another local process.
 */
export function effectiveApplicationType(metadata: Record<string, unknown>): unknown {
  const uris = Array.isArray(metadata.redirect_uris) ? metadata.redirect_uris : [];
  const parsed = uris.map((uri) => (typeof uri === 'string' ? URL.parse(uri) : null));
  if (parsed.some((url) => url && (isLoopbackHttp(url) || isPrivateUse(url)))) return 'native';
  return metadata.application_type;
}

function normalizeResourceValues(value: unknown): unknown {
  const one = (v: unknown) => (typeof v === 'string' ? (normalizeResource(v) ?? v) : v);
  return Array.isArray(value) ? value.map(one) : one(value);
}

function rewriteAuthorizationQuery(req: Request, defaultScope: string): void {
  const url = new URL(req.url, 'http://x.invalid');
  const resources = url.searchParams.getAll('resource');
  url.searchParams.delete('resource');
  for (const value of resources) url.searchParams.append('resource', String(normalizeResourceValues(value)));
  if (!url.searchParams.get('scope')) url.searchParams.set('scope', defaultScope);
  req.url = `${url.pathname}${url.search}`;
}

/**
 * Edge policies applied before oidc-provider sees a request:
 * - registration: the application type above;
 * - RFC 8707 `resource` spelled loosely (Codex CLI sends a trailing slash) is rewritten to our
 *   canonical MCP URL in authorization and token requests. oidc-provider keys granted resources
 *   by their exact string, so without this the login would loop on a consent prompt for
 *   `…/mcp/` while `…/mcp` was granted. Values that are not ours pass untouched and are refused
 *   as `invalid_target` by the resource server lookup;
 * - an authorization request without `scope` gets `defaultScope` (RFC 6749 §3.3 lets the AS
 *   apply a default). Cursor, VS Code and Claude Code omit it at times, and oidc-provider refuses
 *   to issue a code that grants nothing.
 */
/** The largest registration request body accepted, in bytes. */
export const REGISTRATION_BODY_LIMIT = 8 * 1024;

export function clientPolicies(
  paths: { registration: string; authorization: string; token: string },
  defaultScope: string,
  resourceUrl: string,
): Router {
  const router = Router();
  // Registration metadata is a few hundred bytes; 8 KiB leaves room for many redirect URIs and
  // keeps what one anonymous request can make us store small (413 `invalid_client_metadata`).
  const json = edgeBody('json', REGISTRATION_BODY_LIMIT);
  const form = edgeBody('form', 64 * 1024);

  const registration: RequestHandler = (req, _res, next) => {
    if (req.body && typeof req.body === 'object' && !Array.isArray(req.body)) {
      const type = effectiveApplicationType(req.body as Record<string, unknown>);
      if (type !== undefined) (req.body as Record<string, unknown>).application_type = type;
    }
    next();
  };
  router.post(paths.registration, json, registration);

  // At the token endpoint a foreign `resource` is refused here, before oidc-provider: it rotates a
  // refresh token before it looks at `resource`, so a refresh asking for another resource would
  // spend the client's refresh token on an error (and a retry would then look like token reuse).
  const resourceInBody: RequestHandler = (req, _res, next) => {
    if (req.body && typeof req.body === 'object' && 'resource' in req.body) {
      const resources = normalizeResourceValues(req.body.resource);
      if ([resources].flat().some((value) => value !== resourceUrl)) {
        next(new InvalidTarget(resourceUrl));
        return;
      }
      req.body.resource = resources;
    }
    next();
  };
  router.get(paths.authorization, (req, _res, next) => {
    rewriteAuthorizationQuery(req, defaultScope);
    next();
  });
  router.post(paths.token, form, resourceInBody);
  return router;
}
