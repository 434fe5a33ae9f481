import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import { loadConfig } from '../lib/config/index.ts';
import { fixture, production, useConfigFixture, writeHerokuIdentityMetadata } from './helpers/config-env.ts';
import { expectProblem, problemsOf } from './helpers/config-problems.ts';

describe('configuration: identity provider', () => {
  useConfigFixture();

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

    it('refuses IDENTITY_SERVER_URL and IDENTITY_SERVER_METADATA_FILE naming different providers', () => {
      expectProblem(
        production({ IDENTITY_SERVER_METADATA_FILE: fixture.metadataFile }),
        'IDENTITY_SERVER_METADATA_FILE',
        /names issuer https:\/\/github\.com, not IDENTITY_SERVER_URL .*set only one of them/,
      );
    });

    it('accepts both when they name the same issuer, as the Heroku proxy template sets them; the file is used', () => {
      // Heroku Identity's metadata writes its issuer with a trailing slash, the URL without.
      const file = writeHerokuIdentityMetadata('heroku-identity.json');
      const identity = loadConfig(
        production({
          IDENTITY_SERVER_URL: 'https://identity.example.com',
          IDENTITY_SERVER_METADATA_FILE: file,
          IDENTITY_SCOPE: 'global',
        }),
      ).identity;
      expect(identity?.metadataFile).to.equal(file);
      expect(identity?.serverUrl).to.equal(undefined);
      expect(identity?.scope).to.equal('global');
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
      const identity = loadConfig(env, fixture.tmp).identity;
      expect(identity?.metadataFile).to.equal(fixture.metadataFile);
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
        const file = join(fixture.tmp, `bad-${label.replaceAll(' ', '-')}.json`);
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
          IDENTITY_SERVER_METADATA_FILE: join(fixture.tmp, 'nope.json'),
        }),
        'IDENTITY_SERVER_METADATA_FILE',
        /cannot read .*nope\.json \(ENOENT\)/,
      );
    });
  });

  describe('IDENTITY_CALLBACK_PATH', () => {
    it('defaults to /interaction/identity/callback, the path the Heroku proxy registers', () => {
      expect(loadConfig({}).callbackPath).to.equal('/interaction/identity/callback');
      expect(loadConfig({ IDENTITY_CALLBACK_PATH: '/interaction/identity/callback' }).callbackPath).to.equal(
        '/interaction/identity/callback',
      );
    });

    it('takes another plain path, without a trailing slash', () => {
      expect(loadConfig({ IDENTITY_CALLBACK_PATH: '/oauth/callback/' }).callbackPath).to.equal('/oauth/callback');
      expect(loadConfig(production({ IDENTITY_CALLBACK_PATH: '/login/done' })).callbackPath).to.equal('/login/done');
    });

    const bad: [string, RegExp][] = [
      ['callback', /starting with a single \//],
      ['https://proxy.example.com/callback', /starting with a single \//],
      ['//evil.example.com/callback', /starting with a single \//],
      ['/callback?x=1', /without a query or fragment/],
      ['/callback#top', /without a query or fragment/],
      ['/call%2Fback', /plain URL characters/],
      ['/call back', /plain URL characters/],
      ['/a//b', /plain URL characters/],
      ['/', /plain URL characters/],
      ['/interaction/x/identity/callback', /collides with the proxy's own \/interaction routes/],
      ['/.well-known/callback', /collides with the proxy's own \/.well-known routes/],
      ['/auth', /collides with the proxy's own \/auth routes/],
      ['/token/callback', /collides with the proxy's own \/token routes/],
      ['/reg', /collides with the proxy's own \/reg routes/],
      ['/healthz', /collides with the proxy's own \/healthz routes/],
      ['/readyz/callback', /collides with the proxy's own \/readyz routes/],
      ['/mcp', /collides with the MCP endpoint \/mcp/],
      ['/mcp/callback', /collides with the MCP endpoint \/mcp/],
      // Express matches routes without regard to case.
      ['/Interaction/identity/done', /collides with the proxy's own \/interaction routes/],
      ['/MCP/callback', /collides with the MCP endpoint \/mcp/],
    ];
    for (const [value, pattern] of bad) {
      it(`refuses ${value}`, () => expectProblem({ IDENTITY_CALLBACK_PATH: value }, 'IDENTITY_CALLBACK_PATH', pattern));
    }

    it('checks against the configured MCP path, not only /mcp', () => {
      expectProblem(
        { MCP_SERVER_URL: 'http://127.0.0.1:8080/v1', IDENTITY_CALLBACK_PATH: '/v1/callback' },
        'IDENTITY_CALLBACK_PATH',
        /collides with the MCP endpoint \/v1/,
      );
      expect(
        loadConfig({ MCP_SERVER_URL: 'http://127.0.0.1:8080/v1', IDENTITY_CALLBACK_PATH: '/mcp' }).callbackPath,
      ).to.equal('/mcp');
    });
  });
});
