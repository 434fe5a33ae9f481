import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { ConfigError, loadConfig } from '../lib/config/index.ts';
import { VARIABLES, renderVariablesMarkdown } from '../lib/config/variables.ts';
import { EC_KEY, fixture, production, UNSET_SETTINGS, useConfigFixture } from './helpers/config-env.ts';
import { expectProblem, messageOf, problemsOf } from './helpers/config-problems.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe('configuration', () => {
  useConfigFixture();

  describe('a valid production environment', () => {
    it('parses to the expected Config with no warnings', () => {
      const config = loadConfig(production({ OIDC_PROVIDER_VIEWS_PATH: join(fixture.tmp, 'views') }));
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
            shell: false,
            cwd: fixture.tmp,
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
          viewsPath: join(fixture.tmp, 'views'),
          scopes: ['openid', 'offline_access'],
        },
        identity: {
          serverUrl: new URL('https://idp.example.com'),
          metadataFile: undefined,
          clientId: 'proxy-client',
          clientSecret: 'client-secret',
          scope: 'openid',
        },
        ...UNSET_SETTINGS,
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
            shell: false,
            cwd: undefined,
            env: { PORT: '3001' },
          },
          example: true,
        },
        redis: undefined,
        provider: { jwks: undefined, viewsPath: undefined, scopes: ['openid', 'offline_access'] },
        identity: undefined,
        ...UNSET_SETTINGS,
        warnings: config.warnings,
      });
      expect(config.mcp.serverUrl.href).to.equal('http://127.0.0.1:3001/mcp');
      const warnings = config.warnings.join('\n');
      expect(warnings).to.include('using the example MCP server');
      expect(warnings).to.include('in-memory store');
      expect(warnings).to.include('development key');
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
        MCP_SERVER_RUN_ENV_JSON: '{"PORT":null}',
        MCP_AUTH_PROXY_REDIS_KEY_PREFIX: 'one:',
        MCP_AUTH_PROXY_REDIS_PREFIX: 'other:',
        IDENTITY_CALLBACK_PATH: 'callback',
        MAX_REQUESTS: '0',
        MAX_REQUESTS_WINDOW: '60',
        BRANDING_TITLE: 'tab\there',
        BRANDING_FAVICON: 'javascript:alert(1)',
        OTEL_SDK_DISABLED: 'maybe',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
        OTEL_EXPORTER_OTLP_HEADERS: 'no-equals-sign',
        OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '0',
        OTEL_BSP_SCHEDULE_DELAY: 'soon',
        MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: '30000',
        MCP_AUTH_PROXY_VERIFY_RELEASE: 'yes',
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
        'MCP_SERVER_RUN_ENV_JSON',
        'MCP_AUTH_PROXY_REDIS_PREFIX',
        'IDENTITY_CALLBACK_PATH',
        'MAX_REQUESTS',
        'MAX_REQUESTS_WINDOW',
        'BRANDING_TITLE',
        'BRANDING_FAVICON',
        'OTEL_SDK_DISABLED',
        'OTEL_EXPORTER_OTLP_PROTOCOL',
        'OTEL_EXPORTER_OTLP_HEADERS',
        'OTEL_BSP_MAX_EXPORT_BATCH_SIZE',
        'OTEL_BSP_SCHEDULE_DELAY',
        'MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS',
        'MCP_AUTH_PROXY_VERIFY_RELEASE',
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
