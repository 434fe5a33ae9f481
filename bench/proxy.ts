/**
 * `npm run bench`: the same MCP JSON-RPC call (`tools/call echo`) sent straight to the example MCP
 * server, through the proxy, through the proxy with tracing on (`traced`, see startTracedProxy),
 * and through a bare forwarder (bench/bare-forwarder.ts, the cost of any Node.js hop), side by
 * side in one run, at 1, 10 and 50 connections. Prints requests/s, p50 and p99 latency, the
 * proxy/direct ratios, tracing on/off, and the proxy's RSS.
 *
 * Everything runs on this machine: the proxy as its real web process (lib/main.ts) with
 * the Redis store, the example MCP server as the proxy's child, and this load generator. Ratios
 * matter, not absolute figures: the three share the same cores.
 *
 * Needs Redis at BENCH_REDIS_URL (default redis://127.0.0.1:6379/0). BENCH_SECONDS sets the
 * length of each measurement (default 4).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { ephemeralJwks } from '../lib/auth-server/keys.ts';
import { createBrowser } from '../test/helpers/browser.ts';
import { codeFlow, registerClient } from '../test/helpers/oauth.ts';
import { freePort } from '../test/helpers/stack.ts';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const LEVELS = [1, 10, 50];
const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Target {
  name: 'direct' | 'proxy' | 'bare' | 'traced';
  /** The forwarding process in front of the MCP server, if any. */
  pid?: number;
  url: URL;
  headers: Record<string, string>;
}

interface Result {
  requests: number;
  errors: number;
  seconds: number;
  latenciesMs: number[];
}

/** `ready`: whether an answer means ready (a proxy binds first and answers 503 until it is). */
async function waitUntilListening(
  child: ChildProcess,
  url: string,
  output: () => string,
  ready: (res: Response) => boolean = () => true,
): Promise<void> {
  let exited = false;
  child.on('exit', () => (exited = true));
  for (let attempt = 0; attempt < 300; attempt++) {
    if (exited) throw new Error(`${url}: exited before listening:\n${output()}`);
    const answered = await fetch(url).then(ready, () => false);
    if (answered) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`${url}: not listening within 30 s:\n${output()}`);
}

async function startBareForwarder(mcpUrl: string): Promise<{ child: ChildProcess; url: URL }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/bare-forwarder.ts', String(port), mcpUrl], {
    cwd: ROOT,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  child.stderr!.on('data', (chunk) => (output += chunk));
  const url = new URL(`http://127.0.0.1:${port}/mcp`);
  await waitUntilListening(child, url.href, () => output);
  return { child, url };
}

async function startProxy(env: NodeJS.ProcessEnv, baseUrl: string): Promise<ChildProcess> {
  // BENCH_PROXY_NODE_ARGS, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`, profiles the proxy process.
  const nodeArgs = process.env.BENCH_PROXY_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'lib/main.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  child.stderr!.on('data', (chunk) => (output += chunk));
  await waitUntilListening(
    child,
    `${baseUrl}/readyz`,
    () => output,
    (res) => res.ok,
  );
  return child;
}

/**
 * Where the traced proxy's spans go: a loopback OTLP/HTTP endpoint that takes every export and
 * answers 200, as a collector would, counting what it got. (In this process: with wrk as the
 * load generator it is otherwise idle.)
 */
async function startSpanSink(): Promise<{ endpoint: string; exports: () => number; close: () => void }> {
  let exports = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/v1/traces') exports++;
      res.writeHead(200, { 'Content-Type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { endpoint: `http://127.0.0.1:${port}`, exports: () => exports, close: () => server.close() };
}

/**
 * A second proxy process in front of the same MCP server, store and keys (so the same token works
 * on it: BASE_URL is the first proxy's, only PORT differs), started as `npm start` starts it, with
 * the tracing preload, every request sampled and its spans exported to `endpoint`.
 */
async function startTracedProxy(env: NodeJS.ProcessEnv, endpoint: string): Promise<{ child: ChildProcess; url: URL }> {
  const port = await freePort();
  const nodeArgs = process.env.BENCH_PROXY_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const preload = ['--import', 'tsx', '--import', './lib/telemetry/tracing.ts'];
  const child = spawn(process.execPath, [...nodeArgs, ...preload, 'lib/main.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      ...env,
      PORT: String(port),
      MCP_SERVER_RUN_COMMAND: undefined,
      MCP_SERVER_RUN_ARGS_JSON: undefined,
      MCP_SERVER_RUN_DIR: undefined,
      OTEL_EXPORTER_OTLP_ENDPOINT: endpoint,
      OTEL_TRACES_SAMPLER: 'always_on',
      OTEL_SERVICE_NAME: 'bench-proxy',
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let output = '';
  child.stderr!.on('data', (chunk) => (output += chunk));
  await waitUntilListening(
    child,
    `http://127.0.0.1:${port}/readyz`,
    () => output,
    (res) => res.ok,
  );
  return { child, url: new URL(`http://127.0.0.1:${port}/mcp`) };
}

function post(
  agent: http.Agent,
  target: Target,
  body: string,
  sessionId?: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      target.url,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'content-length': Buffer.byteLength(body),
          ...(sessionId ? { 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' } : {}),
          ...target.headers,
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
        res.on('error', reject);
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

async function openSession(target: Target): Promise<string> {
  const agent = new http.Agent({ keepAlive: true });
  const init = await post(
    agent,
    target,
    JSON.stringify({
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '1' } },
    }),
  );
  const sessionId = init.headers['mcp-session-id'];
  if (init.status !== 200 || typeof sessionId !== 'string')
    throw new Error(`${target.name}: initialize answered ${init.status}: ${init.text}`);
  await post(agent, target, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }), sessionId);
  agent.destroy();
  return sessionId;
}

async function measure(target: Target, sessionId: string, connections: number, seconds: number): Promise<Result> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const latenciesMs: number[] = [];
  let errors = 0;
  let id = 1;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  const worker = async () => {
    while (performance.now() < deadline) {
      const body = JSON.stringify({
        jsonrpc: '2.0',
        id: id++,
        method: 'tools/call',
        params: { name: 'echo', arguments: { text: 'hello' } },
      });
      const t0 = performance.now();
      try {
        const res = await post(agent, target, body, sessionId);
        if (res.status !== 200 || !res.text.includes('hello')) errors++;
        else latenciesMs.push(performance.now() - t0);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, worker));
  agent.destroy();
  return { requests: latenciesMs.length, errors, seconds: (performance.now() - started) / 1000, latenciesMs };
}

/**
 * The same load from wrk (C, one thread) when it is installed: it spends a fraction of the Node
 * generator's CPU, so on a small machine the generator steals less from the processes measured.
 * Its latency distribution comes back as 100 percentiles, expanded into samples for merging.
 */
function measureWrk(target: Target, sessionId: string, connections: number, seconds: number): Promise<Result> {
  const body = JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'tools/call',
    params: { name: 'echo', arguments: { text: 'hello' } },
  });
  const headers: Record<string, string> = {
    'Content-Type': 'application/json',
    Accept: 'application/json, text/event-stream',
    'Mcp-Session-Id': sessionId,
    'Mcp-Protocol-Version': '2025-06-18',
    ...Object.fromEntries(Object.entries(target.headers).map(([k, v]) => [k[0]!.toUpperCase() + k.slice(1), v])),
  };
  const lua = [
    'wrk.method = "POST"',
    `wrk.body = ${JSON.stringify(body)}`,
    ...Object.entries(headers).map(([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`),
    'done = function(summary, latency, requests)',
    '  local out = {}',
    '  for p = 1, 100 do out[#out + 1] = latency:percentile(p - 0.5) end',
    '  local e = summary.errors',
    '  io.write(string.format("BENCH %d %d %d %s\\n", summary.requests, e.status + e.connect + e.read + e.write + e.timeout, summary.duration, table.concat(out, ",")))',
    'end',
  ].join('\n');
  const script = join(tmpdir(), `bench-${process.pid}-${target.name}.lua`);
  writeFileSync(script, lua);
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', [
      '-t1',
      `-c${connections}`,
      `-d${Math.max(1, Math.round(seconds))}s`,
      '-s',
      script,
      target.url.href,
    ]);
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.on('error', reject);
    child.on('exit', () => {
      const line = /BENCH (\d+) (\d+) (\d+) ([\d.,]+)/.exec(out);
      if (!line) return reject(new Error(`wrk said: ${out}`));
      const [requests, errors, micros] = [Number(line[1]), Number(line[2]), Number(line[3])];
      const percentiles = line[4]!.split(',').map((us) => Number(us) / 1000);
      const good = Math.max(0, requests - errors);
      const latenciesMs = percentiles.flatMap((ms) => Array.from({ length: Math.round(good / 100) }, () => ms));
      resolve({ requests: good, errors, seconds: micros / 1e6, latenciesMs });
    });
  });
}

const GENERATOR = process.env.BENCH_GENERATOR ?? (spawnSync('wrk', ['--version']).error ? 'node' : 'wrk');
const generate = GENERATOR === 'wrk' ? measureWrk : measure;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Summary {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

function summarize(result: Result): Summary {
  const sorted = [...result.latenciesMs].sort((a, b) => a - b);
  return {
    rps: result.requests / result.seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    errors: result.errors,
  };
}

/** CPU time (user + system) a process has used so far, in milliseconds, from /proc. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // utime and stime are fields 14 and 15 of stat(5), counted from 1; here offset by the 2 skipped.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

async function main(): Promise<void> {
  const [port, mcpPort] = [await freePort(), await freePort()];
  const prefix = `bench-${randomBytes(4).toString('hex')}:`;
  const baseUrl = `http://localhost:${port}`;
  const children: ChildProcess[] = [];
  const proxyEnv: NodeJS.ProcessEnv = {
    PORT: String(port),
    BASE_URL: baseUrl,
    LOG_LEVEL: 'warn',
    MCP_AUTH_PROXY_REDIS_URL: REDIS_URL,
    MCP_AUTH_PROXY_REDIS_KEY_PREFIX: prefix,
    OIDC_PROVIDER_JWKS: JSON.stringify(await ephemeralJwks()),
    MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
    MCP_SERVER_RUN_COMMAND: process.execPath,
    MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['--import', 'tsx', 'lib/dev/example-mcp-server.ts']),
    MCP_SERVER_RUN_DIR: ROOT,
  };
  const proxy = await startProxy(proxyEnv, baseUrl);
  const sink = await startSpanSink();
  try {
    const client = await registerClient(baseUrl, {
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/cb'],
      token_endpoint_auth_method: 'none',
    });
    const { token } = await codeFlow({
      baseUrl,
      clientId: client.body.client_id!,
      redirectUri: 'http://127.0.0.1:9/cb',
      scope: 'openid',
      user: 'bench',
      browser: createBrowser(),
    });
    const mcpUrl = `http://127.0.0.1:${mcpPort}/mcp`;
    const bare = await startBareForwarder(mcpUrl);
    children.push(bare.child);
    const traced = await startTracedProxy(proxyEnv, sink.endpoint);
    children.push(traced.child);
    const targets: Target[] = [
      { name: 'direct', url: new URL(mcpUrl), headers: {} },
      {
        name: 'proxy',
        url: new URL(`${baseUrl}/mcp`),
        headers: { authorization: `Bearer ${token.body.access_token}` },
        pid: proxy.pid!,
      },
      { name: 'bare', url: bare.url, headers: {}, pid: bare.child.pid! },
      {
        name: 'traced',
        url: traced.url,
        headers: { authorization: `Bearer ${token.body.access_token}` },
        pid: traced.child.pid!,
      },
    ];
    const sessions = await Promise.all(targets.map(openSession));
    // Warm every path (JIT, keep-alive sockets, caches) before measuring.
    for (const [i, target] of targets.entries()) await measure(target, sessions[i]!, 10, 1);

    const mcpPid = childPids(proxy.pid!)[0];
    // CPU per request of each process, so the ratios can be read against the machine: on a
    // 2-core machine the proxy path runs three busy processes where the direct path runs two.
    // The machine is shared and noisy: the targets are measured in short slices taken in turn
    // (a different one first each time), so a burst of outside load lands on all of them alike
    // instead of on one whole measurement. wrk measures in whole seconds.
    const SLICES = GENERATOR === 'wrk' ? Math.max(2, Math.round(SECONDS)) : Math.max(2, Math.round(SECONDS / 0.5));
    const interleaved = async (connections: number) => {
      const totals = targets.map(() => ({
        result: { requests: 0, errors: 0, seconds: 0, latenciesMs: [] as number[] },
        hop: 0,
        mcp: 0,
        load: 0,
      }));
      for (let slice = 0; slice < SLICES; slice++) {
        for (let turn = 0; turn < targets.length; turn++) {
          const i = (slice + turn) % targets.length;
          const target = targets[i]!;
          const hopCpu = () => (target.pid ? cpuMs(target.pid) : 0);
          const before = { hop: hopCpu(), mcp: mcpPid ? cpuMs(mcpPid) : NaN, load: process.cpuUsage() };
          const result = await generate(target, sessions[i]!, connections, SECONDS / SLICES);
          const load = process.cpuUsage(before.load);
          const total = totals[i]!;
          total.result.requests += result.requests;
          total.result.errors += result.errors;
          total.result.seconds += result.seconds;
          total.result.latenciesMs.push(...result.latenciesMs);
          total.hop += hopCpu() - before.hop;
          total.mcp += mcpPid ? cpuMs(mcpPid) - before.mcp : NaN;
          total.load += (load.user + load.system) / 1000;
        }
      }
      return totals.map((total, i) => {
        const summary = summarize(total.result);
        const perRequest = (ms: number) =>
          Number.isNaN(ms) ? '?' : ((ms * 1000) / Math.max(1, total.result.requests)).toFixed(0);
        return {
          ...summary,
          cpu: {
            hop: targets[i]!.pid ? perRequest(total.hop) : '-',
            mcp: perRequest(total.mcp),
            load: GENERATOR === 'wrk' ? '?' : perRequest(total.load),
          },
        };
      });
    };

    console.log(
      `\n${SECONDS}s per target and level, in ${SLICES} slices of each taken in turn; load from ${GENERATOR}; ${cpus().length} CPUs\n`,
    );
    console.log(
      'conns  target   req/s     p50 ms   p99 ms   errors   CPU µs/request: proxy or forwarder  mcp-server  load-generator',
    );
    const rows: string[] = [];
    const tracingRows: string[] = [];
    const tracingCost = (connections: number, off: Summary, on: Summary) =>
      `${String(connections).padEnd(6)} tracing on    throughput ${((on.rps / off.rps) * 100).toFixed(1).padStart(5)}% of tracing off, p50 +${(on.p50 - off.p50).toFixed(2)} ms, p99 +${(on.p99 - off.p99).toFixed(2)} ms`;
    const ratio = (connections: number, label: string, hop: Summary, direct: Summary) =>
      `${String(connections).padEnd(6)} ${label.padEnd(15)} throughput ${((hop.rps / direct.rps) * 100).toFixed(1).padStart(5)}% of direct, p50 +${(hop.p50 - direct.p50).toFixed(2)} ms, p99 +${(hop.p99 - direct.p99).toFixed(2)} ms`;
    for (const connections of LEVELS) {
      const results = await interleaved(connections);
      for (const [i, s] of results.entries()) {
        console.log(
          `${String(connections).padEnd(6)} ${targets[i]!.name.padEnd(8)} ${s.rps.toFixed(0).padStart(7)} ${s.p50.toFixed(2).padStart(8)} ${s.p99.toFixed(2).padStart(8)} ${String(s.errors).padStart(8)}   ${s.cpu.hop.padStart(33)} ${s.cpu.mcp.padStart(11)} ${s.cpu.load.padStart(15)}`,
        );
      }
      const [direct, viaProxy, viaBare] = [results[0]!, results[1]!, results[2]!];
      rows.push(ratio(connections, 'proxy', viaProxy, direct), ratio(connections, 'bare forwarder', viaBare, direct));
      tracingRows.push(tracingCost(connections, viaProxy, results[3]!));
    }
    console.log('\nthrough a hop / direct (the bare forwarder: what any Node.js hop costs on this machine)');
    for (const row of rows) console.log(row);
    console.log(`\nthe proxy with tracing on (every request sampled, exported to a loopback OTLP endpoint) / off`);
    for (const row of tracingRows) console.log(row);
    console.log(`(${sink.exports()} OTLP exports received)`);
    console.log(
      `\nproxy RSS: ${rssMiB(proxy.pid!).toFixed(1)} MiB; with tracing on: ${rssMiB(traced.child.pid!).toFixed(1)} MiB`,
    );
  } finally {
    for (const child of [proxy, ...children]) child.kill('SIGTERM');
    sink.close();
    const redis = new Redis(REDIS_URL);
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
}

await main();
