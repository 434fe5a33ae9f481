import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

/**
 * A loopback OTLP/HTTP trace receiver: what a collector (Honeycomb, an OpenTelemetry Collector)
 * would get from the proxy. It keeps every export's raw bytes, for scanning them for secrets, and
 * decodes the spans from the protobuf (the fields of opentelemetry/proto/trace/v1 that tests
 * assert on; the wire format is read by hand, the exporter's own encoder being write-only).
 */

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' for a root span. */
  parentSpanId: string;
  name: string;
  /** 1 internal, 2 server, 3 client. */
  kind: number;
  attributes: Record<string, unknown>;
  /** 0 unset, 1 ok, 2 error. */
  statusCode: number;
  /** The instrumentation scope's name (`mcp-remote-auth-proxy`, `@opentelemetry/instrumentation-ioredis`). */
  scope: string;
  resource: Record<string, unknown>;
}

export interface ReceivedExport {
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface OtlpReceiver {
  /** For OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends `/v1/traces`). */
  readonly endpoint: string;
  readonly exports: readonly ReceivedExport[];
  spans(): ReceivedSpan[];
  /** Resolves once `predicate` holds for the spans received so far; rejects after `timeoutMs`. */
  waitFor(predicate: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>;
  /** Every received byte, as latin1 text: a secret sent in any field is a substring of it. */
  rawText(): string;
  /**
   * From now on, answers every export with `status`, `reason` as the status line's phrase and
   * `body` (a collector refusing them); or, with `status` 'never', keeps every export waiting.
   */
  answer(status: number | 'never', body?: string, reason?: string): void;
  close(): Promise<void>;
}

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const exports: ReceivedExport[] = [];
  const waiters = new Set<() => void>();
  let reply: { status: number | 'never'; body?: string; reason?: string } = { status: 200 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      let body = Buffer.concat(chunks);
      if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
      exports.push({ path: req.url ?? '', headers: req.headers, body });
      // An empty ExportTraceServiceResponse (zero bytes of protobuf), unless told otherwise.
      if (reply.status !== 'never') {
        const head = { 'Content-Type': 'application/x-protobuf' };
        (reply.reason ? res.writeHead(reply.status, reply.reason, head) : res.writeHead(reply.status, head)).end(
          reply.body,
        );
      }
      for (const wake of waiters) wake();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  const spans = () => exports.filter((e) => e.path === '/v1/traces').flatMap((e) => decodeExport(e.body));
  return {
    endpoint: `http://127.0.0.1:${port}`,
    exports,
    spans,
    rawText: () => exports.map((e) => e.body.toString('latin1')).join('\n'),
    answer: (status, body, reason) => {
      reply = { status, body, reason };
    },
    waitFor(predicate, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const current = spans();
          if (!predicate(current)) return;
          cleanup();
          resolve(current);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`OTLP receiver: expected spans not received in ${timeoutMs} ms; got ${describe(spans())}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function describe(spans: ReceivedSpan[]): string {
  return spans.length ? spans.map((s) => `${s.name} (${s.scope})`).join(', ') : 'none';
}

// ---- protobuf wire format, as much as OTLP traces need ----

export interface Field {
  number: number;
  /** Varints and fixed64 as bigint, fixed32 as number, length-delimited as bytes. */
  value: bigint | number | Buffer;
}

/** One message's fields in wire order; embedded messages stay bytes, to be read by the caller. */
export function fields(buffer: Buffer): Field[] {
  const out: Field[] = [];
  let offset = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      const byte = buffer[offset++];
      if (byte === undefined) throw new Error('OTLP receiver: truncated varint');
      result |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return result;
      shift += 7n;
    }
  };
  while (offset < buffer.length) {
    const key = Number(varint());
    const number = key >>> 3;
    switch (key & 7) {
      case 0:
        out.push({ number, value: varint() });
        break;
      case 1:
        out.push({ number, value: buffer.readBigUInt64LE(offset) });
        offset += 8;
        break;
      case 2: {
        const length = Number(varint());
        out.push({ number, value: buffer.subarray(offset, offset + length) });
        offset += length;
        break;
      }
      case 5:
        out.push({ number, value: buffer.readUInt32LE(offset) });
        offset += 4;
        break;
      default:
        throw new Error(`OTLP receiver: unsupported wire type ${key & 7}`);
    }
  }
  return out;
}

const bytes = (field: Field) => field.value as Buffer;
const text = (field: Field) => bytes(field).toString('utf8');

function anyValue(buffer: Buffer): unknown {
  const [field] = fields(buffer);
  if (!field) return undefined;
  switch (field.number) {
    case 1:
      return text(field);
    case 2:
      return field.value === 1n;
    case 3:
      return BigInt.asIntN(64, field.value as bigint);
    case 4: {
      const raw = Buffer.alloc(8);
      raw.writeBigUInt64LE(field.value as bigint);
      return raw.readDoubleLE();
    }
    case 5:
      return fields(bytes(field))
        .filter((f) => f.number === 1)
        .map((f) => anyValue(bytes(f)));
    case 7:
      return bytes(field).toString('hex');
    default:
      return `[AnyValue field ${field.number}]`;
  }
}

function attributes(list: Field[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of list) {
    const parts = fields(bytes(kv));
    const key = parts.find((f) => f.number === 1);
    const value = parts.find((f) => f.number === 2);
    if (key) out[text(key)] = value ? anyValue(bytes(value)) : undefined;
  }
  const plain: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(out)) plain[key] = typeof value === 'bigint' ? Number(value) : value;
  return plain;
}

/** ExportTraceServiceRequest → ResourceSpans(1) → Resource(1), ScopeSpans(2) → Scope(1), Span(2). */
export function decodeExport(body: Buffer): ReceivedSpan[] {
  const spans: ReceivedSpan[] = [];
  for (const resourceSpans of fields(body).filter((f) => f.number === 1)) {
    const parts = fields(bytes(resourceSpans));
    const resourceField = parts.find((f) => f.number === 1);
    const resource = resourceField ? attributes(fields(bytes(resourceField)).filter((f) => f.number === 1)) : {};
    for (const scopeSpans of parts.filter((f) => f.number === 2)) {
      const scopeParts = fields(bytes(scopeSpans));
      const scopeField = scopeParts.find((f) => f.number === 1);
      const scope = scopeField ? text(fields(bytes(scopeField)).find((f) => f.number === 1)!) : '';
      for (const spanField of scopeParts.filter((f) => f.number === 2)) {
        const span = fields(bytes(spanField));
        const get = (n: number) => span.find((f) => f.number === n);
        const status = get(15) ? fields(bytes(get(15)!)).find((f) => f.number === 3) : undefined;
        spans.push({
          traceId: get(1) ? bytes(get(1)!).toString('hex') : '',
          spanId: get(2) ? bytes(get(2)!).toString('hex') : '',
          parentSpanId: get(4) ? bytes(get(4)!).toString('hex') : '',
          name: get(5) ? text(get(5)!) : '',
          kind: get(6) ? Number(get(6)!.value) : 0,
          attributes: attributes(span.filter((f) => f.number === 9)),
          statusCode: status ? Number(status.value) : 0,
          scope,
          resource,
        });
      }
    }
  }
  return spans;
}
