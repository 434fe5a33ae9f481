import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import type { AdapterPayload } from 'oidc-provider';
import { createMemoryStore, createRedisStore } from '../lib/store/index.ts';
import { recordKey, UNUSED_CLIENT_TTL } from '../lib/store/redis.ts';

/**
 * Registration is anonymous: a client no grant ever used expires after a day, and one with grants
 * lives as long as the longest of them.
 */
const DAY = 24 * 60 * 60;
const random = (): string => randomBytes(12).toString('base64url');
const client = (id: string): AdapterPayload => ({ client_id: id, redirect_uris: ['http://127.0.0.1/cb'] });
const grant = (id: string, clientId: string): AdapterPayload => ({ jti: id, kind: 'Grant', clientId, accountId: 'a' });
const refreshToken = (id: string, clientId: string): AdapterPayload => ({
  jti: id,
  kind: 'RefreshToken',
  clientId,
  grantId: random(),
});

describe('registered clients expire unless a grant uses them', function () {
  describe('redis', function () {
    const keyPrefix = `test-${random()}:`;
    const raw = new Redis(process.env.TEST_REDIS_URL!);
    const store = createRedisStore({ url: process.env.TEST_REDIS_URL!, keyPrefix, tlsRejectUnauthorized: false });
    const ttlOf = (clientId: string) => raw.ttl(keyPrefix + recordKey('Client', clientId));
    after(async () => {
      const keys = await raw.keys(`${keyPrefix}*`);
      if (keys.length) await raw.del(...keys);
      raw.disconnect();
      await store.close();
    });

    it('a new client expires after a day; a grant extends it to the grant’s lifetime, never shortens it', async () => {
      const Client = new store.Adapter('Client');
      const id = random();
      await Client.upsert(id, client(id));
      expect(await ttlOf(id)).to.be.within(UNUSED_CLIENT_TTL - 5, UNUSED_CLIENT_TTL);
      await new store.Adapter('Grant').upsert(random(), grant(random(), id), 30 * DAY);
      expect(await ttlOf(id)).to.be.within(30 * DAY - 5, 30 * DAY);
      await new store.Adapter('RefreshToken').upsert(random(), refreshToken(random(), id), 2 * DAY);
      expect(await ttlOf(id), 'a shorter-lived token does not shorten it').to.be.above(29 * DAY);
      expect(await Client.find(id)).to.deep.include({ client_id: id });
    });

    it('a client stored before this rule (no expiry) keeps none', async () => {
      const id = random();
      await raw.hset(keyPrefix + recordKey('Client', id), 'payload', JSON.stringify(client(id)), 'jti', '0');
      await new store.Adapter('Grant').upsert(random(), grant(random(), id), 30 * DAY);
      expect(await ttlOf(id)).to.equal(-1);
    });
  });

  describe('memory', function () {
    const realNow = Date.now;
    afterEach(() => {
      Date.now = realNow;
    });
    const later = (seconds: number) => {
      const at = realNow() + seconds * 1000;
      Date.now = () => at;
    };

    it('an unused client is gone after a day; one with a grant outlives it', async () => {
      const store = createMemoryStore();
      const Client = new store.Adapter('Client');
      const [unused, used] = [random(), random()];
      await Client.upsert(unused, client(unused));
      await Client.upsert(used, client(used));
      await new store.Adapter('Grant').upsert(random(), grant(random(), used), 30 * DAY);
      later(DAY + 1);
      expect(await Client.find(unused)).to.equal(undefined);
      expect(await Client.find(used)).to.deep.include({ client_id: used });
      later(30 * DAY + 1);
      expect(await Client.find(used)).to.equal(undefined);
      await store.close();
    });
  });
});
