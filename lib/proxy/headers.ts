import type { IncomingMessage } from 'node:http';
import type { Span } from '@opentelemetry/api';
import { injectTraceparent } from '../telemetry/spans.ts';
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
 * - `content-length`: re-added from the kept body when a request is replayed (see retry.ts);
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

/** Response headers we own: the request id is ours. */
const OWNED_RESPONSE = new Set(['x-request-id']);

/** What never passes, as one set: one lookup per header of every request and response. */
const NOT_FORWARDED_REQUEST = new Set([...HOP_BY_HOP, ...OWNED_REQUEST]);
const NOT_FORWARDED_RESPONSE = new Set([...HOP_BY_HOP, ...OWNED_RESPONSE]);

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
    if (NOT_FORWARDED_REQUEST.has(lower) || listed?.has(lower)) continue;
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
 * Identity header values (`x-user-id`, `x-dynamic-client-id`, `x-authorization-scope`). A value
 * every HTTP implementation carries unchanged — visible ASCII, spaces between — is sent as it is
 * (`Grace Hopper`, `100%`). Anything else would be refused (control characters: CR/LF would split
 * the header), read differently by different servers (non-ASCII: RFC 9110 §5.5 leaves such bytes
 * to Latin-1 as obs-text) or altered (surrounding whitespace is stripped). Such a value is sent in
 * RFC 8187's ext-value form instead: `UTF-8''`, then the value's UTF-8 bytes with every byte that
 * is not an RFC 8187 attr-char percent-encoded (`Jörg` → `UTF-8''J%C3%B6rg`).
 *
 * Why this prefix in the same header, rather than a second header:
 * - one value, one meaning: a plain value that starts with the prefix (in any letter case) is
 *   encoded too, so an MCP server decodes exactly the values that start with it, and one that
 *   does not decode at all still sees a stable value per user that no other user has. A second
 *   header would leave such a server with no id for these users, or a lossy one two users share;
 * - the common value arrives as it is, with nothing to decode;
 * - RFC 8187 is the existing convention for non-ASCII text in a header (`filename*=UTF-8''…`),
 *   and a plain percent-decode of what follows the prefix reads it in any language.
 */
export const ENCODED_PREFIX = "UTF-8''";

/** Visible ASCII, spaces allowed between visible characters. */
const PLAIN = /^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/;
const STARTS_LIKE_ENCODED = /^utf-8''/i;
/** RFC 8187 §3.2.1 attr-char; the `'` of the prefix is not one, so the prefix cannot recur. */
const ATTR_CHAR = /^[A-Za-z0-9!#$&+\-.^_`|~]$/;

export function identityHeaderValue(value: string): string {
  if (PLAIN.test(value) && !STARTS_LIKE_ENCODED.test(value)) return value;
  let encoded = ENCODED_PREFIX;
  // A lone surrogate has no UTF-8 form: it becomes U+FFFD, the one case where two strings (neither
  // of them valid Unicode) share an encoding.
  for (const byte of Buffer.from(value, 'utf8')) {
    const char = String.fromCharCode(byte);
    encoded += ATTR_CHAR.test(char) ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return encoded;
}

/** The identity headers of a caller, as a raw name/value list (computed once per cached token). */
export function identityHeaders(caller: Caller): string[] {
  return [
    'X-Authorization-Scope',
    identityHeaderValue(caller.scope),
    'X-Dynamic-Client-Id',
    identityHeaderValue(caller.clientId),
    'X-User-Id',
    identityHeaderValue(caller.accountId),
  ];
}

/**
 * Every header of the request to the MCP server: the client's (`forwardRequestHeaders`), then
 * ours. `span`: the MCP call's, sent as `traceparent` so the MCP server's spans join the trace
 * (with tracing off the client's own passes untouched). `replayLength`: the kept body's size when
 * this is a replay (its framing is ours to declare).
 */
export function upstreamRequestHeaders(
  req: IncomingMessage,
  requestId: string | undefined,
  host: string,
  cookies: CookiePolicy,
  identity: readonly string[],
  accessToken: string,
  span: Span | undefined,
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
  if (requestId !== undefined) headers.push('X-Request-Id', requestId);
  if (replay && (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined)) {
    headers.push('Content-Length', String(replayLength));
  }
  injectTraceparent(headers, span);
  return headers;
}

const EVENT_STREAM = /^\s*text\/event-stream\s*(?:;|$)/i;

export interface ResponseHead {
  /**
   * A raw name/value list in the MCP server's spelling and order, repeats (Set-Cookie…) included,
   * for `writeHead`. Headers already set on the response (CORS, for a browser) are replaced by a
   * name of this list, and kept otherwise.
   */
  headers: string[];
  /** Whether the body's length is known up front (otherwise it is a stream, e.g. SSE). */
  sized: boolean;
  /** Whether the body is an event stream (SSE): see `streamBack` for why it matters. */
  eventStream: boolean;
}

/** The MCP server's response headers minus hop-by-hop ones and any attempt to set our cookies. */
export function forwardResponseHeaders(raw: readonly string[], policy: CookiePolicy): ResponseHead {
  const listed = connectionListed(raw);
  const headers: string[] = [];
  let sized = false;
  let eventStream = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const lower = name.toLowerCase();
    if (NOT_FORWARDED_RESPONSE.has(lower) || listed?.has(lower)) continue;
    // CORS on `/mcp` is our decision (R6 allow-list): an MCP server answering
    // `Access-Control-Allow-Origin: *` must not open it to every web page.
    if (lower.startsWith('access-control-')) continue;
    if (lower === 'set-cookie' && setsOurCookie(value, policy)) continue;
    if (lower === 'content-length') sized = true;
    else if (lower === 'content-type') eventStream = EVENT_STREAM.test(value);
    headers.push(name, value);
  }
  return { headers, sized, eventStream };
}
