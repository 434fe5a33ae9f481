import { ProxyError } from '../http/errors.ts';
import { exampleOf } from './variables.ts';

export interface ConfigProblem {
  readonly variable: string;
  readonly problem: string;
  /** A good value. Never derived from the value given: some variables are secrets. */
  readonly example: string;
}

/** Every problem of the environment at once, so an operator fixes them in one deploy, not ten. */
export class ConfigError extends ProxyError {
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    const count = problems.length === 1 ? '1 problem' : `${problems.length} problems`;
    const lines = problems.map((p) => `${p.variable}: ${p.problem} (example: ${p.example})`);
    super('CONFIG_INVALID', [`Invalid configuration, ${count}:`, ...lines].join('\n'));
    this.problems = problems;
  }
}

/** What every area reads from: the environment, the mode and the directory relative paths start at. */
export interface Source {
  readonly env: NodeJS.ProcessEnv;
  readonly production: boolean;
  readonly cwd: string;
}

/**
 * What an area hands back: its part of the configuration (undefined when a problem made it
 * unusable) together with every problem and warning it found, so that `loadConfig` can report
 * the problems of all areas at once.
 */
export interface Checked<T> {
  readonly value: T;
  readonly problems: readonly ConfigProblem[];
  readonly warnings: readonly string[];
}

/** Gathers the problems and warnings of one area (or of the whole, via `take`). */
export class Collector {
  readonly problems: ConfigProblem[] = [];
  readonly warnings: string[] = [];

  constructor(readonly source: Source) {}

  get production(): boolean {
    return this.source.production;
  }

  get cwd(): string {
    return this.source.cwd;
  }

  report(variable: string, problem: string, example = exampleOf(variable)): void {
    this.problems.push({ variable, problem, example });
  }

  warn(line: string): void {
    this.warnings.push(line);
  }

  /**
   * The value, or undefined when unset. An empty value counts as unset: that is what `NAME=` in a
   * .env file or a cleared Heroku config var means. Surrounding whitespace is a copy-paste
   * accident, except in JSON values, which are often pasted over several lines.
   */
  read(name: string, options: { json?: boolean } = {}): string | undefined {
    const value = this.source.env[name];
    if (value === undefined || value === '') return undefined;
    if (!options.json && value !== value.trim()) {
      this.report(name, 'has leading or trailing whitespace');
      return value.trim() || undefined;
    }
    return value;
  }

  /**
   * A comma-separated list of public values (hosts, origins: entries are quoted in problems):
   * entries trimmed, empty ones skipped, each kept once in the form `parse` gives it. Undefined
   * when any entry is refused, each refusal reported.
   */
  readList(name: string, parse: (entry: string) => { value: string } | { problem: string }): string[] | undefined {
    const values = new Set<string>();
    let valid = true;
    for (const entry of (this.read(name) ?? '').split(',').map((e) => e.trim())) {
      if (entry === '') continue;
      const parsed = parse(entry);
      if ('problem' in parsed) {
        this.report(name, `${JSON.stringify(entry)} ${parsed.problem}`);
        valid = false;
      } else {
        values.add(parsed.value);
      }
    }
    return valid ? [...values] : undefined;
  }

  /** Ends an area: its value with what was found on the way. */
  done<T>(value: T): Checked<T> {
    return { value, problems: this.problems, warnings: this.warnings };
  }

  /** Folds another area's findings into this one and returns its value. */
  take<T>(checked: Checked<T>): T {
    this.problems.push(...checked.problems);
    this.warnings.push(...checked.warnings);
    return checked.value;
  }
}
