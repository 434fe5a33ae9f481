import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The request being served, reachable from any code running on its behalf: the logger reads its
 * id, and other modules attach what they need to it through a WeakMap keyed by the context.
 *
 * One AsyncLocalStorage for all of them, on purpose. On Node 20 every enabled instance adds a
 * step to the creation of every promise, timer, tick and socket in the process, on `/mcp`'s hot
 * path too (oidc-provider already enables one of its own); measured on a bare forwarder, each
 * instance costs about 5 % of its CPU per request.
 */
export class RequestContext {
  constructor(readonly requestId: string) {}
}

const storage = new AsyncLocalStorage<RequestContext>();

export function runInRequest<T>(context: RequestContext, fn: () => T): T {
  return storage.run(context, fn);
}

export function currentRequest(): RequestContext | undefined {
  return storage.getStore();
}
