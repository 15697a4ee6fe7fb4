import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CorekubeError } from '../core/errors.ts';

/** One CLI command: its words, a one-line summary, its --help text and what it does. */
export interface Command {
  readonly path: readonly [string] | readonly [string, string];
  readonly summary: string;
  readonly usage: string;
  run(argv: readonly string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** node:util parseArgs, with unknown options reported as usage errors (exit 2) naming the option. */
export function parseOptions<O extends Options>(argv: readonly string[], options: O, usage: string, extra: { allowPositionals?: boolean } = {}) {
  try {
    return parseArgs({ args: [...argv], options, allowPositionals: extra.allowPositionals ?? false, strict: true });
  } catch (cause) {
    throw new CorekubeError('E_USAGE', (cause as Error).message, { hint: `usage:\n${usage}`, cause });
  }
}
