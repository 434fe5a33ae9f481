import { randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { deferred, sha256, type EchoUpstream } from './helpers/echo-upstream.ts';
import { json, send, startEchoStack, values } from './helpers/proxy.ts';
import type { Stack } from './helpers/stack.ts';

describe('/mcp proxy: retry on an upstream 401', function () {
  let echo: EchoUpstream;
  let stack: Stack;
  let bearer: string[];

  before(async function () {
    ({ echo, stack, bearer } = await startEchoStack());
  });
  after(async function () {
    await stack?.close();
    await echo?.close();
  });

  /** The sha256 of the upstream token the proxy currently sends for our grant. */
  async function currentUpstreamToken(): Promise<string> {
    const res = await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') });
    expect(res.status).to.equal(200);
    return json(res).tokenSha256!;
  }

  afterEach(function () {
    echo.rejected.clear();
    echo.rejectAll = false;
  });

  for (const framing of ['Content-Length', 'chunked'] as const) {
    it(`refreshes once and replays the body byte-identical (${framing})`, async function () {
      echo.rejected.add(await currentUpstreamToken());
      const refreshes = stack.idp.stats.refreshes;
      const body = Buffer.concat([Buffer.from('{"jsonrpc":"2.0", "id":7}\r\n'), randomBytes(90_000)]);
      const seenBefore = echo.seen.length;
      const res = await send(
        stack.mcpUrl,
        framing === 'chunked'
          ? { headers: bearer, chunks: [body.subarray(0, 1000), body.subarray(1000)] }
          : { headers: bearer, body },
      );
      expect(res.status).to.equal(200);
      expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
      const [refused, replayed] = echo.seen.slice(seenBefore);
      expect(refused!.status).to.equal(401);
      expect(replayed!.status).to.equal(200);
      expect(refused!.bodySha256).to.equal(sha256(body));
      expect(replayed!.bodySha256).to.equal(sha256(body));
      expect(replayed!.tokenSha256).to.not.equal(refused!.tokenSha256);
      expect(values(replayed!.rawHeaders, 'content-length')).to.deep.equal([String(body.length)]);
      // The refreshed token is kept: the next request needs no refresh.
      expect((await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') })).status).to.equal(200);
      expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
    });
  }

  it('a body still arriving when the MCP server answers 401 is read whole, then replayed', async function () {
    echo.rejected.add(await currentUpstreamToken());
    echo.earlyAnswered = deferred();
    const body = randomBytes(120_000);
    const seenBefore = echo.seen.length;
    const res = await send(`${stack.mcpUrl}/early`, {
      headers: bearer,
      chunks: [body.subarray(0, 10), body.subarray(10)],
      // The rest of the body is sent only after the MCP server has answered 401.
      between: () => echo.earlyAnswered.promise,
    });
    expect(res.status).to.equal(200);
    const replayed = echo.seen.slice(seenBefore);
    expect(replayed).to.have.length(1);
    expect(replayed[0]!.bodySha256).to.equal(sha256(body));
  });

  it('never retries a body over the limit: 413 and no refresh, even after an early 401', async function () {
    echo.rejected.add(await currentUpstreamToken());
    echo.earlyAnswered = deferred();
    const refreshes = stack.idp.stats.refreshes;
    const seenBefore = echo.seen.length;
    const res = await send(`${stack.mcpUrl}/early`, {
      headers: bearer,
      chunks: [randomBytes(10), ...Array.from({ length: 21 }, () => randomBytes(10_000))],
      between: () => echo.earlyAnswered.promise,
    });
    expect(res.status).to.equal(413);
    expect(json<{ error: string }>(res).error).to.equal('payload_too_large');
    expect(stack.idp.stats.refreshes).to.equal(refreshes);
    expect(echo.seen.length, 'nothing replayed').to.equal(seenBefore);
  });

  it('a refreshed token refused again answers 401 invalid_token after exactly one refresh', async function () {
    echo.rejectAll = true;
    const refreshes = stack.idp.stats.refreshes;
    const res = await send(stack.mcpUrl, { headers: bearer, body: Buffer.from('{}') });
    expect(res.status).to.equal(401);
    expect(res.headers['www-authenticate']).to.include('error="invalid_token"');
    expect(stack.idp.stats.refreshes).to.equal(refreshes + 1);
  });
});
