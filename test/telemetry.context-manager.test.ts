import { setImmediate as nextTurn } from 'node:timers/promises';
import { createContextKey, ROOT_CONTEXT, trace, TraceFlags, type Span } from '@opentelemetry/api';
import { expect } from 'chai';
import { RequestContextManager } from '../lib/telemetry/context-manager.ts';
import { RequestContext, runInRequest } from '../lib/telemetry/request-context.ts';

/**
 * The context manager the proxy gives the SDK (lib/telemetry/context-manager.ts): where no context
 * was set explicitly, the request's own, naming its span; an explicit one wins while it lasts.
 * The spans this parents in a real process (a Redis command and the MCP call under the request's
 * span) are checked end to end in telemetry.tracing.
 */

/** A span as the API sees one: only its context matters to a child. */
function spanNamed(spanId: string): Span {
  return trace.wrapSpanContext({ traceId: 'a'.repeat(32), spanId, traceFlags: TraceFlags.SAMPLED });
}

function requestWith(span: Span | undefined): RequestContext {
  const request = new RequestContext('request-1');
  request.span = span;
  return request;
}

describe('context manager: the request being served is the default context', () => {
  const manager = new RequestContextManager().enable();
  const MARK = createContextKey('test mark');

  it('is the root context outside any request', () => {
    expect(manager.active()).to.equal(ROOT_CONTEXT);
  });

  it('is the root context in a request without a span (tracing off)', () => {
    runInRequest(requestWith(undefined), () => expect(manager.active()).to.equal(ROOT_CONTEXT));
  });

  it('names the request’s span inside the request, across awaits, with one context made for it', async () => {
    const span = spanNamed('1111111111111111');
    const request = requestWith(span);
    await runInRequest(request, async () => {
      const first = manager.active();
      expect(trace.getSpan(first)).to.equal(span);
      await nextTurn();
      expect(manager.active()).to.equal(first);
    });
    expect(request.otelContext, 'kept on the request').to.exist;
    expect(manager.active()).to.equal(ROOT_CONTEXT);
  });

  it('gives a request’s context the API’s behaviour: values added keep its span, its span can be taken out', () => {
    const span = spanNamed('1111111111111111');
    runInRequest(requestWith(span), () => {
      const request = manager.active();
      expect(request.getValue(MARK)).to.equal(undefined);
      const marked = request.setValue(MARK, 'mark');
      expect(trace.getSpan(marked)).to.equal(span);
      expect(marked.getValue(MARK)).to.equal('mark');
      expect(request.getValue(MARK), 'the request’s own is unchanged').to.equal(undefined);
      const without = trace.deleteSpan(request);
      expect(trace.getSpan(without)).to.equal(undefined);
      manager.with(without, () => expect(trace.getSpan(manager.active()), 'made active').to.equal(undefined));
      expect(request.deleteValue(MARK)).to.equal(request);
      const other = spanNamed('3333333333333333');
      expect(trace.getSpan(trace.setSpan(request, other))).to.equal(other);
    });
  });

  it('lets a context set explicitly win while it lasts, then falls back to the request’s', () => {
    const requestSpan = spanNamed('1111111111111111');
    const child = spanNamed('2222222222222222');
    runInRequest(requestWith(requestSpan), () => {
      const inner = trace.setSpan(manager.active(), child).setValue(MARK, 'inner');
      manager.with(inner, () => {
        expect(trace.getSpan(manager.active())).to.equal(child);
        expect(manager.active().getValue(MARK)).to.equal('inner');
      });
      expect(trace.getSpan(manager.active())).to.equal(requestSpan);
    });
  });

  it('keeps each request’s span to itself when requests interleave', async () => {
    const seen: string[] = [];
    const serve = (spanId: string) =>
      runInRequest(requestWith(spanNamed(spanId)), async () => {
        await nextTurn();
        seen.push(trace.getSpan(manager.active())!.spanContext().spanId);
        await nextTurn();
        seen.push(trace.getSpan(manager.active())!.spanContext().spanId);
      });
    await Promise.all([serve('1111111111111111'), serve('2222222222222222')]);
    expect(seen).to.deep.equal(['1111111111111111', '2222222222222222', '1111111111111111', '2222222222222222']);
  });

  it('binds a function to a context, as the SDK’s own manager does', () => {
    const child = spanNamed('3333333333333333');
    const bound = manager.bind(trace.setSpan(ROOT_CONTEXT, child), () => trace.getSpan(manager.active()));
    runInRequest(requestWith(spanNamed('1111111111111111')), () => expect(bound()).to.equal(child));
  });
});
