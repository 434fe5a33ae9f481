import { join } from 'node:path';
import { expect } from 'chai';
import { loadConfig } from '../lib/config/index.ts';
import { EC_KEY, fixture, JWKS, privateJwk, production, useConfigFixture } from './helpers/config-env.ts';
import { expectProblem, messageOf } from './helpers/config-problems.ts';

describe('configuration: Redis and the authorization server', () => {
  useConfigFixture();

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
        { OIDC_PROVIDER_VIEWS_PATH: join(fixture.tmp, 'missing') },
        'OIDC_PROVIDER_VIEWS_PATH',
        /existing directory/,
      );
      expectProblem(
        { OIDC_PROVIDER_VIEWS_PATH: fixture.metadataFile },
        'OIDC_PROVIDER_VIEWS_PATH',
        /existing directory/,
      );
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
});
