import { expect } from 'chai';
import { createProviderFetch } from '../lib/auth-server/cimd.ts';
import { addressRefusal, guardedLookup, OutboundFetchRefused, type Resolver } from '../lib/http/outbound.ts';
import { log } from '../lib/telemetry/log.ts';
import { startDocumentHost, type DocumentHost } from './helpers/document-host.ts';

/**
 * The outbound fetch rules of lib/http/outbound.ts (R24), through oidc-provider's fetch
 * (createProviderFetch); the identity provider's client is held to the same rules in
 * identity-ssrf.test.ts.
 */

// --- The address policy ------------------------------------------------------------------------

describe('outbound fetches: address policy (R11, R24)', function () {
  const production = { publicAddresses: true, loopback: false };
  const development = { publicAddresses: true, loopback: true };

  const refused = [
    '127.0.0.1',
    '127.8.9.10',
    '0.0.0.0',
    '10.0.0.1',
    '100.64.0.1',
    '169.254.169.254',
    '172.16.0.1',
    '172.31.255.255',
    '192.0.0.170',
    '192.168.1.1',
    '198.18.0.1',
    '224.0.0.251',
    '255.255.255.255',
    '::1',
    '::',
    '::ffff:127.0.0.1',
    '::ffff:a9fe:a9fe',
    '::ffff:8.8.8.8',
    '::a00:1',
    '64:ff9b::a9fe:a9fe',
    '2002:a9fe:a9fe::1',
    '2001::1',
    '2001:db8::1',
    'fc00::1',
    'fd00:ec2::254',
    'fe80::1',
    'fe80::1%eth0',
    'ff02::1',
    '4000::1',
  ];
  for (const address of refused) {
    it(`refuses ${address}`, function () {
      expect(addressRefusal(address, production)).to.match(/special-use address/);
    });
  }

  for (const address of ['8.8.8.8', '1.1.1.1', '93.184.215.14', '2606:4700:4700::1111', '2a00:1450:4001::200e']) {
    it(`allows the public address ${address}`, function () {
      expect(addressRefusal(address, production)).to.equal(undefined);
    });
  }

  it('with LOCAL_INSECURE allows loopback only: never link-local, private or IPv4-mapped', function () {
    expect(addressRefusal('127.0.0.1', development)).to.equal(undefined);
    expect(addressRefusal('::1', development)).to.equal(undefined);
    for (const address of ['169.254.169.254', '10.0.0.1', '192.168.0.1', '::ffff:127.0.0.1', 'fe80::1', '0.0.0.0']) {
      expect(addressRefusal(address, development), address).to.match(/special-use address/);
    }
  });

  it('the loopback-only policy refuses public addresses', function () {
    expect(addressRefusal('8.8.8.8', { publicAddresses: false, loopback: true })).to.match(/not a loopback/);
  });

  describe('checks the resolved address, not the name', function () {
    const resolver =
      (addresses: string[]): Resolver =>
      (_hostname, _options, callback) =>
        callback(
          null,
          addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 })),
        );
    const lookup = (addresses: string[], all: boolean) =>
      new Promise<{ error: Error | null; address: unknown }>((resolve) => {
        guardedLookup(production, resolver(addresses))('docs.example.com', { all }, (error, address) =>
          resolve({ error, address }),
        );
      });

    it('refuses a name that resolves to 169.254.169.254', async function () {
      const { error } = await lookup(['169.254.169.254'], false);
      expect(error).to.be.instanceOf(OutboundFetchRefused);
      expect(error?.message).to.equal(
        'docs.example.com resolves to 169.254.169.254: 169.254.169.254 is a special-use address (link-local)',
      );
    });

    it('refuses a name with one private address among public ones (DNS rebinding)', async function () {
      const { error } = await lookup(['93.184.215.14', '10.0.0.1'], true);
      expect(error?.message).to.match(/10\.0\.0\.1 is a special-use address \(private\)/);
    });

    it('passes public addresses on, in the shape asked for', async function () {
      expect((await lookup(['93.184.215.14', '2606:2800::1'], true)).address).to.deep.equal([
        { address: '93.184.215.14', family: 4 },
        { address: '2606:2800::1', family: 6 },
      ]);
      expect((await lookup(['93.184.215.14'], false)).address).to.equal('93.184.215.14');
    });
  });

  describe('refuses before any request is made', function () {
    const attempts: string[] = [];
    const spy = (async (input: string | URL | Request) => {
      attempts.push(String(input));
      return new Response('{}');
    }) as typeof fetch;
    const outbound = createProviderFetch({ allowLoopback: false, log, fetchImpl: spy });
    const outboundDev = createProviderFetch({ allowLoopback: true, log, fetchImpl: spy });
    beforeEach(() => (attempts.length = 0));

    const cases: [string, RegExp][] = [
      ['https://169.254.169.254/latest/meta-data/', /link-local/],
      ['https://10.0.0.1/client.json', /private/],
      ['https://127.0.0.1/client.json', /loopback/],
      ['https://0x7f.1/client.json', /127\.0\.0\.1 is a special-use address \(loopback\)/],
      ['https://2130706433/client.json', /loopback/],
      ['https://[::1]/client.json', /loopback/],
      ['https://[::ffff:a9fe:a9fe]/client.json', /IPv4-mapped/],
      ['https://[fd00:ec2::254]/client.json', /unique-local/],
      ['http://docs.example.com/client.json', /only https/],
      ['file:///etc/passwd', /only https/],
    ];
    for (const [url, reason] of cases) {
      it(url, async function () {
        const error = await outbound(url).then(
          () => undefined,
          (e: unknown) => e as Error,
        );
        expect(error).to.be.instanceOf(OutboundFetchRefused);
        expect(error?.message).to.match(reason);
        expect(attempts, 'no request').to.deep.equal([]);
      });
    }

    it('LOCAL_INSECURE still refuses 169.254.169.254 and 10.0.0.1, and lets 127.0.0.1 through', async function () {
      for (const url of ['https://169.254.169.254/x', 'https://10.0.0.1/x', 'https://[::ffff:7f00:1]/x']) {
        const error = await outboundDev(url).then(
          () => undefined,
          (e: unknown) => e as Error,
        );
        expect(error, url).to.be.instanceOf(OutboundFetchRefused);
      }
      expect(attempts).to.deep.equal([]);
      await outboundDev('https://127.0.0.1:8443/client.json');
      expect(attempts).to.deep.equal(['https://127.0.0.1:8443/client.json']);
    });

    it('never follows redirects, whatever the caller asked', async function () {
      let seen: RequestInit | undefined;
      const capture = createProviderFetch({
        allowLoopback: true,
        log,
        fetchImpl: (async (_input: string | URL | Request, init?: RequestInit) => {
          seen = init;
          return new Response(null, { status: 302, headers: { location: 'https://169.254.169.254/' } });
        }) as typeof fetch,
      });
      const res = await capture('https://127.0.0.1:8443/jwks.json', { redirect: 'follow' });
      expect(seen?.redirect).to.equal('manual');
      expect(res.status).to.equal(302);
      expect(await res.text()).to.equal('');
    });
  });

  describe('on a real connection', function () {
    let host: DocumentHost;
    const names: Resolver = (hostname, _options, callback) => {
      const table: Record<string, string> = {
        'docs.test': '127.0.0.1',
        'metadata.test': '169.254.169.254',
        'intranet.test': '10.0.0.1',
      };
      const address = table[hostname];
      if (!address) return callback(Object.assign(new Error(`${hostname} not found`), { code: 'ENOTFOUND' }), []);
      callback(null, [{ address, family: 4 }]);
    };
    const failure = (promise: Promise<unknown>) =>
      promise.then(
        () => expect.fail('fetched'),
        (e: unknown) => e as Error & { cause?: { code?: string } },
      );

    before(async function () {
      host = await startDocumentHost();
      host.json('/doc.json', { hello: 'world' });
    });
    after(async function () {
      await host?.close();
    });

    it('refuses names resolving to special-use addresses without connecting anywhere', async function () {
      const outbound = createProviderFetch({ allowLoopback: false, log, resolve: names });
      const port = new URL(host.ip).port;
      const before = host.connections;
      for (const [name, kind] of [
        ['docs.test', 'loopback'],
        ['metadata.test', 'link-local'],
        ['intranet.test', 'private'],
      ]) {
        const error = await failure(outbound(`https://${name}:${port}/doc.json`));
        expect(error, name).to.be.instanceOf(OutboundFetchRefused);
        expect(error.message).to.match(new RegExp(`^${name} resolves to .*\\(${kind}\\)$`));
      }
      expect(host.connections - before).to.equal(0);
      expect(host.hits.get('/doc.json') ?? 0).to.equal(0);
    });

    it('with LOCAL_INSECURE accepts a self-signed certificate on a loopback host name only', async function () {
      const outbound = createProviderFetch({ allowLoopback: true, log, resolve: names });
      const res = await outbound(`${host.ip}/doc.json`);
      expect(await res.json()).to.deep.equal({ hello: 'world' });
      // docs.test resolves to 127.0.0.1 too, but is not a loopback name: its certificate is verified.
      const port = new URL(host.ip).port;
      const error = await failure(outbound(`https://docs.test:${port}/doc.json`));
      expect(error).to.not.be.instanceOf(OutboundFetchRefused);
      expect(error.cause?.code).to.match(/CERT/);
      const intranet = await failure(outbound(`https://intranet.test:${port}/doc.json`));
      expect(intranet).to.be.instanceOf(OutboundFetchRefused);
    });
  });
});
