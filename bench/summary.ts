/**
 * `BENCH_RUNS=N npm run bench`: what the runs' figures come to, as the project's issues state their
 * targets, in a median of the runs. Each run hands back the figures it printed (bench/proxy.ts
 * computes them, unrounded); here they are only gathered, never computed a second way.
 */

/** One connection level of one run. */
export interface LevelFigures {
  connections: number;
  /** The proxy's throughput, % of the bare forwarder's. */
  throughputPercent: number;
  /** The proxy's CPU time per request / the bare forwarder's. */
  cpuRatio: number;
  /** The traced proxy's throughput, % of the proxy's (tracing on / off). */
  tracedThroughputPercent: number;
  /** The traced proxy's CPU time per request / the proxy's. */
  tracedCpuRatio: number;
}

/** What one run hands back to the parent that started it. */
export interface RunFigures {
  levels: LevelFigures[];
  /** Resident memory (VmRSS) after the bench, in MiB. */
  rssMiB: { proxy: number; traced: number };
}

/** The middle value; with an even count, the mean of the two middle ones. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** `84.1 % (80.2–88.0)`: the median, then the lowest and highest run. */
function spread(values: number[], digits: number, unit: string): string {
  const [min, max] = [Math.min(...values), Math.max(...values)];
  return `${median(values).toFixed(digits)}${unit} (${min.toFixed(digits)}–${max.toFixed(digits)})`;
}
const percent = (values: number[]) => spread(values, 1, ' %');
const times = (values: number[]) => spread(values, 2, '×');
const mib = (values: number[]) => spread(values, 1, ' MiB');

interface Goal {
  issue: number;
  text: string;
  /** Undefined where the run did not measure it (10 not among BENCH_CONNECTIONS). */
  value: (run: RunFigures) => number | undefined;
  met: (median: number) => boolean;
  format: (values: number[]) => string;
  /** Whether the runs were made under the issue's conditions for this target. */
  applies?: (conditions: Conditions) => boolean;
}

/** How the runs were made, where a target depends on it. */
export interface Conditions {
  /** The traced proxy's sampled share of requests (BENCH_TRACES_SAMPLE_RATIO). */
  sampleRatio: number;
}

const at10 = (run: RunFigures) => run.levels.find((level) => level.connections === 10);

/** The targets of issue 8 (the proxy's cost against any Node.js hop) and issue 10 (tracing's cost). */
const GOALS: Goal[] = [
  {
    issue: 8,
    text: "throughput at 10 connections ≥ 90 % of the bare forwarder's",
    value: (run) => at10(run)?.throughputPercent,
    met: (m) => m >= 90,
    format: percent,
  },
  {
    issue: 8,
    text: "CPU per request at 10 connections ≤ 1.25× the bare forwarder's",
    value: (run) => at10(run)?.cpuRatio,
    met: (m) => m <= 1.25,
    format: times,
  },
  {
    issue: 8,
    text: 'proxy RSS after the bench ≤ 150 MiB',
    value: (run) => run.rssMiB.proxy,
    met: (m) => m <= 150,
    format: mib,
  },
  {
    issue: 10,
    text: 'throughput with tracing on at 10 connections ≥ 90 % of tracing off',
    value: (run) => at10(run)?.tracedThroughputPercent,
    met: (m) => m >= 90,
    format: percent,
    // Issue 10 sets its target with every request sampled.
    applies: ({ sampleRatio }) => sampleRatio === 1,
  },
];

export function printSummary(runs: RunFigures[], conditions: Conditions): void {
  console.log(`\n=== median (min–max) of ${runs.length} runs ===`);
  for (const [i, { connections }] of runs[0]!.levels.entries()) {
    const figures = (pick: (level: LevelFigures) => number) => runs.map((run) => pick(run.levels[i]!));
    const conns = String(connections).padEnd(6);
    console.log(
      `${conns} proxy         throughput ${percent(figures((l) => l.throughputPercent))} of the bare forwarder's, CPU per request ${times(figures((l) => l.cpuRatio))}`,
    );
    console.log(
      `${conns} tracing on    throughput ${percent(figures((l) => l.tracedThroughputPercent))} of tracing off, CPU per request ${times(figures((l) => l.tracedCpuRatio))}`,
    );
  }
  console.log(
    `proxy RSS after the bench: ${mib(runs.map((run) => run.rssMiB.proxy))}; with tracing on: ${mib(runs.map((run) => run.rssMiB.traced))}`,
  );
  console.log('');
  for (const goal of GOALS) {
    const values = runs.map(goal.value);
    if (values.some((value) => value === undefined)) continue;
    const measured = values as number[];
    const verdict =
      (goal.applies?.(conditions) ?? true)
        ? goal.met(median(measured))
          ? 'met'
          : 'not met'
        : 'for information: not measured as the issue sets it';
    console.log(`issue ${goal.issue}: ${goal.text}: ${goal.format(measured)} — ${verdict}`);
  }
}
