import {
  createContextKey,
  ROOT_CONTEXT,
  trace,
  type Context,
  type ContextManager,
  type Span,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { currentRequest } from './request-context.ts';

/**
 * OpenTelemetry's context manager in the proxy: the SDK's own (AsyncLocalStorage) for the contexts
 * that code sets explicitly (a span made active by `withSpan`, an export's suppressed tracing),
 * and, where none is set, the context of the request being served, naming its SERVER span as the
 * active one. The Redis commands a request makes and its call to the MCP server find their parent
 * there.
 *
 * Why not enter the request span's context with `context.with` as each request starts: that is a
 * second async context frame for every request (the request context, request-context.ts, is the
 * first), and a context made whether anything asks for it or not. Measured pinned side by side,
 * six runs, the build that entered it cost 2.5 % more CPU per request (median), and its young
 * collections promoted about a third more (151 against 110 KiB each). Here the context is made at
 * the first call to `context.active()` in the request, and kept on the request.
 *
 * Where this differs from the SDK's manager, none of it used by the proxy or its instrumentation
 * (ioredis reads only `context.active()`): inside a request, a context of ROOT_CONTEXT set
 * explicitly (`context.with(ROOT_CONTEXT, fn)`, a function or emitter bound to it) reads as the
 * request's, since the SDK's manager does not tell it from none, and so does any context after
 * `disable()`. A span meant to start a trace of its own takes ROOT_CONTEXT as its parent argument
 * instead (spans.ts).
 */
export class RequestContextManager implements ContextManager {
  private readonly explicit = new AsyncLocalStorageContextManager();

  active(): Context {
    const active = this.explicit.active();
    if (active !== ROOT_CONTEXT) return active;
    const request = currentRequest();
    if (!request?.span) return ROOT_CONTEXT;
    return (request.otelContext ??= new RequestSpanContext(request.span));
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    context: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.explicit.with(context, fn, thisArg, ...args);
  }

  bind<T>(context: Context, target: T): T {
    return this.explicit.bind(context, target);
  }

  enable(): this {
    this.explicit.enable();
    return this;
  }

  disable(): this {
    this.explicit.disable();
    return this;
  }
}

/**
 * The API's key for the active span. Keys are `Symbol.for(description)` by the API's design, so that
 * every copy of the API agrees on them; the same description gives the one the API uses.
 */
const SPAN_KEY = createContextKey('OpenTelemetry Context Key SPAN');

/**
 * A request's context: its span, and nothing else until something is added to it, which then makes
 * an ordinary context. Not `trace.setSpan(ROOT_CONTEXT, span)`: the API's context copies a Map and
 * makes three closures each time, and made once per request those were promoted to the old
 * generation, which every request then paid for in collections. Measured with `--trace-gc-nvp`, a
 * span and its context made per request: 788 KB promoted a young collection with the API's
 * context, 2 KB with this one; the young collections' pauses 3.5 against 0.7 ms.
 */
class RequestSpanContext implements Context {
  constructor(private readonly span: Span) {}

  getValue(key: symbol): unknown {
    return key === SPAN_KEY ? this.span : undefined;
  }

  setValue(key: symbol, value: unknown): Context {
    return trace.setSpan(ROOT_CONTEXT, this.span).setValue(key, value);
  }

  deleteValue(key: symbol): Context {
    // An empty context, not ROOT_CONTEXT itself, which the manager reads as "none set" and would
    // answer with the request's span again.
    return key === SPAN_KEY ? ROOT_CONTEXT.deleteValue(SPAN_KEY) : this;
  }
}
