// The web process: `npm start` locally, and the buildpack's web command on Heroku.
import { config as loadDotenv } from 'dotenv';
import { ConfigError } from './config/index.ts';
import { StartupError, connectInstructions, start } from './start.ts';
import { IdentityError } from './identity/index.ts';
import { log } from './telemetry/log.ts';

// `.env` is for local work only; on Heroku the environment comes from config vars.
if (process.env.NODE_ENV !== 'production') loadDotenv({ quiet: true });

function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

// Signals are handled from the first moment: a SIGTERM while the MCP server is still starting
// must stop it too, not leave it listening on its port.
const starting = new AbortController();
let proxy: Awaited<ReturnType<typeof start>> | undefined;
let stopping = false;

async function stop(signal: string, code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info('shutting down', { signal });
  starting.abort();
  await proxy?.close();
  process.exit(code);
}
process.on('SIGTERM', () => void stop('SIGTERM', 0));
process.on('SIGINT', () => void stop('SIGINT', 0));

try {
  proxy = await start(process.env, { signal: starting.signal });
  if (proxy.config.mode === 'development') process.stdout.write(connectInstructions(proxy.config));
  proxy.mcpServerExited?.then((exit) => {
    if (stopping) return;
    log.error('MCP server exited; stopping the proxy', { exit_code: exit.code, signal: exit.signal });
    void stop('mcp-server-exit', 1);
  });
} catch (error) {
  if (stopping) process.exit(0);
  if (error instanceof ConfigError || error instanceof StartupError || error instanceof IdentityError) {
    fail(error.message);
  }
  fail(`start-up failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
}
