import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { expect } from 'chai';
import { deriveKeyMaterial } from '../lib/auth-server/keys.ts';
import { sha256Hex } from '../lib/dev/example-mcp-server.ts';
import type { UpstreamCredentials } from '../lib/identity/index.ts';
import { start, type RunningProxy } from '../lib/start.ts';
import type { Store } from '../lib/store/index.ts';
import { log } from '../lib/telemetry/log.ts';
import { createVault, grantSecretOf, type GrantSecret, type Vault, type VaultEntry } from '../lib/vault/index.ts';
import { captureOutput } from './helpers/capture.ts';
import { connectClient, freePort, startStack, TestOAuthClient, type Stack } from './helpers/stack.ts';
import { dumpPrefix, epoch, FakeIdentity, redisStore } from './helpers/vault.ts';

interface Login {
  oauth: TestOAuthClient;
  grantId: string;
  sessionId: string;
  accessToken: string;
}

interface McpAnswer {
  status: number;
  headers: Headers;
  body: string;
}

const PROTOCOL_VERSION = '2025-06-18';

describe('vault and proxy end to end: refresh, failure policy, no leaks', function () {
  let stack: Stack;
  let prefix: string;
  /** Reads and rewrites the proxy's vault records from outside, with the proxy's own key. */
  let sideVault: Vault;
  let sideStore: Store;
  /** Each login's grant secret, read from its access token: what the side vault needs to open a record. */
  const secrets = new Map<string, GrantSecret>();

  async function vaultGrants(): Promise<Set<string>> {
    const keys = [...(await dumpPrefix(prefix)).keys()];
    const marker = `${prefix}vault:`;
    return new Set(keys.filter((k) => k.startsWith(marker)).map((k) => k.slice(marker.length)));
  }

  /** One JSON-RPC message to /mcp as any MCP client sends it, without the SDK's automatic re-authentication. */
  async function post(
    accessToken: string,
    sessionId: string | undefined,
    message: object,
    mcpUrl = stack.mcpUrl,
  ): Promise<McpAnswer> {
    const res = await fetch(mcpUrl, {
      method: 'POST',
      redirect: 'manual',
      headers: {
        authorization: `Bearer ${accessToken}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-protocol-version': PROTOCOL_VERSION,
        ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
      },
      body: JSON.stringify({ jsonrpc: '2.0', ...message }),
    });
    return { status: res.status, headers: res.headers, body: await res.text() };
  }

  /**
   * The SDK client's OAuth flow (registration, consent, upstream login, code exchange), then an
   * MCP session. `beforeFirstRequest` runs between the two: before the proxy has read this grant's
   * vault record, so a rewrite of the record is what the proxy sees (it may cache what it read).
   */
  async function login(user: string, beforeFirstRequest?: (grantId: string) => Promise<void>): Promise<Login> {
    const before = await vaultGrants();
    const oauth = new TestOAuthClient({ user });
    expect(await auth(oauth, { serverUrl: stack.mcpUrl })).to.equal('REDIRECT');
    const code = oauth.lastRedirect?.searchParams.get('code');
    if (!code) throw new Error(`no authorization code: ${oauth.lastRedirect?.href}`);
    expect(await auth(oauth, { serverUrl: stack.mcpUrl, authorizationCode: code })).to.equal('AUTHORIZED');
    const grantId = [...(await vaultGrants())].find((id) => !before.has(id));
    if (!grantId) throw new Error('no vault record appeared for the login');
    secrets.set(grantId, grantSecretOf(oauth.savedTokens!.access_token)!);
    await beforeFirstRequest?.(grantId);

    const accessToken = oauth.savedTokens!.access_token;
    const initialized = await post(accessToken, undefined, {
      id: 0,
      method: 'initialize',
      params: {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: 'vault-test', version: '1.0.0' },
      },
    });
    expect(initialized.status, initialized.body).to.equal(200);
    const sessionId = initialized.headers.get('mcp-session-id');
    if (!sessionId) throw new Error('the MCP server opened no session');
    expect((await post(accessToken, sessionId, { method: 'notifications/initialized' })).status).to.equal(202);
    return { oauth, grantId, sessionId, accessToken };
  }

  const call = (who: Login, id: number, mcpUrl = stack.mcpUrl): Promise<McpAnswer> =>
    post(
      who.accessToken,
      who.sessionId,
      { id, method: 'tools/call', params: { name: 'echo', arguments: { text: `call number ${id}` } } },
      mcpUrl,
    );

  function expectSuccess(answer: McpAnswer, id: number): void {
    expect(answer.status, answer.body).to.equal(200);
    expect(answer.body).to.contain(`call number ${id}`);
  }

  /** The auth-failure contract of /mcp: JSON or a challenge, never a redirect, a page or a 500. */
  function expectNoPageNoRedirect(answer: McpAnswer): void {
    expect(answer.status).to.not.be.within(300, 399);
    expect(answer.status).to.not.equal(500);
    expect(answer.headers.get('location')).to.equal(null);
    expect(answer.headers.get('content-type') ?? '').to.not.contain('html');
  }

  async function upstreamOf(grantId: string): Promise<UpstreamCredentials | undefined> {
    return (await sideVault.get(grantId, secrets.get(grantId)!))?.credentials;
  }

  /**
   * Makes the grant's upstream token look like an hour-long one that expires in 30 s (the IdP
   * still honours it): due for the early refresh.
   */
  async function nearExpiry(grantId: string): Promise<VaultEntry> {
    const secret = secrets.get(grantId)!;
    const entry = (await sideVault.get(grantId, secret))!;
    await sideVault.put(grantId, secret, {
      ...entry,
      obtainedAt: epoch() - 3570,
      credentials: { ...entry.credentials, expiresAt: epoch() + 30 },
    });
    return entry;
  }

  before(async function () {
    stack = await startStack();
    prefix = stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!;
    sideStore = redisStore(prefix);
    await sideStore.check();
    const keys = deriveKeyMaterial(JSON.parse(stack.env.OIDC_PROVIDER_JWKS!)).vaultKeys;
    sideVault = createVault({ store: sideStore, identity: new FakeIdentity(), keys, log });
  });
  afterEach(function () {
    stack.idp.setTokenEndpointFailure(undefined);
  });
  after(async function () {
    await sideStore?.close();
    await stack?.close();
  });

  it('50 concurrent calls on two proxy processes after upstream expiry cause exactly one refresh at the IdP', async function () {
    this.timeout(60_000);
    const port = await freePort();
    // Same BASE_URL, same Redis, same keys: two dynos of one app.
    const second: RunningProxy = await start({ ...stack.env, PORT: String(port) });
    try {
      const urls = [stack.mcpUrl, `http://localhost:${port}/mcp`];
      const alice = await login('concurrent-alice');
      // Both processes have used the grant: both hold (and may cache) the token about to expire.
      expectSuccess(await call(alice, 1, urls[0]), 1);
      expectSuccess(await call(alice, 2, urls[1]), 2);
      const before = { refreshes: stack.idp.stats.refreshes, logins: stack.idp.stats.codeExchanges };
      const upstreamBefore = (await upstreamOf(alice.grantId))!.accessToken;
      await stack.idp.expireAccessTokens();

      const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => call(alice, 100 + i, urls[i % 2])));
      answers.forEach((answer, i) => expectSuccess(answer, 100 + i));
      expect(stack.idp.stats.refreshes - before.refreshes, 'upstream refreshes').to.equal(1);
      expect(stack.idp.stats.codeExchanges, 'no new login').to.equal(before.logins);
      expect((await upstreamOf(alice.grantId))!.accessToken).to.not.equal(upstreamBefore);
    } finally {
      await second.close();
    }
  });

  it('refreshes ahead of expiry: a token with under a minute left is replaced before the request is forwarded', async function () {
    let original: VaultEntry | undefined;
    const refreshes = stack.idp.stats.refreshes;
    const bob = await login('early-bob', async (grantId) => {
      original = await nearExpiry(grantId);
    });
    expect(stack.idp.stats.refreshes - refreshes).to.equal(1);
    const fresh = (await upstreamOf(bob.grantId))!.accessToken;
    expect(fresh).to.not.equal(original!.credentials.accessToken);
    expect(stack.mcp.locals.seenTokenHashes.has(sha256Hex(fresh)), 'forwarded with the new token').to.equal(true);
    expect(
      stack.mcp.locals.seenTokenHashes.has(sha256Hex(original!.credentials.accessToken)),
      'old token never sent',
    ).to.equal(false);
    expectSuccess(await call(bob, 1), 1);
    expect(stack.idp.stats.refreshes - refreshes).to.equal(1);
  });

  it('a failed early refresh does not fail the request while the old token is still valid', async function () {
    let original: VaultEntry | undefined;
    const carol = await login('early-carol', async (grantId) => {
      original = await nearExpiry(grantId);
      stack.idp.setTokenEndpointFailure(503);
    });
    expectSuccess(await call(carol, 1), 1);
    expect((await upstreamOf(carol.grantId))!.accessToken).to.equal(original!.credentials.accessToken);
  });

  for (const status of [503, 429]) {
    it(`upstream ${status} on refresh: the grant is kept, the client gets 503 with Retry-After, and the next call after recovery succeeds`, async function () {
      const dave = await login(`transient-${status}`);
      await stack.idp.expireAccessTokens();
      stack.idp.setTokenEndpointFailure(status);
      const failed = await call(dave, 1);
      expectNoPageNoRedirect(failed);
      expect(failed.status).to.equal(503);
      expect(Number(failed.headers.get('retry-after'))).to.be.greaterThan(0);
      expect(JSON.parse(failed.body)).to.include({ error: 'temporarily_unavailable' });
      expect(await upstreamOf(dave.grantId), 'upstream credentials kept').to.not.equal(undefined);

      stack.idp.setTokenEndpointFailure(undefined);
      expectSuccess(await call(dave, 2), 2);
    });
  }

  it('upstream invalid_grant on refresh: our grant is revoked and the client gets 401 invalid_token with the challenge', async function () {
    const erin = await login('terminal-erin');
    const ourRefreshToken = erin.oauth.savedTokens!.refresh_token!;
    await stack.idp.revokeRefreshTokens();
    await stack.idp.expireAccessTokens();
    const answer = await call(erin, 1);
    expectNoPageNoRedirect(answer);
    expect(answer.status).to.equal(401);
    const challenge = answer.headers.get('www-authenticate') ?? '';
    expect(challenge).to.match(/^Bearer /);
    expect(challenge).to.contain('error="invalid_token"');
    expect(challenge).to.contain(`resource_metadata="${stack.baseUrl}/.well-known/oauth-protected-resource/mcp"`);
    expect(await upstreamOf(erin.grantId), 'upstream credentials deleted').to.equal(undefined);

    const token = await fetch(`${stack.baseUrl}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: ourRefreshToken,
        client_id: erin.oauth.info!.client_id,
      }),
    });
    expect(token.status, 'our refresh token is dead').to.equal(400);
    expect(((await token.json()) as { error: string }).error).to.equal('invalid_grant');
    expect((await call(erin, 2)).status, 'our access token is dead').to.equal(401);
  });

  it('no upstream access or refresh token reaches a log line or a response across login, refresh and failures', async function () {
    const lines: string[] = [];
    const upstreamTokens = new Set<string>();
    const answers: McpAnswer[] = [];
    const collect = async (grantId: string) => {
      const credentials = await upstreamOf(grantId);
      if (credentials?.accessToken) upstreamTokens.add(credentials.accessToken);
      if (credentials?.refreshToken) upstreamTokens.add(credentials.refreshToken);
    };
    // Everything the process prints, through the logger or around it (console, oidc-provider).
    const restore = captureOutput(lines, { passThrough: true });
    try {
      const frank = await login('leak-frank', async (grantId) => {
        await collect(grantId);
        await nearExpiry(grantId); // the session's first request refreshes ahead of expiry
      });
      await collect(frank.grantId);
      answers.push(await call(frank, 1));

      await stack.idp.expireAccessTokens();
      answers.push(await call(frank, 2)); // refresh on 401
      await collect(frank.grantId);

      await stack.idp.expireAccessTokens();
      stack.idp.setTokenEndpointFailure(503);
      answers.push(await call(frank, 3)); // transient failure
      stack.idp.setTokenEndpointFailure(undefined);
      answers.push(await call(frank, 4)); // recovery
      await collect(frank.grantId);

      await stack.idp.revokeRefreshTokens();
      await stack.idp.expireAccessTokens();
      answers.push(await call(frank, 5)); // terminal failure
    } finally {
      restore();
    }
    expect(answers.map((a) => a.status)).to.deep.equal([200, 200, 503, 200, 401]);
    expect(upstreamTokens.size, 'tokens collected').to.be.at.least(8);
    const output = lines.join('\n');
    // The capture saw the flow: otherwise "no token in it" proves nothing.
    expect(output).to.contain('upstream token refreshed');
    expect(output).to.contain('upstream refresh failed');
    expect(output).to.contain('upstream grant is gone');
    const responses = answers.map((a) => `${[...a.headers].flat().join('\n')}\n${a.body}`).join('\n');
    for (const token of upstreamTokens) {
      expect(output.includes(token), 'an upstream token in the logs').to.equal(false);
      expect(responses.includes(token), 'an upstream token in a response').to.equal(false);
    }
  });
});

describe('vault end to end: an upstream whose access tokens live 15 s', function () {
  let stack: Stack;

  before(async function () {
    stack = await startStack({ idp: { accessTokenTtl: 15 } });
  });
  after(async function () {
    await stack?.close();
  });

  it('is refreshed in the last quarter of the token’s life, not before every call', async function () {
    const oauth = new TestOAuthClient({ user: 'short-lived-sam' });
    const client = await connectClient(stack.mcpUrl, oauth);
    try {
      // The token the proxy holds is really a 15-second one: with a fixed one-minute margin it
      // would be due from the start, and every call below would refresh it.
      const prefix = stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!;
      const [vaultKey] = [...(await dumpPrefix(prefix)).keys()].filter((k) => k.startsWith(`${prefix}vault:`));
      const sideStore = redisStore(prefix);
      try {
        const keys = deriveKeyMaterial(JSON.parse(stack.env.OIDC_PROVIDER_JWKS!)).vaultKeys;
        const sideVault = createVault({ store: sideStore, identity: new FakeIdentity(), keys, log });
        const entry = await sideVault.get(
          vaultKey!.slice(`${prefix}vault:`.length),
          grantSecretOf(oauth.savedTokens!.access_token)!,
        );
        const { expiresAt } = entry!.credentials;
        expect(expiresAt! - entry!.obtainedAt!).to.be.within(14, 16);
      } finally {
        await sideStore.close();
      }

      const before = stack.idp.stats.refreshes;
      for (let i = 0; i < 20; i++) {
        const result = await client.callTool({ name: 'echo', arguments: { text: `call ${i}` } });
        expect(JSON.stringify(result.content)).to.contain(`call ${i}`);
      }
      // Twenty calls take well under a second; a refresh is due only in the token's last ~4 s,
      // so even a machine slow enough to reach it refreshes once or twice, never per call.
      expect(stack.idp.stats.refreshes - before, 'upstream refreshes for 20 calls').to.be.at.most(2);
    } finally {
      await client.close();
    }
  });
});
