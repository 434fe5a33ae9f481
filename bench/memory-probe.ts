/**
 * Preloaded into the proxy by `npm run soak` (with --expose-gc): on SIGUSR2, a full garbage
 * collection, then one line on stderr with the heap after it. Lets the soak tell live objects
 * that accumulate (a leak) from memory the allocator keeps after a peak.
 */
const collect = (globalThis as { gc?: () => void }).gc;

process.on('SIGUSR2', () => {
  collect?.();
  const { rss, heapUsed, heapTotal, external, arrayBuffers } = process.memoryUsage();
  const kib = (bytes: number) => Math.round(bytes / 1024);
  process.stderr.write(
    `memory-probe ${JSON.stringify({ rss: kib(rss), heapUsed: kib(heapUsed), heapTotal: kib(heapTotal), external: kib(external), arrayBuffers: kib(arrayBuffers) })}\n`,
  );
});
