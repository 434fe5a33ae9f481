import http, { type IncomingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'chai';
import { auth } from '@modelcontextprotocol/sdk/client/auth.js';
import { EchoUpstream, type Seen } from './echo-upstream.ts';
import { startStack, TestOAuthClient, type Stack } from './stack.ts';

/** What the proxy tests send to `/mcp`, read back and wait for. */

export const LIMIT = 200_000;
export const INSPECTOR = 'https://inspector.example';

export async function login(mcpUrl: string, user = 'alice'): Promise<{ oauth: TestOAuthClient; token: string }> {
  const oauth = new TestOAuthClient({ user });
  expect(await auth(oauth, { serverUrl: mcpUrl })).to.equal('REDIRECT');
  const code = oauth.lastRedirect?.searchParams.get('code');
  if (!code) throw new Error(`no authorization code: ${oauth.lastRedirect?.href}`);
  expect(await auth(oauth, { serverUrl: mcpUrl, authorizationCode: code })).to.equal('AUTHORIZED');
  return { oauth, token: oauth.savedTokens!.access_token };
}

export interface RawResponse {
  status: number;
  rawHeaders: string[];
  headers: IncomingHttpHeaders;
  body: Buffer;
}

export interface SendOptions {
  method?: string;
  /** Raw name/value list, sent exactly (node:http adds only Host when absent). */
  headers?: string[];
  /** Sent with a Content-Length. */
  body?: Buffer;
  /** Sent chunked, one write each; `between` runs after the first chunk is written. */
  chunks?: Buffer[];
  between?: () => Promise<void>;
  /** Default: a connection of its own. */
  agent?: http.Agent;
  /** Sent as the request target verbatim (a URL would resolve dot segments first). */
  rawPath?: string;
}

/** node:http rather than fetch: full control over the headers (hop-by-hop included) and the framing. */
export async function send(url: string, options: SendOptions = {}): Promise<RawResponse> {
  const target = new URL(url);
  const headers = [...(options.headers ?? [])];
  if (!headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'host')) headers.push('Host', target.host);
  if (options.body && !headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'content-length')) {
    headers.push('Content-Length', String(options.body.length));
  }
  const request = http.request({
    hostname: target.hostname,
    port: target.port,
    path: options.rawPath ?? target.pathname + target.search,
    method: options.method ?? 'POST',
    headers,
    agent: options.agent ?? false,
  });
  const answer = new Promise<RawResponse>((resolve, reject) => {
    request.on('error', reject);
    request.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode!,
          rawHeaders: res.rawHeaders,
          headers: res.headers,
          body: Buffer.concat(chunks),
        }),
      );
    });
  });
  if (options.chunks) {
    const [first, ...rest] = options.chunks;
    if (first) request.write(first);
    await options.between?.();
    for (const chunk of rest) request.write(chunk);
    request.end();
  } else {
    request.end(options.body);
  }
  return answer;
}

export function json<T = Seen>(response: RawResponse): T {
  return JSON.parse(response.body.toString('utf8')) as T;
}

/** Values of a header in a raw list, case-insensitively, in order. */
export function values(raw: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === name.toLowerCase()) out.push(raw[i + 1]!);
  return out;
}

/** Polls every 10 ms; fails after `ms` (a bound for a hang, not a timing assertion). */
export async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  for (const started = Date.now(); !condition(); await sleep(10)) {
    if (Date.now() - started > ms) throw new Error(`${what}: not reached within ${ms} ms`);
  }
}

/** Reads an SSE body until `text` has arrived; returns everything read so far. */
export async function readUntil(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  text: string,
  sofar = '',
): Promise<string> {
  const decoder = new TextDecoder();
  while (!sofar.includes(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`stream ended before ${JSON.stringify(text)}; got ${JSON.stringify(sofar)}`);
    sofar += decoder.decode(value, { stream: true });
  }
  return sofar;
}

/**
 * Counts the Redis commands touching this stack's keys while `action` runs, through MONITOR. A
 * marker command issued afterwards on another connection bounds the count: MONITOR reports
 * commands in the order Redis ran them, so once the marker shows up every earlier one has too.
 */

export interface EchoStack {
  echo: EchoUpstream;
  stack: Stack;
  oauth: TestOAuthClient;
  /** alice's access token, and the header carrying it. */
  token: string;
  bearer: string[];
}

/**
 * The proxy in front of an EchoUpstream, with a body limit of LIMIT and INSPECTOR as an allowed
 * browser origin, and alice logged in.
 */
export async function startEchoStack(): Promise<EchoStack> {
  const echo = new EchoUpstream();
  await echo.listen();
  const stack = await startStack({
    env: {
      MCP_SERVER_URL: echo.url,
      MCP_PROXY_MAX_BODY_BYTES: String(LIMIT),
      MCP_PROXY_ALLOWED_ORIGINS: INSPECTOR,
    },
  });
  const { oauth, token } = await login(stack.mcpUrl);
  return { echo, stack, oauth, token, bearer: ['Authorization', `Bearer ${token}`] };
}

/**
 * Call inside a describe: an EchoStack for its tests, handed to `take` once started before them
 * and closed after them.
 */
export function useEchoStack(take: (running: EchoStack) => void): void {
  let running: EchoStack | undefined;
  before(async function () {
    running = await startEchoStack();
    take(running);
  });
  after(async function () {
    await running?.stack.close();
    await running?.echo.close();
  });
}
