import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isEnabled, write } from './log.ts';
import { RequestContext, runInRequest } from './request-context.ts';
import { scrubPath } from './scrub.ts';
import { endRequestSpan, startRequestSpan } from './spans.ts';

/**
 * Heroku's router sets X-Request-Id (its own, or the client's when that is 20–200 characters of
 * letters, digits, `+`, `/`, `=` and `-`). Kept when it looks like one, so our lines, the router's
 * and the MCP server's (it is passed on) line up; anything else is replaced, since the id is
 * printed bare in log lines and sent on as a header.
 */
const REQUEST_ID = /^[A-Za-z0-9+/=._-]{8,200}$/;

/** The request's id: see REQUEST_ID. */
export function requestIdOf(req: IncomingMessage): string {
  const incoming = req.headers['x-request-id'];
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
}

/**
 * Starts tracking a request: its id, its span when tracing is on, and one log line (and the span's
 * end) when its response closes. `route`: the route template when the caller knows it (`/mcp`,
 * dispatched before Express); otherwise Express's matched route, else the scrubbed path.
 *
 * The id goes back to the client as X-Request-Id on every answer. Set here, up front, unless
 * `headLater`: then whoever writes the head adds it (`/mcp`: `streamBack` for the MCP server's
 * answers, `sendJson` for the proxy's own). A header set before the head is written costs every
 * tool call: Node then merges the head into the headers set so far, removing and adding each
 * name again, instead of writing the list it is given as it is. Answers made outside the
 * request's context name it themselves (`Answers.upstreamFailed`).
 */
export function beginRequest(
  req: IncomingMessage,
  res: ServerResponse,
  route?: string,
  headLater = false,
): RequestContext {
  const request = new RequestContext(requestIdOf(req));
  if (!headLater) res.setHeader('X-Request-Id', request.requestId);
  request.span = startRequestSpan(req, request.requestId);
  if (request.span || isEnabled('info')) res.once('close', () => finishRequest(req, res, request, route));
  return request;
}

/**
 * The id a head about to be written should add as X-Request-Id, or undefined when there is none or
 * the response names its request already (set up front, see `beginRequest`): one per answer.
 */
export function requestIdToAdd(res: ServerResponse, requestId: string | undefined): string | undefined {
  return requestId !== undefined && !res.hasHeader('x-request-id') ? requestId : undefined;
}

/** `beginRequest` + `runInRequest` as Express middleware, first in the chain. */
export function requestTelemetry(req: IncomingMessage, res: ServerResponse, next: () => void): void {
  runInRequest(beginRequest(req, res), next);
}

/**
 * The request's one line: `msg=request method=POST path=/token status=200 duration_ms=3.1
 * request_id=…`. The path is scrubbed (no query values, no generated segments). `aborted=true`
 * when the client went away before the response was complete.
 */
function finishRequest(req: IncomingMessage, res: ServerResponse, request: RequestContext, route?: string): void {
  const method = req.method ?? 'GET';
  const aborted = !res.writableFinished;
  const target = (req as { originalUrl?: string }).originalUrl ?? req.url ?? '/';
  if (request.span) {
    const template = route ?? expressRoute(req) ?? scrubPath(pathOf(target));
    endRequestSpan(request.span, method, res.statusCode, template, target, aborted);
  }
  if (!isEnabled('info')) return;
  write('info', 'request', {
    method,
    path: scrubPath(target),
    status: res.statusCode,
    duration_ms: Math.round((performance.now() - request.startedAt) * 10) / 10,
    request_id: request.requestId,
    trace_id: request.span?.spanContext().traceId,
    aborted: aborted || undefined,
  });
}

/** Express's matched route, with its mount point: `/interaction/:uid`. Undefined outside Express. */
function expressRoute(req: IncomingMessage): string | undefined {
  const { route, baseUrl } = req as { route?: { path?: unknown }; baseUrl?: string };
  return typeof route?.path === 'string' ? `${baseUrl ?? ''}${route.path}` : undefined;
}

function pathOf(target: string): string {
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}
