import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const START_ARGS = ['--import', 'tsx', '--import', './lib/telemetry/tracing.ts', 'lib/main.ts'];

/**
 * The real entry point as `npm start` runs it (`node --import tsx --import
 * ./lib/telemetry/tracing.ts lib/main.ts`: the tracing preload does nothing without OTEL_*) on
 * the Node.js running the tests, with exactly the environment given (plus PATH and HOME): nothing
 * leaks in from the developer's shell.
 */
export class WebProcess {
  readonly child: ChildProcessWithoutNullStreams;
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;

  constructor(env: NodeJS.ProcessEnv) {
    this.child = spawn(process.execPath, START_ARGS, {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, LOG_LEVEL: 'info', ...env },
      cwd: repoRoot,
    });
    this.child.stdout.on('data', (chunk: Buffer) => (this.stdout += chunk.toString()));
    this.child.stderr.on('data', (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code) => resolve(code)));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Resolves with the first match of `pattern` in stdout + stderr, waiting for it to appear. */
  async waitFor(pattern: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = pattern.exec(this.stdout + this.stderr);
      if (match) return match;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`exited (${this.child.exitCode}) before ${pattern}:\n${this.stdout}\n${this.stderr}`);
      }
      if (Date.now() > deadline) throw new Error(`no ${pattern} in time:\n${this.stdout}\n${this.stderr}`);
      await sleep(25);
    }
  }

  /** The pid of the MCP server child the proxy started most recently (from its log lines). */
  mcpServerPid(): number | undefined {
    const pids = [...(this.stdout + this.stderr).matchAll(/msg="mcp server started".* pid=(\d+)/g)];
    return pids.length ? Number(pids.at(-1)![1]) : undefined;
  }

  /** Last resort for a failed test: never leave a proxy (or its MCP server) running. */
  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    const mcp = this.mcpServerPid();
    if (mcp !== undefined && isAlive(mcp)) process.kill(mcp, 'SIGKILL');
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(25);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Whether something accepts TCP connections on 127.0.0.1:`port` right now. */
export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
