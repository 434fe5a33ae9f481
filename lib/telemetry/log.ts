import { currentRequest } from './request-context.ts';
import { redact } from './scrub.ts';
import { currentTraceId } from './spans.ts';

export { redact } from './scrub.ts';

/**
 * Logfmt lines on stdout/stderr, one per event, for Heroku's log router. Every line made while a
 * request is being handled carries its request id (and its trace id when tracing is on). Values under secret-looking keys are never
 * printed, whoever passes them: tokens, codes, secrets and cookies must not reach a log drain.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;

export const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold = LEVELS[(process.env.LOG_LEVEL as Level) ?? 'info'] ?? LEVELS.info;
let sink: (line: string, level: Level) => void = (line, level) => {
  (level === 'error' || level === 'warn' ? process.stderr : process.stdout).write(line + '\n');
};

export function currentRequestId(): string | undefined {
  return currentRequest()?.requestId;
}

/** Test hook: capture lines instead of writing them. Returns a function that restores the sink. */
export function captureLogs(capture: (line: string, level: Level) => void): () => void {
  const previous = sink;
  const previousThreshold = threshold;
  sink = capture;
  threshold = LEVELS.debug;
  appFields = undefined;
  return () => {
    sink = previous;
    threshold = previousThreshold;
    appFields = undefined;
  };
}

/**
 * `app=<APP_NAME> env=<NODE_ENV>` on every line, so one drain can take several apps' logs.
 * Read at the first line rather than at import: `main.ts` loads `.env` after its imports ran.
 */
let appFields: string | undefined;
function appFieldsOf(env: NodeJS.ProcessEnv): string {
  const app = env.APP_NAME ? `app=${format(env.APP_NAME)} ` : '';
  return `${app}env=${format(env.NODE_ENV || 'development')}`;
}

export function format(value: unknown): string {
  if (value instanceof Error) value = value.message;
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  if (text === undefined) return '';
  return /[\s"=]/.test(text) || text === '' ? JSON.stringify(text) : text;
}

export function isEnabled(level: Level): boolean {
  return LEVELS[level] >= threshold;
}

/**
 * One line: level, message, the app's fields, the request id, then `fields` in order, each value
 * redacted by its key. The one writer of lines: the request log and the MCP server's relayed
 * lines come through here too.
 */
export function write(level: Level, msg: string, fields: Fields = {}): void {
  if (LEVELS[level] < threshold) return;
  const parts = [`level=${level}`, `msg=${format(msg)}`, (appFields ??= appFieldsOf(process.env))];
  const requestId = currentRequestId();
  if (requestId && fields.request_id === undefined) parts.push(`request_id=${requestId}`);
  // With tracing on, a line written during a request names its trace: from a log line to the trace.
  const traceId = currentTraceId();
  if (traceId && fields.trace_id === undefined) parts.push(`trace_id=${traceId}`);
  for (const key in fields) {
    const value = fields[key];
    if (value === undefined) continue;
    parts.push(`${logfmtKey(key)}=${format(redact(key, value))}`);
  }
  sink(parts.join(' '), level);
}

/** Keys are printed bare, so one from elsewhere (an MCP server's JSON line) is made bare-safe. */
function logfmtKey(key: string): string {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(key) ? key : key.slice(0, 64).replace(/[^A-Za-z0-9_.-]/g, '_') || '_';
}

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

function make(base: Fields): Logger {
  return {
    debug: (msg, fields) => write('debug', msg, { ...base, ...fields }),
    info: (msg, fields) => write('info', msg, { ...base, ...fields }),
    warn: (msg, fields) => write('warn', msg, { ...base, ...fields }),
    error: (msg, fields) => write('error', msg, { ...base, ...fields }),
    child: (fields) => make({ ...base, ...fields }),
  };
}

export const log: Logger = make({});

/** `redis://user:secret@host:6379/0` → `redis://user:***@host:6379/0`. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '[unparseable url]';
  }
}
