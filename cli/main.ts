import { CorekubeError, InvalidInputError } from '../core/errors.ts';
import { commands } from './commands.ts';

/**
 * `corekube <command> [subcommand] [options]`: finds the command, runs it, turns errors into a message on
 * stderr and an exit code (2 = bad input, 1 = failure). No room imports the CLI.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const [first, second] = argv;
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    process.stdout.write(usage());
    return first === undefined ? 2 : 0;
  }
  const command = commands.find((c) => c.path.length === 2 ? c.path[0] === first && c.path[1] === second : c.path[0] === first);
  // `corekube mirror --help`: a group of subcommands prints every subcommand's usage
  const group = commands.filter((c) => c.path.length === 2 && c.path[0] === first);
  if (!command && group.length > 0 && (second === undefined || second === '--help' || second === '-h')) {
    process.stdout.write(`${group.map((c) => `corekube ${c.path.join(' ')}: ${c.summary}\n\n${c.usage}`).join('\n\n')}\n`);
    return second === undefined ? 2 : 0;
  }
  if (!command) {
    process.stderr.write(`corekube: unknown command ${JSON.stringify([first, second].filter(Boolean).join(' '))}\n\n${usage()}`);
    return 2;
  }
  const rest = argv.slice(command.path.length);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    return reportError(err);
  }
}

export function reportError(err: unknown): number {
  if (err instanceof InvalidInputError) {
    process.stderr.write(`corekube: ${err.message}\n`);
    return 2;
  }
  if (err instanceof CorekubeError) {
    process.stderr.write(`corekube: ${err.describe()}\n`);
    return err.code === 'E_USAGE' ? 2 : 1;
  }
  process.stderr.write(`corekube: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return 1;
}

function usage(): string {
  const width = Math.max(...commands.map((c) => c.path.join(' ').length));
  return [
    'corekube — turns an OpenStack cloud into a running Kubernetes cluster',
    '',
    'Usage: corekube <command> [options]   (corekube <command> --help for its options)',
    '',
    ...commands.map((c) => `  ${c.path.join(' ').padEnd(width)}  ${c.summary}`),
    '',
  ].join('\n');
}
