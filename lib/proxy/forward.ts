import { endMcpCallSpan, startMcpCallSpan } from '../telemetry/spans.ts';
import { ClientBody } from './body.ts';
import { forwardResponseHeaders } from './headers.ts';
import type { AdmittedCall, ProxyContext } from './pipeline.ts';
import { retryAfterRefresh } from './retry.ts';
import { sendUpstream, streamBack, UpstreamLink, upstreamRequest } from './upstream.ts';

/**
 * The last step: streams the request to the MCP server and its answer back. On the MCP server's
 * 401 the upstream token is refreshed and the kept body replayed, once (`retry.ts`); any other
 * answer is the client's, and the kept copy of the body is dropped.
 */
export function forwardToMcpServer(ctx: ProxyContext): (call: AdmittedCall) => void {
  const { answer, cookies } = ctx;
  const retry = retryAfterRefresh(ctx);
  return (call) => {
    const { req, res } = call;
    call.span = startMcpCallSpan(req);
    // The client going away stops the MCP server's work on its behalf.
    const link = new UpstreamLink(res);
    const body = new ClientBody(req, answer.limit);
    const request = upstreamRequest(ctx, call, call.entry.credentials.accessToken, body, link, false);
    sendUpstream(ctx.target, request, (error, response) => {
      try {
        if (error) return endMcpCallSpan(call.span, answer.upstreamFailed(call, link.clientGone, error));
        if (response!.statusCode === 401) return retry(call, body, link, response!);
        body.release();
        // Ends at the response's head: the length of a stream is the request span's.
        endMcpCallSpan(call.span, 'ok', response!.statusCode);
        streamBack(response!, res, forwardResponseHeaders(response!.rawHeaders, cookies), call.requestId);
      } catch (unexpected) {
        endMcpCallSpan(call.span, 'proxy_error');
        answer.failUnexpectedly(res, unexpected);
      }
    });
  };
}
