/**
 * Every environment variable the proxy reads, with its documentation next to it, so that the
 * examples printed in configuration errors, `VARIABLES.md` and `.env.template` cannot drift apart
 * (test/config.test.ts compares them with this table).
 */
export interface VariableDoc {
  readonly name: string;
  /** What production asks of it: `yes`, `no`, or the condition under which it is needed. */
  readonly production: string;
  /** Value used in development when unset; `—` for none. */
  readonly development: string;
  readonly meaning: string;
  /** A good value, shown in error messages. */
  readonly example: string;
}

export const VARIABLES: readonly VariableDoc[] = [
  {
    name: 'NODE_ENV',
    production: 'yes (`production`)',
    development: 'development mode',
    meaning:
      '`production` turns on production checks and refuses every development fallback; `development` and `test` mean development; any other value is refused, and so is development mode on a Heroku dyno.',
    example: 'production',
  },
  {
    name: 'PORT',
    production: 'no (Heroku sets it)',
    development: '`3000`',
    meaning: 'Port the proxy listens on, 0–65535.',
    example: '3000',
  },
  {
    name: 'BASE_URL',
    production: 'yes',
    development: '`http://localhost:$PORT`',
    meaning:
      'Public origin of the proxy (`scheme://host[:port]`, no path: every endpoint is served at the root), also the OAuth issuer. https in production.',
    example: 'https://my-mcp-app.herokuapp.com',
  },
  {
    name: 'LOCAL_INSECURE',
    production: 'refused when `true`',
    development: '`false`',
    meaning:
      '`true` allows loopback upstreams for local development: a plain-http identity provider, and client metadata documents served from loopback addresses (self-signed certificates accepted there only). Printed as a warning at start-up.',
    example: 'true',
  },
  {
    name: 'LOG_LEVEL',
    production: 'no',
    development: '`info`',
    meaning: 'Least severe log level printed: `debug`, `info`, `warn` or `error`.',
    example: 'info',
  },
  {
    name: 'APP_NAME',
    production: 'no (Heroku sets it with dyno metadata)',
    development: '—',
    meaning: 'Name of the app, added to every log line.',
    example: 'my-mcp-app',
  },
  {
    name: 'MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS',
    production: 'no',
    development: '`25000`',
    meaning:
      'After SIGTERM, how long in-flight requests may finish before the proxy stops, in milliseconds, 0–29000: Heroku sends SIGKILL 30 s after SIGTERM.',
    example: '25000',
  },
  {
    name: 'MCP_AUTH_PROXY_VERIFY_RELEASE',
    production: 'no',
    development: '`false`',
    meaning:
      '`true` starts everything (store, identity provider, MCP server), checks it came up and exits with 0 or 1: the Heroku release phase check of the MCP auth proxy buildpack.',
    example: 'true',
  },
  {
    name: 'MCP_AUTH_PROXY_NODE_DOWNLOAD_BASE',
    production: 'no (build time only)',
    development: 'the official Node.js download site',
    meaning:
      'Read by the buildpack’s `bin/compile`, not by the running proxy: where the pinned Node.js release and its `SHASUMS256.txt` are downloaded from when no earlier buildpack left Node.js 24. https only (plain http on loopback, for tests); every download is checked against the checksums.',
    example: 'https://nodejs.org/dist',
  },
  {
    name: 'MCP_SERVER_URL',
    production: 'yes',
    development: 'the example MCP server, `http://127.0.0.1:$PORT+1/mcp`',
    meaning:
      'Where the MCP server listens, including its endpoint path; that path (e.g. `/mcp`) is also the public MCP path on the proxy. Must not be the proxy itself.',
    example: 'http://127.0.0.1:8080/mcp',
  },
  {
    name: 'MCP_SERVER_RUN_COMMAND',
    production: 'yes, unless `MCP_SERVER_URL` is a server that is already running',
    development: 'the example MCP server when `MCP_SERVER_URL` is unset too',
    meaning:
      'Command the proxy starts and supervises as the MCP server. With `MCP_SERVER_RUN_ARGS_JSON` set, a program run directly with those arguments; without it, a shell command line run by `/bin/sh -c` (e.g. `cd /app && PORT=3000 npm start`), stopped as a whole process group.',
    example: 'node',
  },
  {
    name: 'MCP_SERVER_RUN_ARGS_JSON',
    production: 'no',
    development: 'unset: the command is a shell command line',
    meaning: 'Arguments of `MCP_SERVER_RUN_COMMAND`, a JSON array of strings; when set, no shell is involved.',
    example: '["dist/server.js","--port","8080"]',
  },
  {
    name: 'MCP_SERVER_RUN_DIR',
    production: 'no',
    development: 'the proxy’s working directory',
    meaning:
      'Working directory of the MCP server process: an existing directory, relative paths resolved against the proxy’s working directory.',
    example: 'mcp-server',
  },
  {
    name: 'MCP_SERVER_RUN_ENV_JSON',
    production: 'no',
    development: '`{}`',
    meaning:
      'Extra environment variables of the MCP server process, a JSON object; numbers and booleans are passed as their text (`{"PORT":3000}` gives `PORT=3000`), other non-strings are refused.',
    example: '{"PORT":"8080"}',
  },
  {
    name: 'MCP_AUTH_PROXY_REDIS_URL',
    production: 'yes (or `REDIS_URL`)',
    development:
      'in-memory store, kept across restarts in `.mcp-auth-proxy-dev-store.json` while `OIDC_PROVIDER_JWKS` is unset too',
    meaning:
      'Redis (7.0 or later, checked at start-up) holding clients, grants, sessions and encrypted upstream tokens; `redis://` or `rediss://`.',
    example: 'rediss://:password@redis.example.com:6380',
  },
  {
    name: 'REDIS_URL',
    production: 'when `MCP_AUTH_PROXY_REDIS_URL` is unset',
    development: '—',
    meaning:
      'Fallback for `MCP_AUTH_PROXY_REDIS_URL`; set by the Heroku Key-Value Store add-on. `MCP_AUTH_PROXY_REDIS_URL` wins when both are set.',
    example: 'rediss://:password@redis.example.com:6380',
  },
  {
    name: 'MCP_AUTH_PROXY_REDIS_KEY_PREFIX',
    production: 'no',
    development: '`mcp-auth-proxy:`',
    meaning: 'Prefix of every Redis key, so that several apps can share one Redis.',
    example: 'mcp-auth-proxy:',
  },
  {
    name: 'MCP_AUTH_PROXY_REDIS_PREFIX',
    production: 'no',
    development: '—',
    meaning:
      'The Heroku MCP auth proxy’s name for `MCP_AUTH_PROXY_REDIS_KEY_PREFIX`, accepted as an alias. Set together with it, the two must be equal.',
    example: 'mcp-auth-proxy:',
  },
  {
    name: 'REDIS_TLS_REJECT_UNAUTHORIZED',
    production: 'no',
    development: '`false`',
    meaning:
      '`true` verifies the Redis TLS certificate. Off by default because Heroku Key-Value Store presents self-signed certificates.',
    example: 'false',
  },
  {
    name: 'OIDC_PROVIDER_JWKS',
    production: 'yes',
    development:
      'a development key, kept in `.mcp-auth-proxy-dev-store.json` without Redis, new at every start with it',
    meaning:
      'Private signing keys: a JSON `{"keys":[…]}` or a JSON array `[…]` of private JWKs (RSA, EC P-256 or OKP Ed25519 for signing). A secret.',
    example: '{"keys":[{"kty":"EC","crv":"P-256","x":"…","y":"…","d":"…"}]}',
  },
  {
    name: 'OIDC_PROVIDER_VIEWS_PATH',
    production: 'no',
    development: 'built-in views',
    meaning: 'Absolute path of a directory whose templates replace the built-in views, file by file.',
    example: '/app/views',
  },
  {
    name: 'PROVIDER_SCOPE',
    production: 'no',
    development: '`openid offline_access`',
    meaning: 'Scopes this authorization server offers, separated by spaces or commas; must include `openid`.',
    example: 'openid offline_access',
  },
  {
    name: 'CIMD_ALLOWED_HOSTS',
    production: 'no',
    development: 'any public host',
    meaning:
      'Host names whose `https://` client_ids are accepted as Client ID Metadata Documents, comma separated, host names only (no scheme, port or path). Other client_id hosts are refused before anything is fetched. Unset: any host whose address is public.',
    example: 'claude.ai,chatgpt.com',
  },
  {
    name: 'IDENTITY_SERVER_URL',
    production: 'yes, or `IDENTITY_SERVER_METADATA_FILE`',
    development: 'the embedded development identity provider when no `IDENTITY_*` is set',
    meaning:
      'Issuer of the upstream identity provider, found through OpenID Connect discovery. https (plain http only for loopback with `LOCAL_INSECURE=true`).',
    example: 'https://accounts.google.com',
  },
  {
    name: 'IDENTITY_SERVER_METADATA_FILE',
    production: 'yes, or `IDENTITY_SERVER_URL`',
    development: '—',
    meaning:
      'JSON file with the upstream provider’s metadata (`issuer`, `authorization_endpoint`, `token_endpoint`, …), for providers without discovery. Relative paths resolved against the working directory. May be set with `IDENTITY_SERVER_URL` only when both name the same issuer; the file is then used.',
    example: 'config/github-metadata.json',
  },
  {
    name: 'IDENTITY_CLIENT_ID',
    production: 'yes',
    development: '—',
    meaning: 'Client id of this proxy at the upstream identity provider.',
    example: 'mcp-auth-proxy',
  },
  {
    name: 'IDENTITY_CLIENT_SECRET',
    production: 'no (unset: public client)',
    development: '—',
    meaning: 'Client secret at the upstream identity provider. A secret.',
    example: 's3cr3t',
  },
  {
    name: 'IDENTITY_SCOPE',
    production: 'no',
    development: '`openid`',
    meaning:
      'Scope requested from the upstream identity provider, space separated. The default only suits OpenID Connect providers; others (e.g. GitHub) need their own scopes.',
    example: 'openid profile email offline_access',
  },
  {
    name: 'IDENTITY_CALLBACK_PATH',
    production: 'no',
    development: '`/interaction/identity/callback`',
    meaning:
      'Path of the redirect URI registered at the identity provider (`BASE_URL` + this path). A plain path starting with `/`, no query or fragment, outside the proxy’s own routes and the MCP path.',
    example: '/interaction/identity/callback',
  },
  {
    name: 'MCP_PROXY_MAX_BODY_BYTES',
    production: 'no',
    development: '`4194304` (4 MiB)',
    meaning: 'Largest request body accepted on the MCP endpoint, in bytes; at least 1024.',
    example: '4194304',
  },
  {
    name: 'MCP_PROXY_ALLOWED_ORIGINS',
    production: 'no',
    development: 'only the proxy’s own origin',
    meaning: 'Extra browser origins allowed to call the MCP endpoint, comma separated, each `scheme://host[:port]`.',
    example: 'https://app.example.com,http://localhost:5173',
  },
  {
    name: 'MAX_REQUESTS',
    production: 'no',
    development: '`60`',
    meaning:
      'Requests allowed per `MAX_REQUESTS_WINDOW` (rate limit), at least 1: per client address (the one Heroku’s router appends to `X-Forwarded-For`) for each route group — registration, authorization, token, login pages — and per grant on the MCP endpoint. Over it: 429 with `Retry-After`.',
    example: '60',
  },
  {
    name: 'MAX_REQUESTS_WINDOW',
    production: 'no',
    development: '`60000` (a minute)',
    meaning: 'Length of the rate-limit window in milliseconds, 1000–86400000.',
    example: '60000',
  },
  {
    name: 'BRANDING_TITLE',
    production: 'no',
    development: 'the MCP URL’s host',
    meaning: 'Name of the service on every page (home, consent, errors), at most 200 characters.',
    example: 'My MCP Server',
  },
  {
    name: 'BRANDING_FAVICON',
    production: 'no',
    development: 'no favicon',
    meaning: 'URL of the login pages’ favicon: https (plain http only for a loopback host in development).',
    example: 'https://example.com/favicon.ico',
  },
  {
    name: 'OTEL_SDK_DISABLED',
    production: 'no',
    development: '`false`',
    meaning: '`true` turns tracing off even when an endpoint is set.',
    example: 'true',
  },
  {
    name: 'OTEL_EXPORTER_OTLP_ENDPOINT',
    production: 'no',
    development: 'no tracing',
    meaning:
      'OTLP/HTTP base URL; traces are exported to it with `/v1/traces` appended when it is set (and `OTEL_SDK_DISABLED` is not `true`).',
    example: 'https://api.honeycomb.io',
  },
  {
    name: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
    production: 'no',
    development: 'no tracing',
    meaning: 'Full OTLP/HTTP traces URL, used as given; wins over `OTEL_EXPORTER_OTLP_ENDPOINT`.',
    example: 'https://api.honeycomb.io/v1/traces',
  },
  {
    name: 'OTEL_EXPORTER_OTLP_PROTOCOL',
    production: 'no',
    development: '`http/protobuf`',
    meaning: 'OTLP transport; only `http/protobuf` is supported, other values are refused.',
    example: 'http/protobuf',
  },
  {
    name: 'OTEL_EXPORTER_OTLP_HEADERS',
    production: 'no',
    development: 'none',
    meaning:
      'Headers sent with every export, `name=value` pairs separated by commas, values percent-encoded. Usually an API key: a secret, never logged.',
    example: 'x-honeycomb-team=YOUR_API_KEY',
  },
  {
    name: 'OTEL_SERVICE_NAME',
    production: 'no',
    development: '`unnamed_mcp_remote_auth_proxy`',
    meaning: 'Service name on traces; on Heroku, the app name is a good choice.',
    example: 'my-mcp-app',
  },
  {
    name: 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE',
    production: 'no',
    development: '`512`',
    meaning: 'Spans per export at most; a full batch is sent at once. At least 1.',
    example: '512',
  },
  {
    name: 'OTEL_BSP_SCHEDULE_DELAY',
    production: 'no',
    development: '`5000`',
    meaning: 'Milliseconds an ended span may wait for its batch to fill before the batch is sent anyway. At least 0.',
    example: '5000',
  },
];

const BY_NAME = new Map(VARIABLES.map((variable) => [variable.name, variable]));

export function exampleOf(name: string): string {
  const variable = BY_NAME.get(name);
  if (!variable) throw new Error(`undocumented configuration variable ${name}`);
  return variable.example;
}

export function isKnownVariable(name: string): boolean {
  return BY_NAME.has(name);
}

/** The table pasted into the README; `lib/config/VARIABLES.md` must equal this output. */
export function renderVariablesMarkdown(): string {
  const cell = (text: string) => text.replaceAll('|', '\\|');
  const rows = VARIABLES.map(
    (v) =>
      `| \`${v.name}\` | ${cell(v.production)} | ${cell(v.development)} | ${cell(v.meaning)} Example: \`${cell(v.example)}\` |`,
  );
  return [
    '| Variable | Required in production | Default (development) | Meaning and example |',
    '| --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}
