import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { createRedisStore, createMemoryStore } from '../lib/store/index.ts';
import type { Store } from '../lib/store/types.ts';
import { GrantRateLimiter } from '../lib/rate-limit/grant.ts';
import { log } from '../lib/telemetry/log.ts';
import { start, type RunningProxy } from '../lib/start.ts';
import { authorizationUrl, codeFlow, mcpInitialize } from './helpers/oauth.ts';
import { freePort, startStack, type Stack } from './helpers/stack.ts';

const REDIRECT = 'http://127.0.0.1:33418/callback';
const LIMIT = 3;

/** What Heroku's router sends: the client's own X-Forwarded-For, then the address it saw. */
const fromRouter = (clientSupplied: string | undefined, seenByRouter: string) => ({
  'x-forwarded-for': clientSupplied ? `${clientSupplied}, ${seenByRouter}` : seenByRouter,
});

function register(baseUrl: string, headers: Record<string, string>, body?: string): Promise<Response> {
  return fetch(`${baseUrl}/reg`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json', ...headers },
    body: body ?? JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' }),
  });
}

describe('rate limits (MAX_REQUESTS per MAX_REQUESTS_WINDOW)', function () {
  describe('per client address on registration, authorization, token and interaction routes', function () {
    let stack: Stack;
    let second: RunningProxy | undefined;

    before(async () => {
      stack = await startStack({ env: { MAX_REQUESTS: String(LIMIT), MAX_REQUESTS_WINDOW: '60000' } });
    });
    after(async () => {
      await second?.close();
      await stack?.close();
    });

    it('the limit+1st registration from one address gets 429 with Retry-After, RateLimit headers and JSON', async () => {
      const router = fromRouter(undefined, '203.0.113.1');
      for (let i = 1; i <= LIMIT; i++) {
        const res = await register(stack.baseUrl, router);
        expect(res.status).to.equal(201);
        expect(res.headers.get('ratelimit-policy')).to.equal(`"registration";q=${LIMIT};w=60`);
        expect(res.headers.get('ratelimit')).to.match(new RegExp(`^"registration";r=${LIMIT - i};t=\\d+$`));
      }
      const refused = await register(stack.baseUrl, router);
      expect(refused.status).to.equal(429);
      expect(Number(refused.headers.get('retry-after'))).to.be.within(1, 60);
      expect(refused.headers.get('ratelimit')).to.match(/^"registration";r=0;t=\d+$/);
      const body = (await refused.json()) as { error: string; error_description: string };
      expect(body.error).to.equal('too_many_requests');
      expect(body.error_description).to.match(/Try again in \d+ seconds/);
    });

    it('a forged X-Forwarded-For changes nothing: only the address the router appended counts', async () => {
      const seen = '203.0.113.2';
      for (let i = 0; i < LIMIT; i++) {
        expect((await register(stack.baseUrl, fromRouter(`198.51.100.${i}`, seen))).status).to.equal(201);
      }
      const forged = await register(stack.baseUrl, fromRouter('198.51.100.99, 192.0.2.7', seen));
      expect(forged.status).to.equal(429);
      // Another address the router saw has its own budget.
      expect((await register(stack.baseUrl, fromRouter('203.0.113.2', '203.0.113.3'))).status).to.equal(201);
    });

    it('each route group has its own budget, and a browser route answers with the error page', async () => {
      const router = fromRouter(undefined, '203.0.113.4');
      for (let i = 0; i < LIMIT + 1; i++) await register(stack.baseUrl, router);
      const reg = await register(stack.baseUrl, router);
      expect(reg.status).to.equal(429);
      // /auth still has its budget: an unknown client is refused by oidc-provider, not the limiter.
      const url = authorizationUrl(stack.baseUrl, 'unknown-client', REDIRECT);
      const statuses: number[] = [];
      let page = '';
      for (let i = 0; i < LIMIT + 1; i++) {
        const res = await fetch(url, { redirect: 'manual', headers: { accept: 'text/html', ...router } });
        statuses.push(res.status);
        page = await res.text();
      }
      expect(statuses.slice(0, LIMIT)).to.not.include(429);
      expect(statuses[LIMIT]).to.equal(429);
      expect(page).to.include('Too many requests');
      const token = await fetch(`${stack.baseUrl}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...router },
        body: 'grant_type=refresh_token&refresh_token=x&client_id=y',
      });
      expect(token.status).to.not.equal(429);
      expect(token.headers.get('ratelimit-policy')).to.equal(`"token";q=${LIMIT};w=60`);
    });

    it('the count is shared by every instance on the same store', async () => {
      const port = await freePort();
      second = await start({ ...stack.env, PORT: String(port), BASE_URL: `http://localhost:${port}` });
      const router = fromRouter(undefined, '203.0.113.5');
      expect((await register(stack.baseUrl, router)).status).to.equal(201);
      expect((await register(`http://localhost:${port}`, router)).status).to.equal(201);
      expect((await register(stack.baseUrl, router)).status).to.equal(201);
      expect((await register(`http://localhost:${port}`, router)).status).to.equal(429);
    });

    it('registration metadata is capped at 8 KiB: 413 invalid_client_metadata', async () => {
      const huge = JSON.stringify({ redirect_uris: [REDIRECT], client_name: 'x'.repeat(9 * 1024) });
      const res = await register(stack.baseUrl, fromRouter(undefined, '203.0.113.6'), huge);
      expect(res.status).to.equal(413);
      expect(((await res.json()) as { error: string }).error).to.equal('invalid_client_metadata');
    });
  });

  it('development without Redis counts in memory', async () => {
    const stack = await startStack({ redis: false, env: { MAX_REQUESTS: '1', MAX_REQUESTS_WINDOW: '60000' } });
    try {
      expect((await register(stack.baseUrl, {})).status).to.equal(201);
      expect((await register(stack.baseUrl, {})).status).to.equal(429);
    } finally {
      await stack.close();
    }
  });

  it('/mcp is limited per grant, not per address: another login from the same address has its own budget', async () => {
    const stack = await startStack({ env: { MAX_REQUESTS: '8', MAX_REQUESTS_WINDOW: '60000' } });
    try {
      const login = async () => {
        const reg = await register(stack.baseUrl, {});
        const clientId = ((await reg.json()) as { client_id: string }).client_id;
        const { token } = await codeFlow({ baseUrl: stack.baseUrl, clientId, redirectUri: REDIRECT });
        return token.body.access_token;
      };
      const [first, second] = [await login(), await login()];
      for (let i = 0; i < 8; i++) expect((await mcpInitialize(stack.mcpUrl, first)).status).to.equal(200);
      const refused = await mcpInitialize(stack.mcpUrl, first);
      expect(refused.status).to.equal(429);
      expect(Number(refused.headers.get('retry-after'))).to.be.within(1, 60);
      expect(refused.headers.get('ratelimit-policy')).to.equal('"mcp";q=8;w=60');
      expect(refused.headers.get('ratelimit')).to.match(/^"mcp";r=0;t=\d+$/);
      expect(((await refused.json()) as { error: string }).error).to.equal('too_many_requests');
      expect((await mcpInitialize(stack.mcpUrl, second)).status).to.equal(200);
    } finally {
      await stack.close();
    }
  });

  describe('/mcp per grant, decided in process', function () {
    const config = { maxRequests: 10, windowMs: 60_000 };
    let stores: Store[] = [];
    afterEach(async () => {
      await Promise.all(stores.map((s) => s.close()));
      stores = [];
    });

    it('refuses the limit+1st call of a grant without waiting for the store; other grants are apart', async () => {
      const limiter = new GrantRateLimiter(createMemoryStore(), config, log, 60_000);
      const now = 5 * 60_000 + 1_000;
      for (let i = 0; i < 10; i++) expect(limiter.hit('grant-a', now).allowed).to.equal(true);
      const refused = limiter.hit('grant-a', now);
      expect(refused).to.include({ allowed: false });
      expect(refused.resetMs).to.equal(59_000);
      expect(limiter.hit('grant-b', now).allowed).to.equal(true);
      // The next window starts afresh.
      expect(limiter.hit('grant-a', now + 59_000).allowed).to.equal(true);
      limiter.close();
    });

    it('two processes on one Redis share the count once they have flushed', async () => {
      const keyPrefix = `test-${randomBytes(6).toString('hex')}:`;
      const shared = { url: process.env.TEST_REDIS_URL!, keyPrefix, tlsRejectUnauthorized: false };
      const storeA = createRedisStore(shared);
      const storeB = createRedisStore(shared);
      stores.push(storeA, storeB);
      const a = new GrantRateLimiter(storeA, config, log, 60_000);
      const b = new GrantRateLimiter(storeB, config, log, 60_000);
      const now = Date.now();
      for (let i = 0; i < 6; i++) expect(a.hit('g', now).allowed).to.equal(true);
      for (let i = 0; i < 4; i++) expect(b.hit('g', now).allowed).to.equal(true);
      await a.flush(now);
      await b.flush(now);
      // B now knows of A's six: the window's ten are spent, on either process.
      expect(b.hit('g', now).allowed).to.equal(false);
      // A flushed before B: it has not heard of B's four yet, and lets one more through (the
      // documented overshoot: what others accepted within one flush interval)...
      expect(a.hit('g', now).allowed).to.equal(true);
      // ...and learns the total with the flush that sends it.
      await a.flush(now);
      expect(a.hit('g', now).allowed).to.equal(false);
      a.close();
      b.close();
    });

    it('the store unavailable: each process keeps limiting on its own count', async () => {
      const store = createRedisStore({
        url: `redis://127.0.0.1:${await freePort()}`,
        keyPrefix: 'x:',
        tlsRejectUnauthorized: false,
      });
      stores.push(store);
      const limiter = new GrantRateLimiter(store, config, log, 60_000);
      const now = Date.now();
      for (let i = 0; i < 10; i++) expect(limiter.hit('g', now).allowed).to.equal(true);
      await limiter.flush(now);
      expect(limiter.hit('g', now).allowed).to.equal(false);
      limiter.close();
    });
  });
});
