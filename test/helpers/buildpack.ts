import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join, resolve } from 'node:path';

/** The buildpack is this repository: Heroku clones it and runs its bin/ scripts. */
export const BUILDPACK_DIR = resolve(import.meta.dirname, '../..');
export const PINNED_NODE = readFileSync(join(BUILDPACK_DIR, '.node-version'), 'utf8').trim();

/**
 * The environment of a build or a dyno, not of this test run: `npm run` puts Node.js 24 first on
 * PATH and sets npm_config_*; a build machine or a Python app's dyno has neither.
 */
export const SYSTEM_PATH = '/usr/local/bin:/usr/bin:/bin';

/** How this machine reaches the internet (proxy, extra CAs): the npm registry must stay reachable. */
const NETWORK_VARIABLES = /^(https?_proxy|no_proxy|NODE_EXTRA_CA_CERTS|SSL_CERT_FILE|SSL_CERT_DIR|CURL_CA_BUNDLE)$/i;

function machineEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => NETWORK_VARIABLES.test(name)));
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export async function runScript(script: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<RunResult> {
  const child = spawn('bash', [join(BUILDPACK_DIR, 'bin', script), ...args], {
    env: { ...machineEnv(), PATH: SYSTEM_PATH, HOME: args[0] ?? '/tmp', LANG: 'C.UTF-8', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, stdout, stderr };
}

/** `bin/compile BUILD_DIR CACHE_DIR ENV_DIR` with config vars written as files, as Heroku does. */
export async function compile(
  buildDir: string,
  cacheDir: string,
  envDir: string,
  configVars: Record<string, string> = {},
): Promise<RunResult & { seconds: number }> {
  mkdirSync(envDir, { recursive: true });
  for (const [name, value] of Object.entries(configVars)) writeFileSync(join(envDir, name), value);
  const started = process.hrtime.bigint();
  const result = await runScript('compile', [buildDir, cacheDir, envDir]);
  return { ...result, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

export function nodeArch(): string {
  if (process.arch === 'x64' || process.arch === 'arm64') return process.arch;
  throw new Error(`no Node.js tarball name for ${process.arch}`);
}

/** npm's own directory, to put into the tarball and the simulated Node.js buildpack. */
function npmDir(): string {
  const execPath = process.env.npm_execpath;
  if (execPath?.endsWith('npm-cli.js')) return dirname(dirname(execPath));
  return join(execFileSync('npm', ['root', '-g'], { encoding: 'utf8' }).trim(), 'npm');
}

/** What Heroku's Node.js buildpack leaves in BUILD_DIR/.heroku/node: node and npm (symlinked here). */
export function simulateNodeBuildpack(buildDir: string): void {
  const home = join(buildDir, '.heroku/node');
  mkdirSync(join(home, 'bin'), { recursive: true });
  mkdirSync(join(home, 'lib/node_modules'), { recursive: true });
  symlinkSync(process.execPath, join(home, 'bin/node'));
  symlinkSync(npmDir(), join(home, 'lib/node_modules/npm'));
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/**
 * An official-looking `node-vX-linux-ARCH.tar.gz` (this test run's Node.js 24 binary and npm) in
 * `dir`; returns its file name.
 */
export function buildNodeTarball(dir: string): string {
  const major = PINNED_NODE.split('.')[0];
  if (process.versions.node.split('.')[0] !== major) {
    throw new Error(`run the buildpack tests through npm (Node.js ${major}), not Node.js ${process.versions.node}`);
  }
  const name = `node-v${PINNED_NODE}-linux-${nodeArch()}`;
  const stage = join(dir, 'stage');
  mkdirSync(join(stage, name, 'bin'), { recursive: true });
  mkdirSync(join(stage, name, 'lib/node_modules'), { recursive: true });
  symlinkSync(process.execPath, join(stage, name, 'bin/node'));
  symlinkSync(npmDir(), join(stage, name, 'lib/node_modules/npm'));
  const tarball = join(dir, `${name}.tar.gz`);
  // -h stores the files the symlinks point at; gzip -1 because the test only needs the format.
  execFileSync('bash', ['-c', 'tar -chf - -C "$1" "$2" | gzip -1 > "$3"', 'tar', stage, name, tarball]);
  return `${name}.tar.gz`;
}

export interface FileServer {
  readonly url: string;
  /** Paths requested so far. */
  readonly requests: string[];
  close(): Promise<void>;
}

/** A loopback stand-in for nodejs.org/dist: `files` maps a URL path to a file on disk or a body. */
export async function serveFiles(files: Record<string, { path: string } | { body: string }>): Promise<FileServer> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push(path);
    const file = files[path];
    if (!file) {
      res.writeHead(404).end('not found');
    } else if ('body' in file) {
      res.writeHead(200, { 'content-type': 'text/plain' }).end(file.body);
    } else {
      res.writeHead(200, { 'content-length': statSync(file.path).size });
      createReadStream(file.path).pipe(res);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

/** The process types bin/release declares (its YAML is flat enough to read line by line). */
export async function processTypes(buildDir: string): Promise<Record<string, string>> {
  const { code, stdout } = await runScript('release', [buildDir]);
  if (code !== 0) throw new Error(`bin/release exited ${code}`);
  const types: Record<string, string> = {};
  let inside = false;
  for (const line of stdout.split('\n')) {
    if (/^default_process_types:\s*$/.test(line)) inside = true;
    else if (inside && /^ {2}[a-z]+: /.test(line)) {
      const [, type, command] = /^ {2}([a-z]+): (.*)$/.exec(line)!;
      types[type!] = command!;
    } else if (inside && line.trim() !== '') inside = false;
  }
  return types;
}

export interface Dyno {
  readonly child: ChildProcess;
  readonly output: () => string;
  /** Resolves with the exit code (or signal name) once the process has ended. */
  readonly exited: Promise<number | string>;
}

/** A process type's command as a dyno runs it: `bash -c`, in the app directory, HOME there too. */
export function startDyno(appDir: string, command: string, env: NodeJS.ProcessEnv): Dyno {
  const child = spawn('bash', ['-c', command], {
    cwd: appDir,
    env: { PATH: SYSTEM_PATH, HOME: appDir, LANG: 'C.UTF-8', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, 'exit').then(([code, signal]) => (code ?? signal) as number | string);
  return { child, output: () => output, exited };
}

/**
 * Waits until `url` answers (with a 2xx when `ok` is asked for), or fails with the dyno's output if
 * it exits or the time is up.
 */
export async function waitForHttp(url: string, dyno: Dyno, timeoutMs: number, ok = false): Promise<void> {
  let ended = false;
  void dyno.exited.then(() => (ended = true));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !ended) {
    const answered = await fetch(url).then(
      (response) => !ok || response.ok,
      () => false,
    );
    if (answered) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not answer (${ended ? 'the process exited' : 'timed out'}):\n${dyno.output()}`);
}
