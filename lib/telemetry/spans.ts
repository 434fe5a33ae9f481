import type { IncomingMessage } from 'node:http';
import { context, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import { boundedName, errorType, safeAttributes, scrubPath } from './scrub.ts';
import { tracingHandle } from './tracing-handle.ts';

/**
 * The spans the proxy makes by hand. With tracing off every function here is one branch on a
 * module constant and returns `undefined` or calls through: no span, no context switch, no
 * allocation. With it on, every attribute passes the guard in scrub.ts.
 *
 * The spans: one SERVER span per request (`startRequestSpan`), a CLIENT span per MCP call under it
 * (`startMcpCallSpan`, whose context goes to the MCP server as `traceparent`), a span per upstream
 * code exchange and refresh (`withSpan`), and ioredis's spans of the store's commands. The first
 * two, paid by every request, come from the lean tracer (lean-tracer.ts), the others from the SDK's.
 */

/** Decided once, when this module loads: the preload has run by then, or never will. */
const handle = tracingHandle();
const tracer = handle?.tracer;
const startSpan = handle?.startSpan;

export const tracingEnabled = tracer !== undefined;

type Attributes = Record<string, string | number | boolean | undefined>;

/**
 * A new trace for a request that reached us. Not continued from the client's `traceparent`: it
 * comes from the internet, and would let any client choose our trace ids and, through its
 * sampled flag, turn our tracing off for its requests.
 */
export function startRequestSpan(req: IncomingMessage, requestId: string): Span | undefined {
  if (!startSpan) return undefined;
  const method = req.method ?? 'GET';
  // Not through safeAttributes: the keys are these, Node's parser admits only a token as the
  // method, and the request id is ours or passed requestIdOf's check. Every request pays here.
  // ROOT_CONTEXT as the parent: a new trace whatever context is active.
  return startSpan(method, SpanKind.SERVER, { 'http.request.method': method, 'request.id': requestId }, ROOT_CONTEXT);
}

/**
 * Ends the request span: named `METHOD route` (the route template, low cardinality) unless the
 * path matched nothing, then `METHOD` alone, as the HTTP conventions ask. `route` is a template
 * of ours or a path already scrubbed; `target` (path and query as requested) is added as
 * `url.path`, scrubbed, when it says more than the route: a query, an id in the path.
 */
export function endRequestSpan(
  span: Span | undefined,
  method: string,
  status: number,
  route: string | undefined,
  target: string,
  aborted = false,
): void {
  if (!span) return;
  if (route && status !== 404) {
    span.updateName(`${method} ${route}`);
    span.setAttribute('http.route', route);
  }
  if (target !== route) span.setAttribute('url.path', scrubPath(target));
  span.setAttribute('http.response.status_code', status);
  if (aborted) span.setAttribute('http.aborted', true);
  // HTTP server spans are errors for 5xx only: a 401 is the protocol working.
  if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
  span.end();
}

/**
 * The call to the MCP server, a child of the request span. What is called comes from the MCP
 * request headers (`Mcp-Method`, `Mcp-Name`), set by clients that follow the spec's header
 * mirroring; the body is streamed, not parsed, so without them the span says only "mcp".
 */
export function startMcpCallSpan(req: IncomingMessage): Span | undefined {
  if (!startSpan) return undefined;
  const method = boundedName(req.headers['mcp-method']);
  const name = boundedName(req.headers['mcp-name']);
  const attributes: Attributes = { 'mcp.method.name': method };
  // Tool and prompt names are the server's identifiers; a resource "name" is a URI, which may
  // carry anything (a query, a user's path), so it is left out.
  if (method === 'tools/call') attributes['gen_ai.tool.name'] = name;
  else if (method === 'prompts/get') attributes['gen_ai.prompt.name'] = name;
  const named = method === 'tools/call' || method === 'prompts/get' ? name : undefined;
  return startSpan(
    method ? `mcp ${method}${named ? ` ${named}` : ''}` : 'mcp',
    SpanKind.CLIENT,
    safeAttributes(attributes),
    context.active(),
  );
}

/**
 * Ends the MCP call. `outcome`: `ok` (the MCP server answered, whatever its status),
 * `refreshed` (answered after an upstream token refresh and replay), `unreachable`,
 * `client_gone`, `refused` (the proxy answered itself), or an error code.
 */
export function endMcpCallSpan(span: Span | undefined, outcome: string, status?: number): void {
  if (!span) return;
  span.setAttribute('mcp.proxy.outcome', outcome);
  if (status !== undefined) span.setAttribute('http.response.status_code', status);
  if (outcome !== 'ok' && outcome !== 'refreshed' && outcome !== 'client_gone') {
    span.setStatus({ code: SpanStatusCode.ERROR });
    span.setAttribute('error.type', outcome);
  }
  span.end();
}

/**
 * Adds W3C `traceparent` for `span` to a flat header list (`[name, value, name, value, …]`, as
 * `http.request` takes them), replacing any the client sent: two would be invalid, and the MCP
 * server's spans belong under ours. With tracing off, the client's own header passes untouched.
 */
export function injectTraceparent(headers: string[], span: Span | undefined): void {
  if (!span) return;
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    const name = headers[i]!;
    // Length first: only names of 11 and 10 characters can be either, and every request pays here.
    if (name.length !== 11 && name.length !== 10) continue;
    const lower = name.toLowerCase();
    if (lower === 'traceparent' || lower === 'tracestate') headers.splice(i, 2);
  }
  const { traceId, spanId, traceFlags } = span.spanContext();
  headers.push('traceparent', `00-${traceId}-${spanId}-${traceFlags.toString(16).padStart(2, '0')}`);
}

/**
 * `fn` inside a span of its own (the upstream code exchange, each token refresh): `outcome` is
 * `ok` when it returns, else the error's `code` (IdentityError's, say) or name, never its
 * message (an error from a token endpoint may quote what was sent).
 */
export async function withSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
  if (!tracer) return fn();
  return tracer.startActiveSpan(name, { attributes: safeAttributes(attributes) }, async (span) => {
    try {
      const result = await fn();
      span.setAttribute('outcome', 'ok');
      return result;
    } catch (error) {
      const type = errorType(error);
      span.setAttribute('outcome', type);
      span.setAttribute('error.type', type);
      span.setStatus({ code: SpanStatusCode.ERROR });
      throw error;
    } finally {
      span.end();
    }
  });
}

/** The active trace id, for log lines; undefined without tracing or outside a span. */
export function currentTraceId(): string | undefined {
  if (!tracer) return undefined;
  return trace.getSpan(context.active())?.spanContext().traceId;
}
