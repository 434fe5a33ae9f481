import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendJson } from '../http/json.ts';

/**
 * `/healthz` and `/readyz`, and the gate in front of everything else until the proxy is ready.
 *
 * The port is bound first (Heroku gives a web dyno 60 s to bind, and a router probing a dyno that
 * refuses connections logs errors), so for a few seconds requests arrive before the store, the
 * identity provider and the MCP server are: they get a 503 with Retry-After, never a 500 or a
 * half-built app. Neither route needs a token, so neither shows more than a state per check: no
 * URL, host or error text that could carry a credential.
 */

export type CheckState = 'starting' | 'ok' | 'failing';

/** One dependency: `starting` until its start-up step has run, then probed on each request. */
export interface Check {
  readonly name: string;
  state(): CheckState | Promise<CheckState>;
}

const HEALTH_PATH = '/healthz';
const READY_PATH = '/readyz';
const RETRY_AFTER_SECONDS = '5';

export interface Health {
  /** Answers `/healthz` and `/readyz` and returns true, or returns false for any other path. */
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  /** The 503 every other route gets until the proxy is ready. */
  notReady(res: ServerResponse): void;
}

/** `open`: every start-up step has run and the app serves (checks can pass a moment before). */
export function createHealth(open: () => boolean, checks: readonly Check[]): Health {
  const readiness = async (): Promise<Record<string, CheckState>> => {
    const states = await Promise.all(
      checks.map(async (check) => {
        try {
          return await check.state();
        } catch {
          return 'failing' as const;
        }
      }),
    );
    return Object.fromEntries(checks.map((check, i) => [check.name, states[i]!]));
  };

  return {
    handle(req, res) {
      const url = req.url ?? '/';
      // Every request of the process passes here, each tool call included: a prefix test first,
      // so that the others leave no array or string behind.
      if (!url.startsWith(HEALTH_PATH) && !url.startsWith(READY_PATH)) return false;
      const path = url.split('?', 1)[0];
      if (path !== HEALTH_PATH && path !== READY_PATH) return false;
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        sendJson(res, 405, { error: 'method_not_allowed' }, { Allow: 'GET, HEAD' });
        return true;
      }
      // The process is up and its event loop turns: that is all liveness means.
      if (path === HEALTH_PATH) {
        sendJson(res, 200, { status: 'up' });
        return true;
      }
      void readiness().then((states) => {
        const ready = open() && Object.values(states).every((state) => state === 'ok');
        const body = {
          status: ready ? 'ready' : 'not_ready',
          checks: Object.fromEntries(Object.entries(states).map(([name, state]) => [name, { state }])),
        };
        sendJson(res, ready ? 200 : 503, body, ready ? {} : { 'Retry-After': RETRY_AFTER_SECONDS });
      });
      return true;
    },
    notReady(res) {
      sendJson(
        res,
        503,
        { error: 'temporarily_unavailable', error_description: 'the proxy is starting; try again shortly' },
        { 'Retry-After': RETRY_AFTER_SECONDS },
      );
    },
  };
}

/**
 * A probe an unauthenticated caller can trigger at will must not turn into a load on the store:
 * concurrent calls share one probe, and its answer is reused for `ttlMs`.
 */
export function cached(probe: () => Promise<CheckState>, ttlMs = 1_000): () => Promise<CheckState> {
  let last: { at: number; state: Promise<CheckState> } | undefined;
  return () => {
    if (!last || Date.now() - last.at > ttlMs) {
      last = { at: Date.now(), state: probe().catch(() => 'failing' as const) };
    }
    return last.state;
  };
}
