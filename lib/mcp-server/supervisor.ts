import { log as defaultLog } from '../telemetry/log.ts';
import { startMcpServer, type McpServerExit, type McpServerProcess, type StartMcpServerOptions } from './process.ts';

/**
 * Keeps the MCP server running: a child that dies is started again after a growing pause, and
 * `/mcp` answers 503 meanwhile (through `isReady()`), so one crash costs clients a retry, not the
 * dyno. A child that keeps dying is a broken deploy, not bad luck: after `maxCrashes` within
 * `crashWindowMs` the supervisor gives up and the proxy exits, letting the platform restart the
 * whole dyno and show the crash.
 */

export interface SuperviseOptions extends StartMcpServerOptions {
  /** Pause before the first restart; doubled for each further crash in the window. Default 500. */
  readonly backoffMs?: number;
  /** Default 3. */
  readonly maxCrashes?: number;
  /** Default 60 000. */
  readonly crashWindowMs?: number;
}

export interface McpServerSupervisor {
  /** The child runs and has accepted connections; false while it restarts and after shutdown. */
  isReady(): boolean;
  /** The current child's pid; undefined between two children. */
  pid(): number | undefined;
  /** Resolves with a one-line reason once restarting is given up: the proxy cannot serve `/mcp`. */
  readonly gaveUp: Promise<string>;
  /**
   * From now on the child's exit is expected (the proxy is shutting down): no restart, no crash.
   * Heroku sends SIGTERM to every process of the dyno at once, so the child may well exit on its
   * own while the proxy is still draining its requests.
   */
  retire(): void;
  /** Retires, then stops the current child (SIGTERM, SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<void>;
}

const DEFAULT_BACKOFF_MS = 500;
const DEFAULT_MAX_CRASHES = 3;
const DEFAULT_CRASH_WINDOW_MS = 60_000;
/**
 * A child killed by the platform's SIGTERM may be reaped before our own SIGTERM handler has run:
 * an exit is called a crash only once this much time has passed without a shutdown starting.
 */
const SETTLE_MS = 500;

/** Starts the MCP server (rejecting like `startMcpServer` when the first start fails) and watches it. */
export async function superviseMcpServer(opts: SuperviseOptions): Promise<McpServerSupervisor> {
  const logger = (opts.log ?? defaultLog).child({ source: 'mcp-server' });
  const backoffMs = opts.backoffMs ?? DEFAULT_BACKOFF_MS;
  const maxCrashes = opts.maxCrashes ?? DEFAULT_MAX_CRASHES;
  const crashWindowMs = opts.crashWindowMs ?? DEFAULT_CRASH_WINDOW_MS;
  // Retired: exits are expected from now on. Stopped: children are stopped, starting ones too.
  const retired = new AbortController();
  const stopped = new AbortController();
  stopped.signal.addEventListener('abort', () => retired.abort(), { once: true });
  /** One child, stopped with the others; its link to `stopped` goes with it (restarts add none). */
  const startChild = async (): Promise<McpServerProcess> => {
    const own = new AbortController();
    const link = () => own.abort();
    stopped.signal.addEventListener('abort', link, { once: true });
    try {
      const child = await startMcpServer({ ...opts, signal: own.signal });
      void child.exited.then(() => stopped.signal.removeEventListener('abort', link));
      return child;
    } catch (error) {
      stopped.signal.removeEventListener('abort', link);
      throw error;
    }
  };

  // `opts.signal` means "stop while starting": once the first child is up, it no longer applies.
  const abortStart = () => stopped.abort();
  opts.signal?.addEventListener('abort', abortStart, { once: true });
  let current: McpServerProcess | undefined;
  try {
    current = await startChild();
  } finally {
    opts.signal?.removeEventListener('abort', abortStart);
  }
  let restarting: Promise<void> | undefined;
  const crashes: number[] = [];
  let giveUp!: (reason: string) => void;
  const gaveUp = new Promise<string>((resolve) => (giveUp = resolve));

  const watch = (child: McpServerProcess): void => {
    void child.exited.then((exit) => {
      if (current === child) current = undefined;
      if (!retired.signal.aborted) restarting = recover(exit);
    });
  };

  /** One crash: count it, pause, start a new child; a failed start is one more crash. */
  const recover = async (exit: McpServerExit | string): Promise<void> => {
    for (;;) {
      const now = Date.now();
      crashes.push(now);
      while (crashes[0]! <= now - crashWindowMs) crashes.shift();
      const delay = backoffMs * 2 ** (crashes.length - 1);
      if (!(await pause(Math.min(SETTLE_MS, delay), retired.signal))) return;
      const what = typeof exit === 'string' ? exit : describeExit(exit);
      if (crashes.length >= maxCrashes) {
        const reason = `MCP server exited ${crashes.length} times within ${crashWindowMs / 1000} s (last: ${what}); stopping the proxy`;
        logger.error(reason);
        giveUp(reason);
        return;
      }
      logger.error('MCP server exited; restarting it', { reason: what, restart_in_ms: delay, crashes: crashes.length });
      if (!(await pause(delay - Math.min(SETTLE_MS, delay), retired.signal))) return;
      try {
        const child = await startChild();
        if (retired.signal.aborted) {
          await child.stop();
          return;
        }
        current = child;
        watch(child);
        logger.info('MCP server restarted', { pid: child.pid });
        return;
      } catch (error) {
        if (retired.signal.aborted) return;
        exit = (error as Error).message;
      }
    }
  };

  watch(current);
  const retire = () => retired.abort();
  return {
    isReady: () => current !== undefined && !retired.signal.aborted,
    pid: () => current?.pid,
    gaveUp,
    retire,
    async stop(graceMs) {
      retire();
      stopped.abort();
      await restarting;
      await current?.stop('SIGTERM', graceMs);
    },
  };
}

function describeExit(exit: McpServerExit): string {
  return exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`;
}

/** Resolves true after `ms`, or false as soon as `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (completed: boolean) => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve(completed);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
