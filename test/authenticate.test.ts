import { expect } from 'chai';
import { deriveKeyMaterial, ephemeralJwks } from '../lib/auth-server/keys.ts';
import { createProvider } from '../lib/auth-server/provider.ts';
import { loadConfig } from '../lib/config/index.ts';
import { authenticate } from '../lib/proxy/authenticate.ts';
import { createMemoryStore } from '../lib/store/index.ts';
import { log } from '../lib/telemetry/log.ts';
import { createViews } from '../lib/views/index.ts';

/**
 * R3/R13 at the unit level: the one check that tells our token for `/mcp` from our token for
 * another resource is the audience; end-to-end tests cannot isolate it, since a foreign token also
 * fails later (its upstream credentials are not the MCP server's).
 */
describe('authenticate (R3: audience)', function () {
  const config = loadConfig({ LOG_LEVEL: 'warn' });
  const store = createMemoryStore();
  let provider: ReturnType<typeof createProvider>;

  before(async function () {
    provider = createProvider({
      config,
      store,
      keys: deriveKeyMaterial(await ephemeralJwks()),
      views: createViews(undefined),
      log,
    });
  });

  async function saveToken(value: string, payload: Record<string, unknown>): Promise<void> {
    const now = Math.floor(Date.now() / 1000);
    await new store.Adapter('AccessToken').upsert(
      value,
      {
        jti: value,
        kind: 'AccessToken',
        iat: now,
        exp: now + 60,
        accountId: 'alice',
        clientId: 'client',
        grantId: 'grant',
        scope: 'openid',
        ...payload,
      },
      60,
    );
  }

  it('accepts a token whose audience is our MCP URL', async function () {
    await saveToken('ours-token', { aud: config.mcp.resourceUrl });
    const caller = await authenticate(provider, config.mcp.resourceUrl, 'ours-token');
    expect(caller?.grantId).to.equal('grant');
  });

  it('refuses a token of ours issued for another resource', async function () {
    await saveToken('foreign-token', { aud: 'https://other.example/mcp' });
    expect(await authenticate(provider, config.mcp.resourceUrl, 'foreign-token')).to.equal(undefined);
  });

  it('refuses a token without an audience, and an expired one', async function () {
    await saveToken('no-aud-token', {});
    expect(await authenticate(provider, config.mcp.resourceUrl, 'no-aud-token')).to.equal(undefined);
    const now = Math.floor(Date.now() / 1000);
    await saveToken('expired-token', { aud: config.mcp.resourceUrl, iat: now - 120, exp: now - 60 });
    expect(await authenticate(provider, config.mcp.resourceUrl, 'expired-token')).to.equal(undefined);
  });

  it('refuses an unknown token', async function () {
    expect(await authenticate(provider, config.mcp.resourceUrl, 'never-issued')).to.equal(undefined);
  });
});
