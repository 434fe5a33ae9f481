import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { until } from './proxy.ts';

/**
 * Counts the Redis commands touching this stack's keys while `action` runs, through MONITOR. A
 * marker command issued afterwards on another connection bounds the count: MONITOR reports
 * commands in the order Redis ran them, so once the marker shows up every earlier one has too.
 */
export class StoreCommands {
  private readonly redis = new Redis(process.env.TEST_REDIS_URL!, { lazyConnect: true });
  private monitor: Awaited<ReturnType<Redis['monitor']>> | undefined;
  private lines: string[][] = [];

  constructor(private readonly prefix: string) {}

  async start(): Promise<void> {
    this.monitor = await this.redis.monitor();
    this.monitor.on('monitor', (_time: string, args: string[]) => this.lines.push(args));
  }

  async during(action: () => Promise<unknown>): Promise<string[]> {
    this.lines = [];
    await action();
    const marker = `${this.prefix}marker:${randomBytes(8).toString('hex')}`;
    const other = new Redis(process.env.TEST_REDIS_URL!);
    try {
      await other.get(marker);
    } finally {
      other.disconnect();
    }
    await until(() => this.lines.some((args) => args.includes(marker)), 'the MONITOR marker');
    return (
      this.lines
        .filter((args) => !args.includes(marker) && args.some((arg) => arg.startsWith(this.prefix)))
        // The revocation subscriber's own connection set-up is not a request's cost.
        .filter(([command]) => !['subscribe', 'unsubscribe', 'publish', 'client'].includes(command!.toLowerCase()))
        .map((args) => args[0]!.toLowerCase())
    );
  }

  async stop(): Promise<void> {
    this.monitor?.disconnect();
    this.redis.disconnect();
  }
}
