import { isLoopbackHost } from '../http/loopback.ts';
import { Collector, type Checked, type Source } from './collector.ts';
import { parseHttpUrl, parseInteger, readBoolean } from './parse.ts';

export const DEFAULT_PORT = 3000;
const LOG_LEVELS = ['debug', 'info', 'warn', 'error'];

export interface Listener {
  readonly port: number | undefined;
  readonly localInsecure: boolean;
  /** The issuer, normalised; undefined when BASE_URL has a problem. */
  readonly baseUrl: string | undefined;
}

/** NODE_ENV, LOG_LEVEL, PORT, LOCAL_INSECURE and BASE_URL: where and how the proxy listens. */
export function checkListener(source: Source): Checked<Listener> {
  const c = new Collector(source);
  if (!c.production) checkDevelopmentMode(c);
  checkLogLevel(c);
  const port = readPort(c);
  const localInsecure = readLocalInsecure(c);
  const baseUrl = readBaseUrl(c, port, localInsecure);
  return c.done({ port, localInsecure, baseUrl });
}

function checkDevelopmentMode(c: Collector): void {
  const nodeEnv = c.source.env.NODE_ENV;
  // A misspelt `NODE_ENV=prod` would otherwise silently enable the development identity provider
  // and the in-memory store on a public server.
  if (nodeEnv && nodeEnv !== 'development' && nodeEnv !== 'test') {
    c.report('NODE_ENV', `must be production, development or test, not ${JSON.stringify(nodeEnv)}`);
  }
  // Heroku sets DYNO on every dyno. Development mode there would serve a login-anyone identity
  // provider and plain http to the internet: refused, not warned about.
  if (c.source.env.DYNO) {
    c.report('NODE_ENV', 'must be production on a Heroku dyno (DYNO is set)');
  }
}

function checkLogLevel(c: Collector): void {
  // lib/telemetry/log.ts reads LOG_LEVEL itself, before any configuration is loaded, and falls
  // back to `info` on an unknown level; this is where a typo gets reported.
  const raw = c.read('LOG_LEVEL');
  if (raw !== undefined && !LOG_LEVELS.includes(raw)) {
    c.report('LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`);
  }
}

function readPort(c: Collector): number | undefined {
  const raw = c.read('PORT');
  if (raw === undefined) return DEFAULT_PORT;
  const port = parseInteger(raw);
  if (port === undefined || port > 65535) {
    c.report('PORT', 'must be an integer from 0 to 65535');
    return undefined;
  }
  return port;
}

function readLocalInsecure(c: Collector): boolean {
  const value = readBoolean(c, 'LOCAL_INSECURE', false);
  if (!value) return false;
  if (c.production) {
    c.report('LOCAL_INSECURE', 'must not be true in production', 'false');
    return false;
  }
  c.warn(
    'LOCAL_INSECURE=true: plain-http loopback identity providers and client metadata documents on loopback addresses (self-signed certificates included) are accepted; never use this outside local development',
  );
  return true;
}

function readBaseUrl(c: Collector, port: number | undefined, localInsecure: boolean): string | undefined {
  const raw = c.read('BASE_URL');
  if (raw === undefined) {
    if (!c.production) return `http://localhost:${port ?? DEFAULT_PORT}`;
    c.report('BASE_URL', 'is required in production');
    return undefined;
  }
  const url = parseHttpUrl(c, 'BASE_URL', raw);
  if (!url) return undefined;
  if (url.protocol === 'http:') {
    // R18: the issuer, its endpoints and the MCP resource are only reachable over TLS in
    // production; plain http leaks authorization codes and tokens to the network.
    if (c.production && !(isLoopbackHost(url.hostname) && localInsecure)) {
      c.report('BASE_URL', 'must use https in production');
      return undefined;
    }
    if (!isLoopbackHost(url.hostname)) {
      c.warn(`BASE_URL is plain http on a non-loopback host (${url.host}): tokens cross the network unencrypted`);
    }
  }
  // The authorization server, the interaction pages and `/mcp` are all served at the root of the
  // listener, so an issuer with a path would advertise endpoints that are not there.
  if (url.pathname.replace(/\/+$/, '') !== '') {
    c.report('BASE_URL', 'must be an origin without a path (the proxy is served at the root of its host)');
    return undefined;
  }
  // The issuer must be byte-identical everywhere it is advertised (R1, R9), so it is normalised
  // once here: lower-case host, no default port, no trailing slash.
  return url.origin;
}
