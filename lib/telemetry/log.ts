import { currentRequest, RequestContext, runInRequest } from './request-context.ts';

/**
 * Logfmt lines on stdout/stderr, one per event, for Heroku's log router. Every line made while a
 * request is being handled carries its request id. Values under secret-looking keys are never
 * printed, whoever passes them: tokens, codes, secrets and cookies must not reach a log drain.
 */
type Level = 'debug' | 'info' | 'warn' | 'error';
type Fields = Record<string, unknown>;

const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_KEY =
  /(token|secret|password|authorization|cookie|code_verifier|verifier|^code$|assertion|jwks|private|^key$|^d$|state)/i;

let threshold = LEVELS[(process.env.LOG_LEVEL as Level) ?? 'info'] ?? LEVELS.info;
let sink: (line: string, level: Level) => void = (line, level) => {
  (level === 'error' || level === 'warn' ? process.stderr : process.stdout).write(line + '\n');
};

export function runWithRequestId<T>(requestId: string, fn: () => T): T {
  return runInRequest(new RequestContext(requestId), fn);
}

export function currentRequestId(): string | undefined {
  return currentRequest()?.requestId;
}

/** Test hook: capture lines instead of writing them. Returns a function that restores the sink. */
export function captureLogs(capture: (line: string, level: Level) => void): () => void {
  const previous = sink;
  const previousThreshold = threshold;
  sink = capture;
  threshold = LEVELS.debug;
  return () => {
    sink = previous;
    threshold = previousThreshold;
  };
}

export function redact(key: string, value: unknown): unknown {
  return SECRET_KEY.test(key) && value !== undefined && value !== null ? '[redacted]' : value;
}

function format(value: unknown): string {
  if (value instanceof Error) value = value.message;
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  if (text === undefined) return '';
  return /[\s"=]/.test(text) || text === '' ? JSON.stringify(text) : text;
}

function write(level: Level, msg: string, fields: Fields = {}): void {
  if (LEVELS[level] < threshold) return;
  const parts = [`level=${level}`, `msg=${format(msg)}`];
  const requestId = currentRequestId();
  if (requestId) parts.push(`request_id=${requestId}`);
  for (const [key, value] of Object.entries(fields)) {
    if (value === undefined) continue;
    parts.push(`${key}=${format(redact(key, value))}`);
  }
  sink(parts.join(' '), level);
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
