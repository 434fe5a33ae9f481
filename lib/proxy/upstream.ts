import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import { ClientGoneError, type ClientBody } from './body.ts';
import { upstreamRequestHeaders, type CookiePolicy, type ResponseHead } from './headers.ts';
import type { AdmittedCall } from './pipeline.ts';
import { requestIdToAdd } from '../telemetry/request-log.ts';

/**
 * One client request's link to the MCP server: the upstream request in flight, and whether the
 * client has gone (then the upstream request is destroyed, and no new one is started). Cheaper
 * than an AbortSignal, whose listener bookkeeping costs tens of microseconds per request.
 */
export class UpstreamLink {
  request: ClientRequest | undefined;
  clientGone = false;

  constructor(res: ServerResponse) {
    // `on`, not `once`: 'close' comes once, and `once` costs a wrapper and a removal per request.
    res.on('close', () => {
      if (res.writableFinished) return;
      this.clientGone = true;
      this.request?.destroy();
    });
  }
}

export interface UpstreamTarget {
  url: URL;
  /**
   * The parts of `url` every request uses, read once: a WHATWG URL getter slices its string anew
   * on each call, four calls per tool call.
   */
  protocol: string;
  hostname: string;
  port: string;
  /** The Host header the MCP server gets. */
  host: string;
  agent: http.Agent;
  transport: typeof http | typeof https;
}

export function createTarget(serverUrl: URL): UpstreamTarget {
  // Keep-alive: a TCP (and TLS) handshake per tool call would dominate the proxy's added latency.
  // LIFO hands out the most recently used socket, so idle ones age out instead of all staying warm.
  // `timeout` closes idle sockets; with it set, Node also honours the server's `Keep-Alive:
  // timeout=N` and closes a second earlier, so we never send a request on a socket the MCP server
  // is closing (Node servers close idle sockets after 5 s): that race surfaces as a 502. It only
  // emits an event on a busy socket: long SSE streams are not cut.
  const options = {
    keepAlive: true,
    keepAliveMsecs: 10_000,
    maxSockets: 512,
    maxFreeSockets: 64,
    scheduling: 'lifo' as const,
    timeout: 60_000,
  };
  const secure = serverUrl.protocol === 'https:';
  return {
    url: serverUrl,
    protocol: serverUrl.protocol,
    hostname: serverUrl.hostname,
    port: serverUrl.port,
    host: serverUrl.host,
    agent: secure ? new https.Agent(options) : new http.Agent(options),
    transport: secure ? https : http,
  };
}

export interface UpstreamRequest {
  method: string;
  /** Path and query on the MCP server. */
  path: string;
  /** A raw name/value list. */
  headers: string[];
  body: ClientBody;
  link: UpstreamLink;
}

/**
 * The request to the MCP server for `call`, with `accessToken`. `replay`: the body was kept from an
 * earlier attempt (its length is then declared by us).
 */
export function upstreamRequest(
  upstream: { target: UpstreamTarget; cookies: CookiePolicy },
  call: AdmittedCall,
  accessToken: string,
  body: ClientBody,
  link: UpstreamLink,
  replay: boolean,
): UpstreamRequest {
  const { req } = call;
  const headers = upstreamRequestHeaders(
    req,
    call.requestId,
    upstream.target.host,
    upstream.cookies,
    call.caller.identityHeaders,
    accessToken,
    call.span,
    replay ? body.size : undefined,
  );
  return { method: req.method ?? 'GET', path: call.path, headers, body, link };
}

/** How one upstream request ended before its response body: a response head, or an error. */
export type UpstreamCallback = (error: Error | undefined, response?: IncomingMessage) => void;

/**
 * Opens one request to the MCP server and sends `body` into it. Calls `done` exactly once: with
 * the response head (the body is left for the caller to stream or drain), or with the error that
 * ended the request before a response — the body's own failure included, and ClientGoneError once
 * the client has left. A callback, not a promise: this runs for every tool call.
 */
export function sendUpstream(target: UpstreamTarget, options: UpstreamRequest, done: UpstreamCallback): void {
  const { link } = options;
  if (link.clientGone) return done(new ClientGoneError('the client closed the connection'));
  let settled = false;
  const request = target.transport.request({
    protocol: target.protocol,
    hostname: target.hostname,
    port: target.port,
    method: options.method,
    path: options.path,
    // A raw name/value list: sent as is, in order, repeats included; Node adds nothing but
    // `Connection` (and chunked framing when no Content-Length is given).
    headers: options.headers,
    agent: target.agent,
  });
  link.request = request;
  request.on('response', (response: IncomingMessage) => {
    if (settled) return void response.resume();
    settled = true;
    done(undefined, response);
  });
  // `on`, not `once`: a request can fail again after its response arrived (body refused, client
  // gone), and an 'error' without a listener would bring the process down.
  request.on('error', (error) => {
    if (settled) return;
    settled = true;
    done(link.clientGone ? new ClientGoneError('the client closed the connection', { cause: error }) : error);
  });
  options.body.sendTo(request);
}

/** `sendUpstream` for the retry path, where a promise reads better and costs nothing that matters. */
export function sendUpstreamAsync(target: UpstreamTarget, options: UpstreamRequest): Promise<IncomingMessage> {
  return new Promise((resolve, reject) =>
    sendUpstream(target, options, (error, response) => (error ? reject(error) : resolve(response!))),
  );
}

/**
 * Streams the MCP server's answer to the client, event by event for SSE: every chunk is written
 * when it arrives, and the MCP server's response is paused while the client reads slower than it
 * writes. By hand rather than with pipe(), which adds and removes seven listeners per response
 * for cases handled here already: a client that leaves destroys the upstream request
 * (`UpstreamLink`), and a response the drain ended swallows late writes (lifecycle/drain.ts).
 *
 * The head goes out as one raw list (`writeHead`), X-Request-Id added when nothing set it yet (see
 * `beginRequest`): Node writes such a list as it is, where headers set beforehand make it merge
 * the two name by name.
 *
 * An answer cut short upstream (the MCP server died, restarted or reset the connection):
 * - an event stream is ended as a complete response. SSE delimits its own events and a client
 *   drops an event cut off at the end of the stream (WHATWG HTML §9.2.6), so nothing false
 *   reaches it; and a stream the server closes is what an MCP client expects and resumes from
 *   (`Last-Event-ID`), where a reset connection is reported to it as a network failure;
 * - any other body is cut short here too (the connection closes before the response is complete):
 *   a truncated JSON document or file ended as if complete would be taken for the whole.
 */
export function streamBack(
  upstream: IncomingMessage,
  res: ServerResponse,
  head: ResponseHead,
  requestId: string | undefined,
): void {
  const { headers } = head;
  const toAdd = requestIdToAdd(res, requestId);
  if (toAdd !== undefined) headers.push('X-Request-Id', toAdd);
  res.writeHead(upstream.statusCode ?? 502, upstream.statusMessage, headers);
  upstream.on('data', (chunk: Buffer) => {
    if (res.write(chunk)) return;
    upstream.pause();
    res.once('drain', () => upstream.resume());
  });
  // Chunks read together (the last event and the end of the stream, typically) leave in one
  // write without help: Node corks the socket at a response's first write until the next tick.
  upstream.on('end', () => res.end());
  upstream.on('close', () => {
    if (upstream.complete) return;
    if (head.eventStream && !head.sized) res.end();
    else res.destroy();
  });
  // A stream (SSE, or any body of unknown length) may stay silent after its head: the client is
  // owed the head then (a GET stream is "open" once its 200 arrives). But the head usually comes
  // in the same packet as the first event, already buffered in `upstream`: the 'data' listener
  // lets it flow in the next tick, before this one, so head and event leave in one write.
  if (!head.sized) process.nextTick(sendHeadOfSilentStream, upstream, res);
}

function sendHeadOfSilentStream(upstream: IncomingMessage, res: ServerResponse): void {
  // A chunk was read, so it was written and the head with it: flushHeaders() would add nothing but
  // an empty write, which still travels the socket's whole write path. (`headersSent` cannot tell:
  // it is true as soon as writeHead() has stored the head.)
  if (upstream.readableDidRead || res.writableEnded || res.destroyed) return;
  res.flushHeaders();
}
