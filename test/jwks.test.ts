// `npm run jwks` / `mcp-auth-proxy jwks`: the OIDC_PROVIDER_JWKS values it prints are what the
// configuration loader accepts, and key rotation keeps the old keys for verification.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { expect } from 'chai';
import type { JSONWebKeySet, JWK } from 'jose';
import { loadConfig } from '../lib/config/index.ts';

const CLI = new URL('../lib/cli/main.ts', import.meta.url).pathname;

async function cli(args: string[], stdin?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.end(stdin ?? '');
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

function accepted(value: string): JSONWebKeySet {
  const config = loadConfig({ NODE_ENV: 'development', OIDC_PROVIDER_JWKS: value });
  return config.provider.jwks!;
}

function kids(jwks: JSONWebKeySet): string[] {
  return jwks.keys.map((key) => key.kid!);
}

describe('mcp-auth-proxy jwks', function () {
  this.timeout(60_000);
  let first: string;

  before(async function () {
    const result = await cli(['jwks']);
    expect(result.code, result.stderr).to.equal(0);
    first = result.stdout.trim();
  });

  it('prints one private RS256 signing key the configuration loader accepts', function () {
    const jwks = accepted(first);
    expect(jwks.keys).to.have.length(1);
    const key = jwks.keys[0] as JWK;
    expect(key).to.include({ kty: 'RSA', alg: 'RS256', use: 'sig' });
    for (const part of ['d', 'p', 'q', 'dp', 'dq', 'qi']) expect(key[part as keyof JWK], part).to.be.a('string');
    expect(key.kid).to.match(/^\d{4}-\d{2}-\d{2}-[0-9a-f]{8}$/);
  });

  it('prints a different key each time', async function () {
    const second = await cli(['jwks']);
    const [a] = accepted(first).keys;
    const [b] = accepted(second.stdout.trim()).keys;
    expect(b!.kid).to.not.equal(a!.kid);
    expect(b!.n).to.not.equal(a!.n);
  });

  it('--add puts a new signing key first and keeps the current ones after it', async function () {
    const result = await cli(['jwks', '--add'], first);
    expect(result.code, result.stderr).to.equal(0);
    const rotated = accepted(result.stdout.trim());
    const current = accepted(first);
    expect(rotated.keys).to.have.length(2);
    expect(new Set(kids(rotated)).size).to.equal(2);
    expect(rotated.keys[1]).to.deep.equal(current.keys[0]);
    expect(rotated.keys[0]!.d).to.be.a('string');
  });

  it('--retire KID removes that key and nothing else', async function () {
    const added = (await cli(['jwks', '--add'], first)).stdout;
    const [, oldKid] = kids(accepted(added));
    const result = await cli(['jwks', '--retire', oldKid!], added);
    expect(result.code, result.stderr).to.equal(0);
    const after = accepted(result.stdout.trim());
    expect(kids(after)).to.deep.equal([kids(accepted(added))[0]]);
  });

  it('refuses to retire the only key, or a kid that is not there, naming the kids', async function () {
    const [kid] = kids(accepted(first));
    const only = await cli(['jwks', '--retire', kid!], first);
    expect(only.code).to.equal(1);
    expect(only.stderr).to.contain(`${kid} is the only key: add a new one before retiring it`);
    const unknown = await cli(['jwks', '--retire', 'nope'], first);
    expect(unknown.code).to.equal(1);
    expect(unknown.stderr).to.contain(`no key has kid "nope"; the kids are: ${kid}`);
    const [key] = accepted(first).keys;
    expect(only.stderr + unknown.stderr).to.not.contain(key!.d);
  });

  it('says what is wrong with standard input without quoting it', async function () {
    const secretish = '{"keys":[{"d":"private-material"'; // truncated JSON
    const result = await cli(['jwks', '--add'], secretish);
    expect(result.code).to.equal(1);
    expect(result.stderr).to.equal(
      'mcp-auth-proxy jwks: standard input is not JSON: pipe the current OIDC_PROVIDER_JWKS value in\n',
    );
    const empty = await cli(['jwks', '--add'], '{"keys":[]}');
    expect(empty.stderr).to.contain('standard input must be a JWKS: {"keys":[…]} with at least one key');
  });

  it('an unknown command or option prints the usage and exits 2', async function () {
    for (const args of [['keys'], ['jwks', '--rotate']]) {
      const result = await cli(args);
      expect(result.code, args.join(' ')).to.equal(2);
      expect(result.stderr).to.contain('Usage:');
      expect(result.stdout).to.equal('');
    }
  });
});
