/**
 * `npm run soak`: the proxy under steady use for SOAK_SECONDS (default 180) with two faults
 * inside: its Redis restarted once, the MCP server killed once. Not part of `npm test`.
 *
 * Everything real and on this machine: the proxy as its web process (lib/main.ts), a Redis of its
 * own (never the shared one), the development identity provider issuing 15-second upstream tokens,
 * the example MCP server as the proxy's supervised child (MCP_SERVER_RUN_COMMAND). Load: users logging in, refreshing their tokens,
 * calling tools, and streaming (slow_count answers as an event stream).
 *
 * Asserted at the end (exit code 1 otherwise):
 * - no request failed except the 503s, 502s and lost MCP sessions the two faults allow, and only
 *   while they last (plus a short grace);
 * - the proxy's RSS at the end is at most 1.2× its RSS after warm-up, both taken right after a
 *   full garbage collection (bench/memory-probe.ts), its heap printed beside it;
 * - its open file descriptors (/proc/<pid>/fd) are flat: at most a few more than after warm-up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ephemeralJwks } from '../lib/auth-server/keys.ts';
import { startDevIdentityProvider } from '../lib/dev/identity-provider.ts';
import { createBrowser } from '../test/helpers/browser.ts';
import { codeFlow, registerClient, tokenRequest } from '../test/helpers/oauth.ts';
import { startRedisServer } from '../test/helpers/redis-server.ts';
import { freePort } from '../test/helpers/stack.ts';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 180);
const WARM_UP_SECONDS = Math.min(30, Math.round(SECONDS / 6));
const USERS = 4;
/** Each user logs in again this often. */
const RELOGIN_MS = 40_000;
/** How long Redis stays down: what the operator saw in the issue. */
const REDIS_DOWN_MS = 10_000;
/** After a fault ends, what it caused may still be seen this long (reconnects, sessions re-made). */
const GRACE_MS = 10_000;
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REDIRECT = 'http://127.0.0.1:33418/callback';
const PROTOCOL = '2025-06-18';

interface Outcome {
  at: number;
  what: string;
  /** HTTP status, or 0 for a network error / stream cut. */
  status: number;
  detail?: string;
}

interface Fault {
  name: string;
  from: number;
  to: number;
  /** Statuses this fault may cause. */
  allows: Set<number>;
}

const outcomes: Outcome[] = [];
const faults: Fault[] = [];
let stopping = false;

function record(what: string, status: number, detail?: string): void {
  outcomes.push({ at: Date.now(), what, status, detail });
}

const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
const openFds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

/** Every process below `pid` (the MCP server the proxy started, and whatever it started). */
function descendants(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // Gone meanwhile.
    }
  }
  const found: number[] = [];
  const visit = (parent: number) => {
    for (const [child, ppid] of parents) {
      if (ppid !== parent) continue;
      found.push(child);
      visit(child);
    }
  };
  visit(pid);
  return found;
}

function spawnNode(
  args: string[],
  env: NodeJS.ProcessEnv,
  nodeArgs: string[] = [],
): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-20_000)));
  child.stderr!.on('data', (chunk: Buffer) => (output = (output + chunk.toString()).slice(-20_000)));
  return { child, output: () => output };
}

async function waitFor(url: string, what: string, output: () => string, ok = false): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const up = await fetch(url).then(
      (res) => !ok || res.ok,
      () => false,
    );
    if (up) return;
    await sleep(100);
  }
  throw new Error(`${what} did not come up:\n${output()}`);
}

/** One user: logged in once, then calls, streams and token refreshes until the end. */
async function user(n: number, baseUrl: string): Promise<void> {
  const mcpUrl = `${baseUrl}/mcp`;
  let tokens: { access: string; refresh: string; clientId: string } | undefined;
  let session: string | undefined;
  let lastRefresh = Date.now();
  let loggedInAt = Date.now();
  let logins = 0;
  let call = 0;

  const rpc = async (message: object, what: string): Promise<Response | undefined> => {
    try {
      const res = await fetch(mcpUrl, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${tokens!.access}`,
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'mcp-protocol-version': PROTOCOL,
          ...(session ? { 'mcp-session-id': session } : {}),
        },
        body: JSON.stringify({ jsonrpc: '2.0', id: ++call, ...message }),
      });
      return res;
    } catch (error) {
      record(what, 0, (error as Error).message);
      return undefined;
    }
  };

  while (!stopping) {
    if (!tokens) {
      try {
        const reg = await registerClient(baseUrl, {
          redirect_uris: [REDIRECT],
          token_endpoint_auth_method: 'none',
          grant_types: ['authorization_code', 'refresh_token'],
        });
        if (reg.status !== 201) throw new Error(`registration ${reg.status}`);
        const clientId = reg.body.client_id!;
        const { token } = await codeFlow({
          baseUrl,
          clientId,
          redirectUri: REDIRECT,
          user: `soak-${n}`,
          browser: createBrowser(),
        });
        if (token.status !== 200) throw new Error(`code exchange ${token.status}`);
        tokens = { access: token.body.access_token, refresh: token.body.refresh_token!, clientId };
        session = undefined;
        // Spread the users' next logins over one period, so they do not all log in at once.
        loggedInAt = Date.now() - (logins++ === 0 ? (n * RELOGIN_MS) / USERS : 0);
        lastRefresh = Date.now();
        record('login', 200);
      } catch (error) {
        const status = Number(/\b(\d{3})\b/.exec((error as Error).message)?.[1] ?? 0);
        record('login', status, (error as Error).message);
        await sleep(1_000);
      }
      continue;
    }

    if (Date.now() - loggedInAt > RELOGIN_MS) {
      // A new login now and then: registration, consent, the upstream login and the code exchange
      // keep being exercised, through the faults too.
      tokens = undefined;
      continue;
    }

    if (Date.now() - lastRefresh > 20_000) {
      const refreshed = await tokenRequest(baseUrl, {
        grant_type: 'refresh_token',
        refresh_token: tokens.refresh,
        client_id: tokens.clientId,
      }).catch((error: Error) => ({ status: 0, body: { error: error.message } }) as const);
      record('refresh', refreshed.status, refreshed.status === 200 ? undefined : JSON.stringify(refreshed.body));
      if (refreshed.status === 200 && 'access_token' in refreshed.body) {
        tokens = { ...tokens, access: refreshed.body.access_token, refresh: refreshed.body.refresh_token! };
        lastRefresh = Date.now();
      } else {
        await sleep(500);
      }
      continue;
    }

    if (!session) {
      const res = await rpc(
        {
          method: 'initialize',
          params: { protocolVersion: PROTOCOL, capabilities: {}, clientInfo: { name: `soak-${n}`, version: '1' } },
        },
        'initialize',
      );
      if (!res) continue;
      const text = await res.text().catch(() => '');
      record('initialize', res.status, res.ok ? undefined : text.slice(0, 200));
      if (res.ok) {
        session = res.headers.get('mcp-session-id') ?? undefined;
        await rpc({ method: 'notifications/initialized' }, 'initialized').then((r) => r?.body?.cancel());
      } else {
        await sleep(500);
      }
      continue;
    }

    const streaming = call % 5 === 0;
    const what = streaming ? 'slow_count' : 'echo';
    const res = await rpc(
      {
        method: 'tools/call',
        params: streaming
          ? { name: 'slow_count', arguments: { count: 5, delayMs: 100 } }
          : { name: 'echo', arguments: { text: `call ${call}` } },
      },
      what,
    );
    if (!res) continue;
    let text = '';
    try {
      text = await res.text();
    } catch (error) {
      record(what, 0, `stream cut: ${(error as Error).message}`);
      continue;
    }
    if (res.status === 404) session = undefined; // the MCP server restarted: a new session
    const complete = res.ok && text.includes('"result"') && (!streaming || text.includes('step 5 of 5'));
    record(what, res.ok && !complete ? 0 : res.status, complete ? undefined : text.slice(0, 200));
    if (!res.ok) await sleep(250);
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  const redis = await startRedisServer();
  onFailure.push(() => redis.close());
  const port = await freePort();
  const baseUrl = `http://localhost:${port}`;
  const idp = await startDevIdentityProvider({
    redirectUris: [`${baseUrl}/interaction/identity/callback`],
    tokenEndpointAuthMethod: 'client_secret_post',
    accessTokenTtl: 15,
  });
  const mcpPort = await freePort();

  const proxy = spawnNode(
    ['lib/main.ts'],
    {
      BASE_URL: baseUrl,
      PORT: String(port),
      LOCAL_INSECURE: 'true',
      LOG_LEVEL: 'warn',
      // The MCP server as the proxy's own child, supervised (restarted when it dies).
      MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
      MCP_SERVER_RUN_COMMAND: process.execPath,
      MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['--import', 'tsx', 'lib/dev/example-mcp-server.ts']),
      MCP_SERVER_RUN_ENV_JSON: JSON.stringify({ PORT: String(mcpPort) }),
      IDENTITY_SERVER_URL: idp.issuer,
      IDENTITY_CLIENT_ID: idp.clientId,
      IDENTITY_CLIENT_SECRET: idp.clientSecret,
      IDENTITY_SCOPE: 'openid profile offline_access',
      OIDC_PROVIDER_JWKS: JSON.stringify(await ephemeralJwks()),
      MCP_AUTH_PROXY_REDIS_URL: redis.url,
      // All load comes from one address: the soak measures survival, not the abuse limits.
      MAX_REQUESTS: '1000000',
    },
    ['--expose-gc', '--import', './bench/memory-probe.ts'],
  );
  onFailure.push(async () => void proxy.child.kill('SIGKILL'));
  const pid = proxy.child.pid!;
  /** Heap after a full collection in the proxy, in KiB (bench/memory-probe.ts). */
  const probes: Array<{ rss: number; heapUsed: number }> = [];
  proxy.child.stderr!.on('data', (chunk: Buffer) => {
    for (const match of chunk.toString().matchAll(/memory-probe (\{.*\})/g)) probes.push(JSON.parse(match[1]!));
  });
  const heapAfterGc = async (): Promise<{ rss: number; heapUsed: number }> => {
    const seen = probes.length;
    process.kill(pid, 'SIGUSR2');
    for (let i = 0; i < 50 && probes.length === seen; i++) await sleep(100);
    if (probes.length === seen) throw new Error('the proxy did not report its heap');
    return probes[probes.length - 1]!;
  };
  await waitFor(`${baseUrl}/readyz`, 'the proxy', proxy.output, true);

  const users = Array.from({ length: USERS }, (_, n) => user(n, baseUrl));
  const at = (fraction: number) => started + fraction * SECONDS * 1000;
  const until = async (time: number) => {
    while (Date.now() < time) await sleep(Math.min(1_000, time - Date.now()));
  };

  // RSS every 10 s, printed at the end: a plateau and a steady climb look alike in two samples.
  const series: number[] = [];
  const sampler = setInterval(() => series.push(Math.round(rssKiB(pid) / 1024)), 10_000);

  await until(started + WARM_UP_SECONDS * 1000);
  const warmHeap = await heapAfterGc();
  // RSS right after a full collection at both points: garbage not yet collected is no growth.
  const warm = { rss: warmHeap.rss, fds: openFds(pid), heap: warmHeap.heapUsed };
  console.log(
    `warm-up done after ${WARM_UP_SECONDS} s: proxy RSS ${warm.rss} KiB, heap after GC ${warm.heap} KiB, ${warm.fds} open fds`,
  );

  await until(at(0.4));
  const redisFault: Fault = { name: 'Redis restart', from: Date.now(), to: 0, allows: new Set([503, 0]) };
  faults.push(redisFault);
  await redis.stop();
  console.log('Redis stopped');
  await sleep(REDIS_DOWN_MS);
  await redis.start();
  redisFault.to = Date.now();
  console.log('Redis started again (same data)');

  await until(at(0.7));
  const mcpFault: Fault = { name: 'MCP server kill', from: Date.now(), to: 0, allows: new Set([502, 503, 404, 0]) };
  faults.push(mcpFault);
  const killed = descendants(pid);
  for (const child of killed) process.kill(child, 'SIGKILL');
  console.log(`MCP server killed (pid ${killed.join(', ')})`);
  await sleep(200);
  await waitFor(`${baseUrl}/readyz`, 'the restarted MCP server', proxy.output, true);
  mcpFault.to = Date.now();
  console.log(`MCP server restarted by the proxy after ${((mcpFault.to - mcpFault.from) / 1000).toFixed(1)} s`);

  await until(started + SECONDS * 1000);
  const endHeap = await heapAfterGc();
  const end = { rss: endHeap.rss, fds: openFds(pid), heap: endHeap.heapUsed };
  clearInterval(sampler);
  stopping = true;
  await Promise.all(users);

  proxy.child.kill('SIGTERM');
  await once(proxy.child, 'exit');
  await idp.close();
  await redis.close();

  // --- Figures and verdict ------------------------------------------------------------------
  const excused = (o: Outcome) =>
    faults.some((f) => o.at >= f.from && o.at <= f.to + GRACE_MS && f.allows.has(o.status));
  const failed = outcomes.filter((o) => o.status < 200 || o.status >= 300);
  const unexcused = failed.filter((o) => !excused(o));
  const byWhat = new Map<string, { ok: number; failed: number }>();
  for (const o of outcomes) {
    const entry = byWhat.get(o.what) ?? { ok: 0, failed: 0 };
    if (o.status >= 200 && o.status < 300) entry.ok += 1;
    else entry.failed += 1;
    byWhat.set(o.what, entry);
  }
  console.log(`\nsoak: ${SECONDS} s, ${USERS} users, ${outcomes.length} requests`);
  for (const [what, { ok, failed: bad }] of byWhat) console.log(`  ${what.padEnd(12)} ${ok} ok, ${bad} failed`);
  console.log(`  upstream refreshes at the identity provider: ${idp.stats.refreshes}`);
  for (const fault of faults) {
    const during = failed.filter((o) => o.at >= fault.from && o.at <= fault.to + GRACE_MS);
    const statuses = [...new Set(during.map((o) => o.status))].join(', ') || 'none';
    console.log(
      `  ${fault.name}: ${((fault.to - fault.from) / 1000).toFixed(1)} s, ${during.length} failed (${statuses})`,
    );
    // SOAK_VERBOSE=1 lists them: when each came after the fault began, what, status, detail.
    if (process.env.SOAK_VERBOSE) {
      for (const o of during) console.log(`    +${o.at - fault.from} ms ${o.what} ${o.status} ${o.detail ?? ''}`);
    }
  }
  const ratio = end.rss / warm.rss;
  console.log(`  proxy RSS: ${warm.rss} KiB after warm-up, ${end.rss} KiB at the end (×${ratio.toFixed(2)})`);
  console.log(`  open fds: ${warm.fds} after warm-up, ${end.fds} at the end`);
  console.log(`  proxy heap after a full GC: ${warm.heap} KiB after warm-up, ${end.heap} KiB at the end`);
  console.log(`  proxy RSS every 10 s (MiB): ${series.join(' ')}`);

  const problems: string[] = [];
  if (unexcused.length > 0) {
    problems.push(`${unexcused.length} failed requests outside what the faults allow`);
    for (const o of unexcused.slice(0, 10)) {
      console.log(`    ${new Date(o.at).toISOString()} ${o.what} ${o.status} ${o.detail ?? ''}`);
    }
  }
  if (ratio > 1.2) problems.push(`RSS grew ×${ratio.toFixed(2)} (limit ×1.2)`);
  if (end.fds > warm.fds + 10) problems.push(`open fds grew from ${warm.fds} to ${end.fds}`);
  if (byWhat.get('slow_count')?.ok === 0) problems.push('no stream completed');
  if (problems.length > 0) {
    console.log(`\nFAILED: ${problems.join('; ')}`);
    process.exit(1);
  }
  console.log('\nPASSED');
  process.exit(0);
}

/** What a run that fails half-way must not leave behind: its Redis and the proxy. */
const onFailure: Array<() => Promise<unknown>> = [];

try {
  await main();
} catch (error) {
  for (const undo of onFailure.reverse()) await undo().catch(() => undefined);
  throw error;
}
