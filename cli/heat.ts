import { randomBytes } from 'node:crypto';
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { renderUserData } from '../cloud-config/index.ts';
import { CorekubeError } from '../core/errors.ts';
import { renderClusterTemplate } from '../heat/cluster-template.ts';
import { NODE_ROLES, renderNodeTemplate, type NodeRole } from '../heat/node-template.ts';
import type { Command } from './command.ts';
import { parseSpecArgs, specUsage } from './spec-options.ts';

/**
 * `corekube heat generate` and `corekube heat node`: parse the spec, render the template, print it or write
 * it with -o. The file is written atomically (temp file + rename) and only after the whole input is valid,
 * so invalid input (exit 2) leaves no file and a failed write leaves the old one.
 */
const OUTPUT = { output: { type: 'string', short: 'o' } } as const;

const generateUsage = `Usage: corekube heat generate [--masters N] [--minions M] [--os flatcar|ubuntu] [-c cluster.yaml] [-o FILE] [spec options]

Prints the Heat (HOT 2021-04-16) template of a whole cluster, or writes it to FILE. Then:
  openstack stack create -t FILE --parameter key_name=KEY --parameter image=IMAGE \\
    --parameter external_network=NET --wait CLUSTER
Scale later with: openstack stack update --existing --parameter minion_count=N --wait CLUSTER

Options:
  -o, --output FILE  write the template to FILE (atomically) instead of stdout
  -h, --help         this text

${specUsage()}
`;

const nodeUsage = `Usage: corekube heat node [--role master|minion] [-c cluster.yaml] [-o FILE] [spec options]

Prints a Heat template that boots ONE more master or minion into an existing cluster. Generate it from the
cluster's own spec (same -c file and flags): the discovery address and versions are baked in. Its parameters
(join_token, overlord_ssh_key, discovery_ca, network, subnet, security_groups) come from the cluster stack;
each parameter's description says where. Then:
  openstack stack create -t FILE --parameter ... --wait CLUSTER-minion-extra-1

Options:
  --role ROLE        master or minion (default minion; also a template parameter)
  -o, --output FILE  write the template to FILE (atomically) instead of stdout
  -h, --help         this text

${specUsage()}
`;

export const heatGenerateCommand: Command = {
  path: ['heat', 'generate'],
  summary: 'print or write the Heat template of a cluster',
  usage: generateUsage,
  async run(argv) {
    const { spec, values } = parseSpecArgs(argv, OUTPUT, generateUsage);
    emit(renderClusterTemplate(spec, renderUserData), values.output);
    return 0;
  },
};

export const heatNodeCommand: Command = {
  path: ['heat', 'node'],
  summary: 'print or write a Heat template booting one more master or minion',
  usage: nodeUsage,
  async run(argv) {
    const { spec, values } = parseSpecArgs(argv, { ...OUTPUT, role: { type: 'string' } }, nodeUsage);
    const role = values.role ?? 'minion';
    if (!(NODE_ROLES as readonly string[]).includes(role)) {
      throw new CorekubeError('E_USAGE', `--role must be master or minion, got ${JSON.stringify(role)}`, { hint: 'use --role minion or --role master' });
    }
    emit(renderNodeTemplate(spec, role as NodeRole, renderUserData), values.output);
    return 0;
  },
};

function emit(text: string, output: string | undefined): void {
  if (output === undefined) process.stdout.write(text);
  else writeFileAtomically(output, text);
}

/** Writes beside the target and renames over it: readers see the old file or the whole new one. */
export function writeFileAtomically(path: string, text: string): void {
  const temp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    writeFileSync(temp, text, { flag: 'wx', mode: 0o644 });
    renameSync(temp, path);
  } catch (cause) {
    rmSync(temp, { force: true });
    throw new CorekubeError('E_IO', `cannot write ${path}: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message}`, {
      hint: 'check that the directory exists and is writable',
      cause,
    });
  }
}
