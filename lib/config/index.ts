import { Collector, ConfigError, type Checked } from './collector.ts';
import { checkBranding } from './branding.ts';
import { checkCimd } from './cimd.ts';
import { checkCallbackPath, checkIdentity } from './identity.ts';
import { checkLifecycle } from './lifecycle.ts';
import { checkProxy, checkRateLimit } from './limits.ts';
import { checkListener, DEFAULT_PORT } from './listener.ts';
import { checkMcpServer } from './mcp-server.ts';
import { checkProvider } from './provider.ts';
import { checkRedis } from './redis.ts';
import { checkTelemetry } from './telemetry.ts';
import type { Config } from './types.ts';
import { checkUnknownVariables } from './unknown-variables.ts';

export type * from './types.ts';
export { ConfigError, type ConfigProblem } from './collector.ts';

/**
 * The environment, checked area by area (each in its own file, like oauth2-proxy's
 * pkg/validation); every area reports all its problems, and they are thrown together.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): Config {
  const mode = env.NODE_ENV === 'production' ? 'production' : 'development';
  const source = { env, production: mode === 'production', cwd };
  const all = new Collector(source);
  const take = <T>(checked: Checked<T>): T => all.take(checked);

  const { port, localInsecure, baseUrl } = take(checkListener(source));
  const mcp = take(checkMcpServer(source, port, baseUrl));
  const redis = take(checkRedis(source));
  const provider = take(checkProvider(source));
  const identity = take(checkIdentity(source, localInsecure));
  const callbackPath = take(checkCallbackPath(source, mcp?.path));
  const proxy = take(checkProxy(source));
  const rateLimit = take(checkRateLimit(source));
  const cimd = take(checkCimd(source));
  const branding = take(checkBranding(source));
  const telemetry = take(checkTelemetry(source));
  const { appName, shutdownTimeoutMs, verifyRelease } = take(checkLifecycle(source));
  take(checkUnknownVariables(source));

  if (all.problems.length > 0) throw new ConfigError(all.problems);
  return {
    mode,
    baseUrl: defined(baseUrl),
    port: port ?? DEFAULT_PORT,
    localInsecure,
    mcp: defined(mcp),
    redis,
    provider: defined(provider),
    identity,
    proxy: defined(proxy),
    cimd: defined(cimd),
    telemetry,
    rateLimit: defined(rateLimit),
    branding: defined(branding),
    callbackPath,
    appName,
    shutdownTimeoutMs,
    verifyRelease,
    warnings: all.warnings,
  };
}

/** Only called once no problem was reported, when every part has been built. */
function defined<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('configuration part missing without a reported problem');
  return value;
}
