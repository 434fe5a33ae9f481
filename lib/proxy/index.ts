import type { IncomingMessage } from 'node:http';
import type { Request, RequestHandler, Response } from 'express';
import type Provider from 'oidc-provider';
import { protectedResourceMetadataUrl } from '../auth-server/metadata.ts';
import { resourceScopes } from '../auth-server/provider.ts';
import type { Config } from '../config/types.ts';
import { IdentityError, type UpstreamCredentials } from '../identity/index.ts';
import type { Logger } from '../telemetry/log.ts';
import type { Vault } from '../vault/index.ts';
import { authenticate, bearerFrom, type Caller } from './authenticate.ts';
import { sendChallenge } from './challenge.ts';
import { BodyTooLargeError, KeptBody, bodyFinished, createTarget, sendUpstream } from './forward.ts';
import { forwardRequestHeaders, forwardResponseHeaders } from './headers.ts';

export interface McpProxyDeps {
  config: Config;
  provider: Provider;
  vault: Vault;
  log: Logger;
}

/**
 * `/mcp`, as a straight line: origin check → our bearer token → the grant's upstream token →
 * stream to the MCP server → on its 401, refresh once and replay the kept body.
 */
export function createMcpProxy({ config, provider, vault, log }: McpProxyDeps): RequestHandler {
  const target = createTarget(config.mcp.serverUrl);
  const prmUrl = protectedResourceMetadataUrl(config);
  const scope = resourceScopes(config).join(' ');
  // `openid` names who the user is, not what they may do here: tokens need every other scope.
  const required = resourceScopes(config).filter((s) => s !== 'openid');
  const ownOrigin = new URL(config.baseUrl).origin;
  const allowedOrigins = new Set([ownOrigin, ...config.proxy.allowedOrigins]);
  const limit = config.proxy.maxBodyBytes;

  const unauthorized = (res: Response, error?: 'invalid_token' | 'invalid_request', description?: string) =>
    sendChallenge(res, 401, prmUrl, { scope, error, description });

  const jsonError = (res: Response, status: number, error: string, description: string, headers: Record<string, string> = {}) => {
    if (res.headersSent) return void res.destroy();
    res.status(status).set({ 'Cache-Control': 'no-store', ...headers }).json({ error, error_description: description });
  };

  const upstreamHeaders = (req: Request, caller: Caller, credentials: UpstreamCredentials) => {
    const headers = forwardRequestHeaders(req.headers);
    const priorFor = req.headers['x-forwarded-for'];
    const remote = req.socket.remoteAddress ?? '';
    // R4: the MCP server sees the user's upstream token, never ours.
    headers.authorization = `Bearer ${credentials.accessToken}`;
    headers.host = target.url.host;
    headers['x-forwarded-for'] = priorFor ? `${priorFor}, ${remote}` : remote;
    headers['x-forwarded-proto'] = req.protocol;
    headers['x-forwarded-host'] = req.get('host') ?? '';
    headers['x-authorization-scope'] = caller.scope;
    headers['x-dynamic-client-id'] = caller.clientId;
    headers['x-user-id'] = caller.accountId;
    return headers;
  };

  const pathFor = (req: Request): string => {
    const incoming = new URL(req.originalUrl, 'http://proxy.invalid');
    const rest = incoming.pathname.slice(config.mcp.path.length);
    return `${target.url.pathname.replace(/\/$/, '')}${rest}${incoming.search}`;
  };

  const streamBack = (upstream: IncomingMessage, res: Response) => {
    res.writeHead(upstream.statusCode ?? 502, forwardResponseHeaders(upstream.headers));
    // SSE: every chunk is written as it arrives; pipe() pauses the MCP server when the client
    // reads slower than it writes.
    upstream.pipe(res);
    upstream.on('error', () => res.destroy());
    upstream.on('aborted', () => res.destroy());
  };

  return async (req, res) => {
    const origin = req.headers.origin;
    if (origin !== undefined && !allowedOrigins.has(origin)) {
      // R6: a browser page from another origin (DNS rebinding included) must not drive the user's
      // session with the MCP server.
      jsonError(res, 403, 'forbidden', 'Origin not allowed');
      return;
    }
    if (new URL(req.originalUrl, 'http://proxy.invalid').searchParams.has('access_token')) {
      unauthorized(res, 'invalid_request', 'access tokens are accepted in the Authorization header only');
      return;
    }
    const token = bearerFrom(req.headers.authorization);
    if (!token) {
      if (req.headers.authorization) unauthorized(res, 'invalid_request', 'malformed Authorization header');
      else unauthorized(res);
      return;
    }
    const caller = await authenticate(provider, config.mcp.resourceUrl, token);
    if (!caller) {
      unauthorized(res, 'invalid_token', 'the access token is invalid, expired or not for this resource');
      return;
    }
    const granted = new Set(caller.scope.split(' '));
    if (required.some((s) => !granted.has(s))) {
      sendChallenge(res, 403, prmUrl, { error: 'insufficient_scope', scope, description: 'the access token lacks a required scope' });
      return;
    }
    const entry = await vault.get(caller.grantId);
    if (!entry) {
      unauthorized(res, 'invalid_token', 'the login behind this token is no longer available');
      return;
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      jsonError(res, 413, 'payload_too_large', `request body is larger than ${limit} bytes`);
      return;
    }

    const controller = new AbortController();
    res.on('close', () => {
      // The client went away: stop the MCP server's work on its behalf.
      if (!res.writableFinished) controller.abort();
    });
    const kept = new KeptBody(limit);
    const send = (credentials: UpstreamCredentials, live: boolean) =>
      sendUpstream(target, {
        method: req.method,
        path: pathFor(req),
        headers: upstreamHeaders(req, caller, credentials),
        kept,
        live: live ? req : undefined,
        signal: controller.signal,
      });

    try {
      let upstream = await send(entry.credentials, true);
      if (upstream.statusCode === 401) {
        upstream.resume();
        await bodyFinished(req, kept);
        let credentials: UpstreamCredentials;
        try {
          credentials = await vault.refresh(caller.grantId, entry.credentials.accessToken);
        } catch (error) {
          await refreshFailed(res, caller, error);
          return;
        }
        upstream = await send(credentials, false);
        if (upstream.statusCode === 401) {
          // A fresh upstream token refused too: this grant cannot reach the MCP server. Send the
          // client back through login rather than echo the MCP server's own challenge.
          upstream.resume();
          log.warn('MCP server refused a freshly refreshed upstream token', { grant_id: caller.grantId });
          unauthorized(res, 'invalid_token', 'the MCP server refused the upstream credentials');
          return;
        }
      }
      streamBack(upstream, res);
    } catch (error) {
      if (error instanceof BodyTooLargeError || (error as { cause?: unknown })?.cause instanceof BodyTooLargeError) {
        jsonError(res, 413, 'payload_too_large', `request body is larger than ${limit} bytes`);
      } else if (controller.signal.aborted) {
        res.destroy();
      } else {
        log.warn('MCP server unreachable', { error: (error as Error).message });
        jsonError(res, 502, 'bad_gateway', 'the MCP server could not be reached');
      }
    }
  };

  async function refreshFailed(res: Response, caller: Caller, error: unknown): Promise<void> {
    const code = error instanceof IdentityError ? error.code : 'IDENTITY_TRANSIENT';
    if (code === 'IDENTITY_GRANT_INVALID') {
      // The upstream will never honour this grant again: revoke ours so the client's refresh
      // token dies with it, and send the client back through login.
      log.info('upstream grant is gone; revoking ours', { grant_id: caller.grantId });
      await revokeGrant(caller.grantId);
      unauthorized(res, 'invalid_token', 'the upstream login has expired; log in again');
      return;
    }
    log.warn('upstream refresh failed; keeping the grant', { grant_id: caller.grantId, error: (error as Error).message });
    jsonError(res, 503, 'temporarily_unavailable', 'the identity provider is unavailable; try again shortly', { 'Retry-After': '5' });
  }

  async function revokeGrant(grantId: string): Promise<void> {
    const grant = await provider.Grant.find(grantId);
    await Promise.all([
      grant?.destroy(),
      provider.AccessToken.revokeByGrantId(grantId),
      provider.RefreshToken.revokeByGrantId(grantId),
      provider.AuthorizationCode.revokeByGrantId(grantId),
      vault.delete(grantId),
    ]);
  }
}
