/**
 * Seal/open throughput of a typical vault record: the hand-written AES-256-GCM layout (v3) against
 * the compact JWE of lib/crypto/sealed-json.ts, each with the vault's per-grant HKDF included.
 * Run: npm exec -- node --import tsx bench/sealing.ts
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { openJson, sealJson } from '../lib/crypto/sealed-json.ts';

const root = randomBytes(32);
const g = randomBytes(32);
const grantId = randomBytes(16).toString('base64url');
const entry = {
  accountId: 'alice@example.test',
  clientId: 'https://client.example.test/oauth/client-metadata.json',
  expiresAt: Math.floor(Date.now() / 1000) + 30 * 86400,
  obtainedAt: Math.floor(Date.now() / 1000),
  credentials: {
    accessToken: randomBytes(600).toString('base64url'), // a JWT-sized upstream access token
    refreshToken: randomBytes(48).toString('base64url'),
    expiresAt: Math.floor(Date.now() / 1000) + 3600,
    scope: 'openid profile email offline_access',
    tokenType: 'bearer',
  },
};

const key = () => Buffer.from(hkdfSync('sha256', Buffer.concat([root, g]), Buffer.from(grantId), 'bench record', 32));
const aad = Buffer.from(`v3.kid.${grantId}`);

function gcmSeal(): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key(), iv);
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(JSON.stringify(entry), 'utf8'), cipher.final()]);
  return [
    'v3',
    'kid',
    iv.toString('base64url'),
    body.toString('base64url'),
    cipher.getAuthTag().toString('base64url'),
  ].join('.');
}
function gcmOpen(sealed: string): unknown {
  const [, , iv, body, tag] = sealed.split('.') as [string, string, string, string, string];
  const decipher = createDecipheriv('aes-256-gcm', key(), Buffer.from(iv, 'base64url'), { authTagLength: 16 });
  decipher.setAAD(aad);
  decipher.setAuthTag(Buffer.from(tag, 'base64url'));
  return JSON.parse(
    Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8'),
  );
}
const sealing = () => ({ key: key(), kid: 'kid', type: 'vault-record+4', context: grantId });

async function measure(name: string, op: () => unknown): Promise<void> {
  for (let i = 0; i < 2000; i++) await op(); // warm-up
  const runs: number[] = [];
  for (let r = 0; r < 5; r++) {
    const n = 20_000;
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await op();
    runs.push(n / (Number(process.hrtime.bigint() - start) / 1e9));
  }
  runs.sort((a, b) => a - b);
  process.stdout.write(
    `${name.padEnd(28)} ${Math.round(runs[2]!).toLocaleString('en')} ops/s (median of 5 × 20,000)` + '\n',
  );
}

const legacy = gcmSeal();
const jwe = await sealJson(sealing(), entry);
process.stdout.write(
  `node ${process.version}; record: ${JSON.stringify(entry).length} bytes JSON; v3 ${legacy.length} chars, JWE ${jwe.length} chars\n`,
);
await measure('v3 node:crypto seal', gcmSeal);
await measure('v3 node:crypto open', () => gcmOpen(legacy));
await measure('JWE (jose) seal', () => sealJson(sealing(), entry));
await measure('JWE (jose) open', () => openJson(sealing(), jwe));
