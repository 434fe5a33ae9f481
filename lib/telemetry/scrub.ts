/**
 * What may leave the process in a log line or a span attribute. One set of rules for both: a log
 * drain and a tracing backend are read by more people, kept longer and protected less than the
 * store, so a token, code, secret or cookie in either is a stolen session.
 */

/** Keys whose values are never printed nor exported, whoever passes them. */
export const SECRET_KEY =
  /(token|secret|password|authorization|cookie|code_verifier|verifier|^code$|assertion|jwks|private|^key$|api_?key|credential|^d$|state)/i;

export function redact(key: string, value: unknown): unknown {
  return SECRET_KEY.test(key) && value !== undefined && value !== null ? '[redacted]' : value;
}

/**
 * A path segment that looks generated rather than written: an interaction uid, a client id, a
 * token someone put in a path. Such a segment may be a credential (R3) and makes every request a
 * span name of its own, so it is replaced, in log lines and traces alike.
 */
const GENERATED_SEGMENT = /^(?=[^/]*\d)[A-Za-z0-9_\-.~%+=]{16,}$|^[A-Za-z0-9_\-.~%+=]{32,}$/;

/** Query strings keep their parameter names (`?code&state`): which flow it was, never a value. */
const PARAMETER_NAME = /^[A-Za-z0-9_.\-[\]]{1,64}$/;

/**
 * `/interaction/3f9…/login?code=…&state=…` → `/interaction/:id/login?code&state`. The result is
 * safe for a log line or a span attribute: no query value, no generated segment, bounded length.
 */
export function scrubPath(target: string): string {
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  let scrubbed = path
    .split('/')
    .map((segment) => (GENERATED_SEGMENT.test(segment) ? ':id' : segment))
    .join('/');
  if (scrubbed.length > 256) scrubbed = `${scrubbed.slice(0, 256)}…`;
  if (q === -1) return scrubbed;
  const names = new Set<string>();
  for (const pair of target.slice(q + 1).split('&')) {
    const name = pair.split('=', 1)[0]!;
    if (name) names.add(PARAMETER_NAME.test(name) ? name : '_');
    if (names.size === 16) break;
  }
  return names.size ? `${scrubbed}?${[...names].join('&')}` : scrubbed;
}

/**
 * A value a client chose (a tool name, an MCP method) made safe for an attribute: a short word of
 * visible ASCII, else undefined. Tool and method names are identifiers; anything longer or odder
 * is not one, and may be whatever the client pasted there.
 */
export function boundedName(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && /^[A-Za-z0-9_\-./:]{1,128}$/.test(value) ? value : undefined;
}

/**
 * What a span says of an error: its `code` (IdentityError's, a system error's) or its name, never
 * its message, which may quote what was sent (an error from a token endpoint, say).
 */
export function errorType(error: unknown): string {
  const code = (error as { code?: unknown } | null | undefined)?.code;
  if (typeof code === 'string' && boundedName(code)) return code;
  return error instanceof Error ? (boundedName(error.name) ?? 'Error') : 'unknown';
}

/**
 * The only attribute values a span of ours carries: numbers, booleans, and strings under keys
 * that do not look secret (the same rule as log fields). The span API passes every attribute
 * through here, so a careless `{ refresh_token }` at a call site is dropped, not exported.
 */
export function safeAttributes(
  attributes: Record<string, string | number | boolean | undefined>,
): Record<string, string | number | boolean> {
  const safe: Record<string, string | number | boolean> = {};
  for (const key in attributes) {
    const value = attributes[key];
    if (value === undefined || SECRET_KEY.test(key)) continue;
    safe[key] = typeof value === 'string' && /^(url\.|http\.route$)/.test(key) ? scrubPath(value) : value;
  }
  return safe;
}
