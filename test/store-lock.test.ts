import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { createMemoryStore, createRedisStore, type Store } from '../lib/store/index.ts';
import { isLocked, poll, tryLock, withLock } from '../lib/store/lock.ts';

const random = (): string => randomBytes(16).toString('base64url');

for (const [name, make] of [
  ['memory', () => createMemoryStore()],
  [
    'redis',
    () =>
      createRedisStore({
        url: process.env.TEST_REDIS_URL!,
        keyPrefix: `test:${random()}:`,
        tlsRejectUnauthorized: true,
      }),
  ],
] as const) {
  describe(`store lock (lib/store/lock.ts): ${name}`, function () {
    let store: Store;
    beforeEach(function () {
      store = make();
    });
    afterEach(async function () {
      await store.close();
    });

    it('one owner at a time; released by its owner, the key is free again', async function () {
      const key = `lock:${random()}`;
      const first = await tryLock(store, key, 60);
      expect(first, 'the first caller gets the lock').to.not.equal(undefined);
      expect(await tryLock(store, key, 60), 'a second caller does not').to.equal(undefined);
      expect(await isLocked(store, key)).to.equal(true);
      await first!.release();
      expect(await isLocked(store, key)).to.equal(false);
      expect(await tryLock(store, key, 60)).to.not.equal(undefined);
    });

    it('a holder whose lock lapsed does not release the lock another owner took since', async function () {
      const key = `lock:${random()}`;
      const stale = await tryLock(store, key, 1);
      await sleep(1_100);
      const current = await tryLock(store, key, 60);
      expect(current, 'a lapsed lock can be taken: a killed holder blocks at most its TTL').to.not.equal(undefined);
      await stale!.release();
      expect(await isLocked(store, key), "the new owner's lock survives the old owner's release").to.equal(true);
      expect(await tryLock(store, key, 60)).to.equal(undefined);
    });

    it('withLock runs the work once under the lock and releases it, also when the work throws', async function () {
      const key = `lock:${random()}`;
      let runs = 0;
      const work = async () => {
        runs += 1;
        await sleep(50);
        return 'done';
      };
      const [a, b] = await Promise.all([withLock(store, key, 60, work), withLock(store, key, 60, work)]);
      expect(runs).to.equal(1);
      expect([a, b]).to.deep.include.members([{ acquired: true, value: 'done' }, { acquired: false }]);
      expect(await isLocked(store, key)).to.equal(false);

      let thrown: unknown;
      try {
        await withLock(store, key, 60, async () => {
          throw new Error('boom');
        });
      } catch (error) {
        thrown = error;
      }
      expect((thrown as Error).message).to.equal('boom');
      expect(await isLocked(store, key), 'released after a failure').to.equal(false);
    });
  });
}

describe('poll (lib/store/lock.ts)', function () {
  it('returns the first value the check yields', async function () {
    let calls = 0;
    const value = await poll(async () => (++calls === 3 ? 'ready' : undefined), { timeoutMs: 5_000 });
    expect(value).to.equal('ready');
    expect(calls).to.equal(3);
  });

  it('gives up with undefined once the timeout has passed, after checking one last time', async function () {
    let calls = 0;
    const value = await poll(
      async () => {
        calls += 1;
        return undefined;
      },
      { timeoutMs: 100 },
    );
    expect(value).to.equal(undefined);
    expect(calls).to.be.greaterThan(1);
  });

  it('checkFirst checks before pausing; a check that throws ends the wait with its error', async function () {
    let calls = 0;
    expect(await poll(async () => (++calls ? 'now' : undefined), { timeoutMs: 0, checkFirst: true })).to.equal('now');
    let thrown: unknown;
    try {
      await poll(
        async () => {
          throw new Error('terminal');
        },
        { timeoutMs: 5_000 },
      );
    } catch (error) {
      thrown = error;
    }
    expect((thrown as Error).message).to.equal('terminal');
  });
});
