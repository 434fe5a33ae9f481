import type { ErrorRequestHandler, Response } from 'express';
import { currentRequestId, log } from '../telemetry/log.ts';
import type { Views } from '../views/index.ts';

/**
 * Errors a person in a browser can cause, shown as a page and never redirected (R16: until the
 * client and redirect URI are verified — and for our own upstream callback, never).
 */
export class PageError extends Error {
  constructor(
    readonly status: number,
    readonly heading: string,
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

export async function sendErrorPage(views: Views, res: Response, error: PageError): Promise<void> {
  await views.send(res, error.status, 'error', {
    title: error.heading,
    heading: error.heading,
    message: error.message,
    next: 'next' in error ? error.next : undefined,
    code: error.code,
    requestId: currentRequestId(),
  });
}

/** body-parser's errors: malformed or oversized bodies, caused by the client (`expose`). */
interface ClientBodyError {
  status: number;
  expose: true;
  type?: string;
}

function isClientBodyError(error: unknown): error is ClientBodyError {
  const candidate = error as Partial<ClientBodyError> | null;
  return (
    !!candidate &&
    candidate.expose === true &&
    typeof candidate.status === 'number' &&
    candidate.status >= 400 &&
    candidate.status < 500
  );
}

/**
 * The one place where 5xx details are hidden: logged with the request id, never sent. A body the
 * client got wrong is its error: OAuth endpoints answer it in JSON (RFC 6749 §5.2, RFC 7591 §3.2.2),
 * pages as a page.
 */
export function errorHandler(views: Views): ErrorRequestHandler {
  return (error: unknown, req, res, _next) => {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (isClientBodyError(error)) {
      const description = error.status === 413 ? 'request body too large' : 'request body could not be parsed';
      log.info('request body refused', { status: error.status, type: error.type });
      if (!req.path.startsWith('/interaction/')) {
        const code = req.path === '/reg' ? 'invalid_client_metadata' : 'invalid_request';
        res.status(error.status).set('Cache-Control', 'no-store').json({ error: code, error_description: description });
        return;
      }
      void sendErrorPage(
        views,
        res,
        new PageError(error.status, 'Request not accepted', `The ${description}.`, 'invalid_request'),
      );
      return;
    }
    const page =
      error instanceof PageError
        ? error
        : new PageError(500, 'Something went wrong', 'An unexpected error occurred. Please try again.');
    if (!(error instanceof PageError))
      log.error('request failed', { error: error instanceof Error ? error.stack : String(error) });
    sendErrorPage(views, res, page).catch(() => res.status(page.status).end());
  };
}
