import { write, type Fields, type Level } from './log.ts';
import { redact } from './scrub.ts';

/**
 * The MCP server child's output, as our own log lines. A structured line (JSON, or logfmt) has its
 * fields merged into ours rather than quoted whole into `msg`, so a drain still reads its level,
 * message and fields; a plain line becomes `msg`. Either way the line gets `source=mcp-server`
 * and the stream, and the same redaction as ours, plus a scan of free text: the MCP server is
 * third-party code and may well print a token it was given.
 *
 * Call: `relayLines(child.stdout!, (line) => logChildLine('stdout', line))` (and stderr).
 */
export function logChildLine(stream: 'stdout' | 'stderr', line: string): void {
  const parsed = parseJson(line) ?? parseLogfmt(line);
  if (!parsed) {
    write('info', scrubText(line), { source: 'mcp-server', stream });
    return;
  }
  const fields: Fields = { source: 'mcp-server', stream };
  let level: Level = 'info';
  let msg = '';
  for (const [key, value] of Object.entries(parsed)) {
    if (LEVEL_KEYS.has(key) && levelOf(value)) level = levelOf(value)!;
    else if (MESSAGE_KEYS.has(key) && !msg && typeof value === 'string') msg = value;
    else fields[RESERVED.has(key) ? `mcp_${key}` : key] = scrubValue(value);
  }
  write(level, scrubText(msg), fields);
}

const LEVEL_KEYS = new Set(['level', 'lvl', 'severity']);
const MESSAGE_KEYS = new Set(['msg', 'message']);
/** Our own fields on every line: the child's of the same name are kept, renamed. */
const RESERVED = new Set(['app', 'env', 'source', 'stream', 'level', 'msg']);

function levelOf(value: unknown): Level | undefined {
  if (typeof value === 'number') {
    // pino and bunyan: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal.
    return value >= 50 ? 'error' : value >= 40 ? 'warn' : value >= 30 ? 'info' : 'debug';
  }
  if (typeof value !== 'string') return undefined;
  const name = value.toLowerCase();
  if (name === 'trace' || name === 'debug') return 'debug';
  if (name === 'info' || name === 'notice') return 'info';
  if (name === 'warn' || name === 'warning') return 'warn';
  if (['error', 'err', 'fatal', 'critical', 'crit', 'alert', 'emergency', 'panic'].includes(name)) return 'error';
  return undefined;
}

function parseJson(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const value: unknown = JSON.parse(line);
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const LOGFMT_PAIR = /\s*([A-Za-z_][\w.@-]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)/y;

/** Only a line made of `key=value` pairs alone, two at least: prose with an `=` in it stays prose. */
function parseLogfmt(line: string): Record<string, unknown> | undefined {
  const fields: Record<string, unknown> = {};
  let count = 0;
  LOGFMT_PAIR.lastIndex = 0;
  let match: RegExpExecArray | null;
  while ((match = LOGFMT_PAIR.exec(line))) {
    fields[match[1]!] = unquote(match[2]!);
    count++;
    if (LOGFMT_PAIR.lastIndex === line.length) break;
  }
  return count >= 2 && LOGFMT_PAIR.lastIndex === line.length ? fields : undefined;
}

function unquote(value: string): string {
  if (!value.startsWith('"')) return value;
  try {
    return JSON.parse(value) as string;
  } catch {
    return value.slice(1, -1);
  }
}

/**
 * Credentials inside free text: `Bearer …`/`Basic …`, JWTs, and the value after a secret-looking
 * name (`access_token=…`, `"client_secret": "…"`, `?code=…&state=…`). Over-redacts on purpose
 * (`exit code: 1` loses its 1); a raw token printed with no name before it cannot be recognised.
 */
const SCHEME_CREDENTIAL = /\b(Bearer|Basic|DPoP)\s+[A-Za-z0-9\-._~+/]+=*/gi;
const JWT = /\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*/g;
const NAMED_SECRET =
  /(\b(?:[\w-]*(?:token|secret|passw(?:or)?d|authorization|cookie|api[_-]?key|credential|code_verifier|assertion)[\w-]*|code|state|key)["']?\s*[=:]\s*["']?)[^\s"'&,;]+/gi;

/** Nested values too: `{"headers":{"authorization":"…"}}` is printed as JSON, whole. */
function scrubValue(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return scrubText(value);
  if (!value || typeof value !== 'object') return value;
  if (depth > 8) return '[nested]';
  if (Array.isArray(value)) return value.map((item) => scrubValue(item, depth + 1));
  const scrubbed: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) scrubbed[key] = redact(key, scrubValue(inner, depth + 1));
  return scrubbed;
}

export function scrubText(text: string): string {
  return text
    .replace(SCHEME_CREDENTIAL, '$1 [redacted]')
    .replace(JWT, '[redacted]')
    .replace(NAMED_SECRET, '$1[redacted]');
}
