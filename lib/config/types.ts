import type { JSONWebKeySet } from 'jose';

/**
 * The one validated, typed view of the environment. Built once by `loadConfig()`; nothing else in
 * `lib/` reads `process.env`.
 */
export interface Config {
  /** `production` when NODE_ENV=production; development conveniences are refused there. */
  readonly mode: 'production' | 'development';
  /** Public origin + optional path of this proxy, no trailing slash. Also the OAuth issuer. */
  readonly baseUrl: string;
  readonly port: number;
  /**
   * LOCAL_INSECURE=true: allow plain-http loopback upstreams (identity provider, CIMD documents).
   * Loud by name, warned about at start-up, refused in production.
   */
  readonly localInsecure: boolean;
  readonly mcp: McpConfig;
  /** Absent → in-memory store (development only). */
  readonly redis: RedisConfig | undefined;
  readonly provider: ProviderConfig;
  /** Absent → the embedded development identity provider (development only). */
  readonly identity: IdentityConfig | undefined;
  readonly proxy: ProxyConfig;
  readonly cimd: CimdConfig;
  readonly telemetry: TelemetryConfig;
  /** MAX_REQUESTS / MAX_REQUESTS_WINDOW, the Heroku proxy's per-client rate limit. */
  readonly rateLimit: RateLimitConfig;
  /** BRANDING_TITLE / BRANDING_FAVICON for the login pages. */
  readonly branding: BrandingConfig;
  /**
   * IDENTITY_CALLBACK_PATH: path of the redirect URI registered at the identity provider
   * (`${baseUrl}${callbackPath}`), and of the route that receives it.
   */
  readonly callbackPath: string;
  /** APP_NAME, set by Heroku's dyno metadata; a log field. */
  readonly appName: string | undefined;
  /** MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: how long to drain after SIGTERM, under Heroku's 30 s. */
  readonly shutdownTimeoutMs: number;
  /** MCP_AUTH_PROXY_VERIFY_RELEASE: start, check that everything comes up, and exit (release phase). */
  readonly verifyRelease: boolean;
  /** Warnings to print at start-up (risky switches, development fallbacks in use). */
  readonly warnings: readonly string[];
}

export interface McpConfig {
  /** Where the MCP server listens, e.g. http://127.0.0.1:3000/mcp. Its path is our `/mcp` path. */
  readonly serverUrl: URL;
  /** Public MCP endpoint: baseUrl + serverUrl's path, no trailing slash. The RFC 8707 resource. */
  readonly resourceUrl: string;
  /** Path of the MCP endpoint on this proxy, e.g. `/mcp`. */
  readonly path: string;
  /** Absent → the example MCP server (development only), or nothing to spawn when URL is given. */
  readonly run: McpRunConfig | undefined;
  /** True when `run` is the built-in example MCP server. */
  readonly example: boolean;
}

export interface McpRunConfig {
  readonly command: string;
  readonly args: readonly string[];
  /**
   * True when MCP_SERVER_RUN_COMMAND was a shell command line: `command` is then `/bin/sh` and
   * `args` `['-c', line]`. The shell does not pass signals on to what it started, so the whole
   * process group has to be signalled to stop the server. Absent or false: run directly.
   */
  readonly shell?: boolean;
  readonly cwd: string | undefined;
  readonly env: Readonly<Record<string, string>>;
}

export interface RedisConfig {
  /** `redis://` or `rediss://`. Contains credentials: never log it whole (see `redactUrl`). */
  readonly url: string;
  readonly keyPrefix: string;
  /**
   * Heroku Key-Value Store presents self-signed certificates on `rediss://`; verification is
   * off unless REDIS_TLS_REJECT_UNAUTHORIZED=true.
   */
  readonly tlsRejectUnauthorized: boolean;
}

export interface ProviderConfig {
  /** Private signing keys. Absent → an ephemeral key generated at start (development only). */
  readonly jwks: JSONWebKeySet | undefined;
  /** Absolute directory whose templates replace the built-in views, file by file. */
  readonly viewsPath: string | undefined;
  /** Scopes this authorization server offers, e.g. `openid offline_access`. */
  readonly scopes: readonly string[];
}

export interface IdentityConfig {
  /** Issuer for OIDC discovery. Exactly one of serverUrl / metadataFile is set. */
  readonly serverUrl: URL | undefined;
  /** Absolute path of a JSON file with issuer, authorization_endpoint, token_endpoint, … */
  readonly metadataFile: string | undefined;
  readonly clientId: string;
  readonly clientSecret: string | undefined;
  /** Scope requested upstream, space separated. */
  readonly scope: string;
}

export interface ProxyConfig {
  /** Max request body kept for a retry / accepted at all on `/mcp`, in bytes. */
  readonly maxBodyBytes: number;
  /** Extra origins allowed to call `/mcp` from a browser (R6). Our own origin always is. */
  readonly allowedOrigins: readonly string[];
}

export interface CimdConfig {
  /**
   * CIMD_ALLOWED_HOSTS: lower-case host names (punycode for IDNs) whose `https://` client_ids may
   * be fetched as Client ID Metadata Documents. Empty: any public host may be.
   */
  readonly allowedHosts: readonly string[];
}

export interface TelemetryConfig {
  /** A traces endpoint is set and OTEL_SDK_DISABLED is not `true`. */
  readonly enabled: boolean;
  /**
   * Full OTLP/HTTP traces URL: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as given, else
   * OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/traces`.
   */
  readonly tracesEndpoint: string | undefined;
  /** OTEL_EXPORTER_OTLP_HEADERS, names lower-cased. Usually API keys: never log or show them. */
  readonly headers: Readonly<Record<string, string>>;
  readonly serviceName: string;
}

export interface RateLimitConfig {
  /** Requests allowed per window and client. */
  readonly maxRequests: number;
  readonly windowMs: number;
}

export interface BrandingConfig {
  /** BRANDING_TITLE: the service's name on every page. Absent → the MCP URL's host. */
  readonly title: string | undefined;
  /** BRANDING_FAVICON: https URL of the pages' icon (http on loopback in development). Absent → the built-in icon. */
  readonly faviconUrl: string | undefined;
}
