import { createHash, randomBytes } from 'node:crypto';
import { expect } from 'chai';
import { authorizeInBrowser } from './stack.ts';
import { createBrowser, type Browser } from './browser.ts';

export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/**
 * An authorization request URL with PKCE S256 and `scope=openid`; `extra` adds or overrides
 * parameters, `undefined` removes one.
 */
export function authorizationUrl(
  baseUrl: string,
  clientId: string,
  redirectUri: string,
  challenge: string = pkce().challenge,
  extra: Record<string, string | undefined> = {},
): string {
  const params: Record<string, string | undefined> = {
    client_id: clientId,
    response_type: 'code',
    redirect_uri: redirectUri,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    scope: 'openid',
    ...extra,
  };
  const defined = Object.entries(params).filter((entry): entry is [string, string] => entry[1] !== undefined);
  return `${baseUrl}/auth?${new URLSearchParams(defined)}`;
}

export interface TokenResponse {
  access_token: string;
  refresh_token?: string;
  token_type: string;
  expires_in: number;
  scope?: string;
  error?: string;
  error_description?: string;
}

export async function registerClient(baseUrl: string, metadata: Record<string, unknown>) {
  const res = await fetch(`${baseUrl}/reg`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify(metadata),
  });
  return { status: res.status, body: (await res.json()) as Record<string, string> & { error?: string } };
}

/** Registers a public native client (a desktop MCP client) with one redirect URI; returns its client_id. */
export async function registerNativeClient(baseUrl: string, name: string, redirectUri: string): Promise<string> {
  const res = await registerClient(baseUrl, {
    client_name: name,
    redirect_uris: [redirectUri],
    token_endpoint_auth_method: 'none',
    application_type: 'native',
  });
  expect(res.status).to.equal(201);
  return res.body.client_id!;
}

/** A public web client with refresh tokens (code + refresh_token grants, no client secret). */
export async function registerPublicClient(baseUrl: string, redirectUri: string): Promise<string> {
  const res = await registerClient(baseUrl, {
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  });
  expect(res.status, 'registration').to.equal(201);
  return res.body.client_id!;
}

export async function tokenRequest(
  baseUrl: string,
  params: Record<string, string>,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: TokenResponse }> {
  const res = await fetch(`${baseUrl}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...headers },
    body: new URLSearchParams(params),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as TokenResponse };
}

/** A token revocation request (RFC 7009) from a public client: the token and client_id in the form. */
export function revokeToken(baseUrl: string, params: Record<string, string>): Promise<Response> {
  return fetch(`${baseUrl}/token/revocation`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(params),
  });
}

export interface CodeFlowOptions {
  baseUrl: string;
  clientId: string;
  clientSecret?: string;
  /** The redirect URI sent in this authorization request (may differ from the registered one by port). */
  redirectUri: string;
  scope?: string;
  /** `undefined` sends none. */
  state?: string;
  resource?: string;
  tokenResource?: string;
  prompt?: string;
  user?: string;
  browser?: Browser;
}

/** One authorization code flow with PKCE S256, as a client does it; returns the redirect and tokens. */
export async function codeFlow(
  options: CodeFlowOptions,
): Promise<{ redirect: URL; token: Awaited<ReturnType<typeof tokenRequest>> }> {
  const { verifier, challenge } = pkce();
  const url = authorizationUrl(options.baseUrl, options.clientId, options.redirectUri, challenge, {
    scope: options.scope,
    state: options.state,
    resource: options.resource,
    prompt: options.prompt,
  });
  const redirect = await authorizeInBrowser(options.browser ?? createBrowser(), url, options.redirectUri, {
    user: options.user,
  });
  const code = redirect.searchParams.get('code');
  if (!code) throw new Error(`no code in ${redirect.href}`);
  const tokenParams: Record<string, string> = {
    grant_type: 'authorization_code',
    code,
    redirect_uri: options.redirectUri,
    code_verifier: verifier,
    client_id: options.clientId,
  };
  if (options.clientSecret) tokenParams.client_secret = options.clientSecret;
  if (options.tokenResource !== undefined) tokenParams.resource = options.tokenResource;
  return { redirect, token: await tokenRequest(options.baseUrl, tokenParams) };
}

/** A JSON-RPC `initialize` through `/mcp` with this access token; returns the HTTP status. */
export async function mcpInitialize(
  mcpUrl: string,
  accessToken: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(mcpUrl, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${accessToken}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...headers,
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'profile-test', version: '1' } },
    }),
  });
}
