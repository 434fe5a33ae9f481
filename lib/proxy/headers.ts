import type { IncomingMessage, ServerResponse } from 'node:http';
import { clientProtocol } from '../http/forwarded.ts';
import type { Caller } from './authenticate.ts';

/**
 * Header policy of `/mcp` (R8): every end-to-end header passes both ways, in its original case,
 * order and repetition (`rawHeaders`), except the few this proxy owns. Anything a future MCP
 * revision adds (`Mcp-Method`, `Mcp-Name`, …) therefore passes without a code change.
 */

/** RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies still see. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Headers we set for the MCP server; a client must never be able to supply them itself. */
export const IDENTITY_HEADERS = ['x-authorization-scope', 'x-dynamic-client-id', 'x-user-id'] as const;

/**
 * Request headers we own and set ourselves (or drop):
 * - `authorization`: our token is replaced by the upstream one (R4: no token passthrough);
 * - `host`: the MCP server's;
 * - `forwarded`, `x-forwarded-*`: set by us. X-Forwarded-For keeps the chain the router in front
 *   of us reported and appends the address we saw: like any such chain, only its last entries
 *   (ours and the router's) are facts, earlier ones are what the client claimed;
 * - `x-request-id`: ours, so one id names the request in both logs;
 * - `expect`: Node already answered `100 Continue` to the client, and the body follows anyway;
 * - `content-length`: re-added from the kept body when a request is replayed (see forward.ts);
 * - `cookie`: filtered, see `cookieFilter`;
 * - the identity headers.
 */
const OWNED_REQUEST = new Set([
  'authorization',
  'host',
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-request-id',
  'expect',
  ...IDENTITY_HEADERS,
]);

/** Response headers we own: the request id is ours (set before the proxy runs). */
const OWNED_RESPONSE = new Set(['x-request-id']);

function connectionListed(raw: readonly string[]): Set<string> | undefined {
  let listed: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    // Length first: this runs over every header of every request and response.
    if (raw[i]!.length !== 10 || raw[i]!.toLowerCase() !== 'connection') continue;
    listed ??= new Set();
    for (const token of raw[i + 1]!.split(',')) listed.add(token.trim().toLowerCase());
  }
  return listed;
}

/**
 * Our cookies (oidc-provider's session and interaction cookies and their `.sig` signatures) are
 * bearer credentials for the user's session at this authorization server: they never reach the
 * MCP server, and the MCP server can neither set nor clear them through us. Every other cookie
 * passes both ways — an MCP server behind a load balancer may rely on an affinity cookie, which
 * only works if the `Set-Cookie` we forward comes back to it.
 */
export interface CookiePolicy {
  isOurs(name: string): boolean;
}

export function cookiePolicy(names: readonly string[]): CookiePolicy {
  const ours = new Set(names.flatMap((name) => [name, `${name}.sig`]));
  return { isOurs: (name) => ours.has(name) };
}

/** The `Cookie` value without our cookies; undefined when nothing is left. */
function foreignCookies(value: string, policy: CookiePolicy): string | undefined {
  const pairs = value.split(';');
  const kept = pairs.filter((pair) => {
    const eq = pair.indexOf('=');
    return !policy.isOurs((eq === -1 ? pair : pair.slice(0, eq)).trim());
  });
  if (kept.length === pairs.length) return value;
  const joined = kept.map((pair) => pair.trim()).join('; ');
  return joined === '' ? undefined : joined;
}

function setsOurCookie(value: string, policy: CookiePolicy): boolean {
  const eq = value.indexOf('=');
  return policy.isOurs((eq === -1 ? value : value.slice(0, eq)).trim());
}

/**
 * The client's headers minus those we own, as a raw name/value list. With `keepLength` false the
 * client's Content-Length is dropped too (a replay declares the kept body's length itself).
 */
export function forwardRequestHeaders(raw: readonly string[], policy: CookiePolicy, keepLength = true): string[] {
  const listed = connectionListed(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || OWNED_REQUEST.has(lower) || listed?.has(lower)) continue;
    if (!keepLength && lower === 'content-length') continue;
    let value = raw[i + 1]!;
    if (lower === 'cookie') {
      const kept = foreignCookies(value, policy);
      if (kept === undefined) continue;
      value = kept;
    }
    out.push(name, value);
  }
  return out;
}

/**
 * Header values carry visible ASCII only. An account id outside that (a Unicode user name at a
 * non-OIDC provider) is sent percent-encoded as UTF-8, and so is one holding `%`, so that a `%`
 * in the header always means "percent-decode me".
 */
export function headerSafe(value: string): string {
  return /^[\x21-\x24\x26-\x7e]*$/.test(value) ? value : encodeURIComponent(value);
}

/** The identity headers of a caller, as a raw name/value list (computed once per cached token). */
export function identityHeaders(caller: Caller): string[] {
  return [
    'X-Authorization-Scope',
    caller.scope,
    'X-Dynamic-Client-Id',
    headerSafe(caller.clientId),
    'X-User-Id',
    headerSafe(caller.accountId),
  ];
}

/**
 * Every header of the request to the MCP server: the client's (`forwardRequestHeaders`), then
 * ours. `replayLength`: the kept body's size when this is a replay (its framing is ours to
 * declare).
 */
export function upstreamRequestHeaders(
  req: IncomingMessage,
  res: ServerResponse,
  host: string,
  cookies: CookiePolicy,
  identity: readonly string[],
  accessToken: string,
  replayLength?: number,
): string[] {
  const replay = replayLength !== undefined;
  const headers = forwardRequestHeaders(req.rawHeaders, cookies, !replay);
  const priorFor = req.headers['x-forwarded-for'];
  const remote = req.socket.remoteAddress ?? '';
  headers.push(
    'Host',
    host,
    // R4: the MCP server sees the user's upstream token, never ours.
    'Authorization',
    `Bearer ${accessToken}`,
    'X-Forwarded-For',
    priorFor ? `${priorFor}, ${remote}` : remote,
    'X-Forwarded-Proto',
    clientProtocol(req),
    'X-Forwarded-Host',
    req.headers.host ?? '',
  );
  headers.push(...identity);
  const requestId = res.getHeader('x-request-id');
  if (typeof requestId === 'string') headers.push('X-Request-Id', requestId);
  if (replay && (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined)) {
    headers.push('Content-Length', String(replayLength));
  }
  return headers;
}

const EVENT_STREAM = /^\s*text\/event-stream\s*(?:;|$)/i;

export interface ResponseHead {
  /**
   * By name, in the MCP server's spelling; a repeated field (Set-Cookie…) is an array, so Node
   * writes each value on its own line. Repeats of one name end up next to each other; nothing
   * else about the order carries meaning.
   */
  headers: Record<string, string | string[]>;
  /** Whether the body's length is known up front (otherwise it is a stream, e.g. SSE). */
  sized: boolean;
  /** Whether the body is an event stream (SSE): see `streamBack` for why it matters. */
  eventStream: boolean;
}

/** The MCP server's response headers minus hop-by-hop ones and any attempt to set our cookies. */
export function forwardResponseHeaders(raw: readonly string[], policy: CookiePolicy): ResponseHead {
  const listed = connectionListed(raw);
  const headers: Record<string, string | string[]> = {};
  const spelling = new Map<string, string>();
  let sized = false;
  let eventStream = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || OWNED_RESPONSE.has(lower) || listed?.has(lower)) continue;
    // CORS on `/mcp` is our decision (R6 allow-list): an MCP server answering
    // `Access-Control-Allow-Origin: *` must not open it to every web page.
    if (lower.startsWith('access-control-')) continue;
    if (lower === 'set-cookie' && setsOurCookie(value, policy)) continue;
    if (lower === 'content-length') sized = true;
    else if (lower === 'content-type') eventStream = EVENT_STREAM.test(value);
    const key = spelling.get(lower);
    if (key === undefined) {
      spelling.set(lower, name);
      headers[name] = value;
    } else {
      const previous = headers[key]!;
      headers[key] = Array.isArray(previous) ? [...previous, value] : [previous, value];
    }
  }
  return { headers, sized, eventStream };
}
