/**
 * One value per process under `name`, kept on `globalThis`. The tracing preload and the
 * application may load the same file under two URLs (a compiled preload, the application run from
 * source: two module instances); what both must agree on lives here, made once by whichever asks
 * first. OpenTelemetry's API keeps its own globals the same way, for the same reason.
 */
export function processWide<T>(name: string, create: () => T): T {
  const key = Symbol.for(`mcp-remote-auth-proxy.${name}`);
  return ((globalThis as Record<symbol, unknown>)[key] ??= create()) as T;
}
