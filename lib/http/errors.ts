/**
 * Errors this server answers with, one base class for API answers and pages alike (after
 * node-oidc-provider's helpers/errors.js). Each has a status, a stable `code` to branch on (never
 * parse messages), a message and whether that message may be shown to whoever caused it. What is
 * shown is decided in one place, `publicView`: a 5xx, or an error not meant to be exposed, shows
 * a generic message for its status; its details go to the log with the request id.
 */

/**
 * The root of this server's errors: a stable `code` to branch on and an optional `cause`. Errors
 * that never become an HTTP answer (configuration, start-up, a client gone) stop here.
 */
export class ProxyError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
  }
}

export interface HttpErrorOptions {
  readonly status: number;
  /** Stable: an OAuth error code where one fits (RFC 6749 §5.2), else SCREAMING_SNAKE. */
  readonly code: string;
  readonly message: string;
  /** Heading of the error page. Default: by status. */
  readonly heading?: string;
  /** The message may be shown. Default: status < 500. */
  readonly expose?: boolean;
  readonly cause?: unknown;
  /** Sent as Retry-After: the condition is expected to pass (a 503 of a store or upstream outage). */
  readonly retryAfterSeconds?: number;
}

/** An error that is answered: a status, and what of it may be shown. */
export class HttpError extends ProxyError {
  readonly status: number;
  readonly heading: string;
  readonly expose: boolean;
  readonly retryAfterSeconds: number | undefined;
  /**
   * Whether the error may be sent to the client's redirect_uri. Never for ours: they arise before
   * the client and its redirect URI are verified, or at our own upstream callback (R16).
   */
  readonly allowRedirect: boolean = false;

  constructor({ status, code, message, heading, expose, cause, retryAfterSeconds }: HttpErrorOptions) {
    super(code, message, { cause });
    this.status = status;
    this.retryAfterSeconds = retryAfterSeconds;
    this.heading = heading ?? (status >= 500 ? 'Something went wrong' : 'Request not accepted');
    this.expose = expose ?? status < 500;
  }
}

// --- The catalog --------------------------------------------------------------------------------

/** A request that is malformed or misses something (RFC 6749 §5.2 `invalid_request`). */
export class InvalidRequest extends HttpError {
  constructor(message: string, status = 400) {
    super({ status, code: 'invalid_request', message });
  }
}

/** A path that is not valid percent-encoding (`/interaction/%ff`): no route could match it. */
export class UndecodablePath extends HttpError {
  constructor() {
    super({ status: 400, code: 'invalid_request', message: 'The request path is not valid percent-encoding.' });
  }
}

/** A body that is not what its Content-Type says, or too large (body-parser's refusals). */
export class InvalidBody extends HttpError {
  constructor(status: 400 | 413 | 415, code: 'invalid_request' | 'invalid_client_metadata', cause?: unknown) {
    const what = status === 413 ? 'too large' : status === 415 ? 'of an unsupported type' : 'not parseable';
    super({ status, code, message: `The request body is ${what}.`, cause });
  }
}

/** R18: plain http seen by the router in production. */
export class HttpsRequired extends HttpError {
  constructor() {
    super({ status: 403, code: 'invalid_request', message: 'HTTPS is required' });
  }
}

/** RFC 8707 §2: a `resource` that is not ours. */
export class InvalidTarget extends HttpError {
  constructor(resourceUrl: string) {
    super({ status: 400, code: 'invalid_target', message: `resource must be ${resourceUrl}` });
  }
}

/** Anything not foreseen: a defect or an outage. Its cause is logged, never shown. */
export class ServerError extends HttpError {
  constructor(cause?: unknown) {
    super({ status: 500, code: 'server_error', message: 'An unexpected error occurred. Please try again.', cause });
  }
}

/**
 * A page written for the person in the browser: its message is always shown, 502 included (it
 * says which party failed, never how). lib/interactions/pages.ts names the login's pages on it.
 */
export class PageError extends HttpError {
  constructor(status: number, heading: string, message: string, code = 'invalid_request') {
    super({ status, code, message, heading, expose: true });
  }
}

// --- What is shown ------------------------------------------------------------------------------

const GENERIC: Record<number, string> = {
  502: 'An upstream service did not answer as expected. Please try again shortly.',
  503: 'The service is temporarily unavailable. Please try again shortly.',
};

export interface PublicView {
  readonly status: number;
  readonly code: string;
  readonly heading: string;
  readonly message: string;
}

/** The one place where what a client or user sees of an error is decided. */
export function publicView(error: HttpError): PublicView {
  if (error.expose) return { status: error.status, code: error.code, heading: error.heading, message: error.message };
  const server = error.status >= 500;
  // RFC 6749 §4.1.2.1 names a 503's condition `temporarily_unavailable`: it says to retry and
  // nothing about why.
  const code = server ? (error.status === 503 ? 'temporarily_unavailable' : 'server_error') : error.code;
  return {
    status: error.status,
    code,
    heading: error.heading,
    message: (server && GENERIC[error.status]) || 'An unexpected error occurred. Please try again.',
  };
}

/** oidc-provider's error output (`renderError`'s `out`) as one of ours, so it is shown by the same rule. */
export function fromOAuthOutput(status: number, out: { error: string; error_description?: string }): HttpError {
  if (status >= 500) return new ServerError();
  return new HttpError({
    status,
    code: out.error,
    message: out.error_description ?? 'The request was not valid.',
    heading: 'Sign-in could not continue',
  });
}

/** RFC 6749 §5.2 / RFC 7591 §3.2.2 body of an error answer. */
export function jsonBody(error: HttpError): { error: string; error_description: string } {
  const view = publicView(error);
  return { error: view.code, error_description: view.message };
}

// --- Recognising errors from elsewhere ----------------------------------------------------------

/** http-errors shape (body-parser, router): `expose` says the client caused it. */
interface ClientFault {
  status: number;
  expose?: boolean;
  type?: string;
}

function clientFault(error: unknown): ClientFault | undefined {
  const candidate = error as Partial<ClientFault> | null;
  if (!candidate || typeof candidate.status !== 'number') return undefined;
  return candidate.status >= 400 && candidate.status < 500 ? (candidate as ClientFault) : undefined;
}

/**
 * Any error thrown while handling a request, as one of ours. `registration` names the endpoint
 * whose body errors are `invalid_client_metadata` (RFC 7591 §3.2.2).
 */
export function toHttpError(error: unknown, registration = false): HttpError {
  if (error instanceof HttpError) return error;
  // router's decodeParam marks an undecodable `:param` 400, without `expose`.
  if (error instanceof URIError) return new UndecodablePath();
  const fault = clientFault(error);
  if (fault?.expose) {
    const status = fault.status === 413 || fault.status === 415 ? fault.status : 400;
    return new InvalidBody(status, registration ? 'invalid_client_metadata' : 'invalid_request', error);
  }
  return new ServerError(error);
}
