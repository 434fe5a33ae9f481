import { once } from 'node:events';
import { createServer, IncomingMessage, request as httpRequest, type Server } from 'node:http';
import { Socket, type AddressInfo } from 'node:net';
import { expect } from 'chai';
import express from 'express';
import { logChildLine, scrubText } from '../lib/telemetry/child-log.ts';
import { captureLogs, log } from '../lib/telemetry/log.ts';
import { runInRequest } from '../lib/telemetry/request-context.ts';
import { beginRequest, requestTelemetry } from '../lib/telemetry/request-log.ts';
import { safeAttributes, scrubPath } from '../lib/telemetry/scrub.ts';
import {
  endMcpCallSpan,
  injectTraceparent,
  startMcpCallSpan,
  startRequestSpan,
  tracingEnabled,
  withSpan,
} from '../lib/telemetry/spans.ts';

const SECRET = 'tok_9f8e7d6c5b4a39281706f5e4d3c2b1a0';

function capture(): { lines: string[]; restore: () => void } {
  const lines: string[] = [];
  const restore = captureLogs((line) => lines.push(line));
  return { lines, restore };
}

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

describe('telemetry: log lines', () => {
  let saved: Record<string, string | undefined>;
  beforeEach(() => {
    saved = { APP_NAME: process.env.APP_NAME, NODE_ENV: process.env.NODE_ENV };
  });
  afterEach(() => {
    for (const [name, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  });

  it('carries APP_NAME and NODE_ENV on every line', () => {
    process.env.APP_NAME = 'weather-mcp';
    process.env.NODE_ENV = 'production';
    const { lines, restore } = capture();
    try {
      log.info('hello', { port: 3000 });
      log.child({ source: 'store' }).warn('slow');
    } finally {
      restore();
    }
    expect(lines).to.deep.equal([
      'level=info msg=hello app=weather-mcp env=production port=3000',
      'level=warn msg=slow app=weather-mcp env=production source=store',
    ]);
  });

  it('says env=development when NODE_ENV is unset, and leaves app out without APP_NAME', () => {
    delete process.env.APP_NAME;
    delete process.env.NODE_ENV;
    const { lines, restore } = capture();
    try {
      log.info('hello');
    } finally {
      restore();
    }
    expect(lines).to.deep.equal(['level=info msg=hello env=development']);
  });
});

describe('telemetry: scrubbing paths and attributes', () => {
  it('keeps parameter names, never values, and replaces generated path segments', () => {
    expect(scrubPath(`/auth?client_id=abc&code_challenge=${SECRET}&state=xyz`)).to.equal(
      '/auth?client_id&code_challenge&state',
    );
    expect(scrubPath('/interaction/Zq3kL0mN8pR2sT5vW7xY9/login')).to.equal('/interaction/:id/login');
    expect(scrubPath(`/mcp/${SECRET}`)).to.equal('/mcp/:id');
    expect(scrubPath('/.well-known/oauth-authorization-server')).to.equal('/.well-known/oauth-authorization-server');
    expect(scrubPath('/token')).to.equal('/token');
    expect(scrubPath('/cb?%3Cscript%3E=1&a=2')).to.equal('/cb?_&a');
  });

  it('drops attributes under secret-looking keys and scrubs URL attributes', () => {
    expect(
      safeAttributes({
        access_token: SECRET,
        'http.request.header.authorization': SECRET,
        client_secret: SECRET,
        'url.full': `https://idp.example/cb?code=${SECRET}`,
        'mcp.method.name': 'tools/call',
        status: 200,
        skipped: undefined,
      }),
    ).to.deep.equal({ 'url.full': 'https://idp.example/cb?code', 'mcp.method.name': 'tools/call', status: 200 });
  });
});

describe('telemetry: the request log line', () => {
  let server: Server;
  afterEach(() => new Promise<void>((resolve) => server.close(() => resolve())));

  const send = (port: number, path: string, headers: Record<string, string> = {}) =>
    fetch(`http://127.0.0.1:${port}${path}`, { headers });

  it('writes one line per request: method, scrubbed path, status, duration, request id', async () => {
    server = createServer((req, res) => {
      const request = beginRequest(req, res, '/mcp');
      runInRequest(request, () => {
        log.debug('inside', { step: 1 });
        res.writeHead(401).end();
      });
    });
    const port = await listen(server);
    const { lines, restore } = capture();
    let response: Response;
    try {
      response = await send(port, `/mcp?code=${SECRET}&state=${SECRET}`, {
        authorization: `Bearer ${SECRET}`,
        cookie: `a=${SECRET}`,
        'x-request-id': 'router-id-0123456789',
      });
      await response.text();
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      restore();
    }
    expect(response.headers.get('x-request-id')).to.equal('router-id-0123456789');
    expect(lines[0]).to.match(/^level=debug msg=inside env=\w+ request_id=router-id-0123456789 step=1$/);
    expect(lines).to.have.length(2);
    expect(lines[1]).to.match(
      /^level=info msg=request env=\w+ method=GET path="?\/mcp\?code&state"? status=401 duration_ms=\d+(\.\d)? request_id=router-id-0123456789$/,
    );
    expect(lines.join('\n')).to.not.include(SECRET);
  });

  it('replaces a request id that is too long or has unsafe characters, and passes it on', async () => {
    server = createServer((req, res) => runInRequest(beginRequest(req, res), () => res.end()));
    const port = await listen(server);
    const { lines, restore } = capture();
    const ids: (string | null)[] = [];
    try {
      for (const id of ['short', 'x'.repeat(201), 'has space 0123456789', 'quote"0123456789', 'a=b;c=d 0123456789']) {
        const response = await send(port, '/', { 'x-request-id': id });
        ids.push(response.headers.get('x-request-id'));
        await response.text();
      }
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      restore();
    }
    for (const id of ids) expect(id).to.match(/^[0-9a-f-]{36}$/);
    expect(new Set(ids).size).to.equal(ids.length);
    ids.forEach((id, i) => expect(lines[i]).to.include(`request_id=${id}`));
  });

  it('works as Express middleware, and marks a request the client abandoned', async () => {
    const app = express();
    app.use(requestTelemetry);
    app.get('/interaction/:uid', (_req, res) => void res.send('ok'));
    app.get('/slow', () => undefined);
    server = createServer(app);
    const port = await listen(server);
    const { lines, restore } = capture();
    try {
      await (await send(port, '/interaction/Zq3kL0mN8pR2sT5vW7xY9?x=1')).text();
      await new Promise<void>((resolve) => {
        const req = httpRequest({ host: '127.0.0.1', port, path: '/slow' });
        req.on('error', () => resolve());
        req.end(() => setTimeout(() => req.destroy(), 50));
        req.on('close', () => resolve());
      });
      await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      restore();
    }
    expect(lines[0]).to.match(/msg=request .*method=GET path=\/interaction\/:id\?x status=200 /);
    expect(lines[1]).to.match(/msg=request .*path=\/slow status=200 .*aborted=true$/);
  });
});

describe("telemetry: the MCP server's output lines", () => {
  const relay = (stream: 'stdout' | 'stderr', ...input: string[]) => {
    const { lines, restore } = capture();
    try {
      for (const line of input) logChildLine(stream, line);
    } finally {
      restore();
    }
    return lines;
  };

  it('merges a JSON line into ours: its level, message and fields, no nested quoting', () => {
    const [line] = relay('stdout', '{"level":"warn","msg":"tool slow","tool":"echo","ms":1200,"nested":{"a":1}}');
    expect(line).to.match(
      /^level=warn msg="tool slow" env=\w+ source=mcp-server stream=stdout tool=echo ms=1200 nested="\{\\"a\\":1\}"$/,
    );
  });

  it('merges a logfmt line, pino numeric levels, and keeps prose as the message', () => {
    const lines = relay(
      'stderr',
      'level=error msg="cannot reach \\"db\\"" attempt=3',
      '{"level":30,"time":1,"msg":"listening","port":3001}',
      'Server listening on port=3001',
    );
    expect(lines[0]).to.match(/^level=error msg="cannot reach \\"db\\"" .*source=mcp-server stream=stderr attempt=3$/);
    expect(lines[1]).to.match(/^level=info msg=listening .*stream=stderr time=1 port=3001$/);
    expect(lines[2]).to.match(/^level=info msg="Server listening on port=3001" .*source=mcp-server stream=stderr$/);
    for (const line of lines) expect(line).to.not.include('msg="level=');
  });

  it("keeps the child's own fields that clash with ours, renamed, and its request id as ours", () => {
    const [line] = relay('stdout', 'level=info msg=hi source=worker request_id=router-id-0123456789');
    expect(line).to.match(/ source=mcp-server stream=stdout mcp_source=worker request_id=router-id-0123456789$/);
  });

  it('redacts secrets the MCP server prints, in any of its formats', () => {
    const lines = relay(
      'stdout',
      `{"msg":"called upstream","access_token":"${SECRET}","headers":{"Authorization":"Bearer ${SECRET}"}}`,
      `level=debug msg="got token" refresh_token=${SECRET} client_secret="${SECRET}"`,
      `Authorization: Bearer ${SECRET}`,
      `callback https://app.example/cb?code=${SECRET}&state=${SECRET}`,
      `token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl`,
      `{"msg":"config loaded","apiKey":"${SECRET}"}`,
    );
    expect(lines).to.have.length(6);
    for (const line of lines) {
      expect(line).to.not.include(SECRET);
      expect(line).to.not.include('c2lnbmF0dXJl');
      expect(line).to.include('[redacted]');
    }
  });

  it('scrubs credentials inside free text', () => {
    expect(scrubText(`Basic ${SECRET}`)).to.equal('Basic [redacted]');
    expect(scrubText(`"client_secret": "${SECRET}"`)).to.equal('"client_secret": "[redacted]"');
    expect(scrubText('started in 20 ms')).to.equal('started in 20 ms');
  });
});

describe('telemetry: the span API with tracing off', () => {
  it('does nothing and hands values through', async () => {
    expect(tracingEnabled).to.equal(false);
    const req = new IncomingMessage(new Socket());
    req.headers = { 'mcp-method': 'tools/call', 'mcp-name': 'echo' };
    expect(startRequestSpan(req, 'id')).to.equal(undefined);
    const call = startMcpCallSpan(req);
    expect(call).to.equal(undefined);
    const headers = ['traceparent', '00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01'];
    injectTraceparent(headers, call);
    endMcpCallSpan(call, 'ok', 200);
    expect(headers).to.deep.equal(['traceparent', '00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01']);
    expect(await withSpan('x', {}, async () => 'done')).to.equal('done');
    let thrown: unknown;
    await withSpan('x', {}, () => Promise.reject(new Error('boom'))).catch((error: unknown) => (thrown = error));
    expect((thrown as Error).message).to.equal('boom');
  });
});
