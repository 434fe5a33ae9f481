import { expect } from 'chai';
import { ConfigError, loadConfig, type ConfigProblem } from '../../lib/config/index.ts';

/** Shared by the test/config*.test.ts files: what loadConfig says about an environment. */

/** The problems loadConfig reports; fails the test when it does not throw. */
export function problemsOf(env: NodeJS.ProcessEnv, cwd?: string): readonly ConfigProblem[] {
  try {
    loadConfig(env, cwd);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  expect.fail('loadConfig accepted an invalid environment');
}

export function messageOf(env: NodeJS.ProcessEnv): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).to.be.instanceOf(ConfigError);
    return (error as ConfigError).message;
  }
  expect.fail('loadConfig accepted an invalid environment');
}

/** Asserts a problem on `variable` whose text matches `pattern`. */
export function expectProblem(env: NodeJS.ProcessEnv, variable: string, pattern: RegExp): void {
  const problems = problemsOf(env);
  const matching = problems.filter((p) => p.variable === variable && pattern.test(p.problem));
  expect(matching, JSON.stringify(problems, null, 2)).to.have.length.greaterThan(0);
}

/** The warnings loadConfig gives for `env`, as one text to search. */
export function warningsOf(env: NodeJS.ProcessEnv): string {
  return loadConfig(env).warnings.join('\n');
}
