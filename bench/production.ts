/**
 * The Node flags of the production web process (bin/support/web, the buildpack's web command),
 * for every benchmark that runs the proxy's code as production does: keep the two alike. A young
 * generation of at most 2 × 8 MiB: V8's default on a machine with gigabytes of memory lets it grow
 * to 2 × 32 MiB, which the proxy's short-lived garbage fills, for 20–55 MiB more resident memory
 * and no gain in CPU time per request (issue 8, measured with `npm run bench`'s A/B proxies).
 */
export const PRODUCTION_NODE_ARGS = ['--max-semi-space-size=8'];
