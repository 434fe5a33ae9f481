import type { IncomingMessage, ServerResponse } from 'node:http';
import type Provider from 'oidc-provider';
import { allowedBrowserOrigins } from '../auth-server/cors.ts';
import { protectedResourceMetadataUrl } from '../auth-server/metadata.ts';
import { clientProtocol } from '../http/forwarded.ts';
import { resourceScopes } from '../auth-server/policy.ts';
import type { Config } from '../config/types.ts';
import { IdentityError, type UpstreamCredentials } from '../identity/index.ts';
import { hashId } from '../store/hash.ts';
import type { Store, Subscription } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';
import { grantSecretOf, type GrantSecret, type Vault, type VaultEntry } from '../vault/index.ts';
import { authenticate, bearerFrom, type Caller } from './authenticate.ts';
import { HotPathCache } from './cache.ts';
import { sendChallenge, sendJson } from './challenge.ts';
import {
  BodyTooLargeError,
  ClientBody,
  ClientGoneError,
  createTarget,
  sendUpstream,
  sendUpstreamAsync,
  streamBack,
  UpstreamLink,
} from './forward.ts';
import { cookiePolicy, forwardRequestHeaders, forwardResponseHeaders } from './headers.ts';

export interface McpProxyDeps {
  config: Config;
  provider: Provider;
  vault: Vault;
  store: Store;
  log: Logger;
}

/**
 * Store channel on which every process announces a grant whose tokens must no longer be trusted
 * from its in-process cache. The message is the grant id (an identifier, not a credential).
 */
export const GRANT_REVOKED_CHANNEL = 'proxy:grant-revoked';

/** A validated access token of ours, as the hot-path cache keeps it. */
interface KnownToken extends Caller {
  /** From the token itself: opens its grant's vault record (its `tag` computed once). */
  secret: GrantSecret;
  /** Whether its scopes cover what `/mcp` requires. */
  sufficient: boolean;
}

interface Admitted {
  /** Path and query on the MCP server. */
  path: string;
  caller: KnownToken;
  entry: VaultEntry;
}

/**
 * Admission decided without I/O (cache hits, or the client already answered: undefined), or a
 * promise of it when the store must be asked. Not always a promise: on the hot path every promise
 * costs, more so with async hooks enabled (oidc-provider runs each request in AsyncLocalStorage).
 */
type Admission = Admitted | undefined | Promise<Admitted | undefined>;

/** `.` and `..` path segments, percent-encoded or not: see `upstreamPath`. */
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;

/**
 * Separators in disguise: an encoded slash or backslash, a backslash, or a `;` path parameter.
 * Servers that decode `%2F`, treat `\` as `/` (Windows, some frameworks) or strip `;…` (Tomcat,
 * Spring) would turn `/mcp/..%2fadmin` or `/mcp/..;/admin` into a path outside `/mcp`.
 */
const DISGUISED_SEPARATOR = /%2f|%5c|\\|;/i;

/**
 * Header values carry visible ASCII only. An account id outside that (a Unicode user name at a
 * non-OIDC provider) is sent percent-encoded as UTF-8, and so is one holding `%`, so that a `%`
 * in the header always means "percent-decode me".
 */
export function headerSafe(value: string): string {
  return /^[\x21-\x24\x26-\x7e]*$/.test(value) ? value : encodeURIComponent(value);
}

/**
 * The `/mcp` handler. Plain Node request and response: it runs as Express middleware, and as well
 * in front of Express for a request path that needs none of it.
 */
export type McpProxy = (req: IncomingMessage, res: ServerResponse) => void;

/** Express sets `originalUrl` when a router rewrote `url`; plain Node leaves `url` alone. */
const requestTarget = (req: IncomingMessage): string => (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/';

/**
 * `/mcp`, as a straight line: origin check → our bearer token (cached) → the grant's upstream
 * token (cached) → stream to the MCP server → on its 401, refresh once and replay the kept body.
 */
export function createMcpProxy({ config, provider, vault, store, log }: McpProxyDeps): McpProxy {
  const target = createTarget(config.mcp.serverUrl);
  const targetBase = target.url.pathname.replace(/\/+$/, '');
  const mcpPath = config.mcp.path.toLowerCase();
  const prmUrl = protectedResourceMetadataUrl(config);
  const scope = resourceScopes(config).join(' ');
  // `openid` names who the user is, not what they may do here: tokens need every other scope.
  const required = resourceScopes(config).filter((s) => s !== 'openid');
  const allowedOrigins = allowedBrowserOrigins(config);
  const limit = config.proxy.maxBodyBytes;
  const cookies = cookiePolicy(['session', 'interaction', 'resume'].map((type) => provider.cookieName(type)));

  // Subscribed on the first request, not here: creating the app does no I/O.
  let revocations: Subscription | undefined;
  const cache = new HotPathCache<KnownToken>(
    () => (revocations ??= store.subscribe(GRANT_REVOKED_CHANNEL, (grantId) => cache.dropGrant(grantId))),
  );
  const invalidate = (grantId: string | undefined) => {
    if (!grantId) return;
    cache.dropGrant(grantId);
    store.publish(GRANT_REVOKED_CHANNEL, grantId).catch((error: Error) => {
      // Other processes keep trusting this grant's tokens for at most their cache lifetime.
      log.warn('could not announce a revoked grant to other processes', { grant_id: grantId, error: error.message });
    });
  };
  // Every way oidc-provider ends a token's validity before its expiry. `grant.revoked` alone is
  // not enough: revoking an access token (RFC 7009) revokes its grant's other access tokens too,
  // yet emits it only when `revokeGrantPolicy` says the grant goes as well.
  provider.on('grant.revoked', (_ctx, grantId: string) => invalidate(grantId));
  provider.on('grant.destroyed', (grant: { jti?: string }) => invalidate(grant.jti));
  provider.on('access_token.destroyed', (token: { grantId?: string }) => invalidate(token.grantId));
  provider.on('refresh_token.destroyed', (token: { grantId?: string }) => invalidate(token.grantId));

  const unauthorized = (res: ServerResponse, error?: 'invalid_token' | 'invalid_request', description?: string) =>
    sendChallenge(res, 401, prmUrl, { scope, error, description });

  const jsonError = (
    res: ServerResponse,
    status: number,
    error: string,
    description: string,
    headers: Record<string, string> = {},
  ) => {
    if (res.headersSent) return void res.destroy();
    sendJson(res, status, { error, error_description: description }, headers);
  };

  /**
   * 413, then the rest of the body is read and dropped so the connection stays usable — up to
   * another `limit` bytes; past that the connection is closed (after the answer has gone out).
   */
  const refuseBody = (req: IncomingMessage, res: ServerResponse) => {
    jsonError(
      res,
      413,
      'payload_too_large',
      `the request body is larger than ${limit} bytes (MCP_PROXY_MAX_BODY_BYTES)`,
    );
    if (req.readableEnded) return;
    let discarded = 0;
    const close = () => req.socket?.destroy();
    req.on('data', (chunk: Buffer) => {
      discarded += chunk.length;
      if (discarded > limit) {
        req.pause();
        if (res.writableFinished) close();
        else res.once('finish', close);
      }
    });
    req.resume();
  };

  /**
   * The MCP server's path for this request: the part after `/mcp` and the query pass as they are.
   * Dot segments are refused rather than forwarded: servers that normalise them would let
   * `/mcp/../admin` reach paths of the MCP server that were never published through us.
   */
  const upstreamPath = (originalUrl: string): { path: string; search: string } | undefined => {
    const q = originalUrl.indexOf('?');
    const path = q === -1 ? originalUrl : originalUrl.slice(0, q);
    const search = q === -1 ? '' : originalUrl.slice(q);
    // Express routes case-insensitively; the MCP server gets its own spelling of the path.
    if (path.slice(0, mcpPath.length).toLowerCase() !== mcpPath) return undefined;
    const rest = path.slice(mcpPath.length);
    if ((rest !== '' && rest[0] !== '/') || DOT_SEGMENT.test(rest) || DISGUISED_SEPARATOR.test(rest)) return undefined;
    return { path: `${targetBase}${rest}${search}`, search };
  };

  /** `replayLength`: the kept body's size when this is a replay (its framing is ours to declare). */
  const upstreamHeaders = (
    req: IncomingMessage,
    res: ServerResponse,
    caller: Caller,
    credentials: UpstreamCredentials,
    replayLength?: number,
  ) => {
    const replay = replayLength !== undefined;
    const headers = forwardRequestHeaders(req.rawHeaders, cookies, !replay);
    const priorFor = req.headers['x-forwarded-for'];
    const remote = req.socket.remoteAddress ?? '';
    headers.push(
      'Host',
      target.url.host,
      // R4: the MCP server sees the user's upstream token, never ours.
      'Authorization',
      `Bearer ${credentials.accessToken}`,
      'X-Forwarded-For',
      priorFor ? `${priorFor}, ${remote}` : remote,
      'X-Forwarded-Proto',
      clientProtocol(req),
      'X-Forwarded-Host',
      req.headers.host ?? '',
      'X-Authorization-Scope',
      caller.scope,
      'X-Dynamic-Client-Id',
      headerSafe(caller.clientId),
      'X-User-Id',
      headerSafe(caller.accountId),
    );
    const requestId = res.getHeader('x-request-id');
    if (typeof requestId === 'string') headers.push('X-Request-Id', requestId);
    if (replay && (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined)) {
      headers.push('Content-Length', String(replayLength));
    }
    return headers;
  };

  /**
   * Everything decided before the MCP server is contacted. Answers the client itself when the
   * request goes no further (undefined); a returned promise rejects only when the store cannot
   * answer.
   */
  const admit = (req: IncomingMessage, res: ServerResponse): Admission => {
    const origin = req.headers.origin;
    if (origin !== undefined && !allowedOrigins.has(origin)) {
      // R6: a page from another origin (DNS rebinding included) must not drive the user's
      // session with the MCP server.
      jsonError(res, 403, 'forbidden', 'Origin not allowed');
      return;
    }
    const route = upstreamPath(requestTarget(req));
    if (!route) {
      jsonError(res, 400, 'invalid_request', 'the request path is not one this proxy forwards');
      return;
    }
    if (route.search && new URLSearchParams(route.search).has('access_token')) {
      // R3, RFC 6750 §2.3: query strings end up in logs and Referer headers.
      unauthorized(res, 'invalid_request', 'access tokens are accepted in the Authorization header only');
      return;
    }
    const token = bearerFrom(req.headers.authorization);
    if (!token) {
      if (req.headers.authorization) unauthorized(res, 'invalid_request', 'malformed Authorization header');
      else unauthorized(res);
      return;
    }
    const key = hashId(token);
    const known = cache.caller(key);
    if (known) return admitCaller(req, res, route.path, known);
    // Our access tokens carry their grant's vault secret. Without one this is no token of ours
    // (an upstream token, R4) or one minted before tokens carried it: either way no vault record
    // opens for it, so the client is sent to log in without a store round trip.
    const secret = grantSecretOf(token);
    if (!secret) {
      invalidToken(res);
      return;
    }
    const stamp = cache.stamp();
    return authenticate(provider, config.mcp.resourceUrl, token).then((caller) => {
      if (!caller) {
        invalidToken(res);
        return;
      }
      const known: KnownToken = { ...caller, secret, sufficient: hasRequiredScopes(caller.scope) };
      cache.setCaller(key, known, caller.tokenExpiresAt, stamp);
      return admitCaller(req, res, route.path, known);
    });
  };

  const hasRequiredScopes = (scope: string): boolean => {
    const granted = new Set(scope.split(' '));
    return required.every((s) => granted.has(s));
  };

  const invalidToken = (res: ServerResponse) =>
    unauthorized(res, 'invalid_token', 'the access token is invalid, expired or not for this resource');

  const admitCaller = (req: IncomingMessage, res: ServerResponse, path: string, caller: KnownToken): Admission => {
    if (!caller.sufficient) {
      sendChallenge(res, 403, prmUrl, {
        error: 'insufficient_scope',
        scope,
        description: 'the access token lacks a required scope',
      });
      return;
    }
    if (Number(req.headers['content-length'] ?? 0) > limit) {
      refuseBody(req, res);
      return;
    }
    const { grantId, secret } = caller;
    const cached = cache.vaultEntry(grantId, secret.tag);
    if (cached) return { path, caller, entry: cached };
    const stamp = cache.stamp();
    return vault.getFresh(grantId, secret).then((entry) => {
      if (!entry) {
        unauthorized(res, 'invalid_token', 'the login behind this token is no longer available');
        return;
      }
      cache.setVaultEntry(grantId, secret.tag, entry, stamp);
      return { path, caller, entry };
    });
  };

  const requestFor = (
    req: IncomingMessage,
    res: ServerResponse,
    { path, caller }: Admitted,
    body: ClientBody,
    link: UpstreamLink,
    credentials: UpstreamCredentials,
    replay: boolean,
  ) => ({
    method: req.method ?? 'GET',
    path,
    headers: upstreamHeaders(req, res, caller, credentials, replay ? body.size : undefined),
    body,
    link,
  });

  /** Streams the request to the MCP server and its answer back; on its 401, refresh and replay once. */
  const forward = (req: IncomingMessage, res: ServerResponse, admitted: Admitted): void => {
    // The client going away stops the MCP server's work on its behalf.
    const link = new UpstreamLink(res);
    const body = new ClientBody(req, limit);
    const options = requestFor(req, res, admitted, body, link, admitted.entry.credentials, false);
    sendUpstream(target, options, (error, response) => {
      try {
        if (error) return forwardFailed(req, res, link, error);
        if (response!.statusCode === 401) {
          retryAfterRefresh(req, res, admitted, body, link, response!).catch((retryError: unknown) =>
            forwardFailed(req, res, link, retryError),
          );
          return;
        }
        body.release();
        streamBack(response!, res, forwardResponseHeaders(response!.rawHeaders, cookies));
      } catch (unexpected) {
        failUnexpectedly(res, unexpected);
      }
    });
  };

  const retryAfterRefresh = async (
    req: IncomingMessage,
    res: ServerResponse,
    admitted: Admitted,
    body: ClientBody,
    link: UpstreamLink,
    refused: IncomingMessage,
  ): Promise<void> => {
    const { caller, entry } = admitted;
    refused.resume();
    body.detach();
    await body.whenRead();
    let credentials: UpstreamCredentials;
    const stamp = cache.stamp();
    try {
      credentials = await vault.refresh(caller.grantId, caller.secret, entry.credentials.accessToken);
    } catch (error) {
      await refreshFailed(res, caller, error);
      return;
    }
    cache.setVaultEntry(caller.grantId, caller.secret.tag, { ...entry, credentials }, stamp);
    const response = await sendUpstreamAsync(target, requestFor(req, res, admitted, body, link, credentials, true));
    if (response.statusCode === 401) {
      // A fresh upstream token refused too: this grant cannot reach the MCP server. Send the
      // client back through login rather than echo the MCP server's own challenge.
      response.resume();
      log.warn('MCP server refused a freshly refreshed upstream token', { grant_id: caller.grantId });
      unauthorized(res, 'invalid_token', 'the MCP server refused the upstream credentials');
      return;
    }
    body.release();
    streamBack(response, res, forwardResponseHeaders(response.rawHeaders, cookies));
  };

  const forwardFailed = (req: IncomingMessage, res: ServerResponse, link: UpstreamLink, error: unknown): void => {
    if (error instanceof BodyTooLargeError) {
      refuseBody(req, res);
    } else if (error instanceof ClientGoneError || link.clientGone) {
      res.destroy();
    } else {
      log.warn('MCP server unreachable', { error: (error as Error).message });
      jsonError(res, 502, 'bad_gateway', 'the MCP server could not be reached');
    }
  };

  return (req, res) => {
    try {
      const admission = admit(req, res);
      if (admission === undefined) return;
      if (!(admission instanceof Promise)) return forward(req, res, admission);
      admission
        .then(
          (admitted) => admitted && forward(req, res, admitted),
          (error: unknown) => storeUnavailable(res, error),
        )
        .catch((error: unknown) => failUnexpectedly(res, error));
    } catch (error) {
      failUnexpectedly(res, error);
    }
  };

  /** A defect of ours, not the client's nor the MCP server's: logged in full, answered 500. */
  function failUnexpectedly(res: ServerResponse, error: unknown): void {
    log.error('request failed', { error: error instanceof Error ? error.stack : String(error) });
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: 'internal error' });
    else res.destroy();
  }

  /**
   * The store did not answer: the client's token may well be fine, so no 401 (it would send the
   * client through login again) and no 500 (R2: never for an auth decision).
   */
  function storeUnavailable(res: ServerResponse, error: unknown): void {
    log.warn('store unavailable on the MCP endpoint', { error: (error as Error).message });
    jsonError(res, 503, 'temporarily_unavailable', 'try again shortly', { 'Retry-After': '2' });
  }

  async function refreshFailed(res: ServerResponse, caller: Caller, error: unknown): Promise<void> {
    const code = error instanceof IdentityError ? error.code : 'IDENTITY_TRANSIENT';
    if (code === 'IDENTITY_GRANT_INVALID') {
      // The upstream will never honour this grant again: revoke ours so the client's refresh
      // token dies with it, and send the client back through login.
      log.info('upstream grant is gone; revoking ours', { grant_id: caller.grantId });
      try {
        await revokeGrant(caller.grantId);
      } catch (revocationError) {
        // A 401 now would have the client refresh with a refresh token we failed to revoke.
        storeUnavailable(res, revocationError);
        return;
      }
      unauthorized(res, 'invalid_token', 'the upstream login has expired; log in again');
      return;
    }
    log.warn('upstream refresh failed; keeping the grant', {
      grant_id: caller.grantId,
      error: (error as Error).message,
    });
    jsonError(res, 503, 'temporarily_unavailable', 'the identity provider is unavailable; try again shortly', {
      'Retry-After': '5',
    });
  }

  async function revokeGrant(grantId: string): Promise<void> {
    try {
      const grant = await provider.Grant.find(grantId);
      await Promise.all([
        grant?.destroy(),
        provider.AccessToken.revokeByGrantId(grantId),
        provider.RefreshToken.revokeByGrantId(grantId),
        provider.AuthorizationCode.revokeByGrantId(grantId),
        vault.delete(grantId),
      ]);
    } finally {
      // After the deletes, so no process can read a token of this grant as valid once it heard.
      invalidate(grantId);
    }
  }
}
