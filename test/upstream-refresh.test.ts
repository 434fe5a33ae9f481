import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { start, type RunningProxy } from '../lib/start.ts';
import { captureLogs } from '../lib/telemetry/log.ts';
import { codeFlow, mcpInitialize, registerClient } from './helpers/oauth.ts';
import { freePort, startStack, type Stack } from './helpers/stack.ts';

/**
 * Upstream tokens of any lifetime: one upstream refresh per expiry and grant, whatever the
 * concurrency and number of instances; a process killed while refreshing holds the grant no
 * longer than its lock lives; a rotated identity client secret logs nobody out.
 */

const REDIRECT = 'http://127.0.0.1:33418/callback';
const REPO = new URL('..', import.meta.url).pathname;

interface Login {
  clientId: string;
  accessToken: string;
  /** When the upstream token was issued (the code exchange), epoch ms. */
  issuedAt: number;
}

async function login(stack: Stack, user: string): Promise<Login> {
  const reg = await registerClient(stack.baseUrl, {
    redirect_uris: [REDIRECT],
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
  });
  const issuedAt = Date.now();
  const { token } = await codeFlow({
    baseUrl: stack.baseUrl,
    clientId: reg.body.client_id!,
    redirectUri: REDIRECT,
    user,
  });
  expect(token.status).to.equal(200);
  return { clientId: reg.body.client_id!, accessToken: token.body.access_token, issuedAt };
}

async function grantIdOf(stack: Stack, redis: Redis): Promise<string[]> {
  const prefix = stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX!;
  const keys = await redis.keys(`${prefix}vault:*`);
  return keys.map((key) => key.slice(`${prefix}vault:`.length));
}

describe('upstream tokens of any lifetime', function () {
  this.timeout(90_000);
  let redis: Redis;
  before(() => {
    redis = new Redis(process.env.TEST_REDIS_URL!);
  });
  after(() => redis.disconnect());

  /**
   * The 15-second scenario mostly waits for its token to fall due, and the killed-instance one for
   * a lock to expire: the first runs in the background from `before` (on a stack of its own) while
   * the second runs, and its test only checks what it recorded. Keeps `npm test` short.
   */
  interface Waves {
    statuses: number[][];
    /** Upstream refreshes counted after the calls that primed both instances, after each wave. */
    refreshes: number[];
  }
  let waves: Promise<Waves | Error>;
  let shortStack: Stack | undefined;
  let second: RunningProxy | undefined;

  before(() => {
    waves = (async (): Promise<Waves> => {
      shortStack = await startStack({ idp: { accessTokenTtl: 15 } });
      const stack = shortStack;
      const port = await freePort();
      second = await start({ ...stack.env, PORT: String(port) });
      const urls = [stack.mcpUrl, `http://localhost:${port}/mcp`];
      const alice = await login(stack, 'short-alice');
      const primed = await Promise.all(urls.map((url) => mcpInitialize(url, alice.accessToken)));
      const before = stack.idp.stats.refreshes;
      // The margin is min(60 s, lifetime / 4) = 3.75 s: from 11.25 s on the token is due.
      await sleep(Math.max(0, alice.issuedAt + 12_000 - Date.now()));
      const result: Waves = { statuses: [primed.map((r) => r.status)], refreshes: [] };
      for (let i = 0; i < 2; i++) {
        const wave = await Promise.all(
          Array.from({ length: 30 }, (_, n) => mcpInitialize(urls[n % 2]!, alice.accessToken)),
        );
        result.statuses.push(wave.map((r) => r.status));
        result.refreshes.push(stack.idp.stats.refreshes - before);
      }
      return result;
    })().catch((error: Error) => error);
  });
  after(async () => {
    await waves;
    await second?.close();
    await shortStack?.close();
  });

  describe('an instance killed while it refreshes', function () {
    let stack: Stack;
    let blackhole: Server;
    const sockets: Socket[] = [];
    let child: ChildProcess | undefined;
    let dir: string;

    before(async () => {
      stack = await startStack();
      // Accepts connections and never answers: the child's refresh hangs there, lock held.
      blackhole = createServer((socket) => sockets.push(socket)).listen(0, '127.0.0.1');
      await once(blackhole, 'listening');
      dir = await mkdtemp(join(tmpdir(), 'killed-refresh-'));
    });
    after(async () => {
      child?.kill('SIGKILL');
      for (const socket of sockets) socket.destroy();
      blackhole?.close();
      await stack?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('SIGKILL while holding the refresh lock: the grant is back within the lock’s lifetime, refreshed once', async () => {
      const bob = await login(stack, 'killed-bob');
      expect((await mcpInitialize(stack.mcpUrl, bob.accessToken)).status).to.equal(200);
      const [grantId] = await grantIdOf(stack, redis);

      // A second web process, as the buildpack runs it, whose identity provider's token endpoint
      // is the black hole.
      const metadata = (await (await fetch(`${stack.idp.issuer}/.well-known/openid-configuration`)).json()) as Record<
        string,
        unknown
      >;
      const { port: holePort } = blackhole.address() as { port: number };
      const metadataFile = join(dir, 'idp.json');
      await writeFile(
        metadataFile,
        JSON.stringify({ ...metadata, token_endpoint: `http://127.0.0.1:${holePort}/token` }),
      );
      const port = await freePort();
      const env: NodeJS.ProcessEnv = { ...stack.env, PORT: String(port), LOG_LEVEL: 'info', PATH: process.env.PATH };
      delete env.IDENTITY_SERVER_URL;
      env.IDENTITY_SERVER_METADATA_FILE = metadataFile;
      child = spawn(process.execPath, ['--import', 'tsx', 'lib/main.ts'], { cwd: REPO, env, stdio: 'pipe' });
      let output = '';
      child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      // Ready, not just listening: until then /mcp answers 503 and would never reach the refresh.
      const ready = () =>
        fetch(`http://localhost:${port}/readyz`).then(
          (res) => res.ok,
          () => false,
        );
      for (let waited = 0; !(await ready()); waited += 50) {
        if (waited > 30_000 || child.exitCode !== null) throw new Error(`second process did not start: ${output}`);
        await sleep(50);
      }

      const before = { refreshes: stack.idp.stats.refreshes, logins: stack.idp.stats.codeExchanges };
      await stack.idp.expireAccessTokens();
      // The child forwards, hears 401 from the MCP server, takes the lock and calls the black hole.
      const hanging = mcpInitialize(`http://localhost:${port}/mcp`, bob.accessToken).catch(() => undefined);
      const lockKey = `${stack.env.MCP_AUTH_PROXY_REDIS_KEY_PREFIX}lock:refresh:${grantId}`;
      for (let waited = 0; (await redis.exists(lockKey)) === 0; waited += 20) {
        if (waited > 10_000) throw new Error(`the second process never took the lock: ${output}`);
        await sleep(20);
      }
      const lockLifetimeMs = await redis.pttl(lockKey);
      child.kill('SIGKILL');
      await once(child, 'exit');
      const killedAt = Date.now();
      await hanging;
      expect(await redis.exists(lockKey), 'the dead process’s lock is still there').to.equal(1);

      // Meanwhile the first process answers 503 (never 401: the grant is fine) and then serves.
      const statuses: number[] = [];
      for (;;) {
        const res = await mcpInitialize(stack.mcpUrl, bob.accessToken);
        statuses.push(res.status);
        if (res.status === 200) break;
        expect(res.status, `answer while the lock is held: ${await res.text()}`).to.equal(503);
        expect(res.headers.get('retry-after')).to.match(/^\d+$/);
        if (Date.now() - killedAt > lockLifetimeMs + 10_000) throw new Error(`still blocked: ${statuses}`);
        await sleep(250);
      }
      expect(Date.now() - killedAt, 'blocked no longer than the lock lives (plus a poll)').to.be.below(
        lockLifetimeMs + 5_000,
      );
      expect(stack.idp.stats.refreshes - before.refreshes, 'upstream refreshes').to.equal(1);
      expect(stack.idp.stats.codeExchanges, 'nobody logged in again').to.equal(before.logins);
    });
  });

  describe('the identity client secret rotated at the identity provider', function () {
    let stack: Stack;
    before(async () => {
      stack = await startStack();
    });
    after(async () => {
      stack.idp.rotateClientSecret(undefined);
      await stack?.close();
    });

    it('answers 503 and keeps every grant, logs an operator error; with the new secret set, everyone carries on', async () => {
      const carol = await login(stack, 'rotated-carol');
      expect((await mcpInitialize(stack.mcpUrl, carol.accessToken)).status).to.equal(200);
      const [grantId] = await grantIdOf(stack, redis);
      const logins = stack.idp.stats.codeExchanges;

      stack.idp.rotateClientSecret('the-new-secret');
      await stack.idp.expireAccessTokens();
      const lines: Array<{ line: string; level: string }> = [];
      const stop = captureLogs((line, level) => lines.push({ line, level }));
      let res: Response;
      try {
        res = await mcpInitialize(stack.mcpUrl, carol.accessToken);
      } finally {
        stop();
      }
      expect(res.status).to.equal(503);
      expect(res.headers.get('retry-after')).to.match(/^\d+$/);
      expect(((await res.json()) as { error: string }).error).to.equal('temporarily_unavailable');
      const operatorError = lines.find(({ line, level }) => level === 'error' && /IDENTITY_CLIENT_SECRET/.test(line));
      expect(operatorError, JSON.stringify(lines)).to.not.equal(undefined);
      expect(JSON.stringify(lines), 'no secret in the log').to.not.contain('the-new-secret');
      expect(await grantIdOf(stack, redis), 'the grant’s upstream credentials are kept').to.include(grantId);

      // The operator sets the new secret (a config var change restarts the dyno).
      stack.env.IDENTITY_CLIENT_SECRET = 'the-new-secret';
      await stack.restart();
      expect((await mcpInitialize(stack.mcpUrl, carol.accessToken)).status).to.equal(200);
      expect(stack.idp.stats.codeExchanges, 'nobody logged in again').to.equal(logins);
    });
  });
  // After the other scenarios, so that its waiting overlaps theirs (see `before` above).
  describe('15-second upstream tokens, two proxy instances', function () {
    it('30 concurrent calls when the token is due cause exactly one upstream refresh; the next 30 none', async () => {
      const result = await waves;
      if (result instanceof Error) throw result;
      const [primed, first, again] = result.statuses;
      expect(primed, 'both instances know the grant').to.deep.equal([200, 200]);
      expect(first).to.deep.equal(Array(30).fill(200));
      expect(result.refreshes[0], 'refreshes for one expiry').to.equal(1);
      expect(again).to.deep.equal(Array(30).fill(200));
      expect(result.refreshes[1], 'no refresh for a fresh token').to.equal(1);
    });
  });
});
