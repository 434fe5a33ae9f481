import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createTcpServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { OutboundFetchRefused } from '../lib/http/outbound.ts';
import type { IdentityConfig } from '../lib/config/types.ts';
import { startDevIdentityProvider, type DevIdentityProvider } from '../lib/dev/identity-provider.ts';
import {
  createIdentityClient,
  createIdentityFetch,
  IDENTITY_MAX_BYTES,
  IdentityError,
  type IdentityClientOptions,
} from '../lib/identity/index.ts';
import type { Logger } from '../lib/telemetry/log.ts';
import { startPathServer, type PathServer } from './helpers/path-server.ts';

/**
 * SPEC R24: every URL the upstream identity client fetches (discovery, token, userinfo, JWKS) is
 * held to the R11 rules in production: https only, no loopback, private, link-local or other
 * special-use address, checked before any connection; no redirects; a body cap. LOCAL_INSECURE
 * and the embedded development IdP may use loopback, over plain http too.
 *
 * No test here sends a packet anywhere but 127.0.0.1: the non-loopback addresses are IP literals
 * the policy refuses before fetch is called.
 */

/** Accepts TCP connections, counts them and hangs up: enough to tell whether one was attempted. */
async function startTcpCounter(): Promise<{ port: number; connections: () => number; close(): Promise<void> }> {
  let connections = 0;
  const server: Server = createTcpServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const discoveryConfig = (serverUrl: string): IdentityConfig => ({
  serverUrl: new URL(serverUrl),
  metadataFile: undefined,
  clientId: 'c',
  clientSecret: 's',
  scope: 'openid',
});

/** Refusals are expected here by the dozen; the one test reading the log passes its own. */
const quiet: Logger = {
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  child: () => quiet,
};

const production: IdentityClientOptions = {
  redirectUri: 'https://proxy.example/cb',
  allowInsecure: false,
  log: quiet,
};
const development: IdentityClientOptions = { redirectUri: 'http://127.0.0.1/cb', allowInsecure: true, log: quiet };

async function refusal(promise: Promise<unknown>): Promise<IdentityError> {
  const error = await promise.then(
    () => expect.fail('the identity provider was accepted'),
    (e: unknown) => e,
  );
  expect(error).to.be.instanceOf(IdentityError);
  return error as IdentityError;
}

function discoveryDocument(issuer: string, overrides: Record<string, unknown> = {}) {
  return {
    issuer,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
    ...overrides,
  };
}

describe('upstream identity provider: outbound fetch policy (R24)', function () {
  let dir: string;
  before(function () {
    dir = mkdtempSync(join(tmpdir(), 'identity-ssrf-'));
  });
  after(function () {
    rmSync(dir, { recursive: true, force: true });
  });

  describe('in production (no LOCAL_INSECURE), refused before connecting', function () {
    let listener: PathServer;
    let counter: Awaited<ReturnType<typeof startTcpCounter>>;
    before(async function () {
      listener = await startPathServer();
      listener.serve('/.well-known/openid-configuration', (_req, res) => {
        res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify(discoveryDocument(listener.origin)));
      });
      counter = await startTcpCounter();
    });
    after(async function () {
      await listener?.close();
      await counter?.close();
    });

    it('plain http on 127.0.0.1, a real identity provider listening', async function () {
      const before = listener.connections;
      const error = await refusal(createIdentityClient(discoveryConfig(listener.origin), production));
      expect(error.code).to.equal('IDENTITY_UNREACHABLE');
      expect(error.message).to.match(/refused by the outbound fetch policy: plain http .* LOCAL_INSECURE=true/);
      expect(listener.connections - before, 'connections to the identity provider').to.equal(0);
    });

    const literals: [string, RegExp][] = [
      ['https://10.0.0.1/', /10\.0\.0\.1 is a special-use address \(private\)/],
      ['https://169.254.169.254/', /169\.254\.169\.254 is a special-use address \(link-local\)/],
      ['https://[::ffff:a9fe:a9fe]/', /IPv4-mapped/],
      ['https://[fd00:ec2::254]/', /unique-local/],
      ['https://100.64.0.1/', /CGNAT/],
    ];
    for (const [url, reason] of literals) {
      it(`https at ${url}, by the address policy`, async function () {
        const error = await refusal(createIdentityClient(discoveryConfig(url), production));
        expect(error.code).to.equal('IDENTITY_UNREACHABLE');
        expect(error.message).to.contain('refused by the outbound fetch policy');
        expect(error.message).to.match(reason);
      });
    }

    it('https at 127.0.0.1 and at localhost (resolved, then refused), opening no connection', async function () {
      for (const host of ['127.0.0.1', 'localhost']) {
        const error = await refusal(
          createIdentityClient(discoveryConfig(`https://${host}:${counter.port}/`), production),
        );
        expect(error.code, host).to.equal('IDENTITY_UNREACHABLE');
        expect(error.message, host).to.match(
          /refused by the outbound fetch policy: .*special-use address \(loopback\)/,
        );
      }
      expect(counter.connections(), 'connections attempted').to.equal(0);
    });

    it('the same https URL with LOCAL_INSECURE does connect (the counter above can see a connection)', async function () {
      const before = counter.connections();
      const error = await refusal(
        createIdentityClient(discoveryConfig(`https://127.0.0.1:${counter.port}/`), development),
      );
      expect(error.code).to.equal('IDENTITY_UNREACHABLE');
      expect(error.message).to.not.contain('outbound fetch policy');
      expect(counter.connections() - before).to.be.greaterThan(0);
    });

    it('a metadata file listing a token endpoint at a private address is refused at start-up', async function () {
      const file = join(dir, 'private-token.json');
      writeFileSync(
        file,
        JSON.stringify(discoveryDocument('https://idp.example', { token_endpoint: 'https://10.0.0.1/token' })),
      );
      const error = await refusal(
        createIdentityClient(
          { ...discoveryConfig('https://idp.example'), serverUrl: undefined, metadataFile: file },
          production,
        ),
      );
      expect(error.code).to.equal('IDENTITY_UNREACHABLE');
      expect(error.message).to.match(/lists https:\/\/10\.0\.0\.1\/token, refused .*\(private\)/);
    });

    it('a token endpoint host resolving to loopback is refused at the request, the grant kept', async function () {
      // A name cannot be judged at start-up: the check happens when the connection resolves it.
      const file = join(dir, 'loopback-name-token.json');
      writeFileSync(
        file,
        JSON.stringify(
          discoveryDocument('https://idp.example', { token_endpoint: `https://localhost:${counter.port}/token` }),
        ),
      );
      const lines: string[] = [];
      const client = await createIdentityClient(
        { ...discoveryConfig('https://idp.example'), serverUrl: undefined, metadataFile: file },
        {
          ...production,
          log: { ...quiet, warn: (msg, fields) => void lines.push(`${msg} ${JSON.stringify(fields)}`) },
        },
      );
      const before = counter.connections();
      const error = await refusal(client.refresh('a-refresh-token'));
      // Our refusal says nothing about the user's grant: it must not be revoked for it.
      expect(error.code).to.equal('IDENTITY_TRANSIENT');
      expect(error.message).to.match(/refused by the outbound fetch policy: localhost resolves to .*\(loopback\)/);
      expect(counter.connections() - before, 'connections attempted').to.equal(0);
      expect(lines.join('\n')).to.match(/identity provider fetch refused/);
      expect(lines.join('\n')).to.not.contain('a-refresh-token');
    });
  });

  describe('with LOCAL_INSECURE (or the embedded development IdP)', function () {
    let listener: PathServer;
    before(async function () {
      listener = await startPathServer();
    });
    after(async function () {
      await listener?.close();
    });

    it('still refuses a discovery document pointing the token endpoint at the metadata service', async function () {
      const issuer = `${listener.origin}/metadata-service`;
      listener.serve('/metadata-service/.well-known/openid-configuration', (_req, res) => {
        const document = discoveryDocument(issuer, { token_endpoint: 'https://169.254.169.254/latest/meta-data/' });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(document));
      });
      const error = await refusal(createIdentityClient(discoveryConfig(issuer), development));
      expect(error.code).to.equal('IDENTITY_UNREACHABLE');
      expect(error.message).to.match(/169\.254\.169\.254 is a special-use address \(link-local\)/);
    });

    it('does not follow a redirect from discovery', async function () {
      const issuer = `${listener.origin}/moved`;
      listener.serve('/moved/.well-known/openid-configuration', (_req, res) => {
        res.writeHead(302, { location: `${listener.origin}/elsewhere/.well-known/openid-configuration` }).end();
      });
      listener.serve('/elsewhere/.well-known/openid-configuration', (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(discoveryDocument(issuer)));
      });
      const error = await refusal(createIdentityClient(discoveryConfig(issuer), development));
      expect(error.code).to.equal('IDENTITY_UNREACHABLE');
      expect(error.message).to.contain('unexpected HTTP response status code');
      expect(listener.hits.get('/moved/.well-known/openid-configuration')).to.equal(1);
      expect(listener.hits.get('/elsewhere/.well-known/openid-configuration') ?? 0, 'redirect followed').to.equal(0);
    });

    it(`refuses a discovery document larger than ${IDENTITY_MAX_BYTES} bytes`, async function () {
      const issuer = `${listener.origin}/huge`;
      listener.serve('/huge/.well-known/openid-configuration', (_req, res) => {
        const document = discoveryDocument(issuer, { padding: 'x'.repeat(IDENTITY_MAX_BYTES) });
        // Chunked, no content-length: the cap must hold while reading, not only on the header.
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(document));
      });
      const error = await refusal(createIdentityClient(discoveryConfig(issuer), development));
      expect(error.code).to.equal('IDENTITY_UNREACHABLE');
      expect(error.message).to.match(
        new RegExp(`refused by the outbound fetch policy: response is more than ${IDENTITY_MAX_BYTES} bytes`),
      );
    });
  });

  describe('the embedded development IdP on 127.0.0.1 works end to end', function () {
    let idp: DevIdentityProvider;
    before(async function () {
      idp = await startDevIdentityProvider({
        redirectUris: ['http://127.0.0.1/cb'],
        tokenEndpointAuthMethod: 'client_secret_post',
      });
    });
    after(async function () {
      await idp?.close();
    });

    it('discovery, authorization URL, and the token endpoint error body read through the checked fetch', async function () {
      const client = await createIdentityClient(
        {
          serverUrl: new URL(idp.issuer),
          metadataFile: undefined,
          clientId: idp.clientId,
          clientSecret: idp.clientSecret,
          scope: 'openid offline_access',
        },
        development,
      );
      expect(client.issuer).to.equal(idp.issuer);
      const url = await client.authorizationUrl({ state: 's', codeVerifier: 'v'.repeat(43), nonce: 'n' });
      expect(url.origin).to.equal(new URL(idp.issuer).origin);
      expect(url.searchParams.get('code_challenge_method')).to.equal('S256');
      expect(url.searchParams.get('client_id')).to.equal(idp.clientId);
      // A 400 invalid_grant body must reach openid-client intact: it is what ends a dead grant.
      const error = await refusal(client.refresh('unknown-refresh-token'));
      expect(error.code).to.equal('IDENTITY_GRANT_INVALID');
    });

    it('is refused without LOCAL_INSECURE', async function () {
      const error = await refusal(createIdentityClient(discoveryConfig(idp.issuer), production));
      expect(error.code).to.equal('IDENTITY_UNREACHABLE');
    });
  });

  describe('createIdentityFetch on its own', function () {
    it('refuses special-use literals with OutboundFetchRefused, even with LOCAL_INSECURE', async function () {
      const checked = createIdentityFetch({ allowInsecure: true, timeoutMs: 10_000, log: quiet });
      for (const url of ['https://169.254.169.254/token', 'https://10.0.0.1/token', 'http://10.0.0.1/token']) {
        const error = await checked(url, { method: 'GET', headers: {}, body: undefined, redirect: 'manual' }).then(
          () => expect.fail(`fetched ${url}`),
          (e: unknown) => e,
        );
        expect(error, url).to.be.instanceOf(OutboundFetchRefused);
      }
    });

    it('returns a redirect as it is, never following it', async function () {
      const listener = await startPathServer();
      try {
        listener.serve(
          '/token',
          (_req, res) => void res.writeHead(307, { location: `${listener.origin}/other` }).end(),
        );
        const checked = createIdentityFetch({ allowInsecure: true, timeoutMs: 10_000, log: quiet });
        const res = await checked(`${listener.origin}/token`, {
          method: 'POST',
          headers: {},
          body: 'a=b',
          redirect: 'manual',
        });
        expect(res.status).to.equal(307);
        expect(listener.hits.get('/other') ?? 0).to.equal(0);
      } finally {
        await listener.close();
      }
    });
  });
});
