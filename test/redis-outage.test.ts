import { expect } from 'chai';
import { setTimeout as sleep } from 'node:timers/promises';
import { codeFlow, mcpInitialize, registerClient, tokenRequest, authorizationUrl } from './helpers/oauth.ts';
import { startRedisServer, type RedisServer } from './helpers/redis-server.ts';
import { startStack, type Stack } from './helpers/stack.ts';

/**
 * Redis trouble is a 503 with Retry-After, answered within seconds, never a 500, a 401 or a hang;
 * once Redis is back the proxy serves again without a restart and nothing stored before is lost.
 * Each fault on a Redis of this file's own (never the shared one).
 */

const REDIRECT = 'http://127.0.0.1:33418/callback';
/** A bound, not a performance figure: the command timeout is 2 s, a hang would be unbounded. */
const ANSWER_WITHIN_MS = 6_000;

interface Session {
  clientId: string;
  refreshToken: string;
  /** Used on /mcp before the fault: the proxy has it cached. */
  warmToken: string;
  /** Never used on /mcp: the proxy must ask the store. */
  coldToken: string;
}

interface Answer {
  status: number;
  retryAfter: string | null;
  body: string;
  ms: number;
}

async function timed(request: () => Promise<Response>): Promise<Answer> {
  const started = Date.now();
  const res = await request();
  const body = await res.text();
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body, ms: Date.now() - started };
}

describe('Redis trouble: 503 with Retry-After, then recovery with nothing lost', function () {
  this.timeout(60_000);
  let redis: RedisServer;
  let stack: Stack;

  before(async () => {
    redis = await startRedisServer();
    stack = await startStack({ env: { MCP_AUTH_PROXY_REDIS_URL: redis.url } });
  });
  after(async () => {
    await stack?.close();
    await redis?.close();
  });

  async function login(): Promise<{ clientId: string; access: string; refresh: string }> {
    const reg = await registerClient(stack.baseUrl, {
      redirect_uris: [REDIRECT],
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
    });
    expect(reg.status).to.equal(201);
    const { token } = await codeFlow({ baseUrl: stack.baseUrl, clientId: reg.body.client_id!, redirectUri: REDIRECT });
    expect(token.status).to.equal(200);
    return { clientId: reg.body.client_id!, access: token.body.access_token, refresh: token.body.refresh_token! };
  }

  async function session(): Promise<Session> {
    const first = await login();
    expect((await mcpInitialize(stack.mcpUrl, first.access)).status).to.equal(200);
    const second = await tokenRequest(stack.baseUrl, {
      grant_type: 'refresh_token',
      refresh_token: first.refresh,
      client_id: first.clientId,
    });
    expect(second.status).to.equal(200);
    return {
      clientId: first.clientId,
      warmToken: first.access,
      coldToken: second.body.access_token,
      refreshToken: second.body.refresh_token!,
    };
  }

  /** The four kinds of request an outage meets, sent one after the other. */
  async function probe(s: Session): Promise<Record<'reg' | 'token' | 'auth' | 'mcpWarm' | 'mcpCold', Answer>> {
    const reg = await timed(() =>
      fetch(`${stack.baseUrl}/reg`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify({ redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' }),
      }),
    );
    const token = await timed(() =>
      fetch(`${stack.baseUrl}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: new URLSearchParams({
          grant_type: 'refresh_token',
          refresh_token: s.refreshToken,
          client_id: s.clientId,
        }),
      }),
    );
    const auth = await timed(() =>
      fetch(authorizationUrl(stack.baseUrl, s.clientId, REDIRECT), {
        redirect: 'manual',
        headers: { accept: 'text/html' },
      }),
    );
    const mcpWarm = await timed(() => mcpInitialize(stack.mcpUrl, s.warmToken));
    const mcpCold = await timed(() => mcpInitialize(stack.mcpUrl, s.coldToken));
    return { reg, token, auth, mcpWarm, mcpCold };
  }

  function expectUnavailable(answer: Answer, what: string, page = false): void {
    expect(answer.status, `${what}: ${answer.body.slice(0, 200)}`).to.equal(503);
    expect(answer.retryAfter, `${what} Retry-After`).to.match(/^\d+$/);
    expect(answer.ms, `${what} answered within the bound`).to.be.below(ANSWER_WITHIN_MS);
    if (page) {
      expect(answer.body, what).to.include('temporarily unavailable');
    } else {
      expect(JSON.parse(answer.body), what).to.include({ error: 'temporarily_unavailable' });
    }
  }

  /** After the fault: the refresh token kept works, the client is still registered, /mcp serves. */
  async function expectRecovered(s: Session): Promise<void> {
    const deadline = Date.now() + 15_000;
    let refreshed: Awaited<ReturnType<typeof tokenRequest>> | undefined;
    while (Date.now() < deadline) {
      refreshed = await tokenRequest(stack.baseUrl, {
        grant_type: 'refresh_token',
        refresh_token: s.refreshToken,
        client_id: s.clientId,
      });
      if (refreshed.status !== 503) break;
      await sleep(200);
    }
    expect(refreshed?.status, JSON.stringify(refreshed?.body)).to.equal(200);
    expect((await mcpInitialize(stack.mcpUrl, refreshed!.body.access_token)).status).to.equal(200);
    const auth = await fetch(authorizationUrl(stack.baseUrl, s.clientId, REDIRECT), { redirect: 'manual' });
    expect(auth.status, 'the registered client is still known').to.equal(303);
    expect(auth.headers.get('location')).to.match(/\/interaction\//);
  }

  /**
   * One fault: a logged-in session, the fault, what each route answers meanwhile (writes always
   * 503; `/mcp` as `mcp` says), then recovery with nothing lost.
   */
  async function duringFault(
    fault: { begin(): Promise<void> | void; end(): Promise<void> | void },
    mcp: (answers: Awaited<ReturnType<typeof probe>>) => void,
  ): Promise<void> {
    const s = await session();
    await fault.begin();
    try {
      const answers = await probe(s);
      expectUnavailable(answers.reg, '/reg');
      expectUnavailable(answers.token, '/token (refresh)');
      expectUnavailable(answers.auth, '/auth', true);
      mcp(answers);
    } finally {
      await fault.end();
    }
    await expectRecovered(s);
  }

  it('stopped: every route needing the store answers 503 at once; after the restart the refresh token still works', () =>
    duringFault({ begin: () => redis.stop(), end: () => redis.start() }, (answers) => {
      expectUnavailable(answers.mcpCold, '/mcp with a token not cached');
      // A token already validated is served from the proxy's cache: the MCP server is up.
      expect(answers.mcpWarm.status).to.be.oneOf([200, 503]);
    }));

  it('frozen (SIGSTOP): answers come within the bound instead of hanging; all serves again after SIGCONT', () =>
    duringFault({ begin: () => redis.freeze(), end: () => redis.thaw() }, (answers) => {
      expectUnavailable(answers.mcpCold, '/mcp with a token not cached');
      expect(answers.mcpWarm.status).to.be.oneOf([200, 503]);
    }));

  it('full (maxmemory, noeviction): every write is refused with 503, registration included; reads still serve /mcp', () =>
    duringFault({ begin: () => redis.fill(), end: () => redis.unfill() }, (answers) => {
      // Admitting a call only reads: a full Redis does not stop tool calls.
      expect(answers.mcpCold.status, answers.mcpCold.body).to.equal(200);
      expect(answers.mcpWarm.status).to.equal(200);
    }));

  it('read-only (became a replica): writes answer 503, reads still serve /mcp; writable again, all serves', () =>
    duringFault({ begin: () => redis.makeReplica(), end: () => redis.makePrimary() }, (answers) => {
      expect(answers.mcpCold.status, answers.mcpCold.body).to.equal(200);
      expect(answers.mcpWarm.status).to.equal(200);
    }));
});
