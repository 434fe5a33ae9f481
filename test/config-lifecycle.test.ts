import { expect } from 'chai';
import { loadConfig } from '../lib/config/index.ts';
import { production, useConfigFixture } from './helpers/config-env.ts';
import { expectProblem } from './helpers/config-problems.ts';

describe('configuration: process lifecycle', () => {
  useConfigFixture();

  describe('APP_NAME', () => {
    it('is taken as given, absent by default', () => {
      expect(loadConfig({}).appName).to.equal(undefined);
      expect(loadConfig(production({ APP_NAME: 'my-mcp-app' })).appName).to.equal('my-mcp-app');
    });
  });

  describe('MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS', () => {
    it('defaults to 25000 and accepts 0 to 29000', () => {
      expect(loadConfig({}).shutdownTimeoutMs).to.equal(25000);
      expect(loadConfig({ MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: '0' }).shutdownTimeoutMs).to.equal(0);
      expect(loadConfig({ MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: '29000' }).shutdownTimeoutMs).to.equal(29000);
    });

    for (const value of ['29001', '30000', '-1', '2.5', '25s', 'forever']) {
      it(`refuses ${value}, saying why 29000 is the limit`, () => {
        expectProblem(
          { MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS: value },
          'MCP_AUTH_PROXY_SHUTDOWN_TIMEOUT_MS',
          /integer from 0 to 29000 \(milliseconds\): Heroku kills the dyno with SIGKILL 30 s after SIGTERM/,
        );
      });
    }
  });

  describe('MCP_AUTH_PROXY_VERIFY_RELEASE', () => {
    it('is false by default and takes true or false', () => {
      expect(loadConfig({}).verifyRelease).to.equal(false);
      expect(loadConfig(production({ MCP_AUTH_PROXY_VERIFY_RELEASE: 'true' })).verifyRelease).to.equal(true);
      expect(loadConfig({ MCP_AUTH_PROXY_VERIFY_RELEASE: 'false' }).verifyRelease).to.equal(false);
    });

    it('refuses anything else', () => {
      expectProblem({ MCP_AUTH_PROXY_VERIFY_RELEASE: '1' }, 'MCP_AUTH_PROXY_VERIFY_RELEASE', /true or false/);
    });
  });
});
