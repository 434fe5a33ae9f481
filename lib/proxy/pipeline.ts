import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Span } from '@opentelemetry/api';
import type Provider from 'oidc-provider';
import type { GrantRevocation } from '../auth-server/grant-events.ts';
import type { Config } from '../config/types.ts';
import type { Logger } from '../telemetry/log.ts';
import type { Vault, VaultEntry } from '../vault/index.ts';
import type { Answers } from './answers.ts';
import type { KnownToken } from './authenticate.ts';
import type { HotPathCache } from './cache.ts';
import type { CookiePolicy } from './headers.ts';
import type { UpstreamTarget } from './upstream.ts';

/** Whether the MCP server accepts requests now (false while it is starting or restarting). */
export interface McpServerReadiness {
  isReady(): boolean;
}

/** What the steps of `/mcp` share: built once per proxy. */
export interface ProxyContext {
  readonly config: Config;
  readonly provider: Provider;
  readonly vault: Vault;
  readonly log: Logger;
  readonly answer: Answers;
  readonly cache: HotPathCache<KnownToken>;
  readonly revocation: GrantRevocation;
  readonly target: UpstreamTarget;
  readonly cookies: CookiePolicy;
  readonly mcpServer: McpServerReadiness | undefined;
}

/** One `/mcp` request on its way through the steps; each step fills in what it established. */
export class McpCall {
  /** Path and query on the MCP server (`route`). */
  path = '';
  /** The query string, `?` included, or '' (`route`). */
  search = '';
  /** Who is calling (`identifyCaller`). */
  caller: KnownToken | undefined = undefined;
  /** The grant's upstream credentials (`loadUpstreamCredentials`). */
  entry: VaultEntry | undefined = undefined;
  /** The call to the MCP server's span, with tracing on (`forwardToMcpServer`). */
  span: Span | undefined = undefined;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    /** The request's id (telemetry/request-log.ts), sent to the MCP server and back to the client. */
    readonly requestId: string | undefined,
  ) {}
}

/** A call every step let through: ready to be forwarded. */
export type AdmittedCall = McpCall & { caller: KnownToken; entry: VaultEntry };

/**
 * true: on to the next step. false: the step answered the client itself, the request goes no
 * further. A promise of either when the step had to ask the store; it rejects only when the store
 * could not answer. Not always a promise: on the hot path every promise costs, more so with async
 * hooks enabled (oidc-provider runs each request in AsyncLocalStorage), so a warm request passes
 * every step synchronously.
 */
export type Verdict = boolean | Promise<boolean>;

export type Step = (call: McpCall) => Verdict;

/** The steps in order, synchronously for as long as each answers synchronously. */
export function inOrder(...steps: Step[]): Step {
  const from = (call: McpCall, first: number): Verdict => {
    for (let i = first; i < steps.length; i++) {
      const verdict = steps[i]!(call);
      if (verdict === true) continue;
      if (verdict === false) return false;
      const next = i + 1;
      return verdict.then((passed) => passed && from(call, next));
    }
    return true;
  };
  return (call) => from(call, 0);
}
