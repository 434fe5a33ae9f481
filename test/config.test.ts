import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { ConfigError, loadConfig, type ConfigProblem } from '../lib/config/index.ts';
import { VARIABLES, renderVariablesMarkdown } from '../lib/config/variables.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function privateJwk(
  type: 'ec' | 'rsa' | 'ed25519',
  options: object = { namedCurve: 'P-256' },
): Record<string, unknown> {
  const { privateKey } =
    type === 'ec'
      ? generateKeyPairSync('ec', options as { namedCurve: string })
      : type === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ed25519');
  return privateKey.export({ format: 'jwk' }) as Record<string, unknown>;
}

const EC_KEY: Record<string, unknown> = { ...privateJwk('ec'), kid: 'signing-1' };
const JWKS = JSON.stringify({ keys: [EC_KEY] });

let tmp: string;
let metadataFile: string;

/** A complete, valid production environment; tests break one thing at a time. */
function production(overrides: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    NODE_ENV: 'production',
    PORT: '5000',
    BASE_URL: 'https://proxy.example.com/',
    MCP_SERVER_URL: 'http://127.0.0.1:8080/mcp',
    MCP_SERVER_RUN_COMMAND: 'node',
    MCP_SERVER_RUN_ARGS_JSON: '["server.js", "--stdio=false"]',
    MCP_SERVER_RUN_DIR: tmp,
    MCP_SERVER_RUN_ENV_JSON: '{"PORT":"8080","MODE":"remote"}',
    MCP_AUTH_PROXY_REDIS_URL: 'rediss://:redis-password@redis.example.com:6380',
    OIDC_PROVIDER_JWKS: JWKS,
    IDENTITY_SERVER_URL: 'https://idp.example.com',
    IDENTITY_CLIENT_ID: 'proxy-client',
    IDENTITY_CLIENT_SECRET: 'client-secret',
    ...overrides,
  };
}

/** The problems loadConfig reports; fails the test when it does not throw. */
function problemsOf(env: NodeJS.ProcessEnv, cwd?: string): readonly ConfigProblem[] {
  try {
    loadConfig(env, cwd);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  expect.fail('loadConfig accepted an invalid environment');
}

function messageOf(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  expect.fail('loadConfig accepted an invalid environment');
}

/** Asserts a problem on `variable` whose text matches `pattern`. */
function expectProblem(env: NodeJS.ProcessEnv, variable: string, pattern: RegExp): void {
  const problems = problemsOf(env);
  const matching = problems.filter((p) => p.variable === variable && pattern.test(p.problem));
  expect(matching, JSON.stringify(problems, null, 2)).to.have.length.greaterThan(0);
}

describe('configuration', () => {
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'config-test-'));
    mkdirSync(join(tmp, 'server'));
    mkdirSync(join(tmp, 'views'));
    metadataFile = join(tmp, 'metadata.json');
    writeFileSync(
      metadataFile,
      JSON.stringify({
        issuer: 'https://github.com',
        authorization_endpoint: 'https://github.com/login/oauth/authorize',
        token_endpoint: 'https://github.com/login/oauth/access_token',
      }),
    );
  });

  after(() => rmSync(tmp, { recursive: true, force: true }));

  describe('a valid production environment', () => {
    it('parses to the expected Config with no warnings', () => {
      const config = loadConfig(production({ OIDC_PROVIDER_VIEWS_PATH: join(tmp, 'views') }));
      expect(config).to.deep.equal({
        mode: 'production',
        baseUrl: 'https://proxy.example.com',
        port: 5000,
        localInsecure: false,
        mcp: {
          serverUrl: new URL('http://127.0.0.1:8080/mcp'),
          resourceUrl: 'https://proxy.example.com/mcp',
          path: '/mcp',
          run: {
            command: 'node',
            args: ['server.js', '--stdio=false'],
            cwd: tmp,
            env: { PORT: '8080', MODE: 'remote' },
          },
          example: false,
        },
        redis: {
          url: 'rediss://:redis-password@redis.example.com:6380',
          keyPrefix: 'mcp-auth-proxy:',
          tlsRejectUnauthorized: false,
        },
        provider: {
          jwks: { keys: [EC_KEY] },
          viewsPath: join(tmp, 'views'),
          scopes: ['openid', 'offline_access'],
        },
        identity: {
          serverUrl: new URL('https://idp.example.com'),
          metadataFile: undefined,
          clientId: 'proxy-client',
          clientSecret: 'client-secret',
          scope: 'openid',
        },
        proxy: { maxBodyBytes: 4194304, allowedOrigins: [] },
        cimd: { allowedHosts: [] },
        telemetry: { otlpEndpoint: undefined, serviceName: 'mcp-remote-auth-proxy' },
        verifyRelease: false,
        shutdownTimeoutMs: 25_000,
        warnings: [],
      });
      expect(config.mcp.serverUrl.href).to.equal('http://127.0.0.1:8080/mcp');
    });

    it('accepts an already-running MCP server: MCP_SERVER_URL without a command', () => {
      const config = loadConfig(
        production({
          MCP_SERVER_URL: 'https://mcp.internal.example.com/api/mcp/',
          MCP_SERVER_RUN_COMMAND: undefined,
          MCP_SERVER_RUN_ARGS_JSON: undefined,
          MCP_SERVER_RUN_DIR: undefined,
          MCP_SERVER_RUN_ENV_JSON: undefined,
        }),
      );
      expect(config.mcp.run).to.equal(undefined);
      expect(config.mcp.path).to.equal('/api/mcp');
      expect(config.mcp.resourceUrl).to.equal('https://proxy.example.com/api/mcp');
    });

    it('refuses a path in BASE_URL: every endpoint is served at the root of the host', () => {
      expect(() => loadConfig(production({ BASE_URL: 'https://example.com/tools/proxy/' }))).to.throw(
        ConfigError,
        'BASE_URL: must be an origin without a path',
      );
      expect(loadConfig(production({ BASE_URL: 'https://example.com/' })).mcp.resourceUrl).to.equal(
        'https://example.com/mcp',
      );
    });

    it('normalises BASE_URL so the issuer is byte-identical everywhere (R1, R9)', () => {
      expect(loadConfig(production({ BASE_URL: 'https://Proxy.Example.COM:443' })).baseUrl).to.equal(
        'https://proxy.example.com',
      );
    });
  });

  describe('development with an empty environment', () => {
    it('uses every fallback and warns about each', () => {
      const config = loadConfig({});
      const exampleServer = fileURLToPath(new URL('../lib/dev/example-mcp-server.ts', import.meta.url));
      expect(config).to.deep.equal({
        mode: 'development',
        baseUrl: 'http://localhost:3000',
        port: 3000,
        localInsecure: false,
        mcp: {
          serverUrl: new URL('http://127.0.0.1:3001/mcp'),
          resourceUrl: 'http://localhost:3000/mcp',
          path: '/mcp',
          run: {
            command: process.execPath,
            args: ['--import', 'tsx', exampleServer],
            cwd: undefined,
            env: { PORT: '3001' },
          },
          example: true,
        },
        redis: undefined,
        provider: { jwks: undefined, viewsPath: undefined, scopes: ['openid', 'offline_access'] },
        identity: undefined,
        proxy: { maxBodyBytes: 4194304, allowedOrigins: [] },
        cimd: { allowedHosts: [] },
        telemetry: { otlpEndpoint: undefined, serviceName: 'mcp-remote-auth-proxy' },
        verifyRelease: false,
        shutdownTimeoutMs: 25_000,
        warnings: config.warnings,
      });
      expect(config.mcp.serverUrl.href).to.equal('http://127.0.0.1:3001/mcp');
      const warnings = config.warnings.join('\n');
      expect(warnings).to.include('using the example MCP server');
      expect(warnings).to.include('in-memory store');
      expect(warnings).to.include('ephemeral key');
      expect(warnings).to.include('embedded development identity provider');
      expect(config.warnings).to.have.length(4);
    });

    it('treats an empty value as unset', () => {
      expect(loadConfig({ PORT: '', BASE_URL: '', LOCAL_INSECURE: '' }).baseUrl).to.equal('http://localhost:3000');
    });

    it('puts the example MCP server on PORT+1, or 3001 when PORT+1 is not a usable port', () => {
      const portOf = (port: string) => loadConfig({ PORT: port }).mcp.run?.env.PORT;
      expect(portOf('4000')).to.equal('4001');
      expect(portOf('65535')).to.equal('3001');
      expect(portOf('0')).to.equal('3001');
    });

    it('NODE_ENV is production, development or test; a misspelling is refused, not guessed', () => {
      expect(loadConfig({ NODE_ENV: 'test' }).mode).to.equal('development');
      expect(loadConfig({ NODE_ENV: 'development' }).mode).to.equal('development');
      expect(() => loadConfig({ NODE_ENV: 'prod' })).to.throw(
        ConfigError,
        'NODE_ENV: must be production, development or test',
      );
    });

    it('refuses development mode on a Heroku dyno', () => {
      expect(() => loadConfig({ DYNO: 'web.1' })).to.throw(
        ConfigError,
        'NODE_ENV: must be production on a Heroku dyno',
      );
      expect(loadConfig(production({ DYNO: 'web.1' })).mode).to.equal('production');
    });
  });

  describe('reporting', () => {
    it('reports every problem of a thoroughly broken production environment at once', () => {
      const env: NodeJS.ProcessEnv = {
        NODE_ENV: 'production',
        PORT: 'eighty',
        BASE_URL: 'http://proxy.example.com',
        LOCAL_INSECURE: 'yes',
        MCP_SERVER_URL: 'not a url',
        MCP_SERVER_RUN_COMMAND: 'node',
        MCP_SERVER_RUN_ARGS_JSON: '{"not":"an array"}',
        REDIS_URL: 'http://redis.example.com',
        OIDC_PROVIDER_JWKS: '{"keys":[]}',
        PROVIDER_SCOPE: 'offline_access',
        IDENTITY_CLIENT_ID: 'proxy-client',
        MCP_PROXY_MAX_BODY_BYTES: '12',
        MCP_PROXY_ALLOWED_ORIGINS: 'https://ok.example.com,https://bad.example.com/path',
        OTEL_EXPORTER_OTLP_ENDPOINT: 'otlp',
      };
      let error: unknown;
      try {
        loadConfig(env);
      } catch (caught) {
        error = caught;
      }
      expect(error).to.be.instanceOf(ConfigError);
      const { code, problems, message } = error as ConfigError;
      expect(code).to.equal('CONFIG_INVALID');
      const variables = [
        'PORT',
        'BASE_URL',
        'LOCAL_INSECURE',
        'MCP_SERVER_URL',
        'MCP_SERVER_RUN_ARGS_JSON',
        'REDIS_URL',
        'OIDC_PROVIDER_JWKS',
        'PROVIDER_SCOPE',
        'IDENTITY_SERVER_URL',
        'MCP_PROXY_MAX_BODY_BYTES',
        'MCP_PROXY_ALLOWED_ORIGINS',
        'OTEL_EXPORTER_OTLP_ENDPOINT',
      ];
      expect(problems.map((p) => p.variable)).to.have.members(variables);
      expect(problems).to.have.length(variables.length);
      const lines = message.split('\n');
      expect(lines[0]).to.equal(`Invalid configuration, ${variables.length} problems:`);
      for (const variable of variables) {
        expect(lines.some((line) => line.startsWith(`${variable}: `))).to.equal(true, variable);
      }
    });

    it('writes one line per problem: variable, problem, example', () => {
      const message = messageOf({ MCP_SERVER_URL: 'mcp' });
      expect(message.split('\n')).to.deep.equal([
        'Invalid configuration, 1 problem:',
        'MCP_SERVER_URL: must be an absolute http(s) URL (example: http://127.0.0.1:8080/mcp)',
      ]);
    });

    it('lists each problem with a variable, a problem and an example', () => {
      for (const problem of problemsOf(production({ PORT: 'x', BASE_URL: 'y' }))) {
        expect(problem.variable).to.match(/^[A-Z_]+$/);
        expect(problem.problem).to.be.a('string').and.not.equal('');
        expect(problem.example).to.be.a('string').and.not.equal('');
      }
    });

    it('refuses values with surrounding whitespace (a copy-paste accident)', () => {
      expectProblem({ BASE_URL: 'http://localhost:3000 ' }, 'BASE_URL', /whitespace/);
    });

    it('warns about unknown variables under our prefixes, which are most likely typos', () => {
      const warnings = loadConfig({ MCP_SERVER_RUN_ARG_JSON: '[]' }).warnings.join('\n');
      expect(warnings).to.include('MCP_SERVER_RUN_ARG_JSON is set but is not a variable');
    });
  });

  describe('PORT', () => {
    it('defaults to 3000 and accepts 0 to 65535', () => {
      expect(loadConfig({}).port).to.equal(3000);
      expect(loadConfig({ PORT: '0' }).port).to.equal(0);
      expect(loadConfig({ PORT: '65535' }).port).to.equal(65535);
    });

    for (const value of ['65536', '-1', '80.5', '0x50', 'eighty', '1e3']) {
      it(`refuses ${value}`, () => expectProblem({ PORT: value }, 'PORT', /integer from 0 to 65535/));
    }
  });

  describe('BASE_URL', () => {
    it('is required in production', () => {
      expectProblem(production({ BASE_URL: undefined }), 'BASE_URL', /required in production/);
    });

    it('defaults to http://localhost:$PORT in development', () => {
      expect(loadConfig({ PORT: '4321' }).baseUrl).to.equal('http://localhost:4321');
    });

    it('must use https in production (R18)', () => {
      expectProblem(production({ BASE_URL: 'http://proxy.example.com' }), 'BASE_URL', /https/);
      expectProblem(production({ BASE_URL: 'http://localhost:5000' }), 'BASE_URL', /https/);
    });

    it('warns about plain http on a non-loopback host in development', () => {
      const config = loadConfig({ BASE_URL: 'http://192.168.1.10:3000' });
      expect(config.warnings.join('\n')).to.include('BASE_URL is plain http');
      expect(loadConfig({ BASE_URL: 'http://127.0.0.1:3000' }).warnings.join('\n')).not.to.include('BASE_URL');
    });

    const bad: [string, RegExp][] = [
      ['proxy.example.com', /absolute http\(s\) URL/],
      ['ftp://proxy.example.com', /absolute http\(s\) URL/],
      ['https://proxy.example.com/?a=1', /query or fragment/],
      ['https://proxy.example.com/#top', /query or fragment/],
      ['https://user:pass@proxy.example.com', /credentials/],
    ];
    for (const [value, pattern] of bad) {
      it(`refuses ${value}`, () => expectProblem({ BASE_URL: value }, 'BASE_URL', pattern));
    }
  });

  describe('LOCAL_INSECURE', () => {
    it('is refused in production', () => {
      expectProblem(production({ LOCAL_INSECURE: 'true' }), 'LOCAL_INSECURE', /production/);
      expect(loadConfig(production({ LOCAL_INSECURE: 'false' })).localInsecure).to.equal(false);
    });

    it('is loud when true in development', () => {
      const config = loadConfig({ LOCAL_INSECURE: 'true' });
      expect(config.localInsecure).to.equal(true);
      expect(config.warnings.join('\n')).to.include('LOCAL_INSECURE=true');
    });

    for (const value of ['yes', '1', 'TRUE', 'on']) {
      it(`refuses ${value}`, () => {
        expectProblem({ LOCAL_INSECURE: value }, 'LOCAL_INSECURE', /true or false/);
      });
    }
  });

  describe('LOG_LEVEL', () => {
    it('accepts the four levels and refuses others', () => {
      for (const level of ['debug', 'info', 'warn', 'error']) loadConfig({ LOG_LEVEL: level });
      expectProblem({ LOG_LEVEL: 'verbose' }, 'LOG_LEVEL', /one of debug, info, warn, error/);
    });
  });

  describe('MCP server', () => {
    it('requires MCP_SERVER_URL and MCP_SERVER_RUN_COMMAND in production', () => {
      const problems = problemsOf(production({ MCP_SERVER_URL: undefined, MCP_SERVER_RUN_COMMAND: undefined }));
      expect(problems.map((p) => p.variable)).to.include.members(['MCP_SERVER_URL', 'MCP_SERVER_RUN_COMMAND']);
    });

    it('requires MCP_SERVER_URL when a command is given: where the server listens', () => {
      expectProblem({ MCP_SERVER_RUN_COMMAND: 'node' }, 'MCP_SERVER_URL', /required when/);
    });

    for (const name of ['MCP_SERVER_RUN_ARGS_JSON', 'MCP_SERVER_RUN_DIR', 'MCP_SERVER_RUN_ENV_JSON']) {
      it(`refuses ${name} without MCP_SERVER_RUN_COMMAND`, () => {
        const value = name === 'MCP_SERVER_RUN_DIR' ? '.' : name.endsWith('ARGS_JSON') ? '[]' : '{}';
        expectProblem({ [name]: value }, name, /MCP_SERVER_RUN_COMMAND is not/);
        expectProblem(
          { [name]: value, MCP_SERVER_URL: 'http://127.0.0.1:8080/mcp' },
          name,
          /MCP_SERVER_RUN_COMMAND is not/,
        );
      });
    }

    it('takes the MCP path from the URL, without a trailing slash', () => {
      const config = loadConfig({ MCP_SERVER_URL: 'http://127.0.0.1:8080/v1/mcp/' });
      expect(config.mcp.path).to.equal('/v1/mcp');
      expect(config.mcp.resourceUrl).to.equal('http://localhost:3000/v1/mcp');
      expect(config.mcp.example).to.equal(false);
      expect(config.mcp.run).to.equal(undefined);
    });

    it('refuses a URL without an endpoint path', () => {
      expectProblem({ MCP_SERVER_URL: 'http://127.0.0.1:8080/' }, 'MCP_SERVER_URL', /path/);
      expectProblem({ MCP_SERVER_URL: 'http://127.0.0.1:8080' }, 'MCP_SERVER_URL', /path/);
    });

    for (const path of ['/.well-known/mcp', '/token', '/auth', '/reg', '/interaction/x', '/session']) {
      it(`refuses the proxy's own path ${path}`, () => {
        expectProblem(
          { MCP_SERVER_URL: `http://127.0.0.1:8080${path}` },
          'MCP_SERVER_URL',
          /collides with the proxy's own/,
        );
      });
    }

    it('allows a path that merely starts like one of ours', () => {
      expect(loadConfig({ MCP_SERVER_URL: 'http://127.0.0.1:8080/authz' }).mcp.path).to.equal('/authz');
    });

    for (const host of ['127.0.0.1', 'localhost', '[::1]', '0.0.0.0']) {
      it(`refuses ${host} on the proxy's own PORT`, () => {
        expectProblem(
          { PORT: '3000', MCP_SERVER_URL: `http://${host}:3000/mcp` },
          'MCP_SERVER_URL',
          /the proxy itself/,
        );
      });
    }

    it('refuses the default port 80 when PORT is 80', () => {
      expectProblem({ PORT: '80', MCP_SERVER_URL: 'http://localhost/mcp' }, 'MCP_SERVER_URL', /the proxy itself/);
    });

    it('refuses a URL under the proxy’s public BASE_URL: requests would loop', () => {
      expectProblem(
        production({ MCP_SERVER_URL: 'https://proxy.example.com/mcp' }),
        'MCP_SERVER_URL',
        /own public URL/,
      );
    });

    it('warns about plain http to a non-loopback MCP server', () => {
      const config = loadConfig({ MCP_SERVER_URL: 'http://mcp.internal:8080/mcp' });
      expect(config.warnings.join('\n')).to.include('upstream tokens travel unencrypted');
    });

    it('refuses MCP_SERVER_RUN_ARGS_JSON that is not a JSON array of strings', () => {
      for (const value of ['not json', '{"a":1}', '["ok", 1]', '"server.js"']) {
        expectProblem(
          production({ MCP_SERVER_RUN_ARGS_JSON: value }),
          'MCP_SERVER_RUN_ARGS_JSON',
          /JSON array of strings/,
        );
      }
    });

    it('refuses MCP_SERVER_RUN_ENV_JSON that is not a JSON object of strings', () => {
      for (const value of ['not json', '["A=1"]', '{"A":1}', '{"A=B":"1"}', 'null']) {
        expectProblem(
          production({ MCP_SERVER_RUN_ENV_JSON: value }),
          'MCP_SERVER_RUN_ENV_JSON',
          /JSON object of string values/,
        );
      }
    });

    it('resolves a relative MCP_SERVER_RUN_DIR against the working directory', () => {
      const env = production({ MCP_SERVER_RUN_DIR: 'server' });
      expect(loadConfig(env, tmp).mcp.run?.cwd).to.equal(join(tmp, 'server'));
      expect(loadConfig(production({ MCP_SERVER_RUN_DIR: 'test' })).mcp.run?.cwd).to.equal(
        resolve(process.cwd(), 'test'),
      );
    });

    it('refuses a MCP_SERVER_RUN_DIR that is missing or not a directory', () => {
      const problems = problemsOf(production({ MCP_SERVER_RUN_DIR: 'nowhere' }), tmp);
      expect(problems[0]?.problem).to.include(join(tmp, 'nowhere'));
      expectProblem(production({ MCP_SERVER_RUN_DIR: metadataFile }), 'MCP_SERVER_RUN_DIR', /existing directory/);
    });
  });

  describe('Redis', () => {
    it('is required in production', () => {
      expectProblem(
        production({ MCP_AUTH_PROXY_REDIS_URL: undefined }),
        'MCP_AUTH_PROXY_REDIS_URL',
        /required in production/,
      );
    });

    it('falls back to REDIS_URL, which Heroku Key-Value Store sets', () => {
      const env = production({
        MCP_AUTH_PROXY_REDIS_URL: undefined,
        REDIS_URL: 'rediss://:p@heroku-kv.example.com:6379',
      });
      expect(loadConfig(env).redis?.url).to.equal('rediss://:p@heroku-kv.example.com:6379');
    });

    it('prefers MCP_AUTH_PROXY_REDIS_URL over REDIS_URL', () => {
      const env = production({ REDIS_URL: 'redis://other.example.com:6379' });
      expect(loadConfig(env).redis?.url).to.equal('rediss://:redis-password@redis.example.com:6380');
    });

    it('refuses other schemes, naming the variable used and never quoting the password', () => {
      const env = production({
        MCP_AUTH_PROXY_REDIS_URL: undefined,
        REDIS_URL: 'http://:hunter2-redis@redis.example.com',
      });
      expectProblem(env, 'REDIS_URL', /redis:\/\/ or rediss:\/\//);
      expect(messageOf(env)).not.to.include('hunter2');
      expectProblem(
        production({ MCP_AUTH_PROXY_REDIS_URL: 'redis.example.com:6379' }),
        'MCP_AUTH_PROXY_REDIS_URL',
        /redis:\/\//,
      );
    });

    it('uses the in-memory store in development, with a warning', () => {
      const config = loadConfig({});
      expect(config.redis).to.equal(undefined);
      expect(config.warnings.join('\n')).to.include('in-memory store');
    });

    it('takes a key prefix and refuses one with spaces', () => {
      expect(loadConfig(production({ MCP_AUTH_PROXY_REDIS_KEY_PREFIX: 'app-2:' })).redis?.keyPrefix).to.equal('app-2:');
      expectProblem(
        production({ MCP_AUTH_PROXY_REDIS_KEY_PREFIX: 'my app:' }),
        'MCP_AUTH_PROXY_REDIS_KEY_PREFIX',
        /printable ASCII/,
      );
    });

    it('verifies TLS only when REDIS_TLS_REJECT_UNAUTHORIZED=true, refusing other values', () => {
      const env = production({ REDIS_TLS_REJECT_UNAUTHORIZED: 'true' });
      expect(loadConfig(env).redis?.tlsRejectUnauthorized).to.equal(true);
      expectProblem(
        production({ REDIS_TLS_REJECT_UNAUTHORIZED: 'no' }),
        'REDIS_TLS_REJECT_UNAUTHORIZED',
        /true or false/,
      );
    });
  });

  describe('OIDC_PROVIDER_JWKS', () => {
    const jwks = (...keys: unknown[]) => JSON.stringify({ keys });

    it('is required in production', () => {
      expectProblem(production({ OIDC_PROVIDER_JWKS: undefined }), 'OIDC_PROVIDER_JWKS', /required/);
    });

    it('accepts RSA and Ed25519 signing keys, also pasted over several lines', () => {
      const value = JSON.stringify({ keys: [privateJwk('rsa'), privateJwk('ed25519')] }, null, 2);
      expect(loadConfig({ OIDC_PROVIDER_JWKS: `\n${value}\n` }).provider.jwks?.keys).to.have.length(2);
    });

    const bad: [string, string, RegExp][] = [
      ['invalid JSON', '{"keys":[', /not valid JSON/],
      ['a bare key', JSON.stringify(EC_KEY), /\{"keys":\[…\]\}/],
      ['an empty set', jwks(), /at least one key/],
      ['a non-object key', jwks('key'), /key 1 is not a JSON object/],
      ['a symmetric key', jwks({ kty: 'oct', k: 'c2VjcmV0' }), /kty must be RSA, EC or OKP/],
      ['a public key', jwks({ ...EC_KEY, d: undefined }), /public key/],
      ['broken key material', jwks({ ...EC_KEY, x: 'AAAA' }), /not a valid private EC key/],
      ['only an encryption key', jwks({ ...EC_KEY, use: 'enc' }), /no signing key/],
      ['only a P-384 key', jwks(privateJwk('ec', { namedCurve: 'P-384' })), /no signing key/],
      ['only an RSA-OAEP key', jwks({ ...privateJwk('rsa'), alg: 'RSA-OAEP' }), /no signing key/],
    ];
    for (const [label, value, pattern] of bad) {
      it(`refuses ${label}`, () => expectProblem({ OIDC_PROVIDER_JWKS: value }, 'OIDC_PROVIDER_JWKS', pattern));
    }

    it('never echoes the key material in an error message, not even a fragment', () => {
      const d = EC_KEY.d as string;
      const secretValues = [
        // V8's JSON.parse message quotes the text around an unexpected token, here the key.
        `{"keys":[{"kty":"EC","d":${d}}]}`,
        `{"keys":[{"kty":"EC","d":"${d}"`,
        `{"keys":[{"kty":"EC","d":"${d}"}]}`,
        jwks({ ...EC_KEY, x: 'AAAA' }),
        jwks({ ...EC_KEY, use: 'enc' }),
        jwks({ kty: 'oct', k: d }),
        `[${JWKS}]`,
        `${JWKS} trailing`,
      ];
      for (const value of secretValues) {
        const message = messageOf(production({ OIDC_PROVIDER_JWKS: value }));
        expect(message).to.include('OIDC_PROVIDER_JWKS');
        for (let i = 0; i + 8 <= d.length; i++) expect(message).not.to.include(d.slice(i, i + 8));
      }
    });
  });

  describe('OIDC_PROVIDER_VIEWS_PATH', () => {
    it('must be an absolute path of an existing directory', () => {
      expectProblem({ OIDC_PROVIDER_VIEWS_PATH: 'views' }, 'OIDC_PROVIDER_VIEWS_PATH', /absolute/);
      expectProblem(
        { OIDC_PROVIDER_VIEWS_PATH: join(tmp, 'missing') },
        'OIDC_PROVIDER_VIEWS_PATH',
        /existing directory/,
      );
      expectProblem({ OIDC_PROVIDER_VIEWS_PATH: metadataFile }, 'OIDC_PROVIDER_VIEWS_PATH', /existing directory/);
    });
  });

  describe('PROVIDER_SCOPE', () => {
    it('splits on spaces and drops duplicates', () => {
      const config = loadConfig({ PROVIDER_SCOPE: 'openid  profile openid offline_access' });
      expect(config.provider.scopes).to.deep.equal(['openid', 'profile', 'offline_access']);
    });

    it('must include openid', () => {
      expectProblem({ PROVIDER_SCOPE: 'profile offline_access' }, 'PROVIDER_SCOPE', /include openid/);
    });

    for (const token of ['"quoted"', 'back\\slash', 'tab\there', 'café']) {
      it(`refuses the scope token ${JSON.stringify(token)} (RFC 6749 §3.3)`, () => {
        expectProblem({ PROVIDER_SCOPE: `openid ${token}` }, 'PROVIDER_SCOPE', /RFC 6749 §3.3/);
      });
    }
  });

  describe('identity provider', () => {
    const identityOnly = {
      IDENTITY_SERVER_URL: undefined,
      IDENTITY_CLIENT_ID: undefined,
      IDENTITY_CLIENT_SECRET: undefined,
    };

    it('is required in production', () => {
      const problems = problemsOf(production(identityOnly));
      expect(problems.map((p) => p.variable)).to.have.members(['IDENTITY_SERVER_URL', 'IDENTITY_CLIENT_ID']);
    });

    it('falls back to the embedded development identity provider only when no IDENTITY_* is set', () => {
      expect(loadConfig({}).identity).to.equal(undefined);
    });

    it('refuses a partial set in development too', () => {
      expectProblem({ IDENTITY_CLIENT_ID: 'c' }, 'IDENTITY_SERVER_URL', /required/);
      expectProblem({ IDENTITY_SERVER_URL: 'https://idp.example.com' }, 'IDENTITY_CLIENT_ID', /required/);
      const problems = problemsOf({ IDENTITY_SCOPE: 'openid' });
      expect(problems.map((p) => p.variable)).to.have.members(['IDENTITY_SERVER_URL', 'IDENTITY_CLIENT_ID']);
    });

    it('takes exactly one of IDENTITY_SERVER_URL and IDENTITY_SERVER_METADATA_FILE', () => {
      expectProblem(
        production({ IDENTITY_SERVER_METADATA_FILE: metadataFile }),
        'IDENTITY_SERVER_METADATA_FILE',
        /exactly one/,
      );
    });

    it('accepts a public client without a secret, with its own scope', () => {
      const config = loadConfig(production({ IDENTITY_CLIENT_SECRET: undefined, IDENTITY_SCOPE: 'openid email' }));
      expect(config.identity?.clientSecret).to.equal(undefined);
      expect(config.identity?.scope).to.equal('openid email');
    });

    it('refuses an invalid IDENTITY_SCOPE', () => {
      expectProblem(production({ IDENTITY_SCOPE: 'openid "x"' }), 'IDENTITY_SCOPE', /RFC 6749/);
    });

    it('requires https, allowing plain http only for loopback with LOCAL_INSECURE=true', () => {
      const loopback = { IDENTITY_SERVER_URL: 'http://127.0.0.1:4000', IDENTITY_CLIENT_ID: 'c' };
      expectProblem(loopback, 'IDENTITY_SERVER_URL', /https/);
      const config = loadConfig({ ...loopback, LOCAL_INSECURE: 'true' });
      expect(config.identity?.serverUrl?.href).to.equal('http://127.0.0.1:4000/');
      expectProblem(
        {
          IDENTITY_SERVER_URL: 'http://idp.example.com',
          IDENTITY_CLIENT_ID: 'c',
          LOCAL_INSECURE: 'true',
        },
        'IDENTITY_SERVER_URL',
        /https/,
      );
      expectProblem(
        production({ IDENTITY_SERVER_URL: 'idp.example.com' }),
        'IDENTITY_SERVER_URL',
        /absolute http\(s\) URL/,
      );
    });

    it('reads a metadata file, resolving a relative path against the working directory', () => {
      const env = production({
        IDENTITY_SERVER_URL: undefined,
        IDENTITY_SERVER_METADATA_FILE: 'metadata.json',
        IDENTITY_SCOPE: 'read:user',
      });
      const identity = loadConfig(env, tmp).identity;
      expect(identity?.metadataFile).to.equal(metadataFile);
      expect(identity?.serverUrl).to.equal(undefined);
      expect(identity?.scope).to.equal('read:user');
    });

    const badMetadata: [string, string, RegExp][] = [
      ['not JSON', 'issuer: x', /not a JSON object/],
      ['an array', '[]', /not a JSON object/],
      [
        'no issuer',
        JSON.stringify({
          authorization_endpoint: 'https://a.example',
          token_endpoint: 'https://t.example',
        }),
        /no "issuer"/,
      ],
      [
        'no token endpoint',
        JSON.stringify({
          issuer: 'https://i.example',
          authorization_endpoint: 'https://a.example',
        }),
        /no "token_endpoint"/,
      ],
      [
        'a plain-http endpoint',
        JSON.stringify({
          issuer: 'https://i.example',
          authorization_endpoint: 'https://a.example',
          token_endpoint: 'http://t.example',
        }),
        /"token_endpoint" must use https/,
      ],
    ];
    for (const [label, content, pattern] of badMetadata) {
      it(`refuses a metadata file with ${label}`, () => {
        const file = join(tmp, `bad-${label.replaceAll(' ', '-')}.json`);
        writeFileSync(file, content);
        expectProblem(
          production({ IDENTITY_SERVER_URL: undefined, IDENTITY_SERVER_METADATA_FILE: file }),
          'IDENTITY_SERVER_METADATA_FILE',
          pattern,
        );
      });
    }

    it('refuses a metadata file that does not exist', () => {
      expectProblem(
        production({
          IDENTITY_SERVER_URL: undefined,
          IDENTITY_SERVER_METADATA_FILE: join(tmp, 'nope.json'),
        }),
        'IDENTITY_SERVER_METADATA_FILE',
        /cannot read .*nope\.json \(ENOENT\)/,
      );
    });
  });

  describe('MCP_PROXY_MAX_BODY_BYTES', () => {
    it('defaults to 4 MiB and accepts 1024 and more', () => {
      expect(loadConfig({}).proxy.maxBodyBytes).to.equal(4 * 1024 * 1024);
      expect(loadConfig({ MCP_PROXY_MAX_BODY_BYTES: '1024' }).proxy.maxBodyBytes).to.equal(1024);
    });

    for (const value of ['1023', '0', '-5', '4MB', '1e6', '99999999999999999999']) {
      it(`refuses ${value}`, () => {
        expectProblem({ MCP_PROXY_MAX_BODY_BYTES: value }, 'MCP_PROXY_MAX_BODY_BYTES', /at least 1024/);
      });
    }
  });

  describe('MCP_PROXY_ALLOWED_ORIGINS', () => {
    it('keeps serialised origins, as browsers send them in Origin', () => {
      const config = loadConfig({
        MCP_PROXY_ALLOWED_ORIGINS: 'https://App.Example.com:443/, http://localhost:5173,,https://app.example.com',
      });
      expect(config.proxy.allowedOrigins).to.deep.equal(['https://app.example.com', 'http://localhost:5173']);
    });

    for (const entry of [
      '*',
      'null',
      'app.example.com',
      'https://app.example.com/path',
      'https://app.example.com?x',
      'chrome-extension://abc',
      'https://u:p@app.example.com',
    ]) {
      it(`refuses ${entry} (R6 is an allow-list of origins)`, () => {
        expectProblem(
          { MCP_PROXY_ALLOWED_ORIGINS: `https://ok.example.com,${entry}` },
          'MCP_PROXY_ALLOWED_ORIGINS',
          /is not an origin/,
        );
      });
    }
  });

  describe('CIMD_ALLOWED_HOSTS', () => {
    it('is empty by default: any public host may serve a client metadata document', () => {
      expect(loadConfig({}).cimd).to.deep.equal({ allowedHosts: [] });
      expect(loadConfig(production()).cimd.allowedHosts).to.deep.equal([]);
    });

    it('keeps host names lower-cased, IDNs in punycode, without duplicates', () => {
      const config = loadConfig({
        CIMD_ALLOWED_HOSTS: 'Claude.AI, chatgpt.com,,claude.ai,münchen.example,localhost',
      });
      expect(config.cimd.allowedHosts).to.deep.equal([
        'claude.ai',
        'chatgpt.com',
        'xn--mnchen-3ya.example',
        'localhost',
      ]);
    });

    const refused: [string, RegExp][] = [
      ['https://claude.ai', /without scheme, port or path/],
      ['claude.ai:443', /without scheme, port or path/],
      ['claude.ai/oauth', /without scheme, port or path/],
      ['user@claude.ai', /without scheme, port or path/],
      ['[::1]', /without scheme, port or path/],
      ['*.example.com', /wildcard/],
      ['10.0.0.1', /IP address/],
      ['127.1', /IP address/],
      ['exa mple.com', /not a valid host name/],
      ['-bad.example.com', /not a valid host name/],
      ['example.com.', /not a valid host name/],
      ['under_score.example', /not a valid host name/],
    ];
    for (const [entry, pattern] of refused) {
      it(`refuses ${JSON.stringify(entry)}`, () => {
        expectProblem({ CIMD_ALLOWED_HOSTS: `claude.ai,${entry}` }, 'CIMD_ALLOWED_HOSTS', pattern);
      });
    }

    it('reports every bad entry at once', () => {
      const problems = problemsOf({ CIMD_ALLOWED_HOSTS: 'https://a.example,b.example:8443' });
      expect(problems.filter((p) => p.variable === 'CIMD_ALLOWED_HOSTS')).to.have.length(2);
    });

    it('warns about a misspelt CIMD_ variable', () => {
      const config = loadConfig({ CIMD_ALLOWED_HOST: 'claude.ai' });
      expect(config.warnings.join('\n')).to.contain('CIMD_ALLOWED_HOST is set but is not a variable');
    });
  });

  describe('telemetry', () => {
    it('has no endpoint by default and a default service name', () => {
      expect(loadConfig({}).telemetry).to.deep.equal({
        otlpEndpoint: undefined,
        serviceName: 'mcp-remote-auth-proxy',
      });
    });

    it('prefers the traces endpoint over the base endpoint', () => {
      const config = loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otlp.example.com',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example.com/v1/traces',
        OTEL_SERVICE_NAME: 'my-proxy',
      });
      expect(config.telemetry).to.deep.equal({
        otlpEndpoint: 'https://traces.example.com/v1/traces',
        serviceName: 'my-proxy',
      });
      expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'https://otlp.example.com' }).telemetry.otlpEndpoint).to.equal(
        'https://otlp.example.com',
      );
    });

    it('refuses endpoints that are not http(s) URLs', () => {
      expectProblem({ OTEL_EXPORTER_OTLP_ENDPOINT: 'grpc' }, 'OTEL_EXPORTER_OTLP_ENDPOINT', /http\(s\)/);
      expectProblem(
        { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'file:///tmp/x' },
        'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
        /http\(s\)/,
      );
    });
  });

  describe('documentation', () => {
    it('lib/config/VARIABLES.md is the rendered variable table', () => {
      const file = readFileSync(join(ROOT, 'lib/config/VARIABLES.md'), 'utf8');
      expect(file).to.equal(renderVariablesMarkdown());
    });

    it('the README documents every variable with the same table', () => {
      const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
      expect(readme).to.contain(renderVariablesMarkdown().trim());
    });

    it('.env.template shows every variable, commented out, with its documented example', () => {
      const template = readFileSync(join(ROOT, '.env.template'), 'utf8');
      const assignments = template.split('\n').filter((line) => /^[A-Z_]+=/.test(line));
      expect(assignments, 'values must be commented out').to.deep.equal([]);
      for (const variable of VARIABLES) {
        expect(template).to.include(`\n# ${variable.name}=${variable.example}\n`);
      }
    });

    it('.env.template shows exactly the documented variables', () => {
      const template = readFileSync(join(ROOT, '.env.template'), 'utf8');
      const shown = [...template.matchAll(/^# ([A-Z_]+)=/gm)].map((m) => m[1]);
      expect(shown).to.have.members(VARIABLES.map((v) => v.name));
    });
  });
});
