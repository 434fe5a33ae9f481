import { expect } from 'chai';
import { loadConfig } from '../lib/config/index.ts';
import { production, useConfigFixture } from './helpers/config-env.ts';
import { expectProblem, problemsOf } from './helpers/config-problems.ts';

describe('configuration: limits and CIMD', () => {
  useConfigFixture();

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
});
