import { LOGIN_TTL } from '../auth-server/policy.ts';
import { PageError } from '../http/errors.ts';

/**
 * What the login pages say. Errors are named by the code an operator finds in the log and on the
 * page; each says what happened and what the person can do about it. Nothing here is a detail a
 * client supplied: those would need escaping, and the page escapes everything anyway.
 */
const START_AGAIN = 'Go back to the application you were connecting and start the connection again.';

const LOGIN_ERRORS = {
  csrf_mismatch: {
    status: 403,
    heading: 'This form was not accepted',
    message: 'The form was not sent from the sign-in page this browser was shown, so it was refused.',
    next: START_AGAIN,
  },
  interaction_not_found: {
    status: 400,
    heading: 'This sign-in has expired',
    message: `A sign-in link lasts ${LOGIN_TTL.ConsentPage / 60} minutes on this page, ${LOGIN_TTL.Upstream / 60} once you allow the app, and works only in the browser that opened it. This one has expired or was opened elsewhere.`,
    next: START_AGAIN,
  },
  state_missing: {
    status: 400,
    heading: 'Sign-in not accepted',
    message: 'The identity provider sent you back with no state parameter, so this sign-in cannot be trusted.',
    next: START_AGAIN,
  },
  state_mismatch: {
    status: 400,
    heading: 'Sign-in not accepted',
    message: 'This sign-in is unknown, expired or was already used.',
    next: START_AGAIN,
  },
  no_account_id: {
    status: 502,
    heading: 'Sign-in failed',
    message: 'The identity provider did not say who you are, so you cannot be signed in.',
    next: 'Contact the operator of this service, quoting the reference below.',
  },
  upstream_unavailable: {
    status: 502,
    heading: 'The identity provider is unavailable',
    message: 'The identity provider could not be reached to finish your sign-in.',
    next: 'Wait a moment, then start the connection again from your application.',
  },
  upstream_rejected: {
    status: 400,
    heading: 'Sign-in failed',
    message: 'The identity provider did not accept this sign-in.',
    next: START_AGAIN,
  },
  invalid_client: {
    status: 400,
    heading: 'Unknown application',
    message: 'The application that sent you here is not registered with this service, or its registration has expired.',
    next: 'In the application, remove this server (or clear its saved sign-in) and add it again: it will register anew.',
  },
} as const satisfies Record<string, { status: number; heading: string; message: string; next: string }>;

export type LoginErrorCode = keyof typeof LOGIN_ERRORS;

/** A PageError carrying what to do next, rendered by the error page. */
export class LoginPageError extends PageError {
  constructor(
    code: LoginErrorCode,
    readonly next: string = LOGIN_ERRORS[code].next,
  ) {
    const { status, heading, message } = LOGIN_ERRORS[code];
    super(status, heading, message, code);
  }
}

export function loginError(code: LoginErrorCode): LoginPageError {
  return new LoginPageError(code);
}

/** The words of a login error, for pages rendered elsewhere (oidc-provider's own error page). */
export function loginErrorText(code: LoginErrorCode): { heading: string; message: string; next: string } {
  return LOGIN_ERRORS[code];
}

/** Well-known identity providers by host, so the page says "Google" rather than a host name. */
const KNOWN_IDENTITY_PROVIDERS: Record<string, string> = {
  'accounts.google.com': 'Google',
  'login.microsoftonline.com': 'Microsoft',
  'github.com': 'GitHub',
  'id.heroku.com': 'Heroku',
  'login.salesforce.com': 'Salesforce',
  'gitlab.com': 'GitLab',
};

export function identityProviderName(issuer: string): string {
  const url = URL.parse(issuer);
  if (!url) return issuer;
  if (url.hostname === '127.0.0.1' || url.hostname === 'localhost') return 'the development identity provider';
  return KNOWN_IDENTITY_PROVIDERS[url.hostname] ?? url.host;
}

/** Where a redirect URI sends the person: a host for web URLs, the scheme for an app's own. */
export function describeRedirect(redirectUri: unknown): string {
  const url = typeof redirectUri === 'string' ? URL.parse(redirectUri) : null;
  if (!url) return 'an unknown address';
  if (url.protocol === 'http:' || url.protocol === 'https:') {
    return ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)
      ? `an application on this computer (${url.host})`
      : url.host;
  }
  return `the ${url.protocol.slice(0, -1)} app`;
}

/**
 * What the client will be able to do, in words. The upstream scopes are the identity provider's
 * vocabulary and mean nothing to the person at the page; what matters is what the client gets.
 */
export function abilitiesOf(input: { service: string; refreshTokens: boolean; refreshDays: number }): string[] {
  return [
    `Use the tools and data of ${input.service} as you, with your account's access`,
    input.refreshTokens
      ? `Stay connected for up to ${input.refreshDays} days without asking you again`
      : 'Stay connected for about an hour, then ask you to sign in again',
  ];
}
