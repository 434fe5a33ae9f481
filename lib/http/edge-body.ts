import querystring from 'node:querystring';
import { TextDecoder } from 'node:util';
import type { IncomingMessage } from 'node:http';
import type { Request, RequestHandler } from 'express';

/**
 * The bodies of `/reg` and `/token`, read before oidc-provider for the edge policies
 * (client-policy.ts, token-binding.ts), then handed to oidc-provider as if nobody had touched
 * them.
 *
 * oidc-provider reads the bodies of its endpoints from the request stream itself. Given a stream
 * an Express parser has consumed, it falls back to `req.body` but prints a notice on stderr
 * ("already parsed request body detected"), in the middle of an operator's logs. So the body is
 * read here without ending the stream for good: every byte is taken, then put back (`unshift`,
 * which a readable stream allows until its 'end' event), and the request's 'end' is not emitted
 * until oidc-provider reads the body again. Had a policy changed the parsed body, the bytes put
 * back are the changed body's (`handBack`, just before oidc-provider).
 */

type Kind = 'json' | 'form';

interface Held {
  kind: Kind;
  /** The parsed body as read, to tell whether a policy changed it. */
  snapshot: string;
}

const held = new WeakMap<IncomingMessage, Held>();

const CONTENT_TYPE: Record<Kind, string> = { json: 'application/json', form: 'application/x-www-form-urlencoded' };
const CHARSET = /;\s*charset=("?)([^";\s]+)\1/i;

/**
 * A body the client got wrong, in the shape of a body parser's error (`status`, `expose`), so the
 * error handler words it for the endpoint: `invalid_client_metadata` at `/reg`, else
 * `invalid_request`. The message never quotes the body.
 */
class BodyRefused extends Error {
  readonly expose = true;
  constructor(
    readonly status: 400 | 413 | 415,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Parses a JSON or form body into `req.body`, keeping the stream readable. A body of another
 * type is left alone (oidc-provider refuses it itself); one over `limit` bytes is a 413, one in a
 * charset nobody decodes a 415, one that does not parse a 400.
 */
export function edgeBody(kind: Kind, limit: number): RequestHandler {
  return (req, _res, next) => {
    if (held.has(req) || !req.is(CONTENT_TYPE[kind])) return next();
    // An empty body is left in the stream, untouched: there is nothing to put back.
    if (req.headers['content-length'] === '0') {
      req.body = {};
      return next();
    }
    // Decoded as oidc-provider will decode it, in the charset the request names.
    let decoder: TextDecoder;
    try {
      decoder = new TextDecoder(CHARSET.exec(req.headers['content-type'] ?? '')?.[2] ?? 'utf-8');
    } catch {
      return next(new BodyRefused(415, 'the body is in a charset this server does not read'));
    }
    readKeepingStream(req, limit).then((raw) => {
      let body: unknown;
      try {
        const text = decoder.decode(raw);
        body = kind === 'json' ? JSON.parse(text) : { ...querystring.parse(text) };
      } catch {
        next(new BodyRefused(400, `the ${kind === 'json' ? 'JSON' : 'form'} body does not parse`));
        return;
      }
      req.body = body;
      held.set(req, { kind, snapshot: JSON.stringify(body) });
      next();
    }, next);
  };
}

/**
 * Mounted just before oidc-provider: a body a policy changed goes back into the stream changed
 * (with its new length), in place of the bytes that were read.
 */
export const handBack: RequestHandler = (req, _res, next) => {
  const body = held.get(req);
  if (!body) return next();
  held.delete(req);
  if (JSON.stringify(req.body) === body.snapshot) return next();
  const changed = Buffer.from(
    body.kind === 'json'
      ? JSON.stringify(req.body)
      : querystring.stringify(req.body as querystring.ParsedUrlQueryInput),
    'utf8',
  );
  // Taken out and put back in the same tick: the stream's end cannot be emitted in between.
  req.read();
  req.unshift(changed);
  req.headers['content-length'] = String(changed.length);
  // The bytes are UTF-8 now, whatever charset the client named.
  req.headers['content-type'] = CONTENT_TYPE[body.kind];
  next();
};

/**
 * Every byte of the body, left in the stream for the next reader. The stream is read in paused
 * mode up to its end (`complete`: the whole message is parsed); the read that finds it empty
 * schedules its 'end' for the next tick, and the bytes put back in this one cancel that.
 */
function readKeepingStream(req: Request, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const declared = Number(req.headers['content-length'] ?? 0);
    const tooLarge = () => new BodyRefused(413, `the body is larger than ${limit} bytes`);
    if (declared > limit) return reject(tooLarge());
    const finish = (error?: Error) => {
      req.removeListener('readable', onReadable);
      req.removeListener('error', onError);
      req.removeListener('end', onEnd);
      if (error) return reject(error);
      const raw = Buffer.concat(chunks, size);
      if (size > 0) req.unshift(raw);
      resolve(raw);
    };
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = req.read() as Buffer | null) !== null) {
        size += chunk.length;
        if (size > limit) return finish(tooLarge());
        chunks.push(chunk);
      }
      if (req.complete) finish();
    };
    const onError = (error: Error) => finish(error);
    // Only a body that ended before we saw it complete (an empty chunked one): nothing to keep.
    const onEnd = () => finish();
    req.on('readable', onReadable);
    req.once('error', onError);
    req.once('end', onEnd);
  });
}
