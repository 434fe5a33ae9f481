import type { Redis } from 'ioredis';

// ---------------------------------------------------------------------------------------------
// Lua. Every multi-key change of the adapter runs as one script: a token revoked by grant must not
// survive because it was written between a read of the grant set and the deletes.
// ---------------------------------------------------------------------------------------------

/**
 * Script flags (Redis ≥ 7, checked at boot). A script without them runs past `maxmemory` once its
 * first write went through, and UPSERT's first write is a DEL, which Redis always allows: a full
 * Redis would still take registrations while refusing consent and refreshes. A flagged script that
 * may write is refused as a whole while Redis is out of memory or read-only, like any write.
 * Scripts that only delete may run regardless (`allow-oom`): revocation must work on a full Redis.
 */
const WRITES = '#!lua\n';
const DELETES_ONLY = '#!lua flags=allow-oom\n';

/**
 * Removes a record's index entries that still point at it (a newer record may have taken the uid
 * since) and its membership of its grant set. Index values start with the record's
 * hashed id; hashes are base64url, so they never contain the ':' that ends the key.
 */
const UNLINK = `
local function unlink(record)
  local h = string.match(record, '([^:]+)$')
  local fields = redis.call('HMGET', record, 'indexes', 'grant')
  if fields[1] then
    for index in string.gmatch(fields[1], '%S+') do
      local value = redis.call('GET', index)
      if value and string.sub(value, 1, #h) == h then redis.call('DEL', index) end
    end
  end
  if fields[2] then redis.call('SREM', fields[2], record) end
end
`;

/**
 * KEYS: record, [grant set], index keys…  ARGV: payload, jti flag, ttl (0 = none), has grant,
 * index values… The grant set lives at least as long as its longest-lived member, or forever when
 * one member does; members whose record has expired are pruned once the set grows.
 */
export const UPSERT = `${WRITES}${UNLINK}
local record = KEYS[1]
local ttl = tonumber(ARGV[3])
local hasGrant = ARGV[4] == '1'
local first = hasGrant and 3 or 2
unlink(record)
redis.call('DEL', record)
local fields = { 'payload', ARGV[1], 'jti', ARGV[2] }
if #KEYS >= first then
  local indexes = {}
  for i = first, #KEYS do indexes[#indexes + 1] = KEYS[i] end
  fields[#fields + 1] = 'indexes'
  fields[#fields + 1] = table.concat(indexes, ' ')
end
if hasGrant then
  fields[#fields + 1] = 'grant'
  fields[#fields + 1] = KEYS[2]
end
redis.call('HSET', record, unpack(fields))
if ttl > 0 then redis.call('EXPIRE', record, ttl) end
for i = first, #KEYS do
  local value = ARGV[5 + i - first]
  if ttl > 0 then redis.call('SET', KEYS[i], value, 'EX', ttl) else redis.call('SET', KEYS[i], value) end
end
if hasGrant then
  local grant = KEYS[2]
  local remaining = redis.call('TTL', grant)
  redis.call('SADD', grant, record)
  if ttl == 0 then
    redis.call('PERSIST', grant)
  elseif remaining == -2 or (remaining >= 0 and remaining < ttl) then
    redis.call('EXPIRE', grant, ttl)
  end
  if redis.call('SCARD', grant) > 64 then
    for _, member in ipairs(redis.call('SMEMBERS', grant)) do
      if redis.call('EXISTS', member) == 0 then redis.call('SREM', grant, member) end
    end
  end
end
return 1
`;

export const DESTROY = `${DELETES_ONLY}${UNLINK}
unlink(KEYS[1])
return redis.call('DEL', KEYS[1])
`;

/** Members are full record keys, so this script touches keys it was not given in KEYS; fine on a
 * single Redis (Heroku Key-Value Store), not on Redis Cluster. */
export const REVOKE = `${DELETES_ONLY}${UNLINK}
for _, record in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  unlink(record)
  redis.call('DEL', record)
end
return redis.call('DEL', KEYS[1])
`;

/** Without the EXISTS guard an HSET on an expired record would recreate it with no TTL. */
export const CONSUME = `${WRITES}if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], 'consumed', ARGV[1]) end
return 0
`;

export const DELETE_IF_EQUALS = `${DELETES_ONLY}if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * KEYS: counter. ARGV: amount, window in ms. A fixed window: the expiry is set by the increment
 * that creates the counter and never extended. Returns the count and the ms left.
 */
export const INCREMENT = `${WRITES}local count = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  ttl = tonumber(ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return { count, ttl }
`;

/** KEYS: key. ARGV: seconds. Lengthens an expiry, never shortens one, never gives one to a key without. */
export const EXTEND_EXPIRY = `${WRITES}local remaining = redis.call('TTL', KEYS[1])
if remaining >= 0 and remaining < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return remaining
`;

export type Script = (keys: string[], args: (string | number)[]) => Promise<unknown>;

export function defineScript(client: Redis, name: string, lua: string): Script {
  // defineCommand sends EVALSHA and falls back to EVAL after a restart flushed the script cache.
  client.defineCommand(name, { lua });
  const command = (client as unknown as Record<string, (...args: (string | number)[]) => Promise<unknown>>)[name]!.bind(
    client,
  );
  return (keys, args) => command(keys.length, ...keys, ...args);
}
