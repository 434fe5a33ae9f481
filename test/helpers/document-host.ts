import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPathServer, type PathServer } from './path-server.ts';

/** A document host: https on 127.0.0.1 with a self-signed certificate (CIMD, JWKS, outbound tests). */
export interface DocumentHost extends PathServer {
  /** `https://127.0.0.1:<port>` */
  readonly ip: string;
  /** `https://localhost:<port>` */
  readonly name: string;
}

export async function startDocumentHost(): Promise<DocumentHost> {
  const dir = mkdtempSync(join(tmpdir(), 'cimd-cert-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    const server = await startPathServer({
      key: readFileSync(join(dir, 'key.pem')),
      cert: readFileSync(join(dir, 'cert.pem')),
    });
    // The same object, not a copy: its connection count is kept up to date by the server.
    return Object.assign(server, { ip: server.origin, name: `https://localhost:${server.port}` });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
