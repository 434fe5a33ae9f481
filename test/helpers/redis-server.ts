import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { freePort } from './stack.ts';

/**
 * A Redis of the test's own, for faults the shared one (6379) must never see: stopped, frozen,
 * full, read-only. No snapshots on a schedule and no AOF; `stop()` saves one snapshot explicitly
 * (SHUTDOWN SAVE) into a private directory, so a restart keeps the data, as a managed Redis does.
 */
export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** A connection of the helper's own for setup and inspection (not the proxy's). */
  admin(): Promise<Redis>;
  /** Saves and shuts down: connections are refused until `start()`. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** SIGSTOP: the socket stays open and nothing answers (a frozen or swapping host). */
  freeze(): void;
  thaw(): void;
  /** `CONFIG SET maxmemory` with noeviction: every write beyond it is refused with OOM. */
  fill(): Promise<void>;
  unfill(): Promise<void>;
  /** `REPLICAOF` an address where no master answers: reads still served, writes get READONLY. */
  makeReplica(): Promise<void>;
  makePrimary(): Promise<void>;
  close(): Promise<void>;
}

export async function startRedisServer(): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'redis-test-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let adminConnection: Redis | undefined;

  const launch = async () => {
    const proc = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    proc.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    proc.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child = proc;
    const deadline = Date.now() + 5_000;
    while (!output.includes('Ready to accept connections')) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited: ${output}`);
      if (Date.now() > deadline) throw new Error(`redis-server did not start: ${output}`);
      await sleep(20);
    }
  };

  const admin = async () => {
    if (!adminConnection || adminConnection.status === 'end') {
      adminConnection = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 1 });
      adminConnection.on('error', () => undefined);
    }
    if (adminConnection.status === 'wait') await adminConnection.connect();
    return adminConnection;
  };

  const signal = (name: NodeJS.Signals) => {
    if (!child || child.exitCode !== null) throw new Error('redis-server is not running');
    child.kill(name);
  };

  await launch();
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    admin,
    async stop() {
      const proc = child!;
      const exited = once(proc, 'exit');
      const connection = await admin();
      await connection.call('SHUTDOWN', 'SAVE').catch(() => undefined);
      await exited;
      adminConnection?.disconnect();
      adminConnection = undefined;
    },
    start: launch,
    freeze: () => signal('SIGSTOP'),
    thaw: () => signal('SIGCONT'),
    async fill() {
      const connection = await admin();
      await connection.config('SET', 'maxmemory-policy', 'noeviction');
      // Below what the server already uses: every write that allocates is refused from now on.
      await connection.config('SET', 'maxmemory', '1');
    },
    async unfill() {
      await (await admin()).config('SET', 'maxmemory', '0');
    },
    async makeReplica() {
      const unused = await freePort();
      await (await admin()).call('REPLICAOF', '127.0.0.1', String(unused));
    },
    async makePrimary() {
      await (await admin()).call('REPLICAOF', 'NO', 'ONE');
    },
    async close() {
      adminConnection?.disconnect();
      if (child && child.exitCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
  return server;
}
