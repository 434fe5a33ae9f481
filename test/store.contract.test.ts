import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

import { expect } from 'chai';
import { Redis } from 'ioredis';
import type { AdapterPayload } from 'oidc-provider';

import {
  StoreUnavailableError,
  createMemoryStore,
  createRedisStore,
  createStore,
  type Store,
} from '../lib/store/index.ts';
import { DEVICE_FLOW_UNSUPPORTED } from '../lib/store/redis.ts';
import type { Subscription } from '../lib/store/types.ts';
import { captureLogs } from '../lib/telemetry/log.ts';

/**
 * One suite, every store (STYLE.md §4): the memory store used in development must not behave in
 * a way the Redis store used in production does not, or a bug hides until deploy.
 */
interface Subject {
  store: Store;
  /** Every key the store wrote and every value under it, as Redis holds them. Redis only. */
  dump?: () => Promise<Map<string, string>>;
}

const random = (): string => randomBytes(16).toString('base64url');
const epoch = (): number => Math.floor(Date.now() / 1000);

/** A payload shaped like what oidc-provider saves for a token: the id is also its `jti`. */
function token(id: string, grantId: string, extra: Partial<AdapterPayload> = {}): AdapterPayload {
  return {
    iat: epoch(),
    exp: epoch() + 60,
    jti: id,
    kind: 'AccessToken',
    accountId: 'account-1',
    clientId: 'client-1',
    grantId,
    scope: 'openid offline_access',
    amr: [],
    ...extra,
  };
}

/** Polls `condition` every 10 ms; fails after 5 s (a bound for a hang, not a timing assertion). */
async function until(condition: () => boolean, what = 'condition'): Promise<void> {
  for (let waited = 0; !condition(); waited += 10) {
    if (waited > 5_000) throw new Error(`${what} not reached within 5 s`);
    await sleep(10);
  }
}

/** Publishing is at most once: a test publishes only after its subscription is confirmed. */
const untilActive = (subscription: Subscription) => until(() => subscription.active, 'an active subscription');

function storeContract(name: string, open: () => Promise<Subject>): void {
  describe(`Store contract: ${name}`, function () {
    let subject: Subject;
    let store: Store;

    before(async function () {
      subject = await open();
      store = subject.store;
    });

    after(async function () {
      await store.close();
    });

    it('passes its own boot check', async function () {
      await store.check();
    });

    describe('key/value', function () {
      it('gets what was set, overwrites, and deletes', async function () {
        const key = `kv:${random()}`;
        expect(await store.get(key)).to.equal(undefined);
        await store.set(key, 'one');
        expect(await store.get(key)).to.equal('one');
        await store.set(key, 'two', 60);
        expect(await store.get(key)).to.equal('two');
        await store.del(key);
        expect(await store.get(key)).to.equal(undefined);
        await store.del(key);
      });

      it('refuses a TTL that is not a positive whole number of seconds', async function () {
        for (const ttl of [0, -1, 1.5, Number.NaN]) {
          const error = await store.set(`kv:${random()}`, 'v', ttl).catch((e: unknown) => e);
          expect(error, `ttl ${ttl}`).to.be.instanceOf(RangeError);
          const lockError = await store.setIfAbsent(`kv:${random()}`, 'v', ttl).catch((e: unknown) => e);
          expect(lockError, `ttl ${ttl}`).to.be.instanceOf(RangeError);
        }
      });

      it('take returns the value once and deletes it', async function () {
        const key = `state:${random()}`;
        await store.set(key, 'pending', 60);
        expect(await store.take(key)).to.equal('pending');
        expect(await store.take(key)).to.equal(undefined);
        expect(await store.get(key)).to.equal(undefined);
      });

      it('take is single-use under concurrency: 20 parallel takes, one winner', async function () {
        const key = `state:${random()}`;
        await store.set(key, 'pending', 60);
        const results = await Promise.all(Array.from({ length: 20 }, () => store.take(key)));
        expect(results.filter((r) => r === 'pending')).to.have.length(1);
        expect(results.filter((r) => r === undefined)).to.have.length(19);
      });

      it('setIfAbsent under concurrency: 20 parallel attempts, exactly one true', async function () {
        const key = `lock:${random()}`;
        const values = Array.from({ length: 20 }, (_, i) => `owner-${i}`);
        const results = await Promise.all(values.map((v) => store.setIfAbsent(key, v, 60)));
        expect(results.filter(Boolean)).to.have.length(1);
        expect(await store.get(key)).to.equal(values[results.indexOf(true)]);
        expect(await store.setIfAbsent(key, 'late', 60)).to.equal(false);
      });

      it('deleteIfEquals deletes only while the value is still the given one', async function () {
        const key = `lock:${random()}`;
        expect(await store.deleteIfEquals(key, 'mine')).to.equal(false);
        await store.set(key, 'theirs', 60);
        expect(await store.deleteIfEquals(key, 'mine')).to.equal(false);
        expect(await store.get(key)).to.equal('theirs');
        expect(await store.deleteIfEquals(key, 'theirs')).to.equal(true);
        expect(await store.get(key)).to.equal(undefined);
      });
    });

    describe('oidc-provider adapter', function () {
      it('upsert then find returns the payload, id included', async function () {
        const AccessToken = new store.Adapter('AccessToken');
        const id = random();
        const payload = token(id, random(), { extra: { nested: { list: [] } } });
        await AccessToken.upsert(id, payload, 60);
        expect(await AccessToken.find(id)).to.deep.equal(payload);
        expect(await AccessToken.find(random())).to.equal(undefined);
        expect(await new store.Adapter('RefreshToken').find(id), 'models are separate').to.equal(undefined);
      });

      it('keeps a payload without jti (Client) as it was given', async function () {
        const Client = new store.Adapter('Client');
        const metadata = {
          client_id: `client-${random()}`,
          redirect_uris: ['http://127.0.0.1/cb'],
        };
        await Client.upsert(metadata.client_id, metadata);
        expect(await Client.find(metadata.client_id)).to.deep.equal(metadata);
      });

      it('upsert replaces the whole record', async function () {
        const Grant = new store.Adapter('Grant');
        const id = random();
        await Grant.upsert(id, { jti: id, kind: 'Grant', accountId: 'a', scope: 'openid' }, 60);
        await Grant.upsert(id, { jti: id, kind: 'Grant', accountId: 'a' }, 60);
        expect(await Grant.find(id)).to.deep.equal({ jti: id, kind: 'Grant', accountId: 'a' });
      });

      it('consume marks the record consumed now and keeps the rest', async function () {
        const AuthorizationCode = new store.Adapter('AuthorizationCode');
        const id = random();
        const payload = token(id, random(), { kind: 'AuthorizationCode' });
        await AuthorizationCode.upsert(id, payload, 60);
        const before = epoch();
        await AuthorizationCode.consume(id);
        const found = await AuthorizationCode.find(id);
        expect(found?.consumed).to.be.a('number').within(before, epoch());
        expect({ ...found, consumed: undefined }).to.deep.equal({
          ...payload,
          consumed: undefined,
        });
      });

      it('consume of a missing record does not create one', async function () {
        const RefreshToken = new store.Adapter('RefreshToken');
        const id = random();
        await RefreshToken.consume(id);
        expect(await RefreshToken.find(id)).to.equal(undefined);
      });

      it('destroy removes the record', async function () {
        const AccessToken = new store.Adapter('AccessToken');
        const id = random();
        await AccessToken.upsert(id, token(id, random()), 60);
        await AccessToken.destroy(id);
        expect(await AccessToken.find(id)).to.equal(undefined);
        await AccessToken.destroy(id);
      });

      it('findByUid finds the Session, without its id (the session cookie value)', async function () {
        const Session = new store.Adapter('Session');
        const id = random();
        const uid = random();
        const payload = {
          iat: epoch(),
          exp: epoch() + 60,
          jti: id,
          kind: 'Session',
          uid,
          accountId: 'a',
        };
        await Session.upsert(id, payload, 60);
        expect(await Session.find(id)).to.deep.equal(payload);
        const { jti: _jti, ...withoutId } = payload;
        expect(await Session.findByUid(uid)).to.deep.equal(withoutId);
        expect(await Session.findByUid(random())).to.equal(undefined);

        await Session.destroy(id);
        expect(await Session.findByUid(uid)).to.equal(undefined);
      });

      it('destroying an old Session does not unlink the uid a newer Session took', async function () {
        const Session = new store.Adapter('Session');
        const [oldId, newId, uid] = [random(), random(), random()];
        await Session.upsert(oldId, { jti: oldId, kind: 'Session', uid, accountId: 'old' }, 60);
        await Session.upsert(newId, { jti: newId, kind: 'Session', uid, accountId: 'new' }, 60);
        await Session.destroy(oldId);
        expect((await Session.findByUid(uid))?.accountId).to.equal('new');
      });

      it('refuses user codes: the device flow is not enabled and has no index', async function () {
        const DeviceCode = new store.Adapter('DeviceCode');
        const id = random();
        const payload = token(id, random(), { kind: 'DeviceCode', userCode: 'BCDFGHJK' });
        let written: unknown;
        try {
          await DeviceCode.upsert(id, payload, 60);
        } catch (error) {
          written = error;
        }
        expect((written as Error | undefined)?.message).to.equal(DEVICE_FLOW_UNSUPPORTED);
        expect(await DeviceCode.find(id), 'nothing stored, the user code least of all').to.equal(undefined);
        let found: unknown;
        try {
          await DeviceCode.findByUserCode('BCDFGHJK');
        } catch (error) {
          found = error;
        }
        expect((found as Error | undefined)?.message).to.equal(DEVICE_FLOW_UNSUPPORTED);
      });

      it('revokeByGrantId deletes every token of that grant and nothing else', async function () {
        const models = ['AccessToken', 'RefreshToken', 'AuthorizationCode'] as const;
        const adapters = Object.fromEntries(models.map((m) => [m, new store.Adapter(m)]));
        const [grant, otherGrant] = [random(), random()];
        const ids = Object.fromEntries(models.map((m) => [m, random()]));
        for (const m of models) await adapters[m]!.upsert(ids[m]!, token(ids[m]!, grant, { kind: m }), 60);
        const other = random();
        await adapters.AccessToken!.upsert(other, token(other, otherGrant), 60);
        // A token first saved under `grant`, then moved to `otherGrant`, belongs to `otherGrant`.
        const moved = random();
        await adapters.RefreshToken!.upsert(moved, token(moved, grant, { kind: 'RefreshToken' }), 60);
        await adapters.RefreshToken!.upsert(moved, token(moved, otherGrant, { kind: 'RefreshToken' }), 60);

        await new store.Adapter('AccessToken').revokeByGrantId(grant);

        for (const m of models) expect(await adapters[m]!.find(ids[m]!), m).to.equal(undefined);
        expect(await adapters.AccessToken!.find(other)).to.not.equal(undefined);
        expect(await adapters.RefreshToken!.find(moved)).to.not.equal(undefined);
        await new store.Adapter('AccessToken').revokeByGrantId(random());
      });
    });

    // One wait for every expiry, to keep the suite short.
    it('increment counts in a fixed window: later increments do not extend it, and it starts again after', async function () {
      const key = `ratelimit:${random()}`;
      expect(await store.increment(key, 1, 1_000)).to.include({ count: 1 });
      const second = await store.increment(key, 2, 60_000);
      expect(second.count).to.equal(3);
      expect(second.resetMs).to.be.within(1, 1_000);
      await sleep(1_100);
      expect(await store.increment(key, 1, 1_000)).to.include({ count: 1 });
    });

    it('expires values, locks, adapter records, their indexes, and grant sets by their longest member', async function () {
      const [kv, lock, persistent] = [`kv:${random()}`, `lock:${random()}`, `kv:${random()}`];
      await store.set(kv, 'v', 1);
      await store.setIfAbsent(lock, 'v', 1);
      await store.set(persistent, 'v', 1);
      await store.set(persistent, 'v'); // SET without a TTL clears the previous one, as in Redis

      const AccessToken = new store.Adapter('AccessToken');
      const Session = new store.Adapter('Session');
      const [tokenId, sessionId, uid] = [random(), random(), random()];
      await AccessToken.upsert(tokenId, token(tokenId, random()), 1);
      await Session.upsert(sessionId, { jti: sessionId, kind: 'Session', uid }, 1);

      // Long-lived member first, then a short one: the grant set must not shrink to 1 s.
      const [longFirst, shortThenLong] = [random(), random()];
      const longA = random();
      await AccessToken.upsert(longA, token(longA, longFirst), 60);
      const shortA = random();
      await AccessToken.upsert(shortA, token(shortA, longFirst), 1);
      // Short-lived member first, then a long one: the grant set must grow to 60 s.
      const shortB = random();
      await AccessToken.upsert(shortB, token(shortB, shortThenLong), 1);
      const longB = random();
      await AccessToken.upsert(longB, token(longB, shortThenLong), 60);

      await sleep(1_200);

      expect(await store.get(kv)).to.equal(undefined);
      expect(await store.setIfAbsent(lock, 'next', 60), 'an expired lock can be taken').to.equal(true);
      expect(await store.get(persistent)).to.equal('v');
      expect(await AccessToken.find(tokenId)).to.equal(undefined);
      expect(await Session.find(sessionId)).to.equal(undefined);
      expect(await Session.findByUid(uid)).to.equal(undefined);
      expect(await AccessToken.find(longA)).to.not.equal(undefined);

      await AccessToken.revokeByGrantId(longFirst);
      await AccessToken.revokeByGrantId(shortThenLong);
      expect(await AccessToken.find(longA), 'revoked after its short sibling expired').to.equal(undefined);
      expect(await AccessToken.find(longB), 'revoked after its short sibling expired').to.equal(undefined);
    });

    describe('pub/sub', function () {
      it('delivers a message to every subscriber of its channel, this process included, and only them', async function () {
        const channel = `ch:${random()}`;
        const [one, two, other]: string[][] = [[], [], []];
        const subscriptions = [
          store.subscribe(channel, (m) => one.push(m)),
          store.subscribe(channel, (m) => two.push(m)),
          store.subscribe(`ch:${random()}`, (m) => other.push(m)),
        ];
        try {
          await Promise.all(subscriptions.map(untilActive));
          await store.publish(channel, 'grant-1');
          await until(() => one.length === 1 && two.length === 1);
          expect(one).to.deep.equal(['grant-1']);
          expect(two).to.deep.equal(['grant-1']);
          expect(other).to.deep.equal([]);
        } finally {
          await Promise.all(subscriptions.map((s) => s.unsubscribe()));
        }
      });

      it('stops delivering after unsubscribe, other subscribers unaffected', async function () {
        const channel = `ch:${random()}`;
        const [gone, kept]: string[][] = [[], []];
        const leaving = store.subscribe(channel, (m) => gone.push(m));
        const staying = store.subscribe(channel, (m) => kept.push(m));
        try {
          await Promise.all([untilActive(leaving), untilActive(staying)]);
          await leaving.unsubscribe();
          expect(leaving.active).to.equal(false);
          await store.publish(channel, 'after');
          await until(() => kept.length === 1);
          expect(gone).to.deep.equal([]);
        } finally {
          await staying.unsubscribe();
        }
      });

      it('a subscriber that throws does not keep the message from the others', async function () {
        const channel = `ch:${random()}`;
        const received: string[] = [];
        const restore = captureLogs(() => undefined);
        const failing = store.subscribe(channel, () => {
          throw new Error('boom');
        });
        const working = store.subscribe(channel, (m) => received.push(m));
        try {
          await Promise.all([untilActive(failing), untilActive(working)]);
          await store.publish(channel, 'still delivered');
          await until(() => received.length === 1);
        } finally {
          restore();
          await Promise.all([failing.unsubscribe(), working.unsubscribe()]);
        }
      });
    });

    if (name === 'redis') {
      it('never stores a token id or session id in a key or a value', async function () {
        const secrets: string[] = [];
        const AccessToken = new store.Adapter('AccessToken');
        const Session = new store.Adapter('Session');
        const RefreshToken = new store.Adapter('RefreshToken');
        const [tokenId, sessionId, refreshId, grant] = [random(), random(), random(), random()];
        secrets.push(tokenId, sessionId, refreshId);
        await AccessToken.upsert(tokenId, token(tokenId, grant), 60);
        await Session.upsert(sessionId, { jti: sessionId, kind: 'Session', uid: random() }, 60);
        await RefreshToken.upsert(refreshId, token(refreshId, grant, { kind: 'RefreshToken' }), 60);
        await RefreshToken.consume(refreshId);

        const dump = await subject.dump!();
        const text = [...dump].flat().join('\n');
        expect(dump.size, 'the dump saw the records').to.be.greaterThan(4);
        for (const secret of secrets) expect(text).to.not.include(secret);
        // The lookups still work from the secret alone.
        expect((await AccessToken.find(tokenId))?.jti).to.equal(tokenId);
        expect((await RefreshToken.find(refreshId))?.jti).to.equal(refreshId);
      });

      it('consume of a missing record leaves no key behind (it would never expire)', async function () {
        const before = await subject.dump!();
        await new store.Adapter('RefreshToken').consume(random());
        expect([...(await subject.dump!()).keys()]).to.have.members([...before.keys()]);
      });
    }
  });
}

storeContract('memory', async () => ({ store: createMemoryStore() }));

const redisUrl = process.env.TEST_REDIS_URL;
if (!redisUrl) throw new Error('TEST_REDIS_URL is not set: see .env-test');
const keyPrefix = `test:store:${random()}:`;
const raw = new Redis(redisUrl, { lazyConnect: true });

async function keysUnderPrefix(): Promise<string[]> {
  const keys: string[] = [];
  for await (const batch of raw.scanStream({ match: `${keyPrefix}*`, count: 500 })) {
    keys.push(...(batch as string[]));
  }
  return keys;
}

storeContract('redis', async () => ({
  store: createRedisStore({ url: redisUrl, keyPrefix, tlsRejectUnauthorized: true }),
  async dump() {
    const dump = new Map<string, string>();
    for (const key of await keysUnderPrefix()) {
      const type = await raw.type(key);
      if (type === 'string') dump.set(key, (await raw.get(key)) ?? '');
      else if (type === 'hash') dump.set(key, JSON.stringify(await raw.hgetall(key)));
      else if (type === 'set') dump.set(key, JSON.stringify(await raw.smembers(key)));
      else dump.set(key, type);
    }
    return dump;
  },
}));

describe('Redis store outside the contract', function () {
  after(async function () {
    const keys = await keysUnderPrefix();
    if (keys.length > 0) await raw.del(...keys);
    expect(await keysUnderPrefix(), 'test keys cleaned up').to.have.length(0);
    raw.disconnect();
  });

  it('writes every key under its prefix', async function () {
    const store = createRedisStore({ url: redisUrl, keyPrefix, tlsRejectUnauthorized: true });
    try {
      const key = `kv:${random()}`;
      await store.set(key, 'v', 60);
      expect(await raw.get(`${keyPrefix}${key}`)).to.equal('v');
      expect(await raw.exists(key)).to.equal(0);
    } finally {
      await store.close();
    }
  });

  it('check() on an unreachable Redis fails within 6 s naming the host, never the password', async function () {
    this.timeout(10_000);
    const lines: string[] = [];
    const restore = captureLogs((line) => lines.push(line));
    const store = createRedisStore({
      url: 'redis://user:s3cret@127.0.0.1:1',
      keyPrefix,
      tlsRejectUnauthorized: true,
    });
    const started = Date.now();
    try {
      const error = await store.check().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(Date.now() - started).to.be.below(6_000);
      expect(error).to.be.instanceOf(StoreUnavailableError);
      const { message, code } = error as StoreUnavailableError;
      expect(code).to.equal('STORE_UNAVAILABLE');
      expect(message).to.include('127.0.0.1:1').and.include('ECONNREFUSED');
      expect(message).to.not.include('s3cret');
      expect(lines.join('\n'), 'log lines').to.not.include('s3cret');
    } finally {
      restore();
      await store.close();
    }
  });

  it('pub/sub reaches another store on the same prefix, never one on another prefix', async function () {
    const channel = `ch:${random()}`;
    const [publisher, sibling, stranger] = [keyPrefix, keyPrefix, `test:store:${random()}:`].map((p) =>
      createRedisStore({ url: redisUrl, keyPrefix: p, tlsRejectUnauthorized: true }),
    );
    const [heard, overheard]: string[][] = [[], []];
    try {
      const subscriptions = [
        sibling!.subscribe(channel, (m) => heard.push(m)),
        stranger!.subscribe(channel, (m) => overheard.push(m)),
      ];
      await Promise.all(subscriptions.map(untilActive));
      await publisher!.publish(channel, 'one');
      await publisher!.publish(channel, 'two');
      await until(() => heard.length === 2);
      expect(heard).to.deep.equal(['one', 'two']);
      // Both messages went through one Redis in order; had the stranger been listening on the
      // same channel, the first would have arrived by now.
      expect(overheard).to.deep.equal([]);
    } finally {
      await Promise.all([publisher!.close(), sibling!.close(), stranger!.close()]);
    }
  });

  it('a lost subscriber connection shows as inactive, then active under a new generation', async function () {
    const prefix = `test:store:${random()}:`;
    const store = createRedisStore({ url: redisUrl, keyPrefix: prefix, tlsRejectUnauthorized: true });
    const channel = `ch:${random()}`;
    const received: string[] = [];
    try {
      const subscription = store.subscribe(channel, (m) => received.push(m));
      expect(subscription.active, 'not active before Redis confirmed it').to.equal(false);
      await untilActive(subscription);
      const before = subscription.generation;
      const clients = (await raw.call('CLIENT', 'LIST', 'TYPE', 'pubsub')) as string;
      const id = /(?:^|\n)id=(\d+) .*name=(\S*)/g;
      let ours: string | undefined;
      for (const match of clients.matchAll(id)) if (match[2] === `${prefix}subscriber`) ours = match[1];
      expect(ours, 'the subscriber connection is named after its prefix').to.be.a('string');
      await raw.call('CLIENT', 'KILL', 'ID', ours!);
      await until(() => !subscription.active, 'inactive after the kill');
      await untilActive(subscription);
      expect(subscription.generation).to.be.greaterThan(before);
      await store.publish(channel, 'after reconnect');
      await until(() => received.length === 1);
    } finally {
      await store.close();
    }
  });

  it('createStore picks Redis when configured and memory otherwise', async function () {
    const memory = createStore(undefined);
    const redis = createStore({ url: redisUrl, keyPrefix, tlsRejectUnauthorized: true });
    expect([memory.kind, redis.kind]).to.deep.equal(['memory', 'redis']);
    await Promise.all([memory.close(), redis.close()]);
  });
});
