import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { startDevIdentityProvider, type DevIdentityProvider } from '../lib/dev/identity-provider.ts';
import { createIdentityClient, IdentityError, type IdentityClient } from '../lib/identity/index.ts';
import { random } from './helpers/vault.ts';

describe('vault: upstream refresh failures are classified by what they mean', function () {
  let idp: DevIdentityProvider;
  let identity: IdentityClient;
  let dir: string;
  const servers: Server[] = [];

  /** A token endpoint answering whatever `handler` says, described by a metadata file. */
  async function identityAt(handler: Parameters<typeof createServer>[1], timeout?: number): Promise<IdentityClient> {
    const server = createServer(handler);
    servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const metadataFile = join(dir, `${random(4)}.json`);
    await writeFile(
      metadataFile,
      JSON.stringify({ issuer: origin, authorization_endpoint: `${origin}/auth`, token_endpoint: `${origin}/token` }),
    );
    return createIdentityClient(
      { serverUrl: undefined, metadataFile, clientId: 'c', clientSecret: 's', scope: 'openid' },
      { redirectUri: 'http://127.0.0.1/cb', allowInsecure: true, timeout },
    );
  }

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'vault-test-'));
    idp = await startDevIdentityProvider({
      redirectUris: ['http://127.0.0.1/cb'],
      tokenEndpointAuthMethod: 'client_secret_post',
    });
    identity = await createIdentityClient(
      {
        serverUrl: new URL(idp.issuer),
        metadataFile: undefined,
        clientId: idp.clientId,
        clientSecret: idp.clientSecret,
        scope: 'openid',
      },
      { redirectUri: 'http://127.0.0.1/cb', allowInsecure: true },
    );
  });
  afterEach(function () {
    idp.setTokenEndpointFailure(undefined);
  });
  after(async function () {
    for (const server of servers) {
      server.closeAllConnections();
      server.close();
    }
    await idp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const refreshToken = 'presented-refresh-token-' + random();
  async function failure(client: IdentityClient): Promise<IdentityError> {
    try {
      await client.refresh(refreshToken);
    } catch (error) {
      expect(error).to.be.instanceOf(IdentityError);
      // Errors are logged and may be shown: the refresh token presented must not be in them.
      expect((error as Error).message).to.not.contain(refreshToken);
      return error as IdentityError;
    }
    throw new Error('refresh unexpectedly succeeded');
  }

  it('invalid_grant (a refresh token the upstream does not know) is terminal', async function () {
    expect((await failure(identity)).code).to.equal('IDENTITY_GRANT_INVALID');
  });

  for (const status of [503, 500, 429]) {
    it(`HTTP ${status} at the token endpoint is transient`, async function () {
      idp.setTokenEndpointFailure(status);
      expect((await failure(identity)).code).to.equal('IDENTITY_TRANSIENT');
    });
  }

  it('a wrong client secret is transient: an operator mistake must not log every user out', async function () {
    const misconfigured = await createIdentityClient(
      {
        serverUrl: new URL(idp.issuer),
        metadataFile: undefined,
        clientId: idp.clientId,
        clientSecret: 'wrong',
        scope: 'openid',
      },
      { redirectUri: 'http://127.0.0.1/cb', allowInsecure: true },
    );
    expect((await failure(misconfigured)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('a 401 challenge in WWW-Authenticate (client authentication failed) is transient', async function () {
    const client = await identityAt((_req, res) => {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="token"', 'content-type': 'application/json' });
      res.end('{"error":"invalid_client"}');
    });
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('a 5xx whose body says invalid_grant is still transient', async function () {
    const client = await identityAt((_req, res) => {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end('{"error":"invalid_grant"}');
    });
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('an HTML error page is transient', async function () {
    const client = await identityAt((_req, res) => {
      res.writeHead(504, { 'content-type': 'text/html' });
      res.end('<html><body>Gateway Timeout</body></html>');
    });
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('a token endpoint that never answers is transient (timeout)', async function () {
    this.timeout(10_000);
    const client = await identityAt(() => undefined, 1);
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });

  it('a refused connection is transient', async function () {
    const client = await identityAt((_req, res) => res.end());
    servers.at(-1)!.close();
    servers.at(-1)!.closeAllConnections();
    await once(servers.at(-1)!, 'close');
    expect((await failure(client)).code).to.equal('IDENTITY_TRANSIENT');
  });
});
