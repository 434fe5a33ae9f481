import { expect } from 'chai';
import { captureLogs } from '../lib/telemetry/log.ts';
import type { EchoUpstream } from './helpers/echo-upstream.ts';
import { send, useEchoStack } from './helpers/proxy.ts';
import type { Stack } from './helpers/stack.ts';

const requestIdOf = (line: string) => /(?:^| )request_id=(\S+)/.exec(line)?.[1];

/**
 * A keep-alive connection to the MCP server is opened while one request is served and carries
 * the next ones. Its callbacks ('response', 'error') must log under the request they are for, not
 * the one that opened the connection: otherwise the line explaining a 502 names another request.
 */
describe('telemetry: request ids on a reused connection to the MCP server', function () {
  let echo: EchoUpstream, stack: Stack, bearer: string[];
  // A stack of its own: no connection to the MCP server before the first test opens one.
  useEchoStack((running) => ({ echo, stack, bearer } = running));

  let lines: string[];
  let restore: () => void;
  beforeEach(() => {
    lines = [];
    restore = captureLogs((line) => lines.push(line));
  });
  afterEach(() => {
    restore();
    echo.rejectAll = false;
  });

  const call = (id: string, path = '') =>
    send(`${stack.mcpUrl}${path}`, { headers: [...bearer, 'X-Request-Id', id], body: Buffer.from('{}') });

  /**
   * Request `id` succeeds on a connection it opens, which then waits idle in the proxy's pool.
   * Returns the proxy's port of that connection.
   */
  async function openConnection(id: string): Promise<number> {
    const connections = echo.connections;
    expect((await call(id)).status).to.equal(200);
    expect(echo.connections, `${id} opened a connection of its own`).to.equal(connections + 1);
    return echo.arrivals.at(-1)!.remotePort!;
  }

  /** The lines with `msg=<msg>`, all of them carrying `id` and no other. */
  function expectLoggedFor(msg: string, id: string): void {
    const found = lines.filter((line) => line.includes(` msg=${JSON.stringify(msg)} `));
    expect(found, `lines "${msg}"`).to.have.length.greaterThan(0);
    for (const line of found) expect(requestIdOf(line), line).to.equal(id);
  }

  /** No line names `id` but its own request line: nothing done for another request logged under it. */
  function expectOnlyItsRequestLine(id: string): void {
    const named = lines.filter((line) => requestIdOf(line) === id);
    expect(
      named.filter((line) => !/ msg=request /.test(line)),
      `lines under ${id}`,
    ).to.deep.equal([]);
  }

  it('the MCP server resets the reused connection: the 502 is logged under the request it answers', async function () {
    const first = 'router-id-aaaaaaaaaaaa';
    const second = 'router-id-bbbbbbbbbbbb';
    const port = await openConnection(first);
    const res = await call(second, '/reset');
    expect(res.status).to.equal(502);
    expect(echo.arrivals.at(-1), 'the same connection').to.deep.equal({ path: '/mcp/reset', remotePort: port });
    expectLoggedFor('MCP server unreachable', second);
    expectOnlyItsRequestLine(first);
  });

  it('the MCP server answers 401 on the reused connection: the retry logs under the request it retries', async function () {
    const first = 'router-id-cccccccccccc';
    const second = 'router-id-dddddddddddd';
    const port = await openConnection(first);
    const before = echo.arrivals.length;
    // The refreshed token is refused too: the retry, begun in the 'response' callback, logs it.
    echo.rejectAll = true;
    const res = await call(second);
    expect(res.status).to.equal(401);
    expect(echo.arrivals[before], 'the same connection').to.deep.equal({ path: '/mcp', remotePort: port });
    expectLoggedFor('MCP server refused a freshly refreshed upstream token', second);
    expectOnlyItsRequestLine(first);
  });
});
