// The web process (`npm start` locally, the buildpack's web command on Heroku), and with
// MCP_AUTH_PROXY_VERIFY_RELEASE=true its release-phase check.
import { config as loadDotenv } from 'dotenv';
import { ConfigError, loadConfig } from './config/index.ts';
import type { Config } from './config/types.ts';
import { RELEASE_VERIFIED, StartupError, connectInstructions, start, verifyRelease } from './start.ts';
import { log } from './telemetry/log.ts';
import { shutdownTracing } from './telemetry/tracing-handle.ts';

// `.env` is for local work only; on Heroku the environment comes from config vars.
if (process.env.NODE_ENV !== 'production') loadDotenv({ quiet: true });

/** Failures an operator causes (configuration, unreachable services, a taken port): one line, no stack. */
function fail(error: unknown): never {
  // Identity provider failures reach here wrapped in a StartupError that names the step.
  const known = error instanceof ConfigError || error instanceof StartupError;
  const message = known
    ? error.message
    : `start-up failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`;
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

// Signals are handled from the first moment: a SIGTERM while the MCP server is still starting
// must stop it too, not leave it listening on its port.
const starting = new AbortController();
let proxy: Awaited<ReturnType<typeof start>> | undefined;
let stopping = false;
let stopStartedAt = 0;

/**
 * Buffered spans are flushed last, in what is left of MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS counted
 * from the signal: a collector that does not answer must not hold the dyno until its SIGKILL. A
 * drain that used the whole timeout still leaves the flush MIN_FLUSH_MS: the spans of the
 * requests it waited for are the ones an operator looking at a shutdown wants, and the largest
 * allowed timeout (29 s) leaves room for them under Heroku's SIGKILL at 30 s.
 */
const MIN_FLUSH_MS = 500;
const FAILED_START_FLUSH_MS = 2_000;

function flushDeadlineMs(): number {
  const budget = proxy?.config.shutdownTimeoutMs ?? FAILED_START_FLUSH_MS;
  return Math.max(MIN_FLUSH_MS, budget - (performance.now() - stopStartedAt));
}

async function stop(signal: string, code: number): Promise<void> {
  if (stopping) {
    // Locally, a second Ctrl-C means "now": an open Inspector stream would otherwise hold the
    // drain for its whole deadline. (Ctrl-C reaches the MCP server child as well.)
    if (signal === 'SIGINT') process.exit(130);
    return;
  }
  stopping = true;
  stopStartedAt = performance.now();
  log.info('shutting down', { signal });
  if (proxy) await proxy.close();
  else starting.abort();
  await shutdownTracing(flushDeadlineMs());
  process.exit(code);
}
process.on('SIGTERM', () => void stop('SIGTERM', 0));
process.on('SIGINT', () => void stop('SIGINT', 0));

let config: Config;
try {
  config = loadConfig(process.env);
} catch (error) {
  fail(error);
}

if (config.verifyRelease) {
  try {
    await verifyRelease(process.env, { config, signal: starting.signal });
  } catch (error) {
    if (stopping) process.exit(1);
    fail(error);
  }
  process.stdout.write(`${RELEASE_VERIFIED}\n`);
  process.exit(0);
}

try {
  proxy = await start(process.env, { config, signal: starting.signal });
  if (proxy.config.mode === 'development') process.stdout.write(connectInstructions(proxy.config));
  // The supervisor has logged why (one line): the platform restarts the dyno.
  void proxy.failed.then(() => void stop('mcp-server-failed', 1));
} catch (error) {
  if (stopping) process.exit(0);
  // Whatever was traced while starting goes out before the exit (nothing to do without tracing).
  await shutdownTracing(FAILED_START_FLUSH_MS);
  fail(error);
}
