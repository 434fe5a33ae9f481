import type { ErrorRequestHandler, Request, RequestHandler, Response } from 'express';
import type { Logger } from '../telemetry/log.ts';
import { currentRequestId } from '../telemetry/log.ts';
import type { Views } from '../views/index.ts';
import type { HttpError } from './errors.ts';
import { jsonBody, ProxyError, publicView, ServerError, toHttpError, UndecodablePath } from './errors.ts';

/**
 * Answering errors: JSON `{error, error_description}` on API routes (RFC 6749 §5.2, RFC 7591
 * §3.2.2), the error page on routes a person navigates to. Every refusal is logged once here,
 * with its code and reason; a 5xx with its cause, which only the log ever sees.
 */

/** Pages a person's browser navigates to: the authorization endpoint and our interactions. */
export const isPagePath = (path: string): boolean => /^\/(?:auth|interaction)(?:\/|$)/.test(path);

export async function sendErrorPage(views: Views, res: Response, error: HttpError): Promise<void> {
  const view = publicView(error);
  await views.send(res, view.status, 'error', {
    title: view.heading,
    heading: view.heading,
    message: view.message,
    next: error.expose && 'next' in error ? error.next : undefined,
    code: view.code,
    requestId: currentRequestId(),
  });
}

export function sendJsonError(res: Response, error: HttpError): void {
  res.status(error.status).set('Cache-Control', 'no-store').json(jsonBody(error));
}

/**
 * The one log line of an error answer. Only the unforeseen (ServerError) gets its stack: for the
 * rest the code and our own message say it all, and name no secret.
 */
export function logError(log: Logger, error: HttpError): void {
  if (error instanceof ServerError) {
    const cause = error.cause ?? error;
    log.error('request failed', { status: error.status, detail: cause instanceof Error ? cause.stack : String(cause) });
    return;
  }
  // The cause says what the shown message may not (an upstream's answer). Only our own: a parser's
  // message quotes the body it choked on, and a body may carry a secret.
  const cause = error.cause instanceof ProxyError ? error.cause.message : undefined;
  const fields = { status: error.status, error: error.code, description: error.message, cause };
  if (error.status >= 500) log.warn('request failed', fields);
  else log.info('request refused', fields);
}

/**
 * A path that does not decode can match no route, and left to the routers it fails deep inside
 * one of them (Express's param decoding, oidc-provider's Koa router) as a 500 with a stack trace.
 */
export const rejectUndecodablePath: RequestHandler = (req, _res, next) => {
  try {
    decodeURIComponent(req.path);
  } catch {
    next(new UndecodablePath());
    return;
  }
  next();
};

export interface ErrorHandlerOptions {
  readonly views: Views;
  readonly log: Logger;
  /** Adds the CORS headers an endpoint speaks to an error answer that has none yet. */
  readonly cors: (req: Request, res: Response) => void;
}

export function errorHandler({ views, log, cors }: ErrorHandlerOptions): ErrorRequestHandler {
  return (thrown: unknown, req, res, _next) => {
    const error = toHttpError(thrown, req.path === '/reg');
    logError(log, error);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (error.retryAfterSeconds !== undefined) res.set('Retry-After', String(error.retryAfterSeconds));
    if (!isPagePath(req.path)) {
      cors(req, res);
      sendJsonError(res, error);
      return;
    }
    sendErrorPage(views, res, error).catch(() => res.status(error.status).end());
  };
}
