// The buildpack as Heroku runs it: bin/detect, bin/compile into a build directory (with and without
// a Node.js left by an earlier buildpack), bin/release, then the `web` process type started the
// way a dyno starts it, in another directory, completing a login and an MCP tool call.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { Redis } from 'ioredis';
import { loadConfig } from '../lib/config/index.ts';
import { startDevIdentityProvider } from '../lib/dev/identity-provider.ts';
import { startOtlpReceiver, type OtlpReceiver } from './helpers/otlp-receiver.ts';
import { dumpRedis } from './helpers/redis.ts';
import {
  BUILDPACK_DIR,
  buildNodeTarball,
  compile,
  PINNED_NODE,
  processTypes,
  runScript,
  serveFiles,
  sha256File,
  simulateNodeBuildpack,
  startDyno,
  SYSTEM_PATH,
  waitForHttp,
  type Dyno,
  type FileServer,
} from './helpers/buildpack.ts';
import { connectClient, freePort, TestOAuthClient } from './helpers/stack.ts';

const PROXY = '.mcp-auth-proxy';

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' });
}

describe('buildpack', function () {
  this.timeout(240_000);
  const root = mkdtempSync(join(tmpdir(), 'buildpack-'));
  // One cache for every build, as Heroku keeps one per app.
  const cacheDir = join(root, 'cache');
  const timings: string[] = [];
  let dist: FileServer;
  let tarballName: string;

  before(function () {
    mkdirSync(cacheDir);
  });
  after(async function () {
    if (timings.length) console.log(`      compile times: ${timings.join(', ')}`);
    await dist?.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('bin/detect accepts any app and names the buildpack', async function () {
    const build = join(root, 'detect');
    mkdirSync(build);
    const { code, stdout } = await runScript('detect', [build]);
    expect(code).to.equal(0);
    expect(stdout.trim()).to.equal('MCP Remote Auth Proxy');
  });

  it('bin/release declares web and release process types relative to the app directory', async function () {
    const types = await processTypes(join(root, 'any'));
    expect(types.web).to.equal(`${PROXY}/bin/web`);
    expect(types.release).to.equal(`MCP_AUTH_PROXY_VERIFY_RELEASE=true ${PROXY}/bin/web`);
  });

  it("the README's metadata example for a provider without discovery passes the configuration", function () {
    const config = loadConfig({
      NODE_ENV: 'development',
      IDENTITY_SERVER_METADATA_FILE: join(BUILDPACK_DIR, 'examples/identity-server-metadata.json'),
      IDENTITY_CLIENT_ID: 'my-mcp-app',
      IDENTITY_CLIENT_SECRET: 'a-secret',
    });
    expect(config.identity?.metadataFile).to.match(/identity-server-metadata\.json$/);
  });

  describe('without a Node.js 24 in the app', function () {
    const build = join(root, 'python-app-build');
    const app = join(root, 'python-app');
    let log: string;

    before(async function () {
      const runtime = join(root, 'runtime');
      mkdirSync(runtime);
      tarballName = buildNodeTarball(runtime);
      const tarball = join(runtime, tarballName);
      const good = `${sha256File(tarball)}  ${tarballName}\n${'0'.repeat(64)}  node-v${PINNED_NODE}.pkg\n`;
      const wrong = `${createWrongHash(sha256File(tarball))}  ${tarballName}\n`;
      dist = await serveFiles({
        [`/good/v${PINNED_NODE}/SHASUMS256.txt`]: { body: good },
        [`/good/v${PINNED_NODE}/${tarballName}`]: { path: tarball },
        [`/wrong/v${PINNED_NODE}/SHASUMS256.txt`]: { body: wrong },
        [`/wrong/v${PINNED_NODE}/${tarballName}`]: { path: tarball },
        [`/other/v${PINNED_NODE}/SHASUMS256.txt`]: { body: `${'0'.repeat(64)}  node-v${PINNED_NODE}-win-x64.zip\n` },
      });

      mkdirSync(join(build, '.heroku/node/bin'), { recursive: true });
      writeFileSync(join(build, 'requirements.txt'), 'mcp\n');
      writeFileSync(join(build, 'Procfile'), 'web: .mcp-auth-proxy/bin/web\nworker: python worker.py\n');
      // An app that brought another Node.js major (say, for its assets): it must stay the app's.
      writeFileSync(join(build, '.heroku/node/bin/node'), '#!/bin/sh\necho v22.11.0\n', { mode: 0o755 });
      const result = await compile(build, cacheDir, join(root, 'env-python-app'), {
        MCP_AUTH_PROXY_NODE_DOWNLOAD_BASE: `${dist.url}/good`,
      });
      timings.push(`downloading Node.js, empty cache ${result.seconds.toFixed(1)} s`);
      log = result.stdout;
      expect(result.code, result.stdout + result.stderr).to.equal(0);
    });

    it('installs the pinned Node.js privately, verified against SHASUMS256.txt', function () {
      expect(log).to.contain("The app's Node.js (v22.11.0) is not 24.x; the app keeps it");
      expect(log).to.contain(`Installing Node.js ${PINNED_NODE} into .mcp-auth-proxy/node (not on the app's PATH)`);
      expect(log).to.contain('SHA-256 verified against SHASUMS256.txt');
      expect(dist.requests).to.include(`/good/v${PINNED_NODE}/${tarballName}`);
      const version = execFileSync(join(build, PROXY, 'node/bin/node'), ['--version'], { encoding: 'utf8' });
      expect(version.trim()).to.equal(`v${PINNED_NODE}`);
      // Only the runtime stays in the slug: npm and headers served the build.
      expect(files(join(build, PROXY, 'node'))).to.have.members(['bin', 'bin/node']);
      expect(readFileSync(join(build, '.heroku/node/bin/node'), 'utf8')).to.contain('v22.11.0');
      expect(existsSync(join(build, '.profile.d'))).to.equal(false);
    });

    it('a second build reuses the cached Node.js tarball after checking it again, and the installed dependencies', async function () {
      const before = dist.requests.length;
      const result = await compile(build, cacheDir, join(root, 'env-python-app'));
      timings.push(`rebuild from the cache ${result.seconds.toFixed(1)} s`);
      expect(result.code, result.stdout + result.stderr).to.equal(0);
      expect(result.stdout).to.contain(`Using Node.js ${PINNED_NODE} from the build cache`);
      expect(result.stdout).to.contain('Reusing the dependencies of an earlier build (same package-lock.json)');
      expect(dist.requests.slice(before)).to.deep.equal([`/good/v${PINNED_NODE}/SHASUMS256.txt`]);
    });

    it('a checksum that does not match fails the build, naming the file and both hashes', async function () {
      const wrongBuild = join(root, 'wrong-checksum-build');
      const wrongCache = join(root, 'wrong-checksum-cache');
      mkdirSync(wrongBuild);
      const result = await compile(wrongBuild, wrongCache, join(root, 'env-wrong'), {
        MCP_AUTH_PROXY_NODE_DOWNLOAD_BASE: `${dist.url}/wrong/`,
      });
      expect(result.code).to.equal(1);
      expect(result.stderr).to.match(
        new RegExp(
          `^ ! {5}checksum mismatch for ${tarballName}: SHA-256 is [0-9a-f]{64}, SHASUMS256.txt says [0-9a-f]{64}$`,
          'm',
        ),
      );
      expect(existsSync(join(wrongBuild, PROXY, 'node/bin/node'))).to.equal(false);
      expect(files(join(wrongCache, 'mcp-auth-proxy/node'))).to.deep.equal([]);
    });

    it('a missing SHASUMS256.txt, or one without our tarball, fails the build naming what is missing', async function () {
      const fails = async (base: string) => {
        const dir = join(root, `failing-${randomBytes(4).toString('hex')}`);
        mkdirSync(dir);
        const result = await compile(dir, `${dir}-cache`, `${dir}-env`, {
          MCP_AUTH_PROXY_NODE_DOWNLOAD_BASE: base,
        });
        expect(result.code, result.stdout).to.equal(1);
        return result.stderr;
      };
      expect(await fails(`${dist.url}/missing`)).to.match(
        new RegExp(`^ ! {5}cannot download ${dist.url}/missing/v${PINNED_NODE}/SHASUMS256.txt: .*404`, 'm'),
      );
      expect(await fails(`${dist.url}/other`)).to.contain(
        `${dist.url}/other/v${PINNED_NODE}/SHASUMS256.txt lists no checksum for ${tarballName}`,
      );
    });

    it('a Procfile that defines its own web process fails the build before anything is installed', async function () {
      const exposed = join(root, 'procfile-web-build');
      mkdirSync(exposed);
      writeFileSync(join(exposed, 'Procfile'), 'release: python migrate.py\nweb: python server.py --port $PORT\n');
      const result = await compile(exposed, join(root, 'procfile-web-cache'), join(root, 'env-procfile'));
      expect(result.code).to.equal(1);
      expect(result.stderr).to.contain(' !     your Procfile defines a web process: remove that line');
      expect(result.stderr).to.not.contain('server.py');
      expect(existsSync(join(exposed, PROXY))).to.equal(false);
    });

    it('a download base over plain http to another host is refused before any download', async function () {
      const plainBuild = join(root, 'plain-http-build');
      mkdirSync(plainBuild);
      const result = await compile(plainBuild, join(root, 'plain-http-cache'), join(root, 'env-plain'), {
        MCP_AUTH_PROXY_NODE_DOWNLOAD_BASE: 'http://mirror.example/dist',
      });
      expect(result.code).to.equal(1);
      expect(result.stderr).to.contain('MCP_AUTH_PROXY_NODE_DOWNLOAD_BASE must be an https:// URL');
    });

    describe('the web process, started as a dyno starts it', function () {
      const prefix = `test-buildpack-${randomBytes(6).toString('hex')}:`;
      const redis = new Redis(process.env.TEST_REDIS_URL!);
      let idp: Awaited<ReturnType<typeof startDevIdentityProvider>>;
      let dyno: Dyno | undefined;
      let baseUrl: string;
      let mcpPort: number;
      let config: NodeJS.ProcessEnv;
      let receiver: OtlpReceiver;

      before(async function () {
        receiver = await startOtlpReceiver();
        // The slug runs in /app, not where it was built: nothing may point back at BUILD_DIR.
        renameSync(build, app);
        const port = await freePort();
        mcpPort = await freePort();
        baseUrl = `http://localhost:${port}`;
        idp = await startDevIdentityProvider({
          redirectUris: [`${baseUrl}/interaction/identity/callback`],
          tokenEndpointAuthMethod: 'client_secret_post',
        });
        const keys = startDyno(app, `${PROXY}/bin/mcp-auth-proxy jwks`, {});
        expect(await keys.exited, keys.output()).to.equal(0);
        const web = (await processTypes(app)).web!;
        // Development mode with explicit configuration: production refuses the loopback http
        // identity provider this test uses, and nothing else differs for the buildpack.
        config = {
          // The app's own (other major) node first on PATH, as its buildpack's .profile.d puts it.
          PATH: `${join(app, '.heroku/node/bin')}:${SYSTEM_PATH}`,
          NODE_ENV: 'development',
          PORT: String(port),
          BASE_URL: baseUrl,
          LOCAL_INSECURE: 'true',
          LOG_LEVEL: 'warn',
          IDENTITY_SERVER_URL: idp.issuer,
          IDENTITY_CLIENT_ID: idp.clientId,
          IDENTITY_CLIENT_SECRET: idp.clientSecret,
          IDENTITY_SCOPE: 'openid profile offline_access',
          OIDC_PROVIDER_JWKS: keys.output().trim(),
          MCP_AUTH_PROXY_REDIS_URL: process.env.TEST_REDIS_URL,
          MCP_AUTH_PROXY_REDIS_KEY_PREFIX: prefix,
          // The app's own MCP server: here the example server compiled into the slug.
          MCP_SERVER_RUN_COMMAND: `${PROXY}/node/bin/node`,
          MCP_SERVER_RUN_ARGS_JSON: JSON.stringify([`${PROXY}/dist/lib/dev/example-mcp-server.js`]),
          MCP_SERVER_URL: `http://127.0.0.1:${mcpPort}/mcp`,
          // The web command's tracing preload: the slug exports spans when an endpoint is set.
          OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
          OTEL_SERVICE_NAME: 'buildpack-test',
        };
        dyno = startDyno(app, web, config);
        // Heroku's limit for binding $PORT; then readiness (store, identity provider, MCP server).
        await waitForHttp(`${baseUrl}/healthz`, dyno, 60_000);
        await waitForHttp(`${baseUrl}/readyz`, dyno, 30_000, true);
      });
      after(async function () {
        if (dyno && dyno.child.exitCode === null && dyno.child.signalCode === null) {
          dyno.child.kill('SIGKILL');
          await dyno.exited;
        }
        await idp?.close();
        await receiver?.close();
        const keys = [...(await dumpRedis(redis, prefix)).keys()];
        if (keys.length) await redis.del(...keys);
        redis.disconnect();
        if (existsSync(app)) renameSync(app, build);
      });

      it("runs on the proxy's own Node.js, as the process the dyno manager signals", function () {
        expect(readlinkSync(`/proc/${dyno!.child.pid}/exe`)).to.equal(join(app, PROXY, 'node/bin/node'));
      });

      it('logs a user in at the identity provider and forwards an MCP tool call', async function () {
        const oauth = new TestOAuthClient({ user: 'alice' });
        const client = await connectClient(`${baseUrl}/mcp`, oauth);
        try {
          const sum = (await client.callTool({ name: 'add', arguments: { a: 2, b: 3 } })) as {
            content: { text: string }[];
          };
          expect(sum.content[0]!.text).to.equal('5');
          const who = (await client.callTool({ name: 'whoami', arguments: {} })) as { content: { text: string }[] };
          expect(JSON.parse(who.content[0]!.text)).to.include({ userId: 'alice' });
        } finally {
          await client.close();
        }
        expect((await dumpRedis(redis, prefix)).size, 'state kept in Redis').to.be.greaterThan(0);
      });

      it('stops on SIGTERM, and stops the MCP server with it', async function () {
        dyno!.child.kill('SIGTERM');
        expect(await dyno!.exited, dyno!.output()).to.equal(0);
        const stillUp = await fetch(`http://127.0.0.1:${mcpPort}/mcp`).then(
          () => true,
          () => false,
        );
        expect(stillUp, 'MCP server still listening').to.equal(false);
      });

      it('sent the traces of the login and the tool calls, flushed before it exited', function () {
        const spans = receiver.spans();
        const names = new Set(spans.map((span) => span.name));
        for (const name of ['POST /reg', 'POST /token', 'POST /mcp']) expect(names.has(name), name).to.equal(true);
        // Each forwarded call is a client span under its request's span.
        const mcpRequests = new Set(spans.filter((span) => span.name === 'POST /mcp').map((span) => span.spanId));
        expect(spans.some((span) => span.kind === 3 && mcpRequests.has(span.parentSpanId))).to.equal(true);
        expect(spans.every((span) => span.resource['service.name'] === 'buildpack-test')).to.equal(true);
      });

      it('the release process verifies that the MCP server launches, and exits 0', async function () {
        const release = startDyno(app, (await processTypes(app)).release!, config);
        expect(await release.exited, release.output()).to.equal(0);
        expect(release.output()).to.contain('Verified release launches');
        const stillUp = await fetch(`http://127.0.0.1:${mcpPort}/mcp`).then(
          () => true,
          () => false,
        );
        expect(stillUp, 'the verified MCP server was stopped again').to.equal(false);
      });

      it('the release process fails with one line when the MCP server cannot start', async function () {
        const release = startDyno(app, (await processTypes(app)).release!, {
          ...config,
          MCP_SERVER_RUN_COMMAND: `${PROXY}/node/bin/node`,
          MCP_SERVER_RUN_ARGS_JSON: JSON.stringify(['-e', 'process.exit(3)']),
        });
        expect(await release.exited).to.not.equal(0);
        expect(release.output()).to.not.contain('Verified release launches');
        expect(release.output()).to.match(/MCP server did not start/);
        expect(release.output()).to.not.match(/\n\s+at /);
      });
    });
  });

  describe('with the Node.js 24 of an earlier buildpack', function () {
    const build = join(root, 'node-app-build');
    let log: string;

    before(async function () {
      mkdirSync(build);
      writeFileSync(join(build, 'package.json'), '{"name":"their-mcp-server"}\n');
      simulateNodeBuildpack(build);
      const result = await compile(build, cacheDir, join(root, 'env-node-app'));
      timings.push(`reusing the app's Node.js, dependencies cached ${result.seconds.toFixed(1)} s`);
      log = result.stdout;
      expect(result.code, result.stdout + result.stderr).to.equal(0);
    });

    it('reuses that Node.js instead of downloading one', function () {
      expect(log).to.contain(`Using Node.js v${PINNED_NODE} installed by an earlier buildpack (.heroku/node)`);
      expect(log).to.not.contain('Downloading');
      expect(lstatSync(join(build, PROXY, 'node')).isSymbolicLink()).to.equal(true);
      expect(readlinkSync(join(build, PROXY, 'node'))).to.equal('../.heroku/node');
    });

    it('installs compiled JavaScript, its views and production dependencies only', function () {
      const built = files(join(build, PROXY, 'dist'));
      expect(built).to.include.members(['lib/main.js', 'lib/cli/main.js', 'lib/views/_layout.ejs']);
      expect(built.filter((f) => f.endsWith('.ts'))).to.deep.equal([]);
      const modules = readdirSync(join(build, PROXY, 'node_modules'));
      expect(modules).to.include.members(['oidc-provider', 'express', 'ioredis']);
      for (const dev of ['typescript', 'tsx', 'mocha', 'eslint', 'node']) expect(modules).to.not.include(dev);
      expect(existsSync(join(build, PROXY, 'lib'))).to.equal(false);
    });

    it('logs in Heroku style', function () {
      const topics = log.split('\n').filter((line) => line.startsWith('-----> '));
      expect(topics[0]).to.equal('-----> MCP Remote Auth Proxy: installing into .mcp-auth-proxy');
      expect(topics).to.include('-----> Installing production dependencies');
      for (const line of log.split('\n').filter(Boolean)) expect(line).to.match(/^(-----> | {7})/);
    });

    it('its command line prints keys the configuration accepts, from the app directory', async function () {
      const app = join(root, 'node-app');
      renameSync(build, app);
      const dyno = startDyno(app, `${PROXY}/bin/mcp-auth-proxy jwks`, {});
      expect(await dyno.exited, dyno.output()).to.equal(0);
      const value = dyno.output().trim();
      const config = loadConfig({ OIDC_PROVIDER_JWKS: value });
      expect(config.provider.jwks?.keys[0]?.d).to.be.a('string');
      renameSync(app, build);
    });
  });
});

/** A different valid-looking SHA-256: the published checksum of some other file. */
function createWrongHash(hash: string): string {
  return hash.replace(/^./, (c) => (c === '0' ? '1' : '0'));
}
