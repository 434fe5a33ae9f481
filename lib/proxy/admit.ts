import type { IncomingMessage } from 'node:http';
import { allowedBrowserOrigins } from '../auth-server/cors.ts';
import { resourceScopes } from '../auth-server/policy.ts';
import { hashId } from '../store/hash.ts';
import { grantSecretOf } from '../vault/index.ts';
import { authenticate, bearerFrom, type KnownToken } from './authenticate.ts';
import { identityHeaders } from './headers.ts';
import type { ProxyContext, Step } from './pipeline.ts';

/**
 * The steps that decide whether a `/mcp` request reaches the MCP server, each answering the
 * client itself when it does not. A warm request (token and upstream credentials cached) passes
 * them all synchronously.
 */

/** R6: a page from another origin (DNS rebinding included) must not drive the user's session with the MCP server. */
export function checkOrigin({ config, answer }: ProxyContext): Step {
  const allowed = allowedBrowserOrigins(config);
  return ({ req, res }) => {
    const origin = req.headers.origin;
    if (origin === undefined || allowed.has(origin)) return true;
    answer.error(res, 403, 'forbidden', 'Origin not allowed');
    return false;
  };
}

/** `.` and `..` path segments, percent-encoded or not: see `route`. */
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;

/**
 * Separators in disguise: an encoded slash or backslash, a backslash, or a `;` path parameter.
 * Servers that decode `%2F`, treat `\` as `/` (Windows, some frameworks) or strip `;…` (Tomcat,
 * Spring) would turn `/mcp/..%2fadmin` or `/mcp/..;/admin` into a path outside `/mcp`.
 */
const DISGUISED_SEPARATOR = /%2f|%5c|\\|;/i;

/** Express sets `originalUrl` when a router rewrote `url`; plain Node leaves `url` alone. */
const requestTarget = (req: IncomingMessage): string => (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/';

/**
 * The MCP server's path for this request: the part after `/mcp` and the query pass as they are.
 * Dot segments are refused rather than forwarded: servers that normalise them would let
 * `/mcp/../admin` reach paths of the MCP server that were never published through us.
 */
export function route({ config, target, answer }: ProxyContext): Step {
  const targetBase = target.url.pathname.replace(/\/+$/, '');
  const mcpPath = config.mcp.path.toLowerCase();
  return (call) => {
    const url = requestTarget(call.req);
    const q = url.indexOf('?');
    const path = q === -1 ? url : url.slice(0, q);
    const search = q === -1 ? '' : url.slice(q);
    // Express routes case-insensitively; the MCP server gets its own spelling of the path.
    const rest = path.slice(mcpPath.length);
    if (
      path.slice(0, mcpPath.length).toLowerCase() !== mcpPath ||
      (rest !== '' && rest[0] !== '/') ||
      DOT_SEGMENT.test(rest) ||
      DISGUISED_SEPARATOR.test(rest)
    ) {
      answer.error(call.res, 400, 'invalid_request', 'the request path is not one this proxy forwards');
      return false;
    }
    call.path = `${targetBase}${rest}${search}`;
    call.search = search;
    return true;
  };
}

/** R3, RFC 6750 §2.3: query strings end up in logs and Referer headers. */
export function refuseQueryToken({ answer }: ProxyContext): Step {
  return ({ search, res }) => {
    if (search === '' || !new URLSearchParams(search).has('access_token')) return true;
    answer.unauthorized(res, 'invalid_request', 'access tokens are accepted in the Authorization header only');
    return false;
  };
}

/**
 * R2, R3, R4: an access token of ours for this resource, from the Authorization header. Known
 * tokens come from the in-process cache; others are looked up in the store once, then cached.
 */
export function identifyCaller({ config, provider, cache, answer }: ProxyContext): Step {
  // `openid` names who the user is, not what they may do here: tokens need every other scope.
  const required = resourceScopes(config).filter((s) => s !== 'openid');
  const hasRequiredScopes = (scope: string): boolean => {
    const granted = new Set(scope.split(' '));
    return required.every((s) => granted.has(s));
  };
  return (call) => {
    const { req, res } = call;
    const token = bearerFrom(req.headers.authorization);
    if (!token) {
      if (req.headers.authorization) answer.unauthorized(res, 'invalid_request', 'malformed Authorization header');
      else answer.unauthorized(res);
      return false;
    }
    const key = hashId(token);
    const cached = cache.caller(key);
    if (cached) {
      call.caller = cached;
      return true;
    }
    // Our access tokens carry their grant's vault secret. Without one this is no token of ours
    // (an upstream token, R4) or one minted before tokens carried it: either way no vault record
    // opens for it, so the client is sent to log in without a store round trip.
    const secret = grantSecretOf(token);
    if (!secret) {
      answer.invalidToken(res);
      return false;
    }
    const stamp = cache.stamp();
    return authenticate(provider, config.mcp.resourceUrl, token).then((caller) => {
      if (!caller) {
        answer.invalidToken(res);
        return false;
      }
      const known: KnownToken = {
        ...caller,
        secret,
        sufficient: hasRequiredScopes(caller.scope),
        identityHeaders: identityHeaders(caller),
      };
      cache.setCaller(key, known, caller.tokenExpiresAt, stamp);
      call.caller = known;
      return true;
    });
  };
}

/** R5: a token without every scope `/mcp` needs gets 403 naming them all. */
export function requireScopes({ answer }: ProxyContext): Step {
  return ({ caller, res }) => {
    if (caller!.sufficient) return true;
    answer.insufficientScope(res);
    return false;
  };
}

/** A body declared larger than MCP_PROXY_MAX_BODY_BYTES is refused before anything is sent on. */
export function limitDeclaredBody({ answer }: ProxyContext): Step {
  return ({ req, res }) => {
    if (Number(req.headers['content-length'] ?? 0) <= answer.limit) return true;
    answer.refuseBody(req, res);
    return false;
  };
}

/** While the MCP server (re)starts, 503 with Retry-After: a port not listening yet would be a 502. */
export function awaitMcpServer({ mcpServer, answer }: ProxyContext): Step {
  return ({ res }) => {
    if (mcpServer === undefined || mcpServer.isReady()) return true;
    answer.mcpServerStarting(res);
    return false;
  };
}

/** R22: the upstream credentials of the caller's grant, from the vault (refreshed ahead), then cached. */
export function loadUpstreamCredentials({ vault, cache, answer }: ProxyContext): Step {
  return (call) => {
    const { grantId, secret } = call.caller!;
    const cached = cache.vaultEntry(grantId, secret.tag);
    if (cached) {
      call.entry = cached;
      return true;
    }
    const stamp = cache.stamp();
    return vault.getFresh(grantId, secret).then((entry) => {
      if (!entry) {
        answer.unauthorized(call.res, 'invalid_token', 'the login behind this token is no longer available');
        return false;
      }
      cache.setVaultEntry(grantId, secret.tag, entry, stamp);
      call.entry = entry;
      return true;
    });
  };
}
