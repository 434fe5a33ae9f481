import { request } from 'node:http';
import { expect } from 'chai';
import { codeFlow, registerClient, tokenRequest } from './helpers/oauth.ts';
import { startStack, type Stack } from './helpers/stack.ts';

/**
 * The `/reg` and `/token` bodies our edge policies read before oidc-provider (lib/auth-server/
 * edge-body.ts) reach oidc-provider as a stream again, as sent or as a policy changed them, however
 * the client framed them. (That oidc-provider then prints no "already parsed request body" notice
 * is asserted on a real process's output in telemetry.e2e.test.ts: the notice is printed once per
 * process.)
 */

/** A POST whose body goes out in `parts`, chunked (no Content-Length), a moment apart. */
function chunkedPost(
  url: string,
  contentType: string,
  parts: string[],
): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { 'content-type': contentType, accept: 'application/json' } });
    req.on('error', reject);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) as Record<string, unknown> }));
    });
    let i = 0;
    const next = () => {
      if (i === parts.length) return void req.end();
      req.write(parts[i++]);
      setTimeout(next, 20);
    };
    next();
  });
}

describe('edge policies read /reg and /token bodies, oidc-provider still reads them itself', function () {
  this.timeout(30_000);
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(() => stack?.close());

  it('a chunked registration whose body a policy changes (Cursor: web with a custom scheme) is registered as changed', async () => {
    const metadata = JSON.stringify({
      application_type: 'web',
      redirect_uris: ['cursor://anysphere.cursor-mcp/oauth/callback'],
      token_endpoint_auth_method: 'none',
    });
    const res = await chunkedPost(`${stack.baseUrl}/reg`, 'application/json', [
      metadata.slice(0, 20),
      metadata.slice(20, 50),
      metadata.slice(50),
    ]);
    expect(res.status, JSON.stringify(res.body)).to.equal(201);
    expect(res.body.application_type).to.equal('native');
  });

  it('a chunked token request and one whose resource a policy rewrites are both read by oidc-provider', async () => {
    const reg = await registerClient(stack.baseUrl, {
      redirect_uris: ['http://127.0.0.1:5555/cb'],
      token_endpoint_auth_method: 'none',
    });
    expect(reg.status).to.equal(201);
    // A code nobody issued: oidc-provider read the body when it names the grant's failure.
    const form = new URLSearchParams({
      grant_type: 'authorization_code',
      code: 'not-a-code-anyone-issued',
      redirect_uri: 'http://127.0.0.1:5555/cb',
      client_id: reg.body.client_id!,
      code_verifier: 'v'.repeat(43),
    }).toString();
    const chunked = await chunkedPost(`${stack.baseUrl}/token`, 'application/x-www-form-urlencoded', [
      form.slice(0, 30),
      form.slice(30),
    ]);
    expect(chunked.status, JSON.stringify(chunked.body)).to.equal(400);
    expect(chunked.body.error).to.equal('invalid_grant');

    // The real flow with `resource` spelled with a trailing slash: rewritten, then honoured.
    const { token } = await codeFlow({
      baseUrl: stack.baseUrl,
      clientId: reg.body.client_id!,
      redirectUri: 'http://127.0.0.1:5555/cb',
      scope: 'openid offline_access',
      resource: `${stack.mcpUrl}/`,
    });
    expect(token.status, JSON.stringify(token.body)).to.equal(200);
    const refreshed = await tokenRequest(stack.baseUrl, {
      grant_type: 'refresh_token',
      refresh_token: token.body.refresh_token!,
      client_id: reg.body.client_id!,
      resource: `${stack.mcpUrl}/`,
    });
    expect(refreshed.status, JSON.stringify(refreshed.body)).to.equal(200);
  });

  it('a body in a charset nobody decodes is refused in JSON: 415', async () => {
    const res = await fetch(`${stack.baseUrl}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=x-made-up', accept: 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:5555/cb'] }),
    });
    expect(res.status).to.equal(415);
    expect(((await res.json()) as { error: string }).error).to.equal('invalid_client_metadata');
  });

  it('a Latin-1 form is read, not refused as a body (the grant is what fails)', async () => {
    const reg = await registerClient(stack.baseUrl, {
      redirect_uris: ['http://127.0.0.1:5555/cb'],
      token_endpoint_auth_method: 'none',
    });
    // `é` as one Latin-1 byte: a code nobody issued, refused as a grant, not as a body.
    const body = Buffer.concat([
      Buffer.from(`grant_type=authorization_code&client_id=${reg.body.client_id}&code=caf`, 'latin1'),
      Buffer.from([0xe9]),
      Buffer.from(`&redirect_uri=${encodeURIComponent('http://127.0.0.1:5555/cb')}&code_verifier=${'v'.repeat(43)}`),
    ]);
    const res = await fetch(`${stack.baseUrl}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded; charset=iso-8859-1', accept: 'application/json' },
      body,
    });
    expect(res.status).to.equal(400);
    expect(((await res.json()) as { error: string }).error).to.equal('invalid_grant');
  });

  it('an empty form body is oidc-provider’s to refuse, as before', async () => {
    const res = await tokenRequest(stack.baseUrl, {});
    expect(res.status).to.equal(400);
    expect(res.body.error).to.equal('invalid_request');
  });
});
