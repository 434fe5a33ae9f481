import type { IncomingMessage } from 'node:http';

/**
 * The scheme the client used. One TLS-terminating router stands in front (Heroku) and says so in
 * X-Forwarded-Proto (R18); its first value is the client's. Without it, the socket decides.
 */
export function clientProtocol(req: IncomingMessage): string {
  const forwarded = req.headers['x-forwarded-proto'];
  if (typeof forwarded === 'string' && forwarded !== '') return forwarded.split(',')[0]!.trim();
  return (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
}
