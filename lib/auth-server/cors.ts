import { Router, type Request, type RequestHandler, type Response } from 'express';
import type { Client, KoaContextWithOIDC } from 'oidc-provider';
import type { Config } from '../config/types.ts';

/**
 * CORS for browser-based MCP clients (MCP Inspector runs in a page at http://localhost:6274).
 *
 * Who answers what:
 * - oidc-provider itself: `/.well-known/openid-configuration`, `/jwks` (any origin), and the
 *   requests to `/token` and `/token/revocation` (only when `clientBasedCors` below says yes for
 *   the client that authenticated);
 * - this module: the preflights of everything Express routes sit in front of (Express answers
 *   OPTIONS for its own routes otherwise, with `Allow` and no CORS): the metadata documents,
 *   `/token` and `/token/revocation`; registration (oidc-provider does no CORS there); `/mcp`.
 * - never `/interaction/*` or `/auth`: those are pages a user navigates to, and a cross-origin
 *   script reading them would read the consent page and its CSRF token.
 *
 * No endpoint here sends `Access-Control-Allow-Credentials`: nothing cross-origin rides on
 * cookies; every credential is a bearer value the calling page already holds.
 */

const MAX_AGE = '3600';

/** Headers a browser client must be able to read from `/mcp` responses. */
const MCP_EXPOSED = ['Mcp-Session-Id', 'WWW-Authenticate', 'Mcp-Protocol-Version'].join(', ');

/** The origins allowed to drive `/mcp` from a browser: the same set the proxy enforces (R6). */
export function allowedBrowserOrigins(config: Config): Set<string> {
  return new Set([new URL(config.baseUrl).origin, ...config.proxy.allowedOrigins]);
}

function originOf(uri: string): string | undefined {
  try {
    return new URL(uri).origin;
  } catch {
    return undefined;
  }
}

/**
 * oidc-provider's `clientBasedCORS` for `/token` and `/token/revocation`: a browser-based client's
 * pages live where its redirect URIs point (the Inspector registers
 * `<its origin>/oauth/callback`), so that origin, and only that one, may call the token
 * endpoints as that client. Unlike oidc-provider's default this does not depend on the client's
 * authentication method: a client that holds a secret in a page got it there from our own
 * registration response, and refusing CORS would protect nothing. `null` (sandboxed frames,
 * `file:`) and custom schemes (their origin is `null` too) never match.
 */
export function clientBasedCors(_ctx: KoaContextWithOIDC, origin: string, client: Client): boolean {
  if (origin === 'null') return false;
  return (client.redirectUris ?? []).some((uri) => originOf(uri) === origin);
}

function preflight(req: Request, res: Response, origin: string, methods: string): void {
  res.set('Access-Control-Allow-Origin', origin);
  res.set('Access-Control-Allow-Methods', methods);
  const requested = req.get('Access-Control-Request-Headers');
  if (requested) res.set('Access-Control-Allow-Headers', requested);
  res.set('Access-Control-Max-Age', MAX_AGE);
  res.status(204).end();
}

const isPreflight = (req: Request): boolean =>
  req.method === 'OPTIONS' && req.get('Access-Control-Request-Method') !== undefined;

/** Mounted before the metadata routes, the registration endpoint and the `/mcp` proxy. */
export function corsRoutes(config: Config): Router {
  const router = Router();

  // Public documents (RFC 8414, RFC 9728): no credentials, the same for everyone. The SDK sends
  // `MCP-Protocol-Version` with its discovery requests, which makes the browser preflight.
  const openDocument: RequestHandler = (req, res, next) => {
    if (!isPreflight(req)) return next();
    preflight(req, res, '*', 'GET');
  };
  router.options('/.well-known/oauth-authorization-server', openDocument);
  router.options(
    ['/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/*rest'],
    openDocument,
  );

  // oidc-provider answers these preflights itself, but only if the OPTIONS request reaches it:
  // an Express router in front with a POST route on the same path (client-policy.ts parses the
  // token request) answers OPTIONS on its own, with `Allow` and no CORS. Same answer as
  // oidc-provider's: the preflight is open, the request itself is checked against the client
  // that authenticates (`clientBasedCors`).
  const clientEndpoint: RequestHandler = (req, res, next) => {
    const origin = req.get('Origin');
    if (!isPreflight(req) || origin === undefined) return next();
    res.vary('Origin');
    preflight(req, res, origin, 'POST');
  };
  router.options(['/token', '/token/revocation'], clientEndpoint);

  // RFC 7591 registration is open to anyone (no initial access token), from a browser too; the
  // registration access token on `/reg/:id` is a bearer header, not a cookie.
  const registration: RequestHandler = (req, res, next) => {
    if (isPreflight(req)) return preflight(req, res, '*', 'GET, POST');
    res.set('Access-Control-Allow-Origin', '*');
    res.set('Access-Control-Expose-Headers', 'WWW-Authenticate');
    next();
  };
  router.all(['/reg', '/reg/:clientId'], registration);

  // `/mcp`: only origins the proxy lets through (R6) get CORS; for anyone else the browser's own
  // same-origin policy stays in force, and the proxy answers their requests with 403.
  const allowed = allowedBrowserOrigins(config);
  const mcp: RequestHandler = (req, res, next) => {
    const origin = req.get('Origin');
    if (origin === undefined) return next();
    res.vary('Origin');
    if (!allowed.has(origin)) {
      if (!isPreflight(req)) return next();
      res
        .status(403)
        .set('Cache-Control', 'no-store')
        .json({ error: 'forbidden', error_description: 'Origin not allowed' });
      return;
    }
    // A preflight never carries the bearer token: it must be answered before authentication.
    if (isPreflight(req)) return preflight(req, res, origin, 'GET, POST, DELETE');
    res.set('Access-Control-Allow-Origin', origin);
    res.set('Access-Control-Expose-Headers', MCP_EXPOSED);
    next();
  };
  router.all([config.mcp.path, `${config.mcp.path}/*rest`], mcp);

  return router;
}

const under = (path: string, prefix: string): boolean => path === prefix || path.startsWith(`${prefix}/`);

/**
 * The CORS headers of an error answer made before (or instead of) the handlers above: our own
 * refusals ahead of oidc-provider (a foreign `resource` at `/token`, a body too large, a path
 * that does not decode). Without them a browser client sees "Failed to fetch" instead of the
 * reason. At the token endpoints the client is not authenticated yet, so the origin is reflected,
 * as oidc-provider does for its own refusals made before it knows the client; an error body
 * carries no credential.
 */
export function corsForRefusal(config: Config): (req: Request, res: Response) => void {
  const allowed = allowedBrowserOrigins(config);
  return (req, res) => {
    const origin = req.get('Origin');
    if (origin === undefined || res.get('Access-Control-Allow-Origin') !== undefined) return;
    const path = req.path;
    if (path.startsWith('/.well-known/') || under(path, '/reg')) {
      res.set('Access-Control-Allow-Origin', '*');
    } else if (path === '/token' || path === '/token/revocation') {
      res.vary('Origin');
      res.set('Access-Control-Allow-Origin', origin);
    } else if (under(path, config.mcp.path) && allowed.has(origin)) {
      res.vary('Origin');
      res.set('Access-Control-Allow-Origin', origin);
    }
  };
}
