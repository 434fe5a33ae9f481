#!/usr/bin/env node
// `mcp-auth-proxy <command>`: the package's command line (package.json "bin"; `npm run jwks`).
import { ProxyError } from '../http/errors.ts';
import { addSigningKey, freshJwks, JwksInputError, parseJwksInput, retireKey } from './jwks.ts';

const USAGE = `Usage:
  mcp-auth-proxy jwks                 print a new OIDC_PROVIDER_JWKS value (one RS256 signing key)
  mcp-auth-proxy jwks --add           read the current value on standard input; print it with a new
                                      signing key in front (the first key signs)
  mcp-auth-proxy jwks --retire KID    read the current value on standard input; print it without KID
`;

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new JwksInputError('pipe the current OIDC_PROVIDER_JWKS value into standard input');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function jwks(args: string[]): Promise<string> {
  const [option, kid, ...rest] = args;
  if (option === undefined) return JSON.stringify(await freshJwks());
  if (option === '--add' && kid === undefined)
    return JSON.stringify(await addSigningKey(parseJwksInput(await readStdin())));
  if (option === '--retire' && kid !== undefined && rest.length === 0) {
    return JSON.stringify(retireKey(parseJwksInput(await readStdin()), kid));
  }
  throw new UsageError(`unknown arguments: jwks ${args.join(' ')}`);
}

class UsageError extends ProxyError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  try {
    if (command === 'jwks') {
      process.stdout.write(`${await jwks(args)}\n`);
      return 0;
    }
    if (command === undefined || command === '--help' || command === 'help') {
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    }
    throw new UsageError(`unknown command: ${command}`);
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`mcp-auth-proxy: ${error.message}\n${USAGE}`);
      return 2;
    }
    if (error instanceof JwksInputError) {
      process.stderr.write(`mcp-auth-proxy jwks: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

process.exitCode = await main(process.argv.slice(2));
