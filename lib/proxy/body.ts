import type { ClientRequest, IncomingMessage } from 'node:http';
import { HttpError, ProxyError } from '../http/errors.ts';

/** The client's body passed MCP_PROXY_MAX_BODY_BYTES (→ 413, never forwarded whole, never retried). */
export class BodyTooLargeError extends HttpError {
  constructor(limit: number) {
    super({ status: 413, code: 'invalid_request', message: `the request body is larger than ${limit} bytes` });
  }
}

/** The client went away before its body was complete: nothing to answer, nothing to retry. */
export class ClientGoneError extends ProxyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CLIENT_GONE', message, options);
  }
}

/**
 * The client's request body, read once. Each chunk goes to the current upstream request as it
 * arrives (backpressure: the client is paused while the MCP server's socket is full) and a copy
 * is kept, because a 401 from the MCP server is retried after a refresh and by then the body is
 * gone from the socket. The copy is what bounds memory: past `limit` bytes the request is refused
 * (413), so a body is never half-forwarded and then unretryable. Once the MCP server answered
 * anything but 401 the copy is dropped (`release`), so memory is held only until the answer.
 */
export class ClientBody {
  private chunks: Buffer[] = [];
  private keep = true;
  private sink: ClientRequest | undefined;
  private failure: Error | undefined;
  /** Who awaits the whole body (the retry path only: a promise per request costs on the hot path). */
  private waiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  size = 0;
  ended = false;

  constructor(
    private readonly req: IncomingMessage,
    readonly limit: number,
  ) {
    const fail = (error: Error) => {
      if (this.ended || this.failure) return;
      this.failure = error;
      this.chunks = [];
      req.removeListener('data', onData);
      this.sink?.destroy(error);
      for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    };
    const onData = (chunk: Buffer) => {
      this.size += chunk.length;
      if (this.size > limit) {
        req.pause();
        fail(new BodyTooLargeError(limit));
        return;
      }
      if (this.keep) this.chunks.push(chunk);
      const sink = this.sink;
      if (sink && !sink.write(chunk)) {
        req.pause();
        sink.once('drain', () => {
          if (this.sink === sink) req.resume();
        });
      }
    };
    // `on`, not `once`, for events that come once: `once` costs a wrapper and a removal each.
    req.on('data', onData);
    req.on('end', () => {
      if (this.failure) return;
      this.ended = true;
      this.sink?.end();
      for (const waiter of this.waiters.splice(0)) waiter.resolve();
    });
    // 'close' follows every request, complete or not, a failed connection's too (a request without
    // an 'error' listener emits no 'error'): the error (and its stack trace, tens of microseconds)
    // is only built when the body was cut short.
    req.on('close', () => {
      if (!this.ended && !this.failure) {
        fail(new ClientGoneError('the client closed the connection before its body was complete'));
      }
    });
  }

  /** Resolves once the whole body was read; rejects with BodyTooLargeError or ClientGoneError. */
  whenRead(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** The body goes to `request` from now on: what was read so far, then the rest as it comes. */
  sendTo(request: ClientRequest): void {
    if (this.failure) {
      request.destroy(this.failure);
      return;
    }
    if (!this.keep) throw new Error('the body was released and cannot be sent again');
    this.sink = request;
    for (const chunk of this.chunks) request.write(chunk);
    if (this.ended) request.end();
  }

  /**
   * The MCP server answered before the body was complete (a 401 decided on headers alone): stop
   * feeding that request, whose connection is then unusable for another request, and keep
   * reading so the body can be replayed.
   */
  detach(): void {
    const sink = this.sink;
    this.sink = undefined;
    if (!sink) return;
    if (!this.ended) sink.destroy();
    if (this.req.isPaused()) this.req.resume();
  }

  /** No retry will happen: stop keeping a copy. */
  release(): void {
    this.keep = false;
    this.chunks = [];
  }
}
