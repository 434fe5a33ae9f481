import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import type { Caller } from '../lib/proxy/authenticate.ts';
import { HotPathCache } from '../lib/proxy/cache.ts';
import { start, type RunningProxy } from '../lib/start.ts';
import { EchoUpstream } from './helpers/echo-upstream.ts';
import { revokeToken } from './helpers/oauth.ts';
import { json, login, send } from './helpers/proxy.ts';
import { freePort, startStack, type Stack } from './helpers/stack.ts';
import { StoreCommands } from './helpers/store-commands.ts';

describe('/mcp proxy hot path: in-process cache, invalidated across instances', function () {
  let echo: EchoUpstream;
  let stack: Stack;
  let second: RunningProxy;
  let secondUrl: string;
  let monitor: StoreCommands;

  before(async function () {
    echo = new EchoUpstream();
    await echo.listen();
    stack = await startStack({ env: { MCP_SERVER_URL: echo.url } });
    // A second process of the same deployment: same BASE_URL, keys and Redis, its own port.
    const port = await freePort();
    second = await start({ ...stack.env, PORT: String(port) });
    secondUrl = `http://localhost:${port}/mcp`;
    monitor = new StoreCommands(stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!);
    await monitor.start();
  });
  after(async function () {
    await monitor?.stop();
    await second?.close();
    await stack?.close();
    await echo?.close();
  });

  afterEach(function () {
    echo.rejected.clear();
  });

  const call = (url: string, token: string) =>
    send(url, {
      headers: ['Authorization', `Bearer ${token}`],
      body: Buffer.from('{"jsonrpc":"2.0","id":1,"method":"ping"}'),
    });

  /** Repeats a request until one costs no store round trip (the subscription comes up asynchronously). */
  async function warm(url: string, token: string): Promise<void> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const commands = await monitor.during(async () => expect((await call(url, token)).status).to.equal(200));
      if (commands.length === 0) return;
    }
    throw new Error(`${url} never served a request from its cache`);
  }

  it('a cold request costs at most two store round trips, a warm one none', async function () {
    const { token } = await login(stack.mcpUrl, 'carol');
    const cold = await monitor.during(async () => expect((await call(stack.mcpUrl, token)).status).to.equal(200));
    expect(cold.length, cold.join(' ')).to.be.at.most(2);
    await warm(stack.mcpUrl, token);
    for (let i = 0; i < 5; i++) {
      const commands = await monitor.during(async () => expect((await call(stack.mcpUrl, token)).status).to.equal(200));
      expect(commands, `request ${i}`).to.deep.equal([]);
    }
  });

  it('an access token revoked at one instance (RFC 7009) is refused at once by both, though both caches were warm', async function () {
    const { token, oauth } = await login(stack.mcpUrl, 'dave');
    await warm(stack.mcpUrl, token);
    await warm(secondUrl, token);
    const revoked = await revokeToken(stack.baseUrl, {
      token,
      token_type_hint: 'access_token',
      client_id: oauth.info!.client_id,
    });
    expect(revoked.status).to.equal(200);
    expect((await call(secondUrl, token)).status).to.equal(401);
    expect((await call(stack.mcpUrl, token)).status).to.equal(401);
  });

  it('a grant revoked through its refresh token is refused at once by both instances', async function () {
    const { token, oauth } = await login(stack.mcpUrl, 'erin');
    await warm(stack.mcpUrl, token);
    await warm(secondUrl, token);
    const revoked = await revokeToken(stack.baseUrl, {
      token: oauth.savedTokens!.refresh_token!,
      client_id: oauth.info!.client_id,
    });
    expect(revoked.status).to.equal(200);
    expect((await call(secondUrl, token)).status).to.equal(401);
    expect((await call(stack.mcpUrl, token)).status).to.equal(401);
  });

  it('a grant the proxy revokes itself (upstream invalid_grant) is refused at once by the other instance', async function () {
    const { token } = await login(stack.mcpUrl, 'frank');
    await warm(stack.mcpUrl, token);
    await warm(secondUrl, token);
    echo.rejected.add(json(await call(stack.mcpUrl, token)).tokenSha256!);
    await stack.idp.revokeRefreshTokens();
    const refused = await call(stack.mcpUrl, token);
    expect(refused.status).to.equal(401);
    expect(refused.headers['www-authenticate']).to.include('error="invalid_token"');
    // Were the second instance still trusting its cache, the MCP server would now take the
    // upstream token it holds.
    echo.rejected.clear();
    const seen = echo.seen.length;
    expect((await call(secondUrl, token)).status).to.equal(401);
    expect(echo.seen.length).to.equal(seen);
  });

  it('a store outage answers 503 with Retry-After, never 401, and nothing is served from the cache meanwhile', async function () {
    this.timeout(20_000);
    // A third instance reaching Redis through a link the test can cut.
    const redis = new URL(process.env.TEST_REDIS_URL!);
    const links = new Set<Socket>();
    const link = createServer((client) => {
      const upstream = connect(Number(redis.port || 6379), redis.hostname);
      for (const socket of [client, upstream]) {
        links.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => (client.destroy(), upstream.destroy()));
      }
      client.pipe(upstream).pipe(client);
    });
    link.listen(0, '127.0.0.1');
    await once(link, 'listening');
    const redisUrl = new URL(redis.href);
    redisUrl.host = `127.0.0.1:${(link.address() as AddressInfo).port}`;
    const port = await freePort();
    const third = await start({ ...stack.env, PORT: String(port), MCP_AUTH_PROXY_REDIS_URL: redisUrl.href });
    const thirdUrl = `http://localhost:${port}/mcp`;
    try {
      const { token } = await login(stack.mcpUrl, 'heidi');
      // Warm: served without the store, so the 503 below comes from refusing to trust the cache.
      await warm(thirdUrl, token);
      link.close();
      for (const socket of links) socket.destroy();
      // The instance learns of the cut from its sockets closing; this lets that happen before the
      // request below rather than, in principle, in the same event-loop turn.
      await sleep(100);
      const res = await call(thirdUrl, token);
      expect(res.status).to.equal(503);
      expect(res.headers['retry-after']).to.match(/^\d+$/);
      expect(json<{ error: string }>(res).error).to.equal('temporarily_unavailable');
    } finally {
      await third.close();
      link.close();
    }
  });

  it('upstream credentials refreshed by one instance reach the other without a second refresh', async function () {
    const { token } = await login(stack.mcpUrl, 'grace');
    await warm(stack.mcpUrl, token);
    await warm(secondUrl, token);
    const old = json(await call(stack.mcpUrl, token)).tokenSha256!;
    echo.rejected.add(old);
    const refreshes = stack.idp.stats.refreshes;
    expect((await call(stack.mcpUrl, token)).status).to.equal(200);
    // The second instance still holds the old upstream token: the MCP server refuses it, and the
    // vault hands over the new one without asking the identity provider again.
    const res = await call(secondUrl, token);
    expect(res.status).to.equal(200);
    expect(json(res).tokenSha256).to.not.equal(old);
    expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
  });
});

// ---------------------------------------------------------------------------------------------

describe('/mcp proxy hot path with the in-memory store (development)', function () {
  let echo: EchoUpstream;
  let stack: Stack;

  before(async function () {
    echo = new EchoUpstream();
    await echo.listen();
    stack = await startStack({ redis: false, env: { MCP_SERVER_URL: echo.url } });
  });
  after(async function () {
    await stack?.close();
    await echo?.close();
  });

  it('a revoked grant is refused at once: the memory store delivers revocations in-process', async function () {
    const { token, oauth } = await login(stack.mcpUrl, 'ivan');
    const call = () => send(stack.mcpUrl, { headers: ['Authorization', `Bearer ${token}`], body: Buffer.from('{}') });
    for (let i = 0; i < 3; i++) expect((await call()).status).to.equal(200);
    const revoked = await revokeToken(stack.baseUrl, {
      token: oauth.savedTokens!.refresh_token!,
      client_id: oauth.info!.client_id,
    });
    expect(revoked.status).to.equal(200);
    expect((await call()).status).to.equal(401);
  });
});

// ---------------------------------------------------------------------------------------------

describe('/mcp proxy hot-path cache rules', function () {
  const caller = (grantId: string): Caller => ({
    grantId,
    accountId: 'a',
    clientId: 'c',
    scope: 's',
    tokenExpiresAt: Date.now() + 3_600_000,
  });
  const subscription = (active = true) => ({ active, generation: 1, unsubscribe: async () => undefined });

  it('serves and stores nothing while revocations are not being received', function () {
    const sub = subscription(false);
    const cache = new HotPathCache(() => sub);
    cache.setCaller('h', caller('g'), Date.now() + 60_000, cache.stamp());
    expect(cache.caller('h')).to.equal(undefined);
    sub.active = true;
    cache.setCaller('h', caller('g'), Date.now() + 60_000, cache.stamp());
    expect(cache.caller('h')?.grantId).to.equal('g');
    sub.active = false;
    expect(cache.caller('h')).to.equal(undefined);
  });

  it('forgets everything when the subscription was re-established (messages may have been missed)', function () {
    const sub = subscription();
    const cache = new HotPathCache(() => sub);
    cache.setCaller('h', caller('g'), Date.now() + 60_000, cache.stamp());
    sub.generation += 1;
    expect(cache.caller('h')).to.equal(undefined);
  });

  it('does not store a value read while a revocation arrived, nor a revoked grant’s for a while', function () {
    const cache = new HotPathCache(() => subscription());
    const stamp = cache.stamp();
    cache.dropGrant('other-grant');
    cache.setCaller('h', caller('g'), Date.now() + 60_000, stamp);
    expect(cache.caller('h'), 'read before the revocation').to.equal(undefined);
    cache.dropGrant('g');
    cache.setCaller('h', caller('g'), Date.now() + 60_000, cache.stamp());
    expect(cache.caller('h'), 'tombstoned grant').to.equal(undefined);
  });

  it('drops every cached token of a revoked grant, and its upstream credentials', function () {
    const cache = new HotPathCache(() => subscription());
    cache.setCaller('h1', caller('g'), Date.now() + 60_000, cache.stamp());
    cache.setCaller('h2', caller('g'), Date.now() + 60_000, cache.stamp());
    cache.setCaller('h3', caller('kept'), Date.now() + 60_000, cache.stamp());
    cache.setVaultEntry(
      'g',
      'secret-tag',
      { accountId: 'a', clientId: 'c', expiresAt: 0, credentials: { accessToken: 'x' } },
      cache.stamp(),
    );
    expect(cache.vaultEntry('g', 'secret-tag')?.credentials.accessToken).to.equal('x');
    cache.dropGrant('g');
    expect([cache.caller('h1'), cache.caller('h2'), cache.vaultEntry('g', 'secret-tag')]).to.deep.equal([
      undefined,
      undefined,
      undefined,
    ]);
    expect(cache.caller('h3')?.grantId).to.equal('kept');
  });

  it('never trusts a token past its expiry, nor upstream credentials about to be refreshed', function () {
    const cache = new HotPathCache(() => subscription());
    cache.setCaller('h', caller('g'), Date.now() - 1, cache.stamp());
    expect(cache.caller('h')).to.equal(undefined);
    const expiresAt = Math.floor(Date.now() / 1000) + 30;
    cache.setVaultEntry(
      'g',
      'secret-tag',
      { accountId: 'a', clientId: 'c', expiresAt, credentials: { accessToken: 'x', expiresAt } },
      cache.stamp(),
    );
    expect(cache.vaultEntry('g', 'secret-tag')).to.equal(undefined);
  });

  it('hands a grant’s upstream credentials only to a caller with the secret that opened them', function () {
    const cache = new HotPathCache(() => subscription());
    cache.setVaultEntry(
      'g',
      'tag-of-the-grant',
      { accountId: 'a', clientId: 'c', expiresAt: 0, credentials: { accessToken: 'x' } },
      cache.stamp(),
    );
    // A token record for grant g that someone wrote into Redis carries another secret.
    expect(cache.vaultEntry('g', 'tag-of-a-forged-token')).to.equal(undefined);
    expect(cache.vaultEntry('g', 'tag-of-the-grant')?.credentials.accessToken, 'still cached').to.equal('x');
  });
});
