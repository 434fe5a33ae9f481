import type { IncomingMessage, ServerResponse } from 'node:http';
import { IdentityError, type UpstreamCredentials } from '../identity/index.ts';
import { endMcpCallSpan } from '../telemetry/spans.ts';
import type { Caller } from './authenticate.ts';
import type { ClientBody } from './body.ts';
import { forwardResponseHeaders } from './headers.ts';
import type { AdmittedCall, ProxyContext } from './pipeline.ts';
import { sendUpstreamAsync, streamBack, upstreamRequest, type UpstreamLink } from './upstream.ts';

/**
 * The MCP server refused the upstream token (401): refresh it once (the vault makes that one
 * refresh per grant across every process) and replay the kept body with the new one. What a
 * failed refresh means for the grant is decided here too (`refreshFailed`).
 */
export function retryAfterRefresh(
  ctx: ProxyContext,
): (call: AdmittedCall, body: ClientBody, link: UpstreamLink, refused: IncomingMessage) => void {
  const { vault, cache, log, answer, revocation, cookies } = ctx;

  /**
   * The upstream identity provider will never honour this grant again: ours is revoked so the
   * client's refresh token dies with it, and the client is sent back through login. Any other
   * failure may pass: the grant is kept and the client asked to come back.
   */
  const refreshFailed = async (res: ServerResponse, caller: Caller, error: unknown): Promise<void> => {
    const code = error instanceof IdentityError ? error.code : 'IDENTITY_TRANSIENT';
    if (code !== 'IDENTITY_GRANT_INVALID') {
      log.warn('upstream refresh failed; keeping the grant', {
        grant_id: caller.grantId,
        error: (error as Error).message,
      });
      answer.identityProviderUnavailable(res);
      return;
    }
    log.info('upstream grant is gone; revoking ours', { grant_id: caller.grantId });
    try {
      await revocation.revoke(caller.grantId);
    } catch (revocationError) {
      // A 401 now would have the client refresh with a refresh token we failed to revoke.
      answer.storeUnavailable(res, revocationError);
      return;
    }
    answer.unauthorized(res, 'invalid_token', 'the upstream login has expired; log in again');
  };

  const retry = async (
    call: AdmittedCall,
    body: ClientBody,
    link: UpstreamLink,
    refused: IncomingMessage,
  ): Promise<void> => {
    const { res, caller, entry } = call;
    refused.resume();
    body.detach();
    await body.whenRead();
    let credentials: UpstreamCredentials;
    const stamp = cache.stamp();
    try {
      credentials = await vault.refresh(caller.grantId, caller.secret, entry.credentials.accessToken);
    } catch (error) {
      endMcpCallSpan(call.span, 'refresh_failed');
      await refreshFailed(res, caller, error);
      return;
    }
    cache.setVaultEntry(caller.grantId, caller.secret.tag, { ...entry, credentials }, stamp);
    const response = await sendUpstreamAsync(
      ctx.target,
      upstreamRequest(ctx, call, credentials.accessToken, body, link, true),
    );
    if (response.statusCode === 401) {
      // A fresh upstream token refused too: this grant cannot reach the MCP server. Send the
      // client back through login rather than echo the MCP server's own challenge.
      response.resume();
      endMcpCallSpan(call.span, 'upstream_refused', 401);
      log.warn('MCP server refused a freshly refreshed upstream token', { grant_id: caller.grantId });
      answer.unauthorized(res, 'invalid_token', 'the MCP server refused the upstream credentials');
      return;
    }
    body.release();
    endMcpCallSpan(call.span, 'refreshed', response.statusCode);
    streamBack(response, res, forwardResponseHeaders(response.rawHeaders, cookies), call.requestId);
  };

  return (call, body, link, refused) => {
    retry(call, body, link, refused)
      .catch((error: unknown) => endMcpCallSpan(call.span, answer.upstreamFailed(call, link.clientGone, error)))
      .catch((error: unknown) => answer.failUnexpectedly(call.res, error));
  };
}
