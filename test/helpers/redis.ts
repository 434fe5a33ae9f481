import type { Redis } from 'ioredis';

/**
 * Every key under `prefix` with its value as text (hashes and sets as JSON): what a Redis dump
 * would give someone, for tests asserting what it must not contain.
 */
export async function dumpRedis(redis: Redis, prefix: string): Promise<Map<string, string>> {
  const entries = new Map<string, string>();
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    for (const key of keys) {
      const type = await redis.type(key);
      const value =
        type === 'string'
          ? await redis.get(key)
          : type === 'hash'
            ? JSON.stringify(await redis.hgetall(key))
            : type === 'set'
              ? JSON.stringify(await redis.smembers(key))
              : type;
      entries.set(key, value ?? '');
    }
    cursor = next;
  } while (cursor !== '0');
  return entries;
}
