import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const CHILD = fileURLToPath(new URL('./mortal-upstream.child.ts', import.meta.url));

/** The MCP server stand-in of mortal-upstream.child.ts, as a real child process on `port`. */
export class MortalUpstream {
  private child: ChildProcess | undefined;
  /** What the current process said on stdout. */
  private output = '';
  private onOutput: (() => void) | undefined;

  constructor(readonly port: number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}/mcp`;
  }

  /** Starts it (again: a restart after a kill) and resolves once it listens. */
  async start(): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, String(this.port)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    this.output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      this.output += chunk.toString();
      this.onOutput?.();
    });
    const exited = once(child, 'exit').then(([code, signal]) => {
      throw new Error(`upstream exited before listening: ${code ?? signal}`);
    });
    await Promise.race([this.said('listening'), exited]);
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves once the current process has said `line` on stdout. */
  said(line: string): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (!this.output.split('\n').includes(line)) return;
        this.onOutput = undefined;
        resolve();
      };
      this.onOutput = check;
      check();
    });
  }

  /** SIGKILL: no goodbye on any of its connections beyond what the kernel does for a dead process. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || !this.running) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  }
}
