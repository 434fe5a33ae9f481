import { join, resolve } from 'node:path';
import { expect } from 'chai';
import { loadConfig } from '../lib/config/index.ts';
import { fixture, production, useConfigFixture } from './helpers/config-env.ts';
import { expectProblem, problemsOf } from './helpers/config-problems.ts';

describe('configuration: MCP server', () => {
  useConfigFixture();

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

    for (const path of ['/.well-known/mcp', '/token', '/auth', '/reg', '/interaction/x', '/session', '/Token']) {
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

    it('refuses MCP_SERVER_RUN_ENV_JSON that is not a JSON object', () => {
      for (const value of ['not json', '["A=1"]', 'null', '"PORT=3000"']) {
        expectProblem(
          production({ MCP_SERVER_RUN_ENV_JSON: value }),
          'MCP_SERVER_RUN_ENV_JSON',
          /must be a JSON object/,
        );
      }
    });

    it('turns numbers and booleans in MCP_SERVER_RUN_ENV_JSON into text, as the Heroku README writes them', () => {
      const env = production({ MCP_SERVER_RUN_ENV_JSON: '{"PORT":3000,"RATIO":0.5,"DEBUG":true,"NAME":"x"}' });
      expect(loadConfig(env).mcp.run?.env).to.deep.equal({ PORT: '3000', RATIO: '0.5', DEBUG: 'true', NAME: 'x' });
    });

    const badValues: [string, RegExp][] = [
      ['{"A":null}', /value of A must be a string, number or boolean, not null/],
      ['{"A":{"b":1}}', /value of A must be a string, number or boolean, not an object/],
      ['{"A":[1]}', /value of A must be a string, number or boolean, not an array/],
      ['{"A":"x\\u0000y"}', /value of A must not contain a NUL character/],
      ['{"A=B":"1"}', /"A=B" is not a usable environment variable name/],
      ['{"":"1"}', /"" is not a usable environment variable name/],
    ];
    for (const [value, pattern] of badValues) {
      it(`refuses MCP_SERVER_RUN_ENV_JSON ${value}`, () => {
        expectProblem(production({ MCP_SERVER_RUN_ENV_JSON: value }), 'MCP_SERVER_RUN_ENV_JSON', pattern);
      });
    }

    it('reports every bad MCP_SERVER_RUN_ENV_JSON entry, never quoting a value', () => {
      const problems = problemsOf(production({ MCP_SERVER_RUN_ENV_JSON: '{"A":null,"B":["secret-value"],"C":"ok"}' }));
      const envProblems = problems.filter((p) => p.variable === 'MCP_SERVER_RUN_ENV_JSON');
      expect(envProblems).to.have.length(2);
      expect(JSON.stringify(problems)).not.to.include('secret-value');
    });

    describe('MCP_SERVER_RUN_COMMAND as a shell command line', () => {
      const line = 'cd /app && PORT=3000 npm start';

      it('runs a command line through /bin/sh -c when MCP_SERVER_RUN_ARGS_JSON is unset', () => {
        const run = loadConfig(production({ MCP_SERVER_RUN_COMMAND: line, MCP_SERVER_RUN_ARGS_JSON: undefined })).mcp
          .run;
        expect(run).to.deep.include({ command: '/bin/sh', args: ['-c', line], shell: true });
      });

      it('runs a plain program name or path directly, with or without arguments', () => {
        for (const command of ['npm', 'node', '/usr/local/bin/mcp-server', './bin/server.js']) {
          const noArgs = loadConfig(
            production({ MCP_SERVER_RUN_COMMAND: command, MCP_SERVER_RUN_ARGS_JSON: undefined }),
          );
          expect(noArgs.mcp.run).to.deep.include({ command, args: [], shell: false });
        }
        const withArgs = loadConfig(
          production({ MCP_SERVER_RUN_COMMAND: 'npm', MCP_SERVER_RUN_ARGS_JSON: '["start"]' }),
        );
        expect(withArgs.mcp.run).to.deep.include({ command: 'npm', args: ['start'], shell: false });
      });

      it('never involves a shell when MCP_SERVER_RUN_ARGS_JSON is set, whatever the command looks like', () => {
        const run = loadConfig(
          production({ MCP_SERVER_RUN_COMMAND: '/opt/my server/run', MCP_SERVER_RUN_ARGS_JSON: '["a && b"]' }),
        ).mcp.run;
        expect(run).to.deep.include({ command: '/opt/my server/run', args: ['a && b'], shell: false });
      });
    });
    it('resolves a relative MCP_SERVER_RUN_DIR against the working directory', () => {
      const env = production({ MCP_SERVER_RUN_DIR: 'server' });
      expect(loadConfig(env, fixture.tmp).mcp.run?.cwd).to.equal(join(fixture.tmp, 'server'));
      expect(loadConfig(production({ MCP_SERVER_RUN_DIR: 'test' })).mcp.run?.cwd).to.equal(
        resolve(process.cwd(), 'test'),
      );
    });

    it('refuses a MCP_SERVER_RUN_DIR that is missing or not a directory', () => {
      const problems = problemsOf(production({ MCP_SERVER_RUN_DIR: 'nowhere' }), fixture.tmp);
      expect(problems[0]?.problem).to.include(join(fixture.tmp, 'nowhere'));
      expectProblem(
        production({ MCP_SERVER_RUN_DIR: fixture.metadataFile }),
        'MCP_SERVER_RUN_DIR',
        /existing directory/,
      );
    });
  });
});
