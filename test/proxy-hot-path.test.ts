import { createHook } from 'node:async_hooks';
import type { RequestListener } from 'node:http';
import { expect } from 'chai';
import type { EchoUpstream } from './helpers/echo-upstream.ts';
import { send, startEchoStack } from './helpers/proxy.ts';
import type { Stack } from './helpers/stack.ts';
import { startWeb, type Web } from './helpers/web.ts';

/**
 * What keeps a tool call cheap (see the git log of lib/proxy): a request whose token and upstream
 * credentials are cached is admitted and sent on synchronously, creating no promise — each one
 * costs, more so under oidc-provider's AsyncLocalStorage. Counted with an async hook, only while
 * the request listener runs synchronously; no timing involved.
 */
describe('/mcp proxy hot path: a warm request creates no promise', function () {
  let echo: EchoUpstream;
  let stack: Stack;
  let token: string;
  let web: Web;
  let counting = false;
  let promises = 0;
  const hook = createHook({
    init(_id, type) {
      if (counting && type === 'PROMISE') promises += 1;
    },
  });
  const counted =
    (listener: RequestListener): RequestListener =>
    (req, res) => {
      counting = true;
      try {
        listener(req, res);
      } finally {
        counting = false;
      }
    };

  before(async function () {
    ({ echo, stack, token } = await startEchoStack());
    web = await startWeb(stack.env, {}, counted);
    hook.enable();
  });
  after(async function () {
    hook.disable();
    await web?.close();
    await stack?.close();
    await echo?.close();
  });

  /** Promises created synchronously by the listener for one call. */
  async function promisesOf(): Promise<number> {
    promises = 0;
    const res = await send(web.mcpUrl, { headers: ['Authorization', `Bearer ${token}`], body: Buffer.from('{}') });
    expect(res.status).to.equal(200);
    return promises;
  }

  it('a cold request asks the store (promises); once warm, none', async function () {
    expect(await promisesOf(), 'cold: the store is asked').to.be.greaterThan(0);
    // The revocation subscription comes up asynchronously: until it does, nothing is cached.
    let attempts = 0;
    while ((await promisesOf()) > 0) {
      attempts += 1;
      if (attempts > 100) throw new Error('no request was ever served from the cache');
    }
    for (let i = 0; i < 5; i++) expect(await promisesOf(), `warm request ${i}`).to.equal(0);
  });
});
