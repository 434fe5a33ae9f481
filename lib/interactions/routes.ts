import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import express, { Router, type Request, type Response } from 'express';
import type Provider from 'oidc-provider';
import { INTERACTION_COOKIES, LOGIN_TTL, TTL, resourceScopes } from '../auth-server/policy.ts';
import type { Config } from '../config/types.ts';
import { IdentityError, type IdentityClient } from '../identity/index.ts';
import { createConsentRegistry } from './consent.ts';
import { abilitiesOf, describeRedirect, identityProviderName, loginError } from './pages.ts';
import { hashId } from '../store/hash.ts';
import { StoreUnavailableError, type Store } from '../store/types.ts';
import type { Logger } from '../telemetry/log.ts';
import { GrantSecret, type Vault } from '../vault/index.ts';
import { grantSecretCookie } from '../auth-server/grant-secret-cookie.ts';
import type { KeyRing } from '../auth-server/keys.ts';
import type { Views } from '../views/index.ts';

type Interaction = InstanceType<Provider['Interaction']>;

/** What we remember between the consent POST and the upstream callback (R20). */
interface PendingLogin {
  uid: string;
  codeVerifier: string;
  nonce: string;
  /** Set when the consent page was skipped: the session's account whose consent allowed it. */
  skippedFor?: string;
}

/** Query flag on the consent page URL that shows the page even where consent is remembered. */
const ASK_AGAIN = 'consent';

export function pendingLoginKey(state: string): string {
  return `upstream-state:${hashId(state)}`;
}

export interface InteractionDeps {
  config: Config;
  provider: Provider;
  identity: IdentityClient;
  store: Store;
  vault: Vault;
  views: Views;
  /** `KeyMaterial.csrfKeys`: the first makes tokens, each one verifies them. */
  csrfKeys: KeyRing;
  /** Seals the grant secret on its way through the browser to the resume endpoint. */
  grantSecretCookieKey: Buffer;
  log: Logger;
}

const epoch = (): number => Math.floor(Date.now() / 1000);

export function interactionRoutes(deps: InteractionDeps): Router {
  const { config, provider, identity, store, vault, views, csrfKeys, grantSecretCookieKey, log } = deps;
  const router = Router();
  const form = express.urlencoded({ extended: false, limit: '8kb' });
  const consents = createConsentRegistry(store);

  // The interaction cookie already binds the form to this browser; the HMAC token is the
  // belt to those braces (R19), and holds even where a browser ignores SameSite.
  const csrfWith = (key: Buffer, uid: string): string =>
    createHmac('sha256', key).update(`csrf:${uid}`).digest('base64url');
  const csrfFor = (uid: string): string => csrfWith(csrfKeys[0], uid);
  // A page rendered before a signing key was added carries a token of an older key: every key's
  // token is compared, each in constant time, and no comparison is skipped.
  const assertCsrf = (req: Request, uid: string): void => {
    const sent = Buffer.from(typeof req.body?.csrf === 'string' ? req.body.csrf : '');
    let valid = false;
    for (const key of csrfKeys) {
      const expected = Buffer.from(csrfWith(key, uid));
      valid = (sent.length === expected.length && timingSafeEqual(sent, expected)) || valid;
    }
    if (!valid) throw loginError('csrf_mismatch');
  };

  const details = async (req: Request, res: Response) => {
    try {
      return await provider.interactionDetails(req, res);
    } catch (error) {
      // The store not answering says nothing about the login: 503, try again (not "expired").
      if (error instanceof StoreUnavailableError) throw error;
      throw loginError('interaction_not_found');
    }
  };

  // Consent given: the person is about to spend up to LOGIN_TTL.Upstream at the IdP. The record
  // and both oidc-provider cookies were made for the consent page's short lifetime; each is given
  // the upstream round trip's, counted from now (R20). The callback finds the interaction by the
  // uid in the upstream state, the resume endpoint by its cookie, and a second consent page (the
  // IdP logged in another account) by the interaction cookie.
  const extendForUpstream = async (req: Request, res: Response, interaction: Interaction): Promise<void> => {
    await interaction.save(LOGIN_TTL.Upstream);
    const { cookies } = provider.createContext(req, res);
    const options = { ...INTERACTION_COOKIES, maxAge: LOGIN_TTL.Upstream * 1000 };
    cookies.set(provider.cookieName('interaction'), interaction.uid, {
      ...options,
      path: `/interaction/${interaction.uid}`,
    });
    cookies.set(provider.cookieName('resume'), interaction.uid, {
      ...options,
      path: new URL(interaction.returnTo, config.baseUrl).pathname,
    });
  };

  // Consent given (on the page, or remembered): off to the upstream IdP. Every login goes upstream,
  // even a remembered one: upstream tokens belong to one grant (R22) and are never reused.
  const startUpstreamLogin = async (
    req: Request,
    res: Response,
    interaction: Interaction,
    skippedFor?: string,
  ): Promise<void> => {
    await extendForUpstream(req, res, interaction);
    const state = randomBytes(32).toString('base64url');
    const pending: PendingLogin = {
      uid: interaction.uid,
      codeVerifier: randomBytes(48).toString('base64url'),
      nonce: randomBytes(24).toString('base64url'),
      ...(skippedFor === undefined ? {} : { skippedFor }),
    };
    // R20: the state exists server-side only from consent on, is single-use (take), and dies
    // with the interaction.
    await store.set(pendingLoginKey(state), JSON.stringify(pending), LOGIN_TTL.Upstream);
    const { codeVerifier, nonce } = pending;
    res.redirect(303, (await identity.authorizationUrl({ state, codeVerifier, nonce })).href);
  };

  router.get(config.callbackPath, async (req, res) => {
    const state = typeof req.query.state === 'string' ? req.query.state : '';
    if (!state) {
      throw loginError('state_missing');
    }
    const raw = await store.take(pendingLoginKey(state));
    if (!raw) {
      throw loginError('state_mismatch');
    }
    const pending = JSON.parse(raw) as PendingLogin;
    const interaction = await provider.Interaction.find(pending.uid);
    if (!interaction) {
      throw loginError('interaction_not_found');
    }
    const finish = async (result: Record<string, unknown>) => {
      interaction.result = result;
      await interaction.save(Math.max(1, (interaction.exp ?? epoch() + 60) - epoch()));
      // oidc-provider's resume endpoint checks its resume cookie: only the browser that started
      // this authorization request can collect the result.
      res.redirect(303, interaction.returnTo);
    };

    if (typeof req.query.error === 'string') {
      log.info('upstream login refused', { upstream_error: req.query.error });
      await finish({ error: 'access_denied', error_description: 'the identity provider did not authorize the login' });
      return;
    }

    let login;
    try {
      const { codeVerifier, nonce } = pending;
      login = await identity.exchange(new URL(req.originalUrl, config.baseUrl), { state, codeVerifier, nonce });
    } catch (error) {
      const code = error instanceof IdentityError ? error.code : 'IDENTITY_REJECTED';
      log.warn('upstream login failed', {
        error_code: code,
        error: error instanceof Error ? error.message : String(error),
      });
      if (code === 'IDENTITY_NO_ACCOUNT_ID') {
        throw loginError('no_account_id');
      }
      if (code === 'IDENTITY_TRANSIENT') {
        throw loginError('upstream_unavailable');
      }
      throw loginError('upstream_rejected');
    }

    const clientId = String(interaction.params.client_id);
    const redirectUri = String(interaction.params.redirect_uri);
    if (
      pending.skippedFor !== undefined &&
      pending.skippedFor !== login.accountId &&
      !(await consents.has(login.accountId, clientId, redirectUri))
    ) {
      // The page was skipped on the consent of the account our session knew, but the upstream
      // IdP logged in someone else, who never agreed to this client. Their upstream login is
      // dropped unused; they see the page and go upstream again.
      log.info('upstream account differs from the remembered consent; asking for consent', { client_id: clientId });
      res.redirect(303, `/interaction/${encodeURIComponent(pending.uid)}?${ASK_AGAIN}=required`);
      return;
    }
    // The user confirmed on the page before being sent upstream; only now do we know who they are.
    await consents.record(login.accountId, clientId, redirectUri);

    const requested = String(interaction.params.scope ?? '')
      .split(' ')
      .filter(Boolean);
    const offered = new Set(config.provider.scopes);
    const forResource = new Set(resourceScopes(config));
    // R22: the upstream credentials belong to this grant — this user at this client — and to
    // nothing shared between users, such as the client record.
    const grant = new provider.Grant({ accountId: login.accountId, clientId });
    const oidcScopes = requested.filter((scope) => offered.has(scope));
    if (oidcScopes.length > 0) grant.addOIDCScope(oidcScopes.join(' '));
    grant.addResourceScope(config.mcp.resourceUrl, requested.filter((scope) => forResource.has(scope)).join(' '));
    const grantId = await grant.save();
    // G: half of the vault record's key, kept in no store. It leaves here only in the browser's
    // cookie to the resume endpoint, which mints the authorization code carrying it; every later
    // token of the grant inherits it from the code or refresh token presented (lib/vault/README.md).
    const secret = GrantSecret.generate();
    await vault.put(grantId, secret, {
      accountId: login.accountId,
      clientId,
      expiresAt: epoch() + TTL.Grant,
      credentials: login.credentials,
    });
    res.append(
      'Set-Cookie',
      await grantSecretCookie(grantSecretCookieKey, {
        path: new URL(interaction.returnTo, config.baseUrl).pathname,
        uid: interaction.uid,
        grantId,
        secret,
        maxAgeSeconds: (interaction.exp ?? epoch() + LOGIN_TTL.Upstream) - epoch(),
        secure: new URL(config.baseUrl).protocol === 'https:',
      }),
    );
    log.info('login completed', { client_id: clientId, grant_id: grantId });
    await finish({ login: { accountId: login.accountId }, consent: { grantId } });
  });

  router.get('/interaction/:uid', async (req, res) => {
    const interaction = await details(req, res);
    const client = await provider.Client.find(String(interaction.params.client_id));
    if (!client) throw loginError('invalid_client');
    // R19: the page is skipped only for a browser whose session already belongs to an account
    // that consented to this client sending its login to this very redirect URI. A new browser,
    // a new client, a new redirect URI and `prompt=consent` all see it.
    const accountId = interaction.session?.accountId;
    const promptConsent = String(interaction.params.prompt ?? '')
      .split(' ')
      .includes('consent');
    if (
      accountId !== undefined &&
      !promptConsent &&
      req.query[ASK_AGAIN] === undefined &&
      (await consents.has(accountId, client.clientId, String(interaction.params.redirect_uri)))
    ) {
      log.info('consent remembered; consent page skipped', { client_id: client.clientId });
      await startUpstreamLogin(req, res, interaction, accountId);
      return;
    }
    const clientName = client.clientName ?? client.clientId;
    const redirectUri = String(interaction.params.redirect_uri);
    await views.send(res, 200, 'confirm-login', {
      title: `Allow ${clientName}?`,
      clientName,
      clientId: client.clientId,
      redirectHost: describeRedirect(redirectUri),
      resource: config.mcp.resourceUrl,
      identityName: identityProviderName(identity.issuer),
      identityIssuer: identity.issuer,
      abilities: abilitiesOf({
        service: views.brand.name,
        refreshTokens: client.grantTypeAllowed('refresh_token'),
        refreshDays: Math.round(TTL.RefreshToken / 86_400),
      }),
      csrf: csrfFor(interaction.uid),
      confirmAction: `/interaction/${interaction.uid}/confirm`,
      abortAction: `/interaction/${interaction.uid}/abort`,
      // The names the Heroku auth proxy's confirm-login.ejs reads, for owners who replaced it.
      uid: interaction.uid,
      client: { clientName, clientUri: client.clientUri, redirectUris: [redirectUri] },
    });
  });

  router.post('/interaction/:uid/confirm', form, async (req, res) => {
    const interaction = await details(req, res);
    assertCsrf(req, interaction.uid);
    await startUpstreamLogin(req, res, interaction);
  });

  router.post('/interaction/:uid/abort', form, async (req, res) => {
    const interaction = await details(req, res);
    assertCsrf(req, interaction.uid);
    await provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'the user cancelled the login' },
      { mergeWithLastSubmission: false },
    );
  });

  return router;
}
