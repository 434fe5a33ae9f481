import type { ServerResponse } from 'node:http';
import { currentRequest } from '../telemetry/request-context.ts';
import { requestIdToAdd } from '../telemetry/request-log.ts';

/**
 * A small JSON answer written with plain Node: the health routes run in front of Express and the
 * proxy's own answers without it. Never stored: each describes this moment or this one request.
 * No body for HEAD. Names the request it answers (X-Request-Id) when no one has yet: see
 * `beginRequest`.
 */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: object,
  headers: Record<string, string> = {},
): void {
  const json = JSON.stringify(body);
  const requestId = requestIdToAdd(res, currentRequest()?.requestId);
  res.writeHead(status, {
    ...headers,
    ...(requestId && { 'X-Request-Id': requestId }),
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(Buffer.byteLength(json)),
    'Cache-Control': 'no-store',
  });
  res.end(res.req.method === 'HEAD' ? undefined : json);
}
