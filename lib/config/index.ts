import { createPrivateKey, type JsonWebKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIP } from 'node:net';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JSONWebKeySet, JWK } from 'jose';
import type {
  CimdConfig,
  Config,
  IdentityConfig,
  McpConfig,
  McpRunConfig,
  ProviderConfig,
  ProxyConfig,
  RedisConfig,
  TelemetryConfig,
} from './types.ts';
import { isLoopbackHost } from '../http/loopback.ts';
import { exampleOf, isKnownVariable } from './variables.ts';

export type * from './types.ts';

export interface ConfigProblem {
  readonly variable: string;
  readonly problem: string;
  /** A good value. Never derived from the value given: some variables are secrets. */
  readonly example: string;
}

/** Every problem of the environment at once, so an operator fixes them in one deploy, not ten. */
export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
    const lines = problems.map((p) => `${p.variable}: ${p.problem} (example: ${p.example})`);
    super([`Invalid configuration, ${count}:`, ...lines].join('\n'));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const DEFAULT_PORT = 3000;
const DEFAULT_KEY_PREFIX = 'mcp-auth-proxy:';
const DEFAULT_PROVIDER_SCOPE = 'openid offline_access';
const DEFAULT_IDENTITY_SCOPE = 'openid';
const DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024;
const MIN_MAX_BODY_BYTES = 1024;
const DEFAULT_SERVICE_NAME = 'mcp-remote-auth-proxy';
const LOG_LEVELS = ['debug', 'info', 'warn', 'error'];

/**
 * Paths the proxy serves itself (discovery, interactions, oidc-provider's routes). An MCP path
 * under one of them would be shadowed by, or shadow, an OAuth endpoint. `/request` is
 * oidc-provider's pushed authorization request endpoint, on by default.
 */
const RESERVED_PATHS = [
  '/.well-known',
  '/interaction',
  '/auth',
  '/token',
  '/reg',
  '/jwks',
  '/me',
  '/session',
  '/request',
];

/**
 * Prefixes of our own variables: a variable under one of them that we do not read is most likely
 * a typo of one we do, which would otherwise fall back to a default without a word.
 */
const OWN_PREFIXES = ['MCP_SERVER_', 'MCP_AUTH_PROXY_', 'MCP_PROXY_', 'OIDC_PROVIDER_', 'IDENTITY_', 'CIMD_'];

// Run from sources (tsx) or from the build (dist/): the example server is beside us either way.
const RUNNING_FROM_SOURCE = import.meta.url.endsWith('.ts');
const EXAMPLE_MCP_SERVER = fileURLToPath(
  new URL(`../dev/example-mcp-server.${RUNNING_FROM_SOURCE ? 'ts' : 'js'}`, import.meta.url),
);

/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

class Collector {
  readonly problems: ConfigProblem[] = [];
  readonly warnings: string[] = [];

  constructor(
    private readonly env: NodeJS.ProcessEnv,
    readonly production: boolean,
    readonly cwd: string,
  ) {}

  report(variable: string, problem: string, example = exampleOf(variable)): void {
    this.problems.push({ variable, problem, example });
  }

  warn(line: string): void {
    this.warnings.push(line);
  }

  /**
   * The value, or undefined when unset. An empty value counts as unset: that is what `NAME=` in a
   * .env file or a cleared Heroku config var means. Surrounding whitespace is a copy-paste
   * accident, except in JSON values, which are often pasted over several lines.
   */
  read(name: string, options: { json?: boolean } = {}): string | undefined {
    const value = this.env[name];
    if (value === undefined || value === '') return undefined;
    if (!options.json && value !== value.trim()) {
      this.report(name, 'has leading or trailing whitespace');
      return value.trim() || undefined;
    }
    return value;
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): Config {
  const mode = env.NODE_ENV === 'production' ? 'production' : 'development';
  const c = new Collector(env, mode === 'production', cwd);

  if (!c.production) warnAboutDevelopmentMode(c, env);
  readLogLevel(c);
  const port = readPort(c);
  const localInsecure = readLocalInsecure(c);
  const baseUrl = readBaseUrl(c, port, localInsecure);
  const mcp = readMcp(c, port, baseUrl);
  const redis = readRedis(c);
  const provider = readProvider(c);
  const identity = readIdentity(c, localInsecure);
  const proxy = readProxy(c);
  const cimd = readCimd(c);
  const telemetry = readTelemetry(c);
  const verifyRelease = readVerifyRelease(c);
  const shutdownTimeoutMs = readShutdownTimeout(c);
  warnAboutUnknownVariables(c, env);

  if (c.problems.length > 0) throw new ConfigError(c.problems);
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
    verifyRelease,
    shutdownTimeoutMs,
    warnings: c.warnings,
  };
}

/** Only called once no problem was reported, when every part has been built. */
function defined<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('configuration part missing without a reported problem');
  return value;
}

function warnAboutDevelopmentMode(c: Collector, env: NodeJS.ProcessEnv): void {
  const nodeEnv = env.NODE_ENV;
  // A misspelt `NODE_ENV=prod` would otherwise silently enable the development identity provider
  // and the in-memory store on a public server.
  if (nodeEnv && nodeEnv !== 'development' && nodeEnv !== 'test') {
    c.report('NODE_ENV', `must be production, development or test, not ${JSON.stringify(nodeEnv)}`);
  }
  // Heroku sets DYNO on every dyno. Development mode there would serve a login-anyone identity
  // provider and plain http to the internet: refused, not warned about.
  if (env.DYNO) {
    c.report('NODE_ENV', 'must be production on a Heroku dyno (DYNO is set)');
  }
}

function readLogLevel(c: Collector): void {
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

function readMcp(c: Collector, port: number | undefined, baseUrl: string | undefined): McpConfig | undefined {
  const rawUrl = c.read('MCP_SERVER_URL');
  const command = c.read('MCP_SERVER_RUN_COMMAND');
  const runOptions = ['MCP_SERVER_RUN_ARGS_JSON', 'MCP_SERVER_RUN_DIR', 'MCP_SERVER_RUN_ENV_JSON'];

  let run: McpRunConfig | undefined;
  if (command === undefined) {
    for (const name of runOptions) {
      if (c.read(name, { json: true }) !== undefined) {
        c.report(
          name,
          'is set but MCP_SERVER_RUN_COMMAND is not: it only applies to a started server',
          `MCP_SERVER_RUN_COMMAND=${exampleOf('MCP_SERVER_RUN_COMMAND')}`,
        );
      }
    }
  } else {
    run = readRun(c, command);
  }

  if (rawUrl === undefined) {
    if (command !== undefined) {
      c.report('MCP_SERVER_URL', 'is required when MCP_SERVER_RUN_COMMAND is set: where the started server listens');
      return undefined;
    }
    if (c.production) {
      c.report('MCP_SERVER_URL', 'is required in production: the example MCP server is for development only');
      c.report(
        'MCP_SERVER_RUN_COMMAND',
        'is required in production unless MCP_SERVER_URL is a server that is already running',
      );
      return undefined;
    }
    if (runOptions.some((name) => c.read(name, { json: true }) !== undefined)) return undefined;
    return exampleServer(c, port ?? DEFAULT_PORT, baseUrl);
  }

  const serverUrl = parseHttpUrl(c, 'MCP_SERVER_URL', rawUrl);
  if (!serverUrl) return undefined;
  const path = serverUrl.pathname.replace(/\/+$/, '');
  let valid = true;
  if (path === '') {
    c.report('MCP_SERVER_URL', 'must include the path of the MCP endpoint; / alone is not allowed');
    valid = false;
  }
  const reserved = RESERVED_PATHS.find((own) => path === own || path.startsWith(own + '/'));
  if (reserved) {
    c.report('MCP_SERVER_URL', `its path ${path} collides with the proxy's own ${reserved} routes`);
    valid = false;
  }
  if (port !== undefined && isSelf(serverUrl, port)) {
    c.report(
      'MCP_SERVER_URL',
      `points at the proxy itself (loopback port ${port} is PORT): the MCP server needs a port of its own`,
    );
    valid = false;
  }
  if (baseUrl && (serverUrl.origin + serverUrl.pathname).startsWith(baseUrl + '/')) {
    c.report('MCP_SERVER_URL', 'points at the proxy’s own public URL (BASE_URL): requests would loop');
    valid = false;
  }
  if (serverUrl.protocol === 'http:' && !isLoopbackHost(serverUrl.hostname)) {
    // Not refused: Heroku Private Spaces reach other dynos over plain http on the internal
    // network. But the upstream bearer token travels with every request.
    c.warn(
      `MCP_SERVER_URL is plain http to a non-loopback host (${serverUrl.host}): upstream tokens travel unencrypted`,
    );
  }
  if (!valid || baseUrl === undefined) return undefined;
  return { serverUrl, resourceUrl: baseUrl + path, path, run, example: false };
}

function isSelf(url: URL, port: number): boolean {
  const local = isLoopbackHost(url.hostname) || url.hostname === '0.0.0.0' || url.hostname === '[::]';
  return local && effectivePort(url) === port;
}

function exampleServer(c: Collector, port: number, baseUrl: string | undefined): McpConfig | undefined {
  const examplePort = port === 0 || port + 1 > 65535 ? 3001 : port + 1;
  const serverUrl = new URL(`http://127.0.0.1:${examplePort}/mcp`);
  c.warn(
    `MCP_SERVER_URL and MCP_SERVER_RUN_COMMAND are unset: using the example MCP server at ${serverUrl.href} (development only)`,
  );
  if (baseUrl === undefined) return undefined;
  return {
    serverUrl,
    resourceUrl: `${baseUrl}/mcp`,
    path: '/mcp',
    run: {
      command: process.execPath,
      args: RUNNING_FROM_SOURCE ? ['--import', 'tsx', EXAMPLE_MCP_SERVER] : [EXAMPLE_MCP_SERVER],
      cwd: undefined,
      env: { PORT: String(examplePort) },
    },
    example: true,
  };
}

function readRun(c: Collector, command: string): McpRunConfig | undefined {
  let valid = true;

  let args: string[] = [];
  const rawArgs = c.read('MCP_SERVER_RUN_ARGS_JSON', { json: true });
  if (rawArgs !== undefined) {
    const parsed = parseJson(rawArgs);
    if (!Array.isArray(parsed) || !parsed.every(isSpawnableString)) {
      c.report('MCP_SERVER_RUN_ARGS_JSON', 'must be a JSON array of strings');
      valid = false;
    } else {
      args = parsed;
    }
  }

  let cwd: string | undefined;
  const rawDir = c.read('MCP_SERVER_RUN_DIR');
  if (rawDir !== undefined) {
    cwd = resolve(c.cwd, rawDir);
    if (!isDirectory(cwd)) {
      c.report('MCP_SERVER_RUN_DIR', `must be an existing directory; ${cwd} is not`);
      valid = false;
    }
  }

  let env: Record<string, string> = {};
  const rawEnv = c.read('MCP_SERVER_RUN_ENV_JSON', { json: true });
  if (rawEnv !== undefined) {
    const parsed = parseJson(rawEnv);
    // Names with `=` or NUL cannot be passed to a child process; spawn would throw much later.
    const ok =
      isObject(parsed) &&
      Object.entries(parsed).every(([name, value]) => name !== '' && !/[=\0]/.test(name) && isSpawnableString(value));
    if (!ok) {
      c.report('MCP_SERVER_RUN_ENV_JSON', 'must be a JSON object of string values');
      valid = false;
    } else {
      env = parsed as Record<string, string>;
    }
  }

  if (!isSpawnableString(command)) {
    c.report('MCP_SERVER_RUN_COMMAND', 'must not contain a NUL character');
    valid = false;
  }
  return valid ? { command, args, cwd, env } : undefined;
}

function readRedis(c: Collector): RedisConfig | undefined {
  const own = c.read('MCP_AUTH_PROXY_REDIS_URL');
  const heroku = c.read('REDIS_URL');
  const keyPrefix = c.read('MCP_AUTH_PROXY_REDIS_KEY_PREFIX') ?? DEFAULT_KEY_PREFIX;
  const tlsRejectUnauthorized = readBoolean(c, 'REDIS_TLS_REJECT_UNAUTHORIZED', false);

  let valid = true;
  if (!/^[\x21-\x7e]+$/.test(keyPrefix)) {
    c.report('MCP_AUTH_PROXY_REDIS_KEY_PREFIX', 'must be printable ASCII without spaces');
    valid = false;
  }

  const variable = own !== undefined ? 'MCP_AUTH_PROXY_REDIS_URL' : 'REDIS_URL';
  const raw = own ?? heroku;
  if (raw === undefined) {
    if (c.production) {
      c.report(
        'MCP_AUTH_PROXY_REDIS_URL',
        'is required in production; REDIS_URL, set by Heroku Key-Value Store, also works',
      );
    } else {
      c.warn('no Redis URL: using the in-memory store; clients, grants and sessions are lost at restart');
    }
    return undefined;
  }
  // The URL carries the Redis password: no message below quotes any part of it.
  let url: URL | undefined;
  try {
    url = new URL(raw);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'redis:' && url.protocol !== 'rediss:') || url.hostname === '') {
    c.report(variable, 'must be a redis:// or rediss:// URL with a host');
    valid = false;
  }
  return valid ? { url: raw, keyPrefix, tlsRejectUnauthorized } : undefined;
}

function readProvider(c: Collector): ProviderConfig | undefined {
  let valid = true;

  let jwks: JSONWebKeySet | undefined;
  const rawJwks = c.read('OIDC_PROVIDER_JWKS', { json: true });
  if (rawJwks === undefined) {
    if (c.production) {
      c.report('OIDC_PROVIDER_JWKS', 'is required in production');
      valid = false;
    } else {
      c.warn('OIDC_PROVIDER_JWKS is unset: signing with an ephemeral key; issued tokens stop verifying at restart');
    }
  } else {
    jwks = parseJwks(c, rawJwks);
    valid &&= jwks !== undefined;
  }

  let viewsPath: string | undefined;
  const rawViews = c.read('OIDC_PROVIDER_VIEWS_PATH');
  if (rawViews !== undefined) {
    if (!isAbsolute(rawViews)) {
      c.report('OIDC_PROVIDER_VIEWS_PATH', 'must be an absolute path');
      valid = false;
    } else if (!isDirectory(rawViews)) {
      c.report('OIDC_PROVIDER_VIEWS_PATH', `must be an existing directory; ${rawViews} is not`);
      valid = false;
    } else {
      viewsPath = rawViews;
    }
  }

  const scopes = parseScope(c, 'PROVIDER_SCOPE', c.read('PROVIDER_SCOPE') ?? DEFAULT_PROVIDER_SCOPE);
  if (scopes && !scopes.includes('openid')) {
    c.report('PROVIDER_SCOPE', 'must include openid');
    valid = false;
  }
  return valid && scopes ? { jwks, viewsPath, scopes } : undefined;
}

/**
 * OIDC_PROVIDER_JWKS is the provider's private key material. No message here quotes any part of
 * it, and JSON.parse's own message is never used: V8 quotes the input around the error.
 */
function parseJwks(c: Collector, raw: string): JSONWebKeySet | undefined {
  const report = (problem: string) => c.report('OIDC_PROVIDER_JWKS', problem);
  const parsed = parseJson(raw);
  if (parsed === undefined) {
    report('is not valid JSON');
    return undefined;
  }
  if (!isObject(parsed) || !Array.isArray(parsed.keys) || parsed.keys.length === 0) {
    report('must be a JSON object {"keys":[…]} holding at least one key');
    return undefined;
  }
  let valid = true;
  let canSign = false;
  parsed.keys.forEach((key: unknown, index) => {
    const label = `key ${index + 1}`;
    if (!isObject(key)) {
      report(`${label} is not a JSON object`);
      valid = false;
      return;
    }
    if (key.kty !== 'RSA' && key.kty !== 'EC' && key.kty !== 'OKP') {
      report(`${label}: kty must be RSA, EC or OKP`);
      valid = false;
      return;
    }
    if (typeof key.d !== 'string') {
      report(`${label} is a public key: the private parameter "d" is needed to sign`);
      valid = false;
      return;
    }
    try {
      createPrivateKey({ key: key as JsonWebKey, format: 'jwk' });
    } catch {
      report(`${label} is not a valid private ${key.kty} key`);
      valid = false;
      return;
    }
    canSign ||= isSigningKey(key);
  });
  if (valid && !canSign) {
    report('has no signing key: at least one RSA, EC P-256 or OKP Ed25519 key not marked "use":"enc"');
    valid = false;
  }
  return valid ? { keys: parsed.keys as JWK[] } : undefined;
}

function isSigningKey(key: Record<string, unknown>): boolean {
  if (key.use === 'enc') return false;
  if (typeof key.alg === 'string' && !/^((RS|PS|ES)(256|384|512)|EdDSA|Ed25519)$/.test(key.alg)) return false;
  if (key.kty === 'RSA') return true;
  if (key.kty === 'EC') return key.crv === 'P-256';
  return key.crv === 'Ed25519';
}

function readIdentity(c: Collector, localInsecure: boolean): IdentityConfig | undefined {
  const rawUrl = c.read('IDENTITY_SERVER_URL');
  const rawFile = c.read('IDENTITY_SERVER_METADATA_FILE');
  const clientId = c.read('IDENTITY_CLIENT_ID');
  // Secrets are taken as given: whitespace may be part of them, and the provider is the judge.
  const clientSecret = c.read('IDENTITY_CLIENT_SECRET', { json: true });
  const rawScope = c.read('IDENTITY_SCOPE');

  const anySet = [rawUrl, rawFile, clientId, clientSecret, rawScope].some((v) => v !== undefined);
  if (!anySet) {
    if (c.production) {
      c.report('IDENTITY_SERVER_URL', 'is required in production (or IDENTITY_SERVER_METADATA_FILE)');
      c.report('IDENTITY_CLIENT_ID', 'is required in production');
    } else {
      c.warn('no IDENTITY_* variables: using the embedded development identity provider instead of a real login');
    }
    return undefined;
  }

  // From here on a partial set is an error in any mode: half an upstream configuration must not
  // quietly turn into the development identity provider.
  let valid = true;
  if (rawUrl !== undefined && rawFile !== undefined) {
    c.report('IDENTITY_SERVER_METADATA_FILE', 'is set together with IDENTITY_SERVER_URL: set exactly one of them');
    valid = false;
  }
  if (rawUrl === undefined && rawFile === undefined) {
    c.report(
      'IDENTITY_SERVER_URL',
      'is required (or IDENTITY_SERVER_METADATA_FILE) when other IDENTITY_* variables are set',
    );
    valid = false;
  }
  if (clientId === undefined) {
    c.report('IDENTITY_CLIENT_ID', 'is required when other IDENTITY_* variables are set');
    valid = false;
  }

  let serverUrl: URL | undefined;
  if (rawUrl !== undefined) {
    serverUrl = parseHttpUrl(c, 'IDENTITY_SERVER_URL', rawUrl);
    if (serverUrl && !isSecureUpstream(serverUrl, localInsecure)) {
      c.report('IDENTITY_SERVER_URL', 'must use https (plain http only for a loopback host with LOCAL_INSECURE=true)');
      serverUrl = undefined;
    }
    valid &&= serverUrl !== undefined;
  }

  let metadataFile: string | undefined;
  if (rawFile !== undefined) {
    metadataFile = resolve(c.cwd, rawFile);
    valid = checkMetadataFile(c, metadataFile, localInsecure) && valid;
  }

  const scope = parseScope(c, 'IDENTITY_SCOPE', rawScope ?? DEFAULT_IDENTITY_SCOPE);
  if (!valid || !scope || clientId === undefined) return undefined;
  return { serverUrl, metadataFile, clientId, clientSecret, scope: scope.join(' ') };
}

function checkMetadataFile(c: Collector, path: string, localInsecure: boolean): boolean {
  const report = (problem: string) => c.report('IDENTITY_SERVER_METADATA_FILE', problem);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    report(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    return false;
  }
  const metadata = parseJson(text);
  if (!isObject(metadata)) {
    report(`${path} is not a JSON object`);
    return false;
  }
  let valid = true;
  if (typeof metadata.issuer !== 'string' || metadata.issuer === '') {
    report(`${path} has no "issuer"`);
    valid = false;
  }
  for (const field of ['authorization_endpoint', 'token_endpoint']) {
    const url = typeof metadata[field] === 'string' ? tryUrl(metadata[field]) : undefined;
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      report(`${path} has no "${field}" URL`);
      valid = false;
    } else if (!isSecureUpstream(url, localInsecure)) {
      // R24: the same rule as IDENTITY_SERVER_URL; the token endpoint receives the client secret.
      report(`${path}: "${field}" must use https (plain http only for a loopback host with LOCAL_INSECURE=true)`);
      valid = false;
    }
  }
  return valid;
}

function readProxy(c: Collector): ProxyConfig | undefined {
  let valid = true;

  let maxBodyBytes = DEFAULT_MAX_BODY_BYTES;
  const rawMax = c.read('MCP_PROXY_MAX_BODY_BYTES');
  if (rawMax !== undefined) {
    const parsed = parseInteger(rawMax);
    if (parsed === undefined || parsed < MIN_MAX_BODY_BYTES) {
      c.report('MCP_PROXY_MAX_BODY_BYTES', `must be an integer of at least ${MIN_MAX_BODY_BYTES} (bytes)`);
      valid = false;
    } else {
      maxBodyBytes = parsed;
    }
  }

  const allowedOrigins = new Set<string>();
  const rawOrigins = c.read('MCP_PROXY_ALLOWED_ORIGINS');
  for (const entry of (rawOrigins ?? '').split(',').map((e) => e.trim())) {
    if (entry === '') continue;
    const origin = parseOrigin(entry);
    if (origin === undefined) {
      c.report(
        'MCP_PROXY_ALLOWED_ORIGINS',
        `${JSON.stringify(entry)} is not an origin scheme://host[:port] (http or https, no path)`,
      );
      valid = false;
    } else {
      allowedOrigins.add(origin);
    }
  }
  return valid ? { maxBodyBytes, allowedOrigins: [...allowedOrigins] } : undefined;
}

/**
 * Browsers send the serialised origin (lower-case host, no default port), so that is what we keep
 * and what the `Origin` check compares against. `*` and `null` are refused: R6 is an allow-list.
 */
function parseOrigin(entry: string): string | undefined {
  const url = tryUrl(entry);
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) return undefined;
  if (url.username || url.password || url.search || url.hash || url.pathname !== '/') return undefined;
  if (/[?#]/.test(entry)) return undefined;
  return url.origin;
}

function readCimd(c: Collector): CimdConfig | undefined {
  let valid = true;
  const allowedHosts = new Set<string>();
  const raw = c.read('CIMD_ALLOWED_HOSTS');
  for (const entry of (raw ?? '').split(',').map((e) => e.trim())) {
    if (entry === '') continue;
    const problem = hostNameProblem(entry);
    if (problem !== undefined) {
      c.report('CIMD_ALLOWED_HOSTS', `${JSON.stringify(entry)} ${problem}`);
      valid = false;
    } else {
      allowedHosts.add(hostName(entry));
    }
  }
  return valid ? { allowedHosts: [...allowedHosts] } : undefined;
}

/** RFC 1123 labels, after IDNA mapping: letters, digits, inner hyphens, 1–63 characters each. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/**
 * CIMD_ALLOWED_HOSTS is compared with the host of a client_id URL, nothing else: a scheme, port
 * or path in an entry would suggest a finer match than the one made, so such entries are refused
 * rather than trimmed.
 */
function hostNameProblem(entry: string): string | undefined {
  if (entry.includes('://') || /[/:@?#\\]/.test(entry)) {
    return 'is not a host name: give the host alone, without scheme, port or path';
  }
  if (entry.includes('*')) return 'has a wildcard: list each host name';
  if (isIP(entry) !== 0 || /^[\d.]+$/.test(entry)) {
    return 'is an IP address: client_id metadata documents are only fetched by host name';
  }
  if (!HOST_NAME.test(hostName(entry))) return 'is not a valid host name';
  return undefined;
}

/** Lower-case, IDNs in punycode: the form `new URL(client_id).hostname` has. */
function hostName(entry: string): string {
  return tryUrl(`https://${entry}/`)?.hostname ?? entry.toLowerCase();
}

function readTelemetry(c: Collector): TelemetryConfig {
  let otlpEndpoint: string | undefined;
  for (const name of ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT']) {
    const raw = c.read(name);
    if (raw !== undefined && parseHttpUrl(c, name, raw)) otlpEndpoint = raw;
  }
  return { otlpEndpoint, serviceName: c.read('OTEL_SERVICE_NAME') ?? DEFAULT_SERVICE_NAME };
}

function readVerifyRelease(c: Collector): boolean {
  const raw = c.read('MCP_AUTH_PROXY_VERIFY_RELEASE');
  if (raw === undefined || raw === 'false') return false;
  if (raw === 'true') return true;
  c.report('MCP_AUTH_PROXY_VERIFY_RELEASE', 'must be true or false', 'true');
  return false;
}

// Heroku sends SIGKILL 30 s after SIGTERM: the drain must leave time to stop the MCP server.
const DEFAULT_SHUTDOWN_TIMEOUT_MS = 25_000;
const MAX_SHUTDOWN_TIMEOUT_MS = 29_000;

function readShutdownTimeout(c: Collector): number {
  const raw = c.read('MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS');
  if (raw === undefined) return DEFAULT_SHUTDOWN_TIMEOUT_MS;
  const value = parseInteger(raw);
  if (value === undefined || value > MAX_SHUTDOWN_TIMEOUT_MS) {
    c.report(
      'MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS',
      `must be an integer from 0 to ${MAX_SHUTDOWN_TIMEOUT_MS} (milliseconds)`,
      String(DEFAULT_SHUTDOWN_TIMEOUT_MS),
    );
    return DEFAULT_SHUTDOWN_TIMEOUT_MS;
  }
  return value;
}

function warnAboutUnknownVariables(c: Collector, env: NodeJS.ProcessEnv): void {
  for (const name of Object.keys(env).sort()) {
    if (env[name] === undefined || isKnownVariable(name)) continue;
    if (OWN_PREFIXES.some((prefix) => name.startsWith(prefix))) {
      c.warn(`${name} is set but is not a variable this proxy reads: a typo?`);
    }
  }
}

function readBoolean(c: Collector, name: string, fallback: boolean): boolean {
  const raw = c.read(name);
  if (raw === undefined) return fallback;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  c.report(name, 'must be true or false');
  return fallback;
}

/** Absolute http(s) URL without credentials, query or fragment. Reports and returns undefined otherwise. */
function parseHttpUrl(c: Collector, name: string, raw: string): URL | undefined {
  const url = tryUrl(raw);
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    c.report(name, 'must be an absolute http(s) URL');
    return undefined;
  }
  if (url.username || url.password) {
    c.report(name, 'must not contain credentials');
    return undefined;
  }
  if (url.search || url.hash) {
    c.report(name, 'must not have a query or fragment');
    return undefined;
  }
  return url;
}

function parseScope(c: Collector, name: string, raw: string): string[] | undefined {
  const tokens = [...new Set(raw.split(/ +/))];
  const bad = tokens.filter((token) => !SCOPE_TOKEN.test(token));
  if (bad.length > 0) {
    c.report(
      name,
      `must be scope tokens separated by spaces (RFC 6749 §3.3); not allowed: ${bad.map((t) => JSON.stringify(t)).join(', ')}`,
    );
    return undefined;
  }
  return tokens;
}

function isSecureUpstream(url: URL, localInsecure: boolean): boolean {
  return url.protocol === 'https:' || (localInsecure && isLoopbackHost(url.hostname));
}

function effectivePort(url: URL): number {
  if (url.port) return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}

function parseInteger(raw: string): number | undefined {
  if (!/^\d+$/.test(raw)) return undefined;
  const value = Number(raw);
  return Number.isSafeInteger(value) ? value : undefined;
}

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}

function tryUrl(raw: string): URL | undefined {
  try {
    return new URL(raw);
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isSpawnableString(value: unknown): value is string {
  return typeof value === 'string' && !value.includes('\0');
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
