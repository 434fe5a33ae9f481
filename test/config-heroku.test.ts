import { expect } from 'chai';
import { loadConfig } from '../lib/config/index.ts';
import { EC_KEY, fixture, production, useConfigFixture, writeHerokuIdentityMetadata } from './helpers/config-env.ts';
import { expectProblem, messageOf, problemsOf, warningsOf } from './helpers/config-problems.ts';

/** The Heroku MCP auth proxy's settings, with the meanings, units and defaults it gives them. */
describe('configuration: settings of the Heroku MCP auth proxy', () => {
  useConfigFixture();

  it('loads a production environment written the Heroku proxy’s way', () => {
    const metadata = writeHerokuIdentityMetadata('heroku_identity_metadata.json');
    const config = loadConfig({
      NODE_ENV: 'production',
      DYNO: 'web.1',
      PORT: '5000',
      APP_NAME: 'my-mcp-app',
      BASE_URL: 'https://my-mcp-app.herokuapp.com',
      MCP_SERVER_URL: 'http://localhost:3000/mcp',
      MCP_SERVER_RUN_COMMAND: 'npm',
      MCP_SERVER_RUN_ARGS_JSON: '["start"]',
      MCP_SERVER_RUN_DIR: fixture.tmp,
      MCP_SERVER_RUN_ENV_JSON: '{"PORT":3000,"BACKEND_API_URL":"https://mcp.example.com"}',
      MCP_AUTH_PROXY_REDIS_URL: 'rediss://:pw@redis.example.com:6380',
      MCP_AUTH_PROXY_REDIS_PREFIX: 'oidc:',
      OIDC_PROVIDER_JWKS: JSON.stringify([EC_KEY]),
      IDENTITY_SERVER_URL: 'https://identity.example.com',
      IDENTITY_SERVER_METADATA_FILE: metadata,
      IDENTITY_CLIENT_ID: 'client',
      IDENTITY_CLIENT_SECRET: 'secret',
      IDENTITY_SCOPE: 'global',
      PROVIDER_SCOPE: 'openid,offline_access',
      MAX_REQUESTS: '100',
      MAX_REQUESTS_WINDOW: '30000',
      BRANDING_TITLE: 'My Custom Auth Service',
      BRANDING_FAVICON: 'https://example.com/custom-favicon.ico',
      OTEL_SDK_DISABLED: 'false',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'https://api.honeycomb.io',
      OTEL_EXPORTER_OTLP_HEADERS: 'x-honeycomb-team=abc123',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_SERVICE_NAME: 'my-mcp-app',
      MCP_PROXY_VERSION: 'v1.2.3',
    });
    expect(config.mcp.run).to.deep.include({
      command: 'npm',
      args: ['start'],
      shell: false,
      env: { PORT: '3000', BACKEND_API_URL: 'https://mcp.example.com' },
    });
    expect(config.redis?.keyPrefix).to.equal('oidc:');
    expect(config.provider.jwks).to.deep.equal({ keys: [EC_KEY] });
    expect(config.provider.scopes).to.deep.equal(['openid', 'offline_access']);
    expect(config.identity).to.deep.include({ metadataFile: metadata, serverUrl: undefined, scope: 'global' });
    expect(config.rateLimit).to.deep.equal({ maxRequests: 100, windowMs: 30000 });
    expect(config.branding).to.deep.equal({
      title: 'My Custom Auth Service',
      faviconUrl: 'https://example.com/custom-favicon.ico',
    });
    expect(config.telemetry).to.deep.equal({
      enabled: true,
      tracesEndpoint: 'https://api.honeycomb.io/v1/traces',
      headers: { 'x-honeycomb-team': 'abc123' },
      serviceName: 'my-mcp-app',
    });
    expect(config.appName).to.equal('my-mcp-app');
    // The buildpack's own MCP_PROXY_VERSION is no typo of ours.
    expect(config.warnings).to.deep.equal([]);
  });

  describe('OIDC_PROVIDER_JWKS as a JSON array', () => {
    it('accepts "[$(jwkgen --jwk)]", a bare array of private keys', () => {
      expect(loadConfig({ OIDC_PROVIDER_JWKS: JSON.stringify([EC_KEY]) }).provider.jwks).to.deep.equal({
        keys: [EC_KEY],
      });
    });

    it('checks each key of the array like a key of a set, never quoting key material', () => {
      const d = EC_KEY.d as string;
      expectProblem({ OIDC_PROVIDER_JWKS: '[]' }, 'OIDC_PROVIDER_JWKS', /at least one key/);
      expectProblem(
        { OIDC_PROVIDER_JWKS: JSON.stringify([{ ...EC_KEY, d: undefined }]) },
        'OIDC_PROVIDER_JWKS',
        /key 1 is a public key/,
      );
      const message = messageOf({ OIDC_PROVIDER_JWKS: JSON.stringify([EC_KEY, { ...EC_KEY, x: 'AAAA' }]) });
      expect(message).to.include('key 2 is not a valid private EC key');
      expect(message).not.to.include(d.slice(0, 12));
    });
  });

  describe('MCP_AUTH_PROXY_REDIS_PREFIX, the Heroku name of MCP_AUTH_PROXY_REDIS_KEY_PREFIX', () => {
    const redis = { MCP_AUTH_PROXY_REDIS_URL: 'redis://127.0.0.1:6379' };

    it('is accepted alone', () => {
      expect(loadConfig({ ...redis, MCP_AUTH_PROXY_REDIS_PREFIX: 'oidc:' }).redis?.keyPrefix).to.equal('oidc:');
    });

    it('may be set together with our name when both are equal', () => {
      const env = { ...redis, MCP_AUTH_PROXY_REDIS_PREFIX: 'app:', MCP_AUTH_PROXY_REDIS_KEY_PREFIX: 'app:' };
      expect(loadConfig(env).redis?.keyPrefix).to.equal('app:');
    });

    it('is refused when it differs from MCP_AUTH_PROXY_REDIS_KEY_PREFIX: neither silently wins', () => {
      expectProblem(
        { ...redis, MCP_AUTH_PROXY_REDIS_PREFIX: 'oidc:', MCP_AUTH_PROXY_REDIS_KEY_PREFIX: 'app:' },
        'MCP_AUTH_PROXY_REDIS_PREFIX',
        /differs from MCP_AUTH_PROXY_REDIS_KEY_PREFIX/,
      );
    });

    it('is held to the same rule as our name', () => {
      expectProblem({ ...redis, MCP_AUTH_PROXY_REDIS_PREFIX: 'my app:' }, 'MCP_AUTH_PROXY_REDIS_PREFIX', /printable/);
    });
  });

  describe('PROVIDER_SCOPE', () => {
    it('splits on commas as well as spaces, as the Heroku proxy does', () => {
      expect(loadConfig({ PROVIDER_SCOPE: 'openid, offline_access,profile' }).provider.scopes).to.deep.equal([
        'openid',
        'offline_access',
        'profile',
      ]);
      expectProblem({ PROVIDER_SCOPE: ',' }, 'PROVIDER_SCOPE', /at least one scope/);
    });
  });

  describe('MAX_REQUESTS and MAX_REQUESTS_WINDOW', () => {
    it('default to 60 requests per 60000 ms', () => {
      expect(loadConfig({}).rateLimit).to.deep.equal({ maxRequests: 60, windowMs: 60000 });
    });

    it('take the window in milliseconds', () => {
      expect(loadConfig({ MAX_REQUESTS: '1', MAX_REQUESTS_WINDOW: '1000' }).rateLimit).to.deep.equal({
        maxRequests: 1,
        windowMs: 1000,
      });
      expect(loadConfig({ MAX_REQUESTS_WINDOW: '86400000' }).rateLimit.windowMs).to.equal(86400000);
    });

    for (const value of ['0', '-1', '1.5', 'sixty', '1e2']) {
      it(`refuses MAX_REQUESTS=${value}`, () => {
        expectProblem({ MAX_REQUESTS: value }, 'MAX_REQUESTS', /integer of at least 1 \(requests per window/);
      });
    }

    for (const value of ['60', '999', '86400001', '1m', '60s']) {
      it(`refuses MAX_REQUESTS_WINDOW=${value}, naming the unit`, () => {
        expectProblem({ MAX_REQUESTS_WINDOW: value }, 'MAX_REQUESTS_WINDOW', /from 1000 to 86400000 \(milliseconds/);
      });
    }
  });

  describe('BRANDING_TITLE and BRANDING_FAVICON', () => {
    it('are unset by default: the views keep their own title and no favicon', () => {
      expect(loadConfig({}).branding).to.deep.equal({ title: undefined, faviconUrl: undefined });
    });

    it('take a title and an https favicon URL (a query is fine)', () => {
      const config = loadConfig(
        production({ BRANDING_TITLE: 'Acme — MCP login', BRANDING_FAVICON: 'https://cdn.example.com/f.ico?v=2' }),
      );
      expect(config.branding).to.deep.equal({
        title: 'Acme — MCP login',
        faviconUrl: 'https://cdn.example.com/f.ico?v=2',
      });
    });

    it('allow a plain-http favicon on a loopback host in development only', () => {
      const favicon = 'http://localhost:8000/favicon.ico';
      expect(loadConfig({ BRANDING_FAVICON: favicon }).branding.faviconUrl).to.equal(favicon);
      expectProblem(production({ BRANDING_FAVICON: favicon }), 'BRANDING_FAVICON', /https URL/);
    });

    const badFavicons = [
      'javascript:alert(1)',
      'data:image/png;base64,AAAA',
      'http://example.com/favicon.ico',
      'ftp://example.com/favicon.ico',
      '/favicon.ico',
      'https://user:pw@example.com/favicon.ico',
      'https://example.com/favicon.ico#x',
    ];
    for (const value of badFavicons) {
      it(`refuses the favicon ${value}`, () => {
        expectProblem({ BRANDING_FAVICON: value }, 'BRANDING_FAVICON', /must be an absolute https URL/);
      });
    }

    it('refuses a title with control characters or over 200 characters', () => {
      expectProblem({ BRANDING_TITLE: 'a\u0007b' }, 'BRANDING_TITLE', /control characters/);
      expectProblem({ BRANDING_TITLE: 'x'.repeat(201) }, 'BRANDING_TITLE', /at most 200 characters/);
      expect(loadConfig({ BRANDING_TITLE: 'x'.repeat(200) }).branding.title).to.have.length(200);
    });
  });

  describe('telemetry', () => {
    it('is off by default, with the Heroku proxy’s default service name', () => {
      expect(loadConfig({}).telemetry).to.deep.equal({
        enabled: false,
        tracesEndpoint: undefined,
        headers: {},
        serviceName: 'unnamed_mcp_remote_auth_proxy',
      });
    });

    it('appends /v1/traces to the base endpoint, keeping its path', () => {
      const endpoint = (base: string) => loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: base }).telemetry.tracesEndpoint;
      expect(endpoint('https://otlp.example.com')).to.equal('https://otlp.example.com/v1/traces');
      expect(endpoint('https://otlp.example.com/')).to.equal('https://otlp.example.com/v1/traces');
      expect(endpoint('https://otlp.example.com/otlp/')).to.equal('https://otlp.example.com/otlp/v1/traces');
      expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otlp.example.com' }).telemetry.enabled).to.equal(true);
    });

    it('prefers the traces endpoint over the base endpoint, using it as given', () => {
      const config = loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otlp.example.com',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example.com/custom',
        OTEL_SERVICE_NAME: 'my-proxy',
      });
      expect(config.telemetry).to.deep.equal({
        enabled: true,
        tracesEndpoint: 'https://traces.example.com/custom',
        headers: {},
        serviceName: 'my-proxy',
      });
    });

    it('is off when OTEL_SDK_DISABLED is true, in any case, even with an endpoint', () => {
      for (const value of ['true', 'TRUE', 'True']) {
        const config = loadConfig({
          OTEL_SDK_DISABLED: value,
          OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otlp.example.com',
        });
        expect(config.telemetry.enabled).to.equal(false);
        expect(config.telemetry.tracesEndpoint).to.equal('https://otlp.example.com/v1/traces');
      }
      expectProblem({ OTEL_SDK_DISABLED: 'yes' }, 'OTEL_SDK_DISABLED', /true or false/);
    });

    it('refuses endpoints that are not http(s) URLs', () => {
      expectProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc' }, 'OTEL_EXPORTER_OTLP_ENDPOINT', /http\(s\)/);
      expectProblem(
        { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'file:///tmp/x' },
        'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
        /http\(s\)/,
      );
    });

    it('supports only the http/protobuf protocol', () => {
      expect(loadConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }).telemetry.enabled).to.equal(false);
      for (const value of ['grpc', 'http/json', 'HTTP/PROTOBUF']) {
        expectProblem(
          { OTEL_EXPORTER_OTLP_PROTOCOL: value },
          'OTEL_EXPORTER_OTLP_PROTOCOL',
          /only http\/protobuf is supported/,
        );
      }
    });

    it('parses OTEL_EXPORTER_OTLP_HEADERS as name=value pairs with percent-encoded values', () => {
      const headers = loadConfig({
        OTEL_EXPORTER_OTLP_HEADERS: 'X-Honeycomb-Team=abc%3D%3D, x-dataset = my%20set ,,authorization=Basic%20dTpw',
      }).telemetry.headers;
      expect(headers).to.deep.equal({
        'x-honeycomb-team': 'abc==',
        'x-dataset': 'my set',
        authorization: 'Basic dTpw',
      });
    });

    it('reports every bad header entry without quoting any part of it (they hold API keys)', () => {
      const secret = 'sk-live-0123456789';
      const problems = problemsOf({
        OTEL_EXPORTER_OTLP_HEADERS: `${secret},bad name=${secret},x-key=%E0%A4%A${secret},x-ok=${secret}%0A`,
      });
      expect(problems.map((p) => p.problem)).to.deep.equal([
        'entry 1 is not name=value with a valid header name',
        'entry 2 is not name=value with a valid header name',
        'entry 3 has a value that is not valid percent-encoding or holds a line break',
        'entry 4 has a value that is not valid percent-encoding or holds a line break',
      ]);
      expect(messageOf({ OTEL_EXPORTER_OTLP_HEADERS: secret })).not.to.include(secret);
    });
  });

  describe('unknown variables', () => {
    it('names the Heroku proxy settings that have no effect here', () => {
      const warnings = warningsOf({
        TOKEN_REFRESH_STRATEGY: 'proactive',
        REFRESH_BUFFER_MINUTES: '5',
        IDENTITY_UNIQUE_CALLBACK_PATH: '/interaction/:uid/identity/callback',
        MCP_SERVER_PORT: '3000',
      });
      for (const name of ['TOKEN_REFRESH_STRATEGY', 'REFRESH_BUFFER_MINUTES', 'IDENTITY_UNIQUE_CALLBACK_PATH']) {
        expect(warnings).to.include(`${name} is a setting of the Heroku MCP auth proxy that has no effect`);
      }
      expect(warnings).to.include('MCP_SERVER_PORT is a setting of the Heroku MCP auth proxy that has no effect');
      expect(warnings).not.to.include('a typo?');
    });

    it('does not take the buildpack’s build-time variables for typos, but still catches a misspelt BRANDING_', () => {
      const buildTime = { MCP_PROXY_VERSION: 'latest', MCP_PROXY_DOWNLOAD_METHOD: 'git', MCP_PROXY_GIT_REF: 'main' };
      const warnings = warningsOf({ ...buildTime, BRANDING_TITEL: 'x' });
      expect(warnings).not.to.include('MCP_PROXY_');
      expect(warnings).to.include('BRANDING_TITEL is set but is not a variable this proxy reads: a typo?');
    });
  });
});
