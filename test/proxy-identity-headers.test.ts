import { validateHeaderValue } from 'node:http';
import { expect } from 'chai';
import { ENCODED_PREFIX, identityHeaderValue } from '../lib/proxy/headers.ts';
import type { EchoUpstream } from './helpers/echo-upstream.ts';
import { json, login, send, startEchoStack, values } from './helpers/proxy.ts';
import type { Stack } from './helpers/stack.ts';

/** How an MCP server reads an identity header (the rule README.md documents). */
const decode = (value: string) =>
  value.startsWith(ENCODED_PREFIX) ? decodeURIComponent(value.slice(ENCODED_PREFIX.length)) : value;

describe('/mcp identity headers: values a header cannot carry', function () {
  const plain = ['alice', 'Grace Hopper', '100%', "O'Hara", 'a%20b', 'user@example.com', 'x y  z', ''];
  const encoded: [string, string][] = [
    ['Jörg', "UTF-8''J%C3%B6rg"],
    ['李雷 100%', "UTF-8''%E6%9D%8E%E9%9B%B7%20100%25"],
    [' alice', "UTF-8''%20alice"],
    ['alice ', "UTF-8''alice%20"],
    ['tab\there', "UTF-8''tab%09here"],
    ['alice\r\nX-Admin: yes', "UTF-8''alice%0D%0AX-Admin%3A%20yes"],
    ['café', "UTF-8''caf%C3%A9"],
    // A plain value that looks encoded is encoded too, so the prefix always means "decode me".
    ["UTF-8''abc", "UTF-8''UTF-8%27%27abc"],
    ["utf-8''abc", "UTF-8''utf-8%27%27abc"],
  ];

  it('sends a value a header carries as it is: spaces, % and quotes included', function () {
    for (const value of plain) expect(identityHeaderValue(value), JSON.stringify(value)).to.equal(value);
  });

  it('sends any other value as UTF-8, percent-encoded after the RFC 8187 prefix', function () {
    for (const [value, expected] of encoded) {
      expect(identityHeaderValue(value), JSON.stringify(value)).to.equal(expected);
    }
  });

  it('every value can be sent, decodes back to itself, and no two values share a header value', function () {
    const all = [...plain, ...encoded.map(([value]) => value)];
    const sent = all.map(identityHeaderValue);
    for (const [i, value] of sent.entries()) {
      expect(() => validateHeaderValue('X-User-Id', value), JSON.stringify(value)).to.not.throw();
      expect(value, 'no surrounding whitespace').to.equal(value.trim());
      expect(decode(value)).to.equal(all[i]);
    }
    expect(new Set(sent).size).to.equal(all.length);
  });
});

describe('/mcp identity headers, as the MCP server receives them', function () {
  let echo: EchoUpstream;
  let stack: Stack;

  before(async function () {
    ({ echo, stack } = await startEchoStack());
  });
  after(async function () {
    await stack?.close();
    await echo?.close();
  });

  async function seenBy(user: string): Promise<string[]> {
    const { token } = await login(stack.mcpUrl, user);
    const res = await send(stack.mcpUrl, { headers: ['Authorization', `Bearer ${token}`], body: Buffer.from('{}') });
    expect(res.status).to.equal(200);
    return json(res).rawHeaders;
  }

  it('a user name with a space arrives as it is', async function () {
    expect(values(await seenBy('Grace Hopper'), 'x-user-id')).to.deep.equal(['Grace Hopper']);
  });

  it('a non-ASCII user name arrives in the one documented encoding, and decodes to the name', async function () {
    const raw = await seenBy('Jörg 100%');
    expect(values(raw, 'x-user-id')).to.deep.equal(["UTF-8''J%C3%B6rg%20100%25"]);
    expect(decode(values(raw, 'x-user-id')[0]!)).to.equal('Jörg 100%');
    // The client id and the scope are plain values: as they are.
    expect(values(raw, 'x-dynamic-client-id')[0]).to.not.include(ENCODED_PREFIX);
    expect(values(raw, 'x-authorization-scope')[0]).to.match(/^[\x21-\x7e ]+$/);
  });
});
