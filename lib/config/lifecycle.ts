import { Collector, type Checked, type Source } from './collector.ts';
import { parseInteger, readBoolean } from './parse.ts';

const DEFAULT_SHUTDOWN_TIMEOUT_MS = 25_000;
/**
 * Heroku sends SIGKILL 30 s after SIGTERM. A drain longer than that is cut short mid-request;
 * 29 s leaves the last second for closing Redis and flushing logs.
 */
const MAX_SHUTDOWN_TIMEOUT_MS = 29_000;

export interface Lifecycle {
  readonly appName: string | undefined;
  readonly shutdownTimeoutMs: number;
  readonly verifyRelease: boolean;
}

/** APP_NAME, MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS, MCP_AUTH_PROXY_VERIFY_RELEASE: how the process lives and ends. */
export function checkLifecycle(source: Source): Checked<Lifecycle> {
  const c = new Collector(source);
  const appName = c.read('APP_NAME');
  const shutdownTimeoutMs = readShutdownTimeout(c);
  const verifyRelease = readBoolean(c, 'MCP_AUTH_PROXY_VERIFY_RELEASE', false);
  return c.done({ appName, shutdownTimeoutMs, verifyRelease });
}

function readShutdownTimeout(c: Collector): number {
  const name = 'MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS';
  const raw = c.read(name);
  if (raw === undefined) return DEFAULT_SHUTDOWN_TIMEOUT_MS;
  const value = parseInteger(raw);
  if (value === undefined || value > MAX_SHUTDOWN_TIMEOUT_MS) {
    c.report(
      name,
      `must be an integer from 0 to ${MAX_SHUTDOWN_TIMEOUT_MS} (milliseconds): Heroku kills the dyno with SIGKILL 30 s after SIGTERM, so a longer drain would be cut short`,
    );
    return DEFAULT_SHUTDOWN_TIMEOUT_MS;
  }
  return value;
}
