import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { decodeProtectedHeader } from 'jose';
import { openGraceRecord, REFRESH_GRACE_SECONDS } from '../lib/auth-server/refresh-grace.ts';
import { hashId } from '../lib/store/hash.ts';
import { createBrowser } from './helpers/browser.ts';
import { LEGACY } from './helpers/legacy-records.ts';
import { authorizationUrl, mcpInitialize, pkce, registerClient, revokeToken, tokenRequest } from './helpers/oauth.ts';
import { authorizeInBrowser, startStack, type Stack } from './helpers/stack.ts';

interface TokenBody {
  access_token?: string;
  refresh_token?: string;
  expires_in?: number;
  scope?: string;
  error?: string;
  error_description?: string;
}

interface Registered {
  client_id: string;
  client_secret?: string;
}

interface Login {
  client: Registered;
  tokens: Required<Pick<TokenBody, 'access_token' | 'refresh_token'>> & TokenBody;
  /** The store key of this grant's upstream credentials (`vault:<grantId>`, prefixed). */
  vaultKey: string;
}

const REDIRECT_URI = 'http://127.0.0.1:33418/callback';

describe('refresh tokens (R14), revocation (RFC 7009) and no-store (R17)', function () {
  let stack: Stack;
  let redis: Redis;
  let prefix: string;

  before(async function () {
    stack = await startStack();
    redis = new Redis(process.env.TEST_REDIS_URL!);
    prefix = stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!;
  });
  after(async function () {
    redis?.disconnect();
    await stack?.close();
  });

  async function register(metadata: Record<string, unknown> = {}): Promise<Registered> {
    const res = await registerClient(stack.baseUrl, {
      redirect_uris: [REDIRECT_URI],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      ...metadata,
    });
    expect(res.status, 'registration').to.equal(201);
    return res.body as unknown as Registered;
  }

  async function token(params: Record<string, string>): Promise<{ status: number; headers: Headers; body: TokenBody }> {
    const res = await tokenRequest(stack.baseUrl, params);
    return { ...res, body: res.body as unknown as TokenBody };
  }

  const auth = (client: Registered): Record<string, string> =>
    client.client_secret
      ? { client_id: client.client_id, client_secret: client.client_secret }
      : { client_id: client.client_id };

  const refresh = (client: Registered, refreshToken: string, extra: Record<string, string> = {}) =>
    token({ grant_type: 'refresh_token', refresh_token: refreshToken, ...auth(client), ...extra });

  async function vaultKeys(): Promise<Set<string>> {
    return new Set(await redis.keys(`${prefix}vault:*`));
  }

  /** Registration (unless given a client), browser login at the upstream IdP, code exchange. */
  async function login(client?: Registered, user = 'alice'): Promise<Login> {
    client ??= await register();
    const { verifier, challenge } = pkce();
    const url = authorizationUrl(stack.baseUrl, client.client_id, REDIRECT_URI, challenge, {
      scope: 'openid offline_access',
    });
    const before = await vaultKeys();
    const back = await authorizeInBrowser(createBrowser(), url, REDIRECT_URI, { user });
    const code = back.searchParams.get('code');
    if (!code) throw new Error(`no code: ${back.href}`);
    const exchanged = await token({
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      redirect_uri: REDIRECT_URI,
      ...auth(client),
    });
    expect(exchanged.status, JSON.stringify(exchanged.body)).to.equal(200);
    expect(exchanged.headers.get('cache-control'), 'R17').to.equal('no-store');
    const added = [...(await vaultKeys())].filter((key) => !before.has(key));
    expect(added, 'one new vault record per login').to.have.length(1);
    const tokens = exchanged.body as Login['tokens'];
    expect(tokens.refresh_token, 'a refresh token').to.be.a('string');
    return { client, tokens, vaultKey: added[0]! };
  }

  async function mcpStatus(accessToken: string): Promise<number> {
    const res = await mcpInitialize(stack.mcpUrl, accessToken);
    await res.body?.cancel();
    return res.status;
  }

  const graceKey = (refreshToken: string) => `${prefix}refresh-grace:${hashId(refreshToken)}`;

  /** `grant.revoked` deletes the vault record after the response; give it a moment. */
  async function expectGone(key: string): Promise<void> {
    for (let i = 0; i < 50 && (await redis.exists(key)); i++) await sleep(100);
    expect(await redis.exists(key), `${key} deleted`).to.equal(0);
  }

  describe('rotation with a grace window', function () {
    it('R14: a refresh without scope rotates the refresh token, and the new access token works at /mcp', async function () {
      const { client, tokens } = await login();
      const next = await refresh(client, tokens.refresh_token);
      expect(next.status, JSON.stringify(next.body)).to.equal(200);
      expect(next.body.refresh_token).to.be.a('string').and.not.equal(tokens.refresh_token);
      expect(next.body.access_token).to.be.a('string').and.not.equal(tokens.access_token);
      expect(await mcpStatus(next.body.access_token!)).to.equal(200);
      // The rotated chain goes on.
      const third = await refresh(client, next.body.refresh_token!);
      expect(third.status).to.equal(200);
      expect(third.body.refresh_token).to.not.equal(next.body.refresh_token);
    });

    it('R14: five concurrent refreshes of one refresh token all get the same new tokens (one rotation)', async function () {
      const { client, tokens } = await login();
      const results = await Promise.all(Array.from({ length: 5 }, () => refresh(client, tokens.refresh_token)));
      for (const result of results) expect(result.status, JSON.stringify(result.body)).to.equal(200);
      const accessTokens = new Set(results.map((r) => r.body.access_token));
      const refreshTokens = new Set(results.map((r) => r.body.refresh_token));
      expect(accessTokens.size, 'one access token for all').to.equal(1);
      expect(refreshTokens.size, 'one refresh token for all').to.equal(1);
      const [rotated] = [...refreshTokens];
      expect(rotated).to.not.equal(tokens.refresh_token);
      // No reuse was detected: the grant and its new chain are alive.
      expect(await mcpStatus(results[0]!.body.access_token!)).to.equal(200);
      expect((await refresh(client, rotated!)).status).to.equal(200);
    });

    it('R14: a replay within the window gets the same response again, marked no-store', async function () {
      const { client, tokens } = await login();
      const first = await refresh(client, tokens.refresh_token);
      const again = await refresh(client, tokens.refresh_token);
      expect(again.status).to.equal(200);
      expect(again.headers.get('cache-control'), 'R17').to.equal('no-store');
      expect(again.body.access_token).to.equal(first.body.access_token);
      expect(again.body.refresh_token).to.equal(first.body.refresh_token);
      expect(again.body.scope).to.equal(first.body.scope);
      expect(again.body.expires_in).to.be.a('number').and.at.most(first.body.expires_in!);
    });

    it('R14: a presenter waits while another process holds the token’s lock, and proceeds when it is released', async function () {
      const { client, tokens } = await login();
      const lock = graceKey(tokens.refresh_token).replace(`${prefix}refresh-grace:`, `${prefix}lock:refresh-grace:`);
      // Another instance refreshing with this token, which then failed without a result.
      await redis.set(lock, 'another-process', 'EX', 15);
      let settled = false;
      const pending = refresh(client, tokens.refresh_token).finally(() => (settled = true));
      await sleep(500);
      expect(settled, 'no rotation while another presenter holds the lock').to.equal(false);
      await redis.del(lock);
      const result = await pending;
      expect(result.status, JSON.stringify(result.body)).to.equal(200);
      expect(result.body.refresh_token).to.not.equal(tokens.refresh_token);
    });

    it('keeps the first response sealed, under the hash of the old token, for the window only', async function () {
      const { client, tokens } = await login();
      const first = await refresh(client, tokens.refresh_token);
      const key = graceKey(tokens.refresh_token);
      const ttl = await redis.ttl(key);
      expect(ttl).to.be.within(1, REFRESH_GRACE_SECONDS);
      const stored = (await redis.get(key))!;
      expect(stored).to.be.a('string');
      for (const secret of [tokens.refresh_token, first.body.refresh_token!, first.body.access_token!]) {
        expect(stored).to.not.contain(secret);
        expect(stored).to.not.contain(Buffer.from(secret).toString('base64url'));
      }
      // One sealed format for every record (lib/crypto/sealed-json.ts), bound to the token's hash.
      expect(decodeProtectedHeader(stored)).to.deep.equal({
        alg: 'dir',
        enc: 'A256GCM',
        kid: 'presented-refresh-token',
        typ: 'refresh-grace+2',
        ctx: hashId(tokens.refresh_token),
      });
      const opened = await openGraceRecord(tokens.refresh_token, hashId(tokens.refresh_token), stored);
      expect(opened?.body.refresh_token).to.equal(first.body.refresh_token);
      // Only the old token opens it, and only under its own hash.
      expect(await openGraceRecord(first.body.refresh_token!, hashId(tokens.refresh_token), stored)).to.equal(
        undefined,
      );
      expect(await openGraceRecord(tokens.refresh_token, hashId(first.body.refresh_token!), stored)).to.equal(
        undefined,
      );
    });

    it('a record sealed by the previous code (format v1) still opens for its token, bound as before', async function () {
      const id = hashId(LEGACY.refreshToken);
      const opened = await openGraceRecord(LEGACY.refreshToken, id, LEGACY.graceV1);
      expect(opened).to.deep.include({ clientId: 'client-abc', grantId: LEGACY.grantId });
      expect(opened?.body).to.deep.equal(LEGACY.graceBody);
      expect(await openGraceRecord(`${LEGACY.refreshToken}x`, id, LEGACY.graceV1), 'another token').to.equal(undefined);
      expect(await openGraceRecord(LEGACY.refreshToken, hashId('other'), LEGACY.graceV1), 'another hash').to.equal(
        undefined,
      );
    });

    it('R14: reuse after the window revokes the grant: old and new refresh tokens die, /mcp answers 401, upstream credentials go', async function () {
      const { client, tokens, vaultKey } = await login();
      const first = await refresh(client, tokens.refresh_token);
      expect(first.status).to.equal(200);
      expect(await mcpStatus(first.body.access_token!)).to.equal(200);
      // What the window's end does: the record of the first response expires.
      await redis.del(graceKey(tokens.refresh_token));

      const reuse = await refresh(client, tokens.refresh_token);
      expect(reuse.status).to.equal(400);
      expect(reuse.body.error).to.equal('invalid_grant');
      expect(reuse.headers.get('cache-control'), 'R17 on errors too').to.equal('no-store');
      const descendant = await refresh(client, first.body.refresh_token!);
      expect(descendant.body.error, 'the new refresh token is revoked with the grant').to.equal('invalid_grant');
      expect(await mcpStatus(first.body.access_token!)).to.equal(401);
      await expectGone(vaultKey);
    });

    it('R14: another client presenting the refresh token is refused, inside the window too, and the grant survives', async function () {
      const { client, tokens } = await login();
      const intruder = await register();
      const before = await refresh(intruder, tokens.refresh_token);
      expect(before.status).to.equal(400);
      expect(before.body.error).to.equal('invalid_grant');

      const first = await refresh(client, tokens.refresh_token);
      expect(first.status).to.equal(200);
      const inWindow = await refresh(intruder, tokens.refresh_token);
      expect(inWindow.status).to.equal(400);
      expect(inWindow.body.error).to.equal('invalid_grant');
      expect(inWindow.body.access_token).to.equal(undefined);

      expect(await mcpStatus(first.body.access_token!)).to.equal(200);
      expect((await refresh(client, first.body.refresh_token!)).status).to.equal(200);
    });

    it('R14: a confidential client (client_secret_post, as Claude registers) authenticates on every replay', async function () {
      const client = await register({ token_endpoint_auth_method: 'client_secret_post' });
      expect(client.client_secret).to.be.a('string');
      const { tokens } = await login(client);
      const first = await refresh(client, tokens.refresh_token);
      expect(first.status, JSON.stringify(first.body)).to.equal(200);

      const wrongSecret = await refresh(
        { client_id: client.client_id, client_secret: `${client.client_secret}x` },
        tokens.refresh_token,
      );
      expect(wrongSecret.status).to.equal(401);
      expect(wrongSecret.body.error).to.equal('invalid_client');
      expect(wrongSecret.body.access_token).to.equal(undefined);
      const noSecret = await refresh({ client_id: client.client_id }, tokens.refresh_token);
      expect(noSecret.body.error).to.equal('invalid_client');
      expect(noSecret.body.access_token).to.equal(undefined);

      const replay = await refresh(client, tokens.refresh_token);
      expect(replay.status).to.equal(200);
      expect(replay.body.refresh_token).to.equal(first.body.refresh_token);
    });

    it('R14: a replay asking for another scope is refused, without revoking the grant', async function () {
      const { client, tokens } = await login();
      const first = await refresh(client, tokens.refresh_token, { scope: 'openid' });
      expect(first.status, JSON.stringify(first.body)).to.equal(200);
      const other = await refresh(client, tokens.refresh_token);
      expect(other.status).to.equal(400);
      expect(other.body.error).to.equal('invalid_grant');
      expect((await refresh(client, first.body.refresh_token!)).status).to.equal(200);
    });

    it('R14: a replay after the grant was revoked gets no tokens', async function () {
      const { client, tokens } = await login();
      const first = await refresh(client, tokens.refresh_token);
      const revoked = await revoke(client, first.body.refresh_token!);
      expect(revoked.status).to.equal(200);
      const replay = await refresh(client, tokens.refresh_token);
      expect(replay.status).to.equal(400);
      expect(replay.body.error).to.equal('invalid_grant');
    });
  });

  async function revoke(client: Registered, value: string, hint?: string): Promise<Response> {
    const params: Record<string, string> = { token: value, ...auth(client) };
    if (hint) params.token_type_hint = hint;
    return revokeToken(stack.baseUrl, params);
  }

  describe('revocation (RFC 7009)', function () {
    it('the owning client revokes its refresh token: the grant goes, /mcp answers 401, upstream credentials are deleted', async function () {
      const { client, tokens, vaultKey } = await login();
      expect(await mcpStatus(tokens.access_token)).to.equal(200);
      const res = await revoke(client, tokens.refresh_token, 'refresh_token');
      expect(res.status).to.equal(200);
      expect((await refresh(client, tokens.refresh_token)).body.error).to.equal('invalid_grant');
      expect(await mcpStatus(tokens.access_token)).to.equal(401);
      await expectGone(vaultKey);
    });

    it('revoking an access token ends the whole grant (revokeGrantPolicy): refresh token and upstream credentials too', async function () {
      const { client, tokens, vaultKey } = await login();
      const res = await revoke(client, tokens.access_token, 'access_token');
      expect(res.status).to.equal(200);
      expect(await mcpStatus(tokens.access_token)).to.equal(401);
      expect((await refresh(client, tokens.refresh_token)).body.error).to.equal('invalid_grant');
      await expectGone(vaultKey);
    });

    it('another public client cannot revoke it: answered like an unknown token, and nothing happens', async function () {
      const { client, tokens, vaultKey } = await login();
      const other = await register();
      const res = await revoke(other, tokens.refresh_token);
      // RFC 7009 §2.2: no hint to a client that the token exists.
      expect(res.status).to.equal(200);
      expect(await mcpStatus(tokens.access_token)).to.equal(200);
      expect(await redis.exists(vaultKey)).to.equal(1);
      expect((await refresh(client, tokens.refresh_token)).status).to.equal(200);
    });

    it('another confidential client cannot revoke it either', async function () {
      const { client, tokens } = await login();
      const other = await register({ token_endpoint_auth_method: 'client_secret_post' });
      const res = await revoke(other, tokens.access_token);
      expect(res.status).to.equal(400);
      expect(((await res.json()) as TokenBody).error).to.equal('invalid_request');
      expect(await mcpStatus(tokens.access_token)).to.equal(200);
      expect((await refresh(client, tokens.refresh_token)).status).to.equal(200);
    });
  });

  describe('R17: no-store', function () {
    it('registration responses carry Cache-Control: no-store (they hold client secrets)', async function () {
      const res = await fetch(`${stack.baseUrl}/reg`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'client_secret_post' }),
      });
      expect(res.status).to.equal(201);
      expect(res.headers.get('cache-control')).to.equal('no-store');
      const refused = await fetch(`${stack.baseUrl}/reg`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ redirect_uris: ['javascript:alert(1)'] }),
      });
      expect(refused.status).to.equal(400);
      expect(refused.headers.get('cache-control')).to.equal('no-store');
    });

    it('token responses carry Cache-Control: no-store: code exchange (checked in every login), refresh and errors', async function () {
      const { client, tokens } = await login();
      const refreshed = await refresh(client, tokens.refresh_token);
      expect(refreshed.headers.get('cache-control')).to.equal('no-store');
      const bad = await token({
        grant_type: 'authorization_code',
        code: 'nope',
        code_verifier: 'x'.repeat(43),
        redirect_uri: REDIRECT_URI,
        client_id: client.client_id,
      });
      expect(bad.status).to.equal(400);
      expect(bad.headers.get('cache-control')).to.equal('no-store');
    });
  });
});
