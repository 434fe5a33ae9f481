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
    code: error.code,
    requestId: currentRequestId(),
  });
}

/** The one place where 5xx details are hidden: logged with the request id, never sent. */
export function errorHandler(views: Views): ErrorRequestHandler {
  return (error: unknown, _req, res, _next) => {
    const page =
      error instanceof PageError
        ? error
        : new PageError(500, 'Something went wrong', 'An unexpected error occurred. Please try again.');
    if (!(error instanceof PageError)) log.error('request failed', { error: error instanceof Error ? error.stack : String(error) });
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendErrorPage(views, res, page).catch(() => res.status(page.status).end());
  };
}
