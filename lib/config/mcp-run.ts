import { resolve } from 'node:path';
import type { Collector } from './collector.ts';
import { isDirectory, isObject, isSpawnableString, parseJson } from './parse.ts';
import type { McpRunConfig } from './types.ts';

/**
 * A program name or path: nothing a shell would interpret. Such a command means the same run
 * directly or through a shell, so it is run directly (one process less between us and the server).
 */
const PLAIN_COMMAND = /^[\w@%+=:,./-]+$/;

/**
 * MCP_SERVER_RUN_COMMAND has two forms, both from the Heroku proxy's documentation:
 * - with MCP_SERVER_RUN_ARGS_JSON (its current README: `npm` + `["start"]`), a program executed
 *   directly with those arguments, no shell involved, as that proxy spawns it;
 * - without it (its early README: `cd /app && PORT=3000 npm start`), a shell command line, run by
 *   `/bin/sh -c` so that `cd`, `&&` and `NAME=value` prefixes mean what they say.
 */
export function readRun(c: Collector, command: string): McpRunConfig | undefined {
  let valid = true;
  const rawArgs = c.read('MCP_SERVER_RUN_ARGS_JSON', { json: true });

  let args: string[] = [];
  if (rawArgs !== undefined) {
    const parsed = parseJson(rawArgs);
    if (!Array.isArray(parsed) || !parsed.every(isSpawnableString)) {
      c.report('MCP_SERVER_RUN_ARGS_JSON', 'must be a JSON array of strings');
      valid = false;
    } else {
      args = parsed;
    }
  }

  let cwd: string | undefined;
  const rawDir = c.read('MCP_SERVER_RUN_DIR');
  if (rawDir !== undefined) {
    cwd = resolve(c.cwd, rawDir);
    if (!isDirectory(cwd)) {
      c.report('MCP_SERVER_RUN_DIR', `must be an existing directory; ${cwd} is not`);
      valid = false;
    }
  }

  const env = readRunEnv(c);
  valid &&= env !== undefined;

  if (!isSpawnableString(command)) {
    c.report('MCP_SERVER_RUN_COMMAND', 'must not contain a NUL character');
    valid = false;
  }
  if (!valid || env === undefined) return undefined;
  if (rawArgs === undefined && !PLAIN_COMMAND.test(command)) {
    return { command: '/bin/sh', args: ['-c', command], shell: true, cwd, env };
  }
  return { command, args, shell: false, cwd, env };
}

/**
 * The Heroku proxy's README writes `{"PORT":3000}`: Node's spawn turns numbers and booleans into
 * their text, so they are accepted here as that text. Anything else (null, objects, arrays) has no
 * obvious text and is refused rather than passed on as `null` or `[object Object]`.
 */
function readRunEnv(c: Collector): Record<string, string> | undefined {
  const name = 'MCP_SERVER_RUN_ENV_JSON';
  const raw = c.read(name, { json: true });
  if (raw === undefined) return {};
  const parsed = parseJson(raw);
  if (!isObject(parsed)) {
    c.report(name, 'must be a JSON object of string, number or boolean values');
    return undefined;
  }
  const env: Record<string, string> = {};
  let valid = true;
  for (const [key, value] of Object.entries(parsed)) {
    // Names with `=` or NUL cannot be passed to a child process; spawn would throw much later.
    if (key === '' || /[=\0]/.test(key)) {
      c.report(name, `${JSON.stringify(key)} is not a usable environment variable name`);
      valid = false;
      continue;
    }
    const text = typeof value === 'number' || typeof value === 'boolean' ? String(value) : value;
    if (typeof text === 'string' && !isSpawnableString(text)) {
      c.report(name, `the value of ${key} must not contain a NUL character`);
      valid = false;
      continue;
    }
    if (!isSpawnableString(text)) {
      const given = value === null ? 'null' : Array.isArray(value) ? 'an array' : 'an object';
      c.report(name, `the value of ${key} must be a string, number or boolean, not ${given}`);
      valid = false;
      continue;
    }
    env[key] = text;
  }
  return valid ? env : undefined;
}
