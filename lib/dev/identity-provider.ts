import { randomBytes, randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import express, { type NextFunction, type Request, type Response } from 'express';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { type Adapter, type AdapterPayload, type Configuration, type Interaction } from 'oidc-provider';

import { log } from '../telemetry/log.ts';
import { edgeBody, handBack } from '../http/edge-body.ts';
import { failRefreshGrants, requireRotatedSecret } from './identity-provider-faults.ts';
import { escapeHtml, expiredPage, loginPage, page, sendPage } from './identity-provider-pages.ts';

/**
 * An embedded upstream identity provider for local development (`npm start` without an
 * upstream configured) and for the test suite, which uses it as the real upstream IdP. It is a
 * plain node-oidc-provider with one static client, a one-field login form that trusts whatever
 * name is typed, and automatic consent. It must never face a network: it binds loopback only
 * and refuses to start in production.
 */
export interface DevIdentityProviderOptions {
  redirectUris: string[];
  /** Default `mcp-auth-proxy-dev`. */
  clientId?: string;
  /** Default: random per start, returned in `clientSecret`. */
  clientSecret?: string;
  /** Seconds. Default 3600. */
  accessTokenTtl?: number;
  /** Seconds. Default 14 days. */
  refreshTokenTtl?: number;
  /** Only loopback is accepted; the option exists so callers can be explicit about it. */
  host?: '127.0.0.1';
  /** When set, no login form: every authorization logs in as this account id. */
  autoLogin?: string;
  /**
   * Default `client_secret_basic`, the RFC 7591 registration default. oidc-provider 9 accepts
   * either secret method from a client registered with one of them, so this only really
   * chooses between a confidential client and a public (`none`) one.
   */
  tokenEndpointAuthMethod?: 'client_secret_post' | 'client_secret_basic' | 'none';
}

export interface DevIdentityProviderStats {
  /** Successful authorization responses (codes handed to the redirect URI). */
  authorizations: number;
  /** Successful `authorization_code` grants at the token endpoint. */
  codeExchanges: number;
  /** Successful `refresh_token` grants at the token endpoint. */
  refreshes: number;
}

export interface DevIdentityProvider {
  /** `http://127.0.0.1:<port>`, no trailing slash. */
  readonly issuer: string;
  readonly clientId: string;
  /** Generated when not given. Not registered with the client when the auth method is `none`. */
  readonly clientSecret: string;
  readonly provider: Provider;
  readonly stats: DevIdentityProviderStats;
  /** Every access token issued so far stops working (userinfo answers 401). */
  expireAccessTokens(): Promise<void>;
  /** Every refresh token issued so far stops working (the token endpoint answers invalid_grant). */
  revokeRefreshTokens(): Promise<void>;
  /**
   * While set, `refresh_token` grants are answered with this HTTP status and a JSON error,
   * without reaching oidc-provider, so the presented refresh token stays valid: an upstream
   * outage must not cost the user their session. `undefined` restores normal service.
   */
  setTokenEndpointFailure(status: number | undefined): void;
  /**
   * The client secret as rotated by an administrator: from now on the token endpoint accepts only
   * `secret` (401 `invalid_client` for any other, the previous one included), while every grant
   * and refresh token issued so far stays valid. `undefined` restores the original secret.
   */
  rotateClientSecret(secret: string | undefined): void;
  close(): Promise<void>;
}

const LOOPBACK = '127.0.0.1';
const DEFAULT_CLIENT_ID = 'mcp-auth-proxy-dev';
const DAY = 24 * 60 * 60;
const TOKEN_PATH = '/token';

export async function startDevIdentityProvider(opts: DevIdentityProviderOptions): Promise<DevIdentityProvider> {
  if (process.env.NODE_ENV === 'production') {
    // Checked here as well as in configuration: this provider logs anyone in under any name.
    throw new Error('the development identity provider is refused in production');
  }
  if (opts.host !== undefined && opts.host !== LOOPBACK) {
    throw new Error(`the development identity provider listens on ${LOOPBACK} only`);
  }
  if (opts.redirectUris.length === 0) {
    throw new Error('startDevIdentityProvider: redirectUris must name at least one redirect URI');
  }
  if (opts.autoLogin !== undefined && opts.autoLogin.trim() === '') {
    throw new Error('startDevIdentityProvider: autoLogin must be a non-empty account id');
  }

  const clientId = opts.clientId ?? DEFAULT_CLIENT_ID;
  const clientSecret = opts.clientSecret ?? randomBytes(32).toString('base64url');
  const authMethod = opts.tokenEndpointAuthMethod ?? 'client_secret_basic';
  const accessTokenTtl = opts.accessTokenTtl ?? 3600;
  const refreshTokenTtl = opts.refreshTokenTtl ?? 14 * DAY;

  // The issuer must carry the port, so the port must exist before the Provider does.
  const server = createServer();
  server.listen(0, LOOPBACK);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  const issuer = `http://${LOOPBACK}:${port}`;

  try {
    const store = new MemoryStore();
    const provider = new Provider(
      issuer,
      await configuration({
        store,
        clientId,
        clientSecret,
        authMethod,
        redirectUris: opts.redirectUris,
        accessTokenTtl,
        refreshTokenTtl,
      }),
    );

    const stats: DevIdentityProviderStats = { authorizations: 0, codeExchanges: 0, refreshes: 0 };
    provider.on('authorization.success', () => {
      stats.authorizations += 1;
    });
    provider.on('grant.success', (ctx) => {
      const grantType = ctx.oidc.params?.grant_type;
      if (grantType === 'authorization_code') stats.codeExchanges += 1;
      if (grantType === 'refresh_token') stats.refreshes += 1;
    });
    // oidc-provider answers 500s without logging them; this is the only trace they leave.
    provider.on('server_error', (_ctx, err) => {
      log.error('development identity provider server error', { error: err });
    });

    let tokenFailure: number | undefined;
    let rotatedSecret: string | undefined;
    const app = express();
    app.disable('x-powered-by');
    // oidc-provider's own limit for token request bodies.
    const tokenForm = edgeBody('form', 56 * 1024);
    app.post(TOKEN_PATH, (req, res, next) => {
      if (rotatedSecret === undefined && tokenFailure === undefined) return next();
      tokenForm(req, res, (error?: unknown) => {
        if (error) return next(error);
        if (rotatedSecret !== undefined) return requireRotatedSecret(rotatedSecret, clientSecret, req, res, next);
        failRefreshGrants(tokenFailure!, req, res, next);
      });
    });
    mountInteractions(app, provider, opts.autoLogin);
    app.use(handBack);
    app.use(provider.callback());
    server.on('request', app);

    log.info('development identity provider started', { issuer, client_id: clientId });

    return {
      issuer,
      clientId,
      clientSecret,
      provider,
      stats,
      async expireAccessTokens() {
        for (const id of store.ids('AccessToken')) {
          const token = await provider.AccessToken.find(id);
          await token?.destroy();
        }
      },
      async revokeRefreshTokens() {
        for (const id of store.ids('RefreshToken')) {
          const token = await provider.RefreshToken.find(id);
          await token?.destroy();
        }
      },
      setTokenEndpointFailure(status) {
        if (status !== undefined && (!Number.isInteger(status) || status < 400 || status > 599)) {
          throw new Error(`setTokenEndpointFailure: ${status} is not an HTTP error status`);
        }
        tokenFailure = status;
      },
      rotateClientSecret(secret) {
        rotatedSecret = secret;
      },
      close: () => closeServer(server),
    };
  } catch (err) {
    await closeServer(server);
    throw err;
  }
}

interface ConfigurationInput {
  store: MemoryStore;
  clientId: string;
  clientSecret: string;
  authMethod: NonNullable<DevIdentityProviderOptions['tokenEndpointAuthMethod']>;
  redirectUris: string[];
  accessTokenTtl: number;
  refreshTokenTtl: number;
}

async function configuration(input: ConfigurationInput): Promise<Configuration> {
  // Ephemeral keys: ID tokens only need to verify for as long as this process lives. Supplying
  // them also keeps oidc-provider from falling back to its published development keys.
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = {
    ...(await exportJWK(privateKey)),
    kid: randomUUID(),
    alg: 'RS256',
    use: 'sig',
  };

  const store = input.store;
  return {
    // A per-instance store rather than oidc-provider's bundled memory adapter: that one keeps a
    // single module-wide LRU (1000 entries) shared by every Provider in the process, so the
    // proxy's own authorization server and several of these in one test run would evict each
    // other's sessions and tokens.
    adapter: (model: string) => store.adapter(model),
    jwks: { keys: [signingKey] },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      // Browsers do not separate cookies by port. The proxy's authorization server is also
      // oidc-provider on 127.0.0.1 with the default names, so with those names each login
      // would overwrite the other server's session and interaction cookies.
      names: {
        session: '_dev_idp_session',
        interaction: '_dev_idp_interaction',
        resume: '_dev_idp_interaction_resume',
      },
    },
    clients: [
      {
        client_id: input.clientId,
        ...(input.authMethod === 'none' ? {} : { client_secret: input.clientSecret }),
        redirect_uris: input.redirectUris,
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: input.authMethod,
      },
    ],
    scopes: ['openid', 'profile', 'email', 'offline_access'],
    claims: {
      openid: ['sub'],
      profile: ['name'],
      email: ['email'],
    },
    async findAccount(_ctx, sub) {
      // Any name is an account: the login form is the whole user database.
      return {
        accountId: sub,
        claims: () => ({ sub, name: sub, email: `${sub}@example.test` }),
      };
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      revocation: {
        enabled: true,
        allowedPolicy: (_ctx, client, token) => token.clientId === client.clientId,
      },
      // Without resource indicators an access token's audience is this provider's userinfo
      // endpoint and its format is opaque, like most upstream IdPs' tokens: the example MCP
      // server checks a bearer by calling userinfo with it.
      resourceIndicators: { enabled: false },
    },
    // oidc-provider only requires PKCE for public clients by default; the proxy always sends
    // it, so a code request without it here means the proxy regressed (RFC 9700 §2.1.1).
    pkce: { required: () => true },
    // The proxy needs a refresh token whether or not the upstream honoured offline_access
    // (oidc-provider drops that scope unless prompt=consent was requested, per OIDC Core §11).
    issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Every refresh returns a new refresh token and invalidates the old one, the strictest
    // upstream behaviour the proxy's single-flight refresh has to cope with.
    rotateRefreshToken: true,
    ttl: {
      AccessToken: input.accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: input.refreshTokenTtl,
      Interaction: 10 * 60,
      Session: 14 * DAY,
      Grant: 14 * DAY,
    },
    // Nothing calls this provider from a browser; the proxy talks to it server-side.
    clientBasedCORS: () => false,
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page(
        'Sign-in error',
        `<h1>Sign-in error</h1>${Object.entries(out)
          .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: ${escapeHtml(String(value))}</p>`)
          .join('')}`,
      );
    },
  };
}

/**
 * The login and consent steps. Consent is granted for everything requested: the person at the
 * keyboard is the developer, and consent to the MCP client is the proxy's job, not this one's.
 */
function mountInteractions(app: express.Express, provider: Provider, autoLogin: string | undefined): void {
  const form = express.urlencoded({ extended: false, limit: '4kb' });

  app.get('/interaction/:uid', async (req, res) => {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== req.params.uid) {
      sendPage(res, 400, expiredPage());
      return;
    }
    if (details.prompt.name === 'login') {
      if (autoLogin !== undefined) {
        await finish(provider, req, res, details, autoLogin, true);
        return;
      }
      sendPage(res, 200, loginPage(details.uid, 'dev-user'));
      return;
    }
    // A remembered session reaches here with only consent missing.
    const accountId = details.session?.accountId;
    if (details.prompt.name !== 'consent' || accountId === undefined) {
      throw new Error(`unexpected interaction prompt ${details.prompt.name}`);
    }
    await finish(provider, req, res, details, accountId, false);
  });

  app.post('/interaction/:uid/login', form, async (req, res) => {
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== req.params.uid || details.prompt.name !== 'login') {
      sendPage(res, 400, expiredPage());
      return;
    }
    const body: unknown = req.body;
    const login =
      typeof body === 'object' && body !== null && 'login' in body && typeof body.login === 'string'
        ? body.login.trim()
        : '';
    if (login === '' || login.length > 200) {
      sendPage(res, 400, loginPage(details.uid, login.slice(0, 200), 'Enter a user name.'));
      return;
    }
    await finish(provider, req, res, details, login, true);
  });

  // interactionDetails throws when the interaction cookie is missing or expired: a browser
  // problem, answered with a page rather than a 500.
  app.use('/interaction', (err: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    const name = err instanceof Error ? err.name : 'Error';
    if (name === 'SessionNotFound' || name === 'InvalidRequest') {
      sendPage(res, 400, expiredPage());
      return;
    }
    log.error('development identity provider interaction failed', { error: err });
    sendPage(res, 500, page('Sign-in error', '<h1>Something went wrong</h1><p>The error is in the log.</p>'));
  });
}

async function finish(
  provider: Provider,
  req: Request,
  res: Response,
  details: Interaction,
  accountId: string,
  login: boolean,
): Promise<void> {
  // A fresh login may be a different account than the session's, so never reuse its grant.
  const existing = !login && details.grantId ? await provider.Grant.find(details.grantId) : undefined;
  const grant = existing ?? new provider.Grant({ accountId, clientId: String(details.params.client_id) });
  if (typeof details.params.scope === 'string') grant.addOIDCScope(details.params.scope);
  const missingClaims = details.prompt.details.missingOIDCClaims;
  if (Array.isArray(missingClaims)) grant.addOIDCClaims(missingClaims.map(String));
  const grantId = await grant.save();

  await provider.interactionFinished(
    req,
    res,
    { ...(login ? { login: { accountId } } : {}), consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
}

async function closeServer(server: Server): Promise<void> {
  if (!server.listening) return;
  const closed = once(server, 'close');
  server.close();
  // Keep-alive connections from fetch would otherwise hold close() open for seconds.
  server.closeAllConnections();
  await closed;
}

interface Entry {
  payload: AdapterPayload;
  expiresAt: number;
}

/** Per-instance storage for oidc-provider's models, honouring expiry and grant revocation. */
class MemoryStore {
  readonly #models = new Map<string, Map<string, Entry>>();
  readonly #sessionsByUid = new Map<string, string>();
  readonly #grants = new Map<string, Set<string>>();

  ids(model: string): string[] {
    return [...(this.#models.get(model)?.keys() ?? [])];
  }

  adapter(model: string): Adapter {
    let entries = this.#models.get(model);
    if (!entries) {
      entries = new Map();
      this.#models.set(model, entries);
    }
    const table = entries;
    const live = (id: string): AdapterPayload | undefined => {
      const entry = table.get(id);
      if (entry && entry.expiresAt <= Date.now()) {
        table.delete(id);
        return undefined;
      }
      return entry?.payload;
    };
    const grants = this.#grants;
    const sessionsByUid = this.#sessionsByUid;
    const models = this.#models;

    return {
      async upsert(id, payload, expiresIn) {
        const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
        table.set(id, { payload, expiresAt });
        if (model === 'Session' && payload.uid) sessionsByUid.set(payload.uid, id);
        if (payload.grantId) {
          const members = grants.get(payload.grantId) ?? new Set<string>();
          members.add(`${model}:${id}`);
          grants.set(payload.grantId, members);
        }
      },
      async find(id) {
        return live(id);
      },
      async findByUid(uid) {
        const id = sessionsByUid.get(uid);
        return id === undefined ? undefined : live(id);
      },
      async findByUserCode(userCode) {
        for (const id of table.keys()) {
          const payload = live(id);
          if (payload?.userCode === userCode) return payload;
        }
        return undefined;
      },
      async consume(id) {
        const payload = live(id);
        if (payload) payload.consumed = Math.floor(Date.now() / 1000);
      },
      async destroy(id) {
        const payload = table.get(id)?.payload;
        table.delete(id);
        if (model === 'Session' && payload?.uid) sessionsByUid.delete(payload.uid);
      },
      async revokeByGrantId(grantId) {
        for (const member of grants.get(grantId) ?? []) {
          const separator = member.indexOf(':');
          models.get(member.slice(0, separator))?.delete(member.slice(separator + 1));
        }
        grants.delete(grantId);
      },
    };
  }
}
