import type { Attributes, AttributeValue, HrTime, SpanContext } from '@opentelemetry/api';

/**
 * OTLP's protobuf wire format (opentelemetry/proto/trace/v1, collector/trace/v1), written straight
 * from the SDK's span objects into one growing buffer. Used by the span pipeline (span-pipeline.ts)
 * to turn a span into bytes the moment it ends, so the span object itself never outlives the
 * request that made it (see there for why that matters).
 *
 * Field numbers and presence rules are those of the .proto files: ids as bytes, times as fixed64
 * nanoseconds since the epoch, SpanKind offset by one (0 is UNSPECIFIED), empty strings and
 * absent parents left out.
 */

const VARINT = 0;
const FIXED64 = 1;
const BYTES = 2;
const FIXED32 = 5;

/** Span.flags (trace/v1): the W3C trace flags in the low byte, then whether the parent was remote. */
const FLAG_HAS_IS_REMOTE = 0x100;
const FLAG_IS_REMOTE = 0x200;

/** Hex digit → value; 0xff for anything else. */
const HEX = new Uint8Array(128).fill(0xff);
for (let i = 0; i < 10; i++) HEX[48 + i] = i;
for (let i = 0; i < 6; i++) {
  HEX[65 + i] = 10 + i;
  HEX[97 + i] = 10 + i;
}

function varintSize(value: number): number {
  let size = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    size++;
  }
  return size;
}

/** Writes `value` as a varint at `pos`; returns the position after it. */
function putVarint(buf: Buffer, pos: number, value: number): number {
  while (value >= 0x80) {
    buf[pos++] = (value % 0x80) | 0x80;
    value = Math.floor(value / 128);
  }
  buf[pos++] = value;
  return pos;
}

/** A protobuf writer over one buffer that grows as needed and is reused from batch to batch. */
export class WireWriter {
  buf: Buffer;
  pos = 0;

  constructor(private readonly initialSize = 16 * 1024) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  /** Room for `bytes` more. */
  ensure(bytes: number): void {
    const needed = this.pos + bytes;
    if (needed <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(needed, this.buf.length * 2));
    this.buf.copy(grown, 0, 0, this.pos);
    this.buf = grown;
  }

  /** A non-negative integer below 2^64 (exact up to 2^53, as the double it comes in). */
  varint(value: number): void {
    this.ensure(10);
    this.pos = putVarint(this.buf, this.pos, value);
  }

  tag(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  /** A string field, left out when empty: proto3's default, which a reader assumes. */
  optionalString(field: number, value: string | undefined): void {
    if (!value) return;
    this.tag(field, BYTES);
    this.string(value);
  }

  /** A count field, left out when zero, for the same reason. */
  optionalCount(field: number, value: number | undefined): void {
    if (!value) return;
    this.tag(field, VARINT);
    this.varint(value);
  }

  /** int64 (AnyValue.int_value): a negative value is its 64-bit two's complement, ten bytes. */
  int64(value: number): void {
    if (value >= 0) return this.varint(value);
    let rest = BigInt.asUintN(64, BigInt(value));
    this.ensure(10);
    while (rest >= 0x80n) {
      this.buf[this.pos++] = Number(rest & 0x7fn) | 0x80;
      rest >>= 7n;
    }
    this.buf[this.pos++] = Number(rest);
  }

  fixed32(value: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(value >>> 0, this.pos);
    this.pos += 4;
  }

  double(value: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(value, this.pos);
    this.pos += 8;
  }

  /**
   * An HrTime ([seconds, nanoseconds]) as fixed64 nanoseconds. A time fixed64 cannot hold (before
   * 1970, after 2554) throws: the pipeline then drops that span alone. The product passes 2^53, so it is
   * assembled in two 32-bit words from pieces that each stay exact in a double.
   */
  hrTime([seconds, nanos]: HrTime): void {
    const high16 = Math.floor(seconds / 0x10000);
    const low16 = seconds % 0x10000;
    const a = high16 * 1e9; // × 2^16, below 2^46
    const c = (a % 0x10000) * 0x10000 + low16 * 1e9 + nanos; // below 2^48
    this.ensure(8);
    this.buf.writeUInt32LE(c % 0x100000000, this.pos);
    this.buf.writeUInt32LE(Math.floor(a / 0x10000) + Math.floor(c / 0x100000000), this.pos + 4);
    this.pos += 8;
  }

  /** Length-prefixed UTF-8. Short ASCII strings, nearly all of a span's, are copied by hand. */
  string(value: string): void {
    const length = value.length;
    if (length < 43) {
      // At most 3 bytes per UTF-16 unit: under 128 bytes, so one byte of length.
      this.ensure(1 + length * 3);
      const buf = this.buf;
      const start = this.pos;
      let pos = start + 1;
      for (let i = 0; i < length; i++) {
        const code = value.charCodeAt(i);
        if (code >= 0x80) {
          pos = start + 1 + buf.write(value, start + 1, 'utf8');
          break;
        }
        buf[pos++] = code;
      }
      buf[start] = pos - start - 1;
      this.pos = pos;
      return;
    }
    const bytes = Buffer.byteLength(value, 'utf8');
    this.varint(bytes);
    this.ensure(bytes);
    this.pos += this.buf.write(value, this.pos, bytes, 'utf8');
  }

  /**
   * A trace or span id, hex as the API keeps it, as `bytes`. An id that is not hex of the right
   * length (the API never makes one) is written as it is, as bytes of its text, never thrown on.
   */
  hexId(hex: string, bytes: 16 | 8): void {
    this.ensure(1 + bytes);
    const buf = this.buf;
    const start = this.pos;
    buf[start] = bytes;
    if (hex.length === bytes * 2) {
      let pos = start + 1;
      for (let i = 0; i < hex.length; i += 2) {
        const high = HEX[hex.charCodeAt(i)] ?? 0xff;
        const low = HEX[hex.charCodeAt(i + 1)] ?? 0xff;
        if ((high | low) === 0xff) break;
        buf[pos++] = (high << 4) | low;
      }
      if (pos === start + 1 + bytes) {
        this.pos = pos;
        return;
      }
    }
    this.string(hex);
  }

  /**
   * Opens an embedded message: reserves `reserve` bytes for its length, which `close` fills in,
   * moving the content when the length needs another number of bytes. A span takes two (128 bytes
   * to 16 KiB), an attribute one.
   */
  open(field: number, reserve = 1): number {
    this.tag(field, BYTES);
    this.ensure(reserve);
    const at = this.pos;
    this.pos += reserve;
    return at;
  }

  close(at: number, reserve = 1): void {
    const length = this.pos - at - reserve;
    if (reserve === 1 && length < 0x80) {
      this.buf[at] = length;
      return;
    }
    const shift = varintSize(length) - reserve;
    if (shift !== 0) {
      this.ensure(shift);
      this.buf.copyWithin(at + reserve + shift, at + reserve, this.pos);
    }
    this.pos += shift;
    putVarint(this.buf, at, length);
  }

  /**
   * A copy of what was written; the writer is then empty, its buffer kept for the next batch unless
   * a burst of large spans grew it past 1 MiB, which is not kept for good.
   */
  take(): Buffer {
    const bytes = Buffer.from(this.buf.subarray(0, this.pos));
    this.pos = 0;
    if (this.buf.length > 1024 * 1024) this.buf = Buffer.allocUnsafe(this.initialSize);
    return bytes;
  }
}

/** `repeated KeyValue` of field `field`. Undefined values (the API lets them through) are skipped. */
export function writeAttributes(w: WireWriter, field: number, attributes: Attributes): void {
  for (const key in attributes) {
    const value = attributes[key];
    if (value === undefined || value === null) continue;
    const at = w.open(field);
    w.tag(1, BYTES);
    w.string(key);
    writeAnyValue(w, 2, value);
    w.close(at);
  }
}

/** AnyValue: string 1, bool 2, int 3, double 4, array 5. */
function writeAnyValue(w: WireWriter, field: number, value: AttributeValue | null | undefined): void {
  const at = w.open(field);
  switch (typeof value) {
    case 'string':
      w.tag(1, BYTES);
      w.string(value);
      break;
    case 'boolean':
      w.tag(2, VARINT);
      w.varint(value ? 1 : 0);
      break;
    case 'number':
      // int_value for every integer int64 holds (2^53 and beyond too, as the SDK's serializer).
      if (Number.isInteger(value) && value >= -(2 ** 63) && value < 2 ** 63) {
        w.tag(3, VARINT);
        w.int64(value);
      } else {
        w.tag(4, FIXED64);
        w.double(value);
      }
      break;
    default:
      if (Array.isArray(value)) {
        // ArrayValue { repeated AnyValue values = 1 }; an absent element is an empty AnyValue.
        const array = w.open(5);
        for (const item of value) writeAnyValue(w, 1, item);
        w.close(array);
      }
  }
  w.close(at);
}

function spanFlags(context: SpanContext | undefined, traceFlags: number): number {
  return (traceFlags & 0xff) | FLAG_HAS_IS_REMOTE | (context?.isRemote ? FLAG_IS_REMOTE : 0);
}

/** What the encoder reads of a span: the SDK's ReadableSpan, without the parts it does not need. */
export interface EncodableSpan {
  readonly name: string;
  readonly kind: number;
  spanContext(): SpanContext;
  readonly parentSpanContext?: SpanContext | undefined;
  readonly startTime: HrTime;
  readonly endTime: HrTime;
  readonly status: { code: number; message?: string | undefined };
  readonly attributes: Attributes;
  readonly links: ReadonlyArray<{ context: SpanContext; attributes?: Attributes; droppedAttributesCount?: number }>;
  readonly events: ReadonlyArray<{
    name: string;
    time: HrTime;
    attributes?: Attributes;
    droppedAttributesCount?: number;
  }>;
  readonly droppedAttributesCount: number;
  readonly droppedEventsCount: number;
  readonly droppedLinksCount: number;
}

/** One Span message as field `field` (ScopeSpans.spans is 2). */
export function writeSpan(w: WireWriter, field: number, span: EncodableSpan): void {
  const at = w.open(field, 2);
  const context = span.spanContext();
  w.tag(1, BYTES);
  w.hexId(context.traceId, 16);
  w.tag(2, BYTES);
  w.hexId(context.spanId, 8);
  w.optionalString(3, context.traceState?.serialize());
  const parent = span.parentSpanContext;
  if (parent?.spanId) {
    w.tag(4, BYTES);
    w.hexId(parent.spanId, 8);
  }
  w.tag(5, BYTES);
  w.string(span.name);
  // Enums are int32 on the wire: a negative one (the SDK passes through whatever a caller gave) is
  // ten bytes of two's complement, as int64, never a varint cut short that spoils the whole batch.
  w.tag(6, VARINT);
  w.int64(span.kind + 1);
  w.tag(7, FIXED64);
  w.hrTime(span.startTime);
  w.tag(8, FIXED64);
  w.hrTime(span.endTime);
  writeAttributes(w, 9, span.attributes);
  w.optionalCount(10, span.droppedAttributesCount);
  for (const event of span.events) {
    const e = w.open(11);
    w.tag(1, FIXED64);
    w.hrTime(event.time);
    w.tag(2, BYTES);
    w.string(event.name);
    if (event.attributes) writeAttributes(w, 3, event.attributes);
    w.optionalCount(4, event.droppedAttributesCount);
    w.close(e);
  }
  w.optionalCount(12, span.droppedEventsCount);
  for (const link of span.links) {
    const l = w.open(13);
    w.tag(1, BYTES);
    w.hexId(link.context.traceId, 16);
    w.tag(2, BYTES);
    w.hexId(link.context.spanId, 8);
    w.optionalString(3, link.context.traceState?.serialize());
    if (link.attributes) writeAttributes(w, 4, link.attributes);
    w.optionalCount(5, link.droppedAttributesCount);
    w.tag(6, FIXED32);
    w.fixed32(spanFlags(link.context, link.context.traceFlags));
    w.close(l);
  }
  w.optionalCount(14, span.droppedLinksCount);
  // Status { message = 2; code = 3 }: the API's codes are the proto's (unset 0, ok 1, error 2).
  const status = w.open(15);
  w.optionalString(2, span.status.message);
  if (span.status.code) {
    w.tag(3, VARINT);
    w.int64(span.status.code);
  }
  w.close(status);
  w.tag(16, FIXED32);
  w.fixed32(spanFlags(parent, context.traceFlags));
  w.close(at, 2);
}

/** What an ExportTraceServiceRequest's framing needs to know of a resource and a scope. */
export interface EncodableResource {
  readonly attributes: Attributes;
  readonly schemaUrl?: string | undefined;
}
export interface EncodableScope {
  readonly name: string;
  readonly version?: string | undefined;
  readonly schemaUrl?: string | undefined;
}

/** Spans already written as `ScopeSpans.spans` fields, with the resource and scope they came from. */
export interface EncodedScopeSpans {
  resource: EncodableResource;
  scope: EncodableScope;
  spans: Buffer;
}

/**
 * An ExportTraceServiceRequest around spans already encoded: one ResourceSpans per resource, one
 * ScopeSpans per scope within it. `w` is a scratch writer, emptied.
 */
export function writeExportRequest(w: WireWriter, groups: readonly EncodedScopeSpans[]): Buffer {
  const resources = new Map<EncodableResource, EncodedScopeSpans[]>();
  for (const group of groups) {
    const list = resources.get(group.resource);
    if (list) list.push(group);
    else resources.set(group.resource, [group]);
  }
  for (const [resource, scopes] of resources) {
    const resourceSpans = w.open(1);
    const r = w.open(1);
    writeAttributes(w, 1, resource.attributes);
    w.close(r);
    for (const { scope, spans } of scopes) {
      const scopeSpans = w.open(2);
      const s = w.open(1);
      w.tag(1, BYTES);
      w.string(scope.name);
      w.optionalString(2, scope.version);
      w.close(s);
      w.ensure(spans.length);
      spans.copy(w.buf, w.pos);
      w.pos += spans.length;
      w.optionalString(3, scope.schemaUrl);
      w.close(scopeSpans);
    }
    w.optionalString(3, resource.schemaUrl);
    w.close(resourceSpans);
  }
  return w.take();
}
