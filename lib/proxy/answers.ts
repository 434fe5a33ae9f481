import type { IncomingMessage, ServerResponse } from 'node:http';
import { protectedResourceMetadataUrl } from '../auth-server/metadata.ts';
import { resourceScopes } from '../auth-server/policy.ts';
import type { Config } from '../config/types.ts';
import type { Logger } from '../telemetry/log.ts';
import { BodyTooLargeError, ClientGoneError } from './body.ts';
import { sendJson } from '../http/json.ts';
import { sendChallenge } from './challenge.ts';
import type { McpCall } from './pipeline.ts';
import { requestIdToAdd } from '../telemetry/request-log.ts';

/** How long a client is asked to wait before trying again, in seconds (Retry-After). */
const RETRY_AFTER = { store: '2', identityProvider: '5', mcpServer: '2' } as const;

/**
 * Every answer `/mcp` makes itself rather than the MCP server: small JSON documents for programs,
 * with the challenge header on 401 and 403 (R2, R5). After the head of a response has gone out
 * there is no status left to send: the connection is closed instead.
 */
export class Answers {
  private readonly prmUrl: string;
  /** Every scope of the resource (R5: a challenge names the full set). */
  private readonly scope: string;
  readonly limit: number;

  constructor(
    config: Config,
    private readonly log: Logger,
  ) {
    this.prmUrl = protectedResourceMetadataUrl(config);
    this.scope = resourceScopes(config).join(' ');
    this.limit = config.proxy.maxBodyBytes;
  }

  error(res: ServerResponse, status: number, error: string, description: string, headers?: Record<string, string>) {
    if (res.headersSent) return void res.destroy();
    sendJson(res, status, { error, error_description: description }, headers);
  }

  unauthorized(res: ServerResponse, error?: 'invalid_token' | 'invalid_request', description?: string): void {
    sendChallenge(res, 401, this.prmUrl, { scope: this.scope, error, description });
  }

  invalidToken(res: ServerResponse): void {
    this.unauthorized(res, 'invalid_token', 'the access token is invalid, expired or not for this resource');
  }

  insufficientScope(res: ServerResponse): void {
    sendChallenge(res, 403, this.prmUrl, {
      error: 'insufficient_scope',
      scope: this.scope,
      description: 'the access token lacks a required scope',
    });
  }

  /**
   * 413, then the rest of the body is read and dropped so the connection stays usable — up to
   * another `limit` bytes; past that the connection is closed (after the answer has gone out).
   */
  refuseBody(req: IncomingMessage, res: ServerResponse): void {
    const limit = this.limit;
    this.error(
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
  }

  /**
   * The store did not answer: the client's token may well be fine, so no 401 (it would send the
   * client through login again) and no 500 (R2: never for an auth decision).
   */
  storeUnavailable(res: ServerResponse, error: unknown): void {
    this.log.warn('store unavailable on the MCP endpoint', { error: (error as Error).message });
    this.error(res, 503, 'temporarily_unavailable', 'try again shortly', { 'Retry-After': RETRY_AFTER.store });
  }

  identityProviderUnavailable(res: ServerResponse): void {
    this.error(res, 503, 'temporarily_unavailable', 'the identity provider is unavailable; try again shortly', {
      'Retry-After': RETRY_AFTER.identityProvider,
    });
  }

  /** The MCP server is (re)starting: nothing is forwarded to a port that may not be listening yet. */
  mcpServerStarting(res: ServerResponse): void {
    this.error(res, 503, 'temporarily_unavailable', 'the MCP server is starting; try again shortly', {
      'Retry-After': RETRY_AFTER.mcpServer,
    });
  }

  /**
   * The request to the MCP server ended before its answer: the body was too large, the client
   * left (nobody to answer), or the MCP server was unreachable, died or reset the connection.
   * Returns which, as the MCP call span's outcome.
   *
   * Names the request itself (X-Request-Id) rather than leaving it to `sendJson`: a body too large
   * is noticed in a 'data' event of the client's request, which runs outside the request's context
   * (the connection's parser dispatches it), and so does everything that failure sets off.
   */
  upstreamFailed(
    { req, res, requestId }: McpCall,
    clientGone: boolean,
    error: unknown,
  ): 'body_too_large' | 'client_gone' | 'unreachable' {
    const toAdd = requestIdToAdd(res, requestId);
    if (toAdd !== undefined && !res.headersSent) res.setHeader('X-Request-Id', toAdd);
    if (error instanceof BodyTooLargeError) {
      this.refuseBody(req, res);
      return 'body_too_large';
    }
    if (error instanceof ClientGoneError || clientGone) {
      res.destroy();
      return 'client_gone';
    }
    this.log.warn('MCP server unreachable', { error: (error as Error).message });
    this.error(res, 502, 'bad_gateway', 'the MCP server could not be reached');
    return 'unreachable';
  }

  /** A defect of ours, not the client's nor the MCP server's: logged in full, answered 500. */
  failUnexpectedly(res: ServerResponse, error: unknown): void {
    this.log.error('request failed', { error: error instanceof Error ? error.stack : String(error) });
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: 'internal error' });
    else res.destroy();
  }
}
