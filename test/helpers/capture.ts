import { captureLogs } from '../../lib/telemetry/log.ts';

/**
 * Everything the process prints while a scenario runs: every logger line (at debug level) and
 * anything written around the logger to stdout or stderr (console, oidc-provider's warnings).
 * `passThrough` still prints it; otherwise it is only collected. Returns the function that
 * restores the logger and both streams.
 */
export function captureOutput(lines: string[], options: { passThrough?: boolean } = {}): () => void {
  const restoreLogs = captureLogs((line) => lines.push(line));
  const streams = [process.stdout, process.stderr];
  const originals = streams.map((stream) => stream.write);
  streams.forEach((stream, i) => {
    stream.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      lines.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
      if (options.passThrough) return (originals[i] as (...args: unknown[]) => boolean).call(stream, chunk, ...rest);
      rest.find((arg): arg is () => void => typeof arg === 'function')?.();
      return true;
    }) as typeof stream.write;
  });
  return () => {
    streams.forEach((stream, i) => (stream.write = originals[i]!));
    restoreLogs();
  };
}
