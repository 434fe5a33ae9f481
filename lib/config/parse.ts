import { statSync } from 'node:fs';
import { isLoopbackHost } from '../http/loopback.ts';
import type { Collector } from './collector.ts';

/** RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;

export function readBoolean(c: Collector, name: string, fallback: boolean): boolean {
  const raw = c.read(name);
  if (raw === undefined) return fallback;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  c.report(name, 'must be true or false');
  return fallback;
}

/** Absolute http(s) URL without credentials, query or fragment. Reports and returns undefined otherwise. */
export function parseHttpUrl(c: Collector, name: string, raw: string): URL | undefined {
  const url = tryUrl(raw);
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    c.report(name, 'must be an absolute http(s) URL');
    return undefined;
  }
  if (url.username || url.password) {
    c.report(name, 'must not contain credentials');
    return undefined;
  }
  if (url.search || url.hash) {
    c.report(name, 'must not have a query or fragment');
    return undefined;
  }
  return url;
}

/**
 * Scope tokens separated by `separator` (spaces; PROVIDER_SCOPE also takes commas, as the Heroku
 * proxy does), duplicates dropped.
 */
export function parseScope(c: Collector, name: string, raw: string, separator = / +/): string[] | undefined {
  const tokens = [...new Set(raw.split(separator).filter((token) => token !== ''))];
  if (tokens.length === 0) {
    c.report(name, 'must name at least one scope');
    return undefined;
  }
  const bad = tokens.filter((token) => !SCOPE_TOKEN.test(token));
  if (bad.length > 0) {
    c.report(
      name,
      `must be scope tokens separated by spaces (RFC 6749 §3.3); not allowed: ${bad.map((t) => JSON.stringify(t)).join(', ')}`,
    );
    return undefined;
  }
  return tokens;
}

/** An integer from `min` to `max`, or undefined (reported with `unit`) when it is not. */
export function readInteger(
  c: Collector,
  name: string,
  range: { min: number; max?: number; fallback: number; unit: string },
): number | undefined {
  const raw = c.read(name);
  if (raw === undefined) return range.fallback;
  const value = parseInteger(raw);
  if (value === undefined || value < range.min || (range.max !== undefined && value > range.max)) {
    const bounds = range.max === undefined ? `of at least ${range.min}` : `from ${range.min} to ${range.max}`;
    c.report(name, `must be an integer ${bounds} (${range.unit})`);
    return undefined;
  }
  return value;
}

export function isSecureUpstream(url: URL, localInsecure: boolean): boolean {
  return url.protocol === 'https:' || (localInsecure && isLoopbackHost(url.hostname));
}

export function effectivePort(url: URL): number {
  if (url.port) return Number(url.port);
  return url.protocol === 'https:' ? 443 : 80;
}

export function parseInteger(raw: string): number | undefined {
  if (!/^\d+$/.test(raw)) return undefined;
  const value = Number(raw);
  return Number.isSafeInteger(value) ? value : undefined;
}

/** JSON.parse without its message: V8 quotes the input around the error, and some inputs are secrets. */
export function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}

export function tryUrl(raw: string): URL | undefined {
  try {
    return new URL(raw);
  } catch {
    return undefined;
  }
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function isSpawnableString(value: unknown): value is string {
  return typeof value === 'string' && !value.includes('\0');
}

export function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
