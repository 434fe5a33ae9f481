import { expect } from 'chai';
import {
  fromOAuthOutput,
  HttpError,
  InvalidTarget,
  jsonBody,
  PageError,
  ProxyError,
  publicView,
  ServerError,
  toHttpError,
  UndecodablePath,
} from '../lib/http/errors.ts';
import { OutboundFetchRefused } from '../lib/http/outbound.ts';
import { IdentityError } from '../lib/identity/index.ts';
import { LoginPageError } from '../lib/interactions/pages.ts';

/** What of an error a client or user may see is decided in publicView, and only there. */
describe('errors: one base class, one place deciding what is shown', function () {
  it('a client error shows its code and message, and is never redirected', function () {
    const error = new InvalidTarget('https://proxy.example/mcp');
    expect(error).to.be.instanceOf(HttpError).and.instanceOf(ProxyError);
    expect(error.name).to.equal('InvalidTarget');
    expect(error.allowRedirect).to.equal(false);
    expect(jsonBody(error)).to.deep.equal({
      error: 'invalid_target',
      error_description: 'resource must be https://proxy.example/mcp',
    });
  });

  it('an unforeseen error shows a generic server_error; its cause is kept for the log only', function () {
    const cause = new Error('connect ECONNREFUSED 10.1.2.3:6379 with password hunter2');
    const error = toHttpError(cause);
    expect(error).to.be.instanceOf(ServerError);
    expect(error.cause).to.equal(cause);
    const view = publicView(error);
    expect(view).to.include({ status: 500, code: 'server_error' });
    expect(JSON.stringify(view)).to.not.match(/ECONNREFUSED|hunter2|10\.1\.2\.3/);
  });

  it('upstream failures hide their details behind their status', function () {
    const identity = new IdentityError('IDENTITY_TRANSIENT', 'upstream refresh failed: https://idp.internal/token 500');
    expect(identity.code).to.equal('IDENTITY_TRANSIENT');
    // A 503 says "retry" in RFC 6749's word for it (§4.1.2.1), and nothing about why.
    expect(jsonBody(identity)).to.deep.equal({
      error: 'temporarily_unavailable',
      error_description: 'The service is temporarily unavailable. Please try again shortly.',
    });
    const refused = new OutboundFetchRefused('metadata.test resolves to 169.254.169.254');
    expect(refused.code).to.equal('OUTBOUND_FETCH_REFUSED');
    expect(JSON.stringify(publicView(refused))).to.not.contain('169.254');
  });

  it('a 4xx not meant to be shown keeps its code, not its message', function () {
    const grant = new IdentityError(
      'IDENTITY_GRANT_INVALID',
      'upstream refresh answered invalid_grant at https://idp/x',
    );
    expect(publicView(grant)).to.deep.include({ status: 401, code: 'IDENTITY_GRANT_INVALID' });
    expect(publicView(grant).message).to.not.contain('https://idp');
  });

  it('pages written for the user are shown as written, a 502 included', function () {
    const error = new LoginPageError('upstream_unavailable');
    expect(publicView(error)).to.deep.equal({
      status: 502,
      code: 'upstream_unavailable',
      heading: 'The identity provider is unavailable',
      message: 'The identity provider could not be reached to finish your sign-in.',
    });
    expect(publicView(new PageError(403, 'No', 'Not you.', 'csrf_mismatch')).message).to.equal('Not you.');
  });

  it('oidc-provider’s errors are shown by the same rule', function () {
    const shown = publicView(fromOAuthOutput(400, { error: 'invalid_client', error_description: 'client is invalid' }));
    expect(shown).to.include({ status: 400, code: 'invalid_client', message: 'client is invalid' });
    const hidden = publicView(
      fromOAuthOutput(500, { error: 'server_error', error_description: 'adapter: ECONNRESET' }),
    );
    expect(hidden).to.include({ status: 500, code: 'server_error' });
    expect(hidden.message).to.not.contain('ECONNRESET');
  });

  it('recognises the errors of Express and body-parser', function () {
    expect(toHttpError(Object.assign(new URIError('Failed to decode param'), { status: 400 }))).to.be.instanceOf(
      UndecodablePath,
    );
    const tooLarge = toHttpError(Object.assign(new Error('request entity too large'), { status: 413, expose: true }));
    expect(jsonBody(tooLarge)).to.deep.equal({
      error: 'invalid_request',
      error_description: 'The request body is too large.',
    });
    const badJson = toHttpError(Object.assign(new SyntaxError('Unexpected end'), { status: 400, expose: true }), true);
    expect(jsonBody(badJson).error).to.equal('invalid_client_metadata');
    // A status without `expose` is not the client's doing.
    expect(toHttpError(Object.assign(new Error('x'), { status: 400 }))).to.be.instanceOf(ServerError);
  });
});
