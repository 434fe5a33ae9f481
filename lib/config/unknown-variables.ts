import { Collector, type Checked, type Source } from './collector.ts';
import { isKnownVariable } from './variables.ts';

/**
 * Prefixes of our own variables: a variable under one of them that we do not read is most likely
 * a typo of one we do, which would otherwise fall back to a default without a word.
 */
const OWN_PREFIXES = [
  'MCP_SERVER_',
  'MCP_AUTH_PROXY_',
  'MCP_PROXY_',
  'OIDC_PROVIDER_',
  'IDENTITY_',
  'CIMD_',
  'BRANDING_',
];

/** Read at build time by the Heroku MCP auth proxy buildpack, not by the proxy: no typo. */
const BUILDPACK_VARIABLES = ['MCP_PROXY_VERSION', 'MCP_PROXY_DOWNLOAD_METHOD', 'MCP_PROXY_GIT_REF'];

const SEE_README = 'see "Moving from the Heroku MCP auth proxy" in the README';

/** Settings of the Heroku MCP auth proxy that have no counterpart here, with what happens instead. */
const HEROKU_ONLY: Readonly<Record<string, string>> = {
  IDENTITY_UNIQUE_CALLBACK_PATH: `has no effect: the login resumes from the identity callback itself (${SEE_README})`,
  TOKEN_REFRESH_STRATEGY: `has no effect: upstream tokens are refreshed when they are needed (${SEE_README})`,
  REFRESH_BUFFER_MINUTES: `has no effect: upstream tokens are refreshed when they are needed (${SEE_README})`,
  MCP_SERVER_PORT: 'has no effect: the MCP server’s port is the one in MCP_SERVER_URL',
};

/** Warnings only: an unknown variable never stops the proxy, but a silent typo would cost hours. */
export function checkUnknownVariables(source: Source): Checked<undefined> {
  const c = new Collector(source);
  for (const name of Object.keys(source.env).sort()) {
    if (source.env[name] === undefined || isKnownVariable(name) || BUILDPACK_VARIABLES.includes(name)) continue;
    const herokuOnly = HEROKU_ONLY[name];
    if (herokuOnly !== undefined) {
      c.warn(`${name} is a setting of the Heroku MCP auth proxy that ${herokuOnly}`);
    } else if (OWN_PREFIXES.some((prefix) => name.startsWith(prefix))) {
      c.warn(`${name} is set but is not a variable this proxy reads: a typo?`);
    }
  }
  return c.done(undefined);
}
