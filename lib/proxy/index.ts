import type { IncomingMessage, ServerResponse } from 'node:http';
import type Provider from 'oidc-provider';
import { grantRevocation } from '../auth-server/grant-events.ts';
import type { Config } from '../config/types.ts';
import { GrantRateLimiter, limitPerGrant } from '../rate-limit/grant.ts';
import type { Store } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';
import { currentRequest } from '../telemetry/request-context.ts';
import type { Vault } from '../vault/index.ts';
import {
  awaitMcpServer,
  checkOrigin,
  identifyCaller,
  limitDeclaredBody,
  loadUpstreamCredentials,
  refuseQueryToken,
  requireScopes,
  route,
} from './admit.ts';
import { Answers } from './answers.ts';
import type { KnownToken } from './authenticate.ts';
import { HotPathCache } from './cache.ts';
import { forwardToMcpServer } from './forward.ts';
import { cookiePolicy } from './headers.ts';
import { inOrder, McpCall, type AdmittedCall, type McpServerReadiness, type ProxyContext } from './pipeline.ts';
import { createTarget } from './upstream.ts';

export { GRANT_REVOKED_CHANNEL } from '../auth-server/grant-events.ts';
export type { McpServerReadiness } from './pipeline.ts';

export interface McpProxyDeps {
  config: Config;
  provider: Provider;
  vault: Vault;
  store: Store;
  log: Logger;
  /** When given, `/mcp` answers 503 instead of forwarding while it reports not ready. */
  mcpServer?: McpServerReadiness;
}

/**
 * The `/mcp` handler. Plain Node request and response: it runs as Express middleware, and as well
 * in front of Express for a request path that needs none of it.
 */
export type McpProxy = (req: IncomingMessage, res: ServerResponse) => void;

/**
 * `/mcp`, as a list of steps. Each answers the client itself when the request goes no further;
 * only the store (a token or grant not cached yet) makes one wait. Every outcome is answered here,
 * the proxy's own defects included (500, logged).
 */
export function createMcpProxy({ config, provider, vault, store, log, mcpServer }: McpProxyDeps): McpProxy {
  const revocation = grantRevocation({ provider, store, vault, log }, (grantId) => cache.dropGrant(grantId));
  const cache = new HotPathCache<KnownToken>(revocation.subscription);
  const ctx: ProxyContext = {
    config,
    provider,
    vault,
    log,
    answer: new Answers(config, log),
    cache,
    revocation,
    target: createTarget(config.mcp.serverUrl),
    cookies: cookiePolicy(['session', 'interaction', 'resume'].map((type) => provider.cookieName(type))),
    mcpServer,
  };

  const rateLimiter = new GrantRateLimiter(store, config.rateLimit, log);
  const admit = inOrder(
    checkOrigin(ctx), //             R6: no other web page drives the user's MCP session
    route(ctx), //                   the path below /mcp, never outside it
    refuseQueryToken(ctx), //        R3: the header only
    identifyCaller(ctx), //          R2–R4: our token for this resource (cached)
    requireScopes(ctx), //           R5
    limitPerGrant(rateLimiter, ctx.answer), // MAX_REQUESTS per window and grant, counted in process
    limitDeclaredBody(ctx), //       413 before anything is sent on
    awaitMcpServer(ctx), //          503 while it (re)starts
    loadUpstreamCredentials(ctx), // R22: the grant's upstream token (cached, refreshed ahead)
  );
  // Streams both ways; on the MCP server's 401, refresh once and replay (retry.ts).
  const forward = forwardToMcpServer(ctx);

  const { answer } = ctx;
  return (req, res) => {
    // From the request's context; on the Express path, where it is set on the response up front,
    // from there should some middleware have lost the context.
    const requestId = currentRequest()?.requestId ?? (res.getHeader('x-request-id') as string | undefined);
    const call = new McpCall(req, res, requestId);
    try {
      const verdict = admit(call);
      if (verdict === true) return forward(call as AdmittedCall);
      if (verdict === false) return;
      verdict
        .then(
          (admitted) => admitted && forward(call as AdmittedCall),
          (error: unknown) => answer.storeUnavailable(res, error),
        )
        .catch((error: unknown) => answer.failUnexpectedly(res, error));
    } catch (error) {
      answer.failUnexpectedly(res, error);
    }
  };
}
