import type { RedisConfig } from '../config/types.ts';
import { createMemoryStore, type MemoryStoreOptions } from './memory.ts';
import { createRedisStore } from './redis.ts';
import type { Store } from './types.ts';

export { createMemoryStore } from './memory.ts';
export { createRedisStore } from './redis.ts';
export { hashId } from './hash.ts';
export { StoreUnavailableError, type AdapterFactory, type Store } from './types.ts';

/**
 * Redis when configured, memory otherwise. Whether running without Redis is acceptable (only in
 * development) is decided where the configuration is validated, not here. Neither store connects
 * here: `check()` at start-up does.
 */
export function createStore(redis: RedisConfig | undefined, memory: MemoryStoreOptions = {}): Store {
  return redis ? createRedisStore(redis) : createMemoryStore(memory);
}
