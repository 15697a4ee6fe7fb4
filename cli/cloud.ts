import { renderUserData } from '../cloud-config/index.ts';
import { parseAuthConfig, type OsEnv } from '../cloud/auth-config.ts';
import { OpenStackError } from '../cloud/errors.ts';
import { HeatClient, type Stack, type StackEvent, type StackRef, type TemplateInput } from '../cloud/heat-client.ts';
import { KeystoneSession } from '../cloud/keystone.ts';
import { isSuccessFor } from '../cloud/stack-status.ts';
import { CorekubeError, InvalidInputError, type FieldProblem } from '../core/errors.ts';
import { clusterTemplate } from '../heat/cluster-template.ts';
import { skewProblem } from '../contracts/overlord-channel.ts';
import { KUBERNETES_MINORS } from '../clusterspec/fields.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { Command } from './command.ts';
import { parseSpecArgs, specUsage } from './spec-options.ts';

/**
 * `corekube up`, `corekube down` and `corekube stack status`: a cluster's Heat stack on a real OpenStack
 * cloud, through corekube's own Keystone + Heat client (credentials from the usual OS_* variables, e.g. a
 * sourced openrc). The stack name defaults to the cluster name of the spec (--name, COREKUBE_NAME or -c).
 * Each command is a thin run over `CloudIo` so tests drive it against a real (local) Heat.
 */
export interface CloudIo {
  /** A Heat client for the user's cloud (default: from OS_* of the process environment). */
  connect(): Promise<HeatClient>;
  /** The template `up` creates from the spec (default: heat/'s cluster template). */
  template(spec: ClusterSpec): TemplateInput;
  out(text: string): void;
  err(text: string): void;
  /** Aborted on Ctrl-C: stop following; the stack goes on in Heat. */
  signal?: AbortSignal;
  /** Poll sleep, injectable for tests. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export function processCloudIo(env: OsEnv = process.env): CloudIo {
  return {
    async connect() {
      return new HeatClient(await KeystoneSession.open(parseAuthConfig(env)));
    },
    template: (spec) => ({ template: clusterTemplate(spec, renderUserData) }),
    out: (t) => void process.stdout.write(t),
    err: (t) => void process.stderr.write(t),
  };
}

const CREDENTIALS = `Credentials: the OS_* variables of your cloud's openrc (OS_AUTH_URL, OS_USERNAME, OS_PASSWORD,
OS_PROJECT_NAME, OS_USER_DOMAIN_NAME, OS_PROJECT_DOMAIN_NAME, OS_REGION_NAME, OS_INTERFACE), or an
application credential (OS_APPLICATION_CREDENTIAL_ID, OS_APPLICATION_CREDENTIAL_SECRET).`;

const upUsage = `Usage: corekube up [spec options] [-c cluster.yaml] [-P|--parameter KEY=VALUE]… [--stack NAME]
                   [--timeout MINUTES] [--no-wait]

Generates the cluster's Heat template from the spec and creates the stack, then follows it: prints each
event as Heat reports it and, on CREATE_COMPLETE (every initial node deployed), the stack's outputs.
Ctrl-C stops following; the stack goes on in Heat (corekube stack status shows it).

Options:
  -P, --parameter KEY=VALUE  a template parameter (key_name, image, external_network, minion_count, …);
                             repeat for several
  --stack NAME               stack name (default: the cluster name)
  --timeout MINUTES          Heat's stack timeout (default: Heat's, usually 60)
  --no-wait                  return once Heat accepted the stack
  -h, --help                 this text

${CREDENTIALS}

${specUsage()}`;

const downUsage = `Usage: corekube down [--stack NAME] [--no-wait] [spec options]

Deletes the cluster's stack and every server, network and volume in it, following Heat's events until it is
gone. A stack that does not exist is not an error.

Options:
  --stack NAME  stack name (default: the cluster name of the spec: --name, COREKUBE_NAME or -c file)
  --no-wait     return once Heat accepted the delete

${CREDENTIALS}`;

const statusUsage = `Usage: corekube stack status [--stack NAME] [--json] [spec options]

Prints the stack's status, its reason and its outputs (addresses, how to follow the overlord).

Options:
  --stack NAME  stack name (default: the cluster name of the spec: --name, COREKUBE_NAME or -c file)
  --json        one JSON object: {"name","id","status","statusReason","createdTime","updatedTime","outputs":{…}}

${CREDENTIALS}`;

const UP_OPTIONS = {
  parameter: { type: 'string', short: 'P', multiple: true },
  stack: { type: 'string' },
  timeout: { type: 'string' },
  'no-wait': { type: 'boolean' },
} as const;
const DOWN_OPTIONS = { stack: { type: 'string' }, 'no-wait': { type: 'boolean' } } as const;
const UPGRADE_OPTIONS = { stack: { type: 'string' }, to: { type: 'string' }, rollback: { type: 'boolean' }, 'no-wait': { type: 'boolean' } } as const;

const upgradeUsage = `Usage: corekube upgrade (--to vX.Y.Z | --rollback) [--stack NAME] [--no-wait] [spec options]

Changes the Kubernetes release of a running cluster through its Heat stack: a stack update of kubernetes_version
(and previous_kubernetes_version, the release it replaces, so that --rollback knows where to go back). The
overlord reads it from the stack within 15 s and rolls it out — masters one at a time, then each minion drained
(PodDisruptionBudgets respected), changed, Ready and uncordoned; follow it with corekube status. No server is
replaced. The same as openstack stack update --existing --parameter kubernetes_version=…, with the skew policy
checked first: one minor at a time upwards, any patch of the same minor (down too), never a minor back.

Options:
  --to V                  the Kubernetes release to go to (vMAJOR.MINOR.PATCH)
  --rollback              go back to the release the last corekube upgrade replaced
  --stack NAME            stack name (default: the cluster name of the spec: --name, COREKUBE_NAME or -c file)
  --no-wait               return once Heat accepted the update`;
const STATUS_OPTIONS = { stack: { type: 'string' }, json: { type: 'boolean' } } as const;

export function upCommand(io: CloudIo = processCloudIo()): Command {
  return {
    path: ['up'],
    summary: 'create the cluster\'s Heat stack on an OpenStack cloud and follow it to CREATE_COMPLETE',
    usage: upUsage,
    async run(argv) {
      const { spec, values } = parseSpecArgs(argv, UP_OPTIONS, upUsage);
      const raw = values as { parameter?: string[]; stack?: string; timeout?: string; 'no-wait'?: boolean };
      const problems: FieldProblem[] = [];
      const parameters = parseParameters(raw.parameter ?? [], problems);
      const timeoutMins = parseTimeout(raw.timeout, problems);
      const input = io.template(spec);
      problems.push(...missingParameters(input, parameters));
      if (problems.length > 0) throw new InvalidInputError('corekube up', problems, 'E_USAGE');
      return interruptible(io, (io2) =>
        up(io2, { name: raw.stack ?? spec.name, input: { ...input, parameters: { ...input.parameters, ...parameters } }, timeoutMins, wait: !raw['no-wait'] }),
      );
    },
  };
}

export function downCommand(io: CloudIo = processCloudIo()): Command {
  return {
    path: ['down'],
    summary: 'delete the cluster\'s Heat stack and wait until it is gone',
    usage: downUsage,
    async run(argv) {
      const { spec, values } = parseSpecArgs(argv, DOWN_OPTIONS, downUsage);
      return interruptible(io, (io2) => down(io2, values.stack ?? spec.name, !values['no-wait']));
    },
  };
}

export function upgradeCommand(io: CloudIo = processCloudIo()): Command {
  return {
    path: ['upgrade'],
    summary: 'change a running cluster\'s Kubernetes release (or roll it back) through its Heat stack',
    usage: upgradeUsage,
    async run(argv) {
      const { spec, values } = parseSpecArgs(argv, UPGRADE_OPTIONS, upgradeUsage);
      const to = values.to;
      if ((to === undefined) === (values.rollback !== true)) {
        throw new CorekubeError('E_USAGE', 'corekube upgrade takes either --to or --rollback', { hint: 'for example: corekube upgrade --to v1.36.5 --stack corekube' });
      }
      return interruptible(io, (io2) => upgrade(io2, { name: values.stack ?? spec.name, to, wait: !values['no-wait'] }));
    },
  };
}

/** The stack update behind `corekube upgrade`: kubernetes_version (and the release it replaces), the skew policy checked first. */
export async function upgrade(io: CloudIo, opts: { name: string; to: string | undefined; wait: boolean }): Promise<number> {
  const heat = await io.connect();
  const stack = await heat.showStack(opts.name, { outputs: false });
  const from = stack.parameters.kubernetes_version;
  if (from === undefined) throw new CorekubeError('E_USAGE', `stack ${stack.name} has no kubernetes_version parameter`, { hint: 'regenerate its template with this corekube (corekube heat generate) and update the stack with it first' });
  const previous = stack.parameters.previous_kubernetes_version ?? '';
  const to = opts.to ?? previous;
  if (to === '') throw new CorekubeError('E_USAGE', `--rollback: stack ${stack.name} records no release to go back to`, { hint: 'a rollback goes back to what the last corekube upgrade replaced; give --to instead' });
  const problem = skewProblem(from, to, KUBERNETES_MINORS.concat());
  if (problem) throw new InvalidInputError('corekube upgrade', [{ field: opts.to === undefined ? '--rollback' : '--to', value: to, message: problem, fix: `the cluster runs ${from}: go one minor at a time, or to a patch release of ${from.replace(/\.\d+$/, '.x')}` }], 'E_USAGE');
  if (to === from) {
    io.out(`stack ${stack.name} is at ${from} already\n`);
    return 0;
  }
  const { sinceEventId } = await heat.updateStack(stack, { parameters: { kubernetes_version: to, previous_kubernetes_version: from } });
  io.out(`stack ${stack.name}: kubernetes_version ${from} -> ${to} (UPDATE_IN_PROGRESS); the overlord rolls it out: follow it with corekube status\n`);
  if (!opts.wait) return 0;
  const updated = await follow(io, heat, stack, 'UPDATE', sinceEventId);
  if (updated === undefined) return 130;
  if (isSuccessFor(updated.status, 'UPDATE')) return 0;
  throw new CorekubeError('E_HEAT', `stack ${stack.name} ended ${updated.status}: ${updated.statusReason}`, { hint: 'the events above name the failed resource' });
}

export function stackStatusCommand(io: CloudIo = processCloudIo()): Command {
  return {
    path: ['stack', 'status'],
    summary: 'print the cluster stack\'s status and outputs',
    usage: statusUsage,
    async run(argv) {
      const { spec, values } = parseSpecArgs(argv, STATUS_OPTIONS, statusUsage);
      const heat = await io.connect();
      const stack = await heat.showStack(values.stack ?? spec.name);
      io.out(values.json ? `${JSON.stringify(stackJson(stack))}\n` : formatStack(stack));
      return stack.status.endsWith('_FAILED') ? 1 : 0;
    },
  };
}

export async function up(io: CloudIo, opts: { name: string; input: TemplateInput; timeoutMins: number | undefined; wait: boolean }): Promise<number> {
  const heat = await io.connect();
  const ref = await heat.createStack({ name: opts.name, ...opts.input, ...(opts.timeoutMins !== undefined ? { timeoutMins: opts.timeoutMins } : {}) });
  io.out(`stack ${ref.name} ${ref.id}: CREATE_IN_PROGRESS\n`);
  if (!opts.wait) {
    io.out(`follow it with: corekube stack status --stack ${ref.name}\n`);
    return 0;
  }
  const stack = await follow(io, heat, ref, 'CREATE');
  if (stack === undefined) return 130;
  io.out(formatStack(stack));
  if (isSuccessFor(stack.status, 'CREATE')) return 0;
  throw new CorekubeError('E_HEAT', `stack ${ref.name} ended ${stack.status}: ${stack.statusReason}`, {
    hint: `the events above name the failed resource; delete the stack with corekube down --stack ${ref.name}`,
  });
}

export async function down(io: CloudIo, name: string, wait: boolean): Promise<number> {
  const heat = await io.connect();
  let ref: StackRef;
  try {
    ref = await heat.resolve(name);
  } catch (err) {
    if (err instanceof OpenStackError && err.status === 404) {
      io.err(`corekube: there is no stack ${name}: nothing to delete\n`);
      return 0;
    }
    throw err;
  }
  const { sinceEventId, existed } = await heat.deleteStack(ref);
  if (!existed) {
    // Heat still finds a deleted stack by name (DELETE_COMPLETE) until a new one takes the name.
    io.err(`corekube: stack ${name} is already deleted: nothing to delete\n`);
    return 0;
  }
  io.out(`stack ${ref.name} ${ref.id}: DELETE_IN_PROGRESS\n`);
  if (!wait) return 0;
  const stack = await follow(io, heat, ref, 'DELETE', sinceEventId);
  if (stack === undefined) return 130;
  if (stack.status === 'DELETE_COMPLETE') {
    io.out(`stack ${ref.name}: DELETE_COMPLETE\n`);
    return 0;
  }
  throw new CorekubeError('E_HEAT', `stack ${ref.name} ended ${stack.status}: ${stack.statusReason}`, {
    hint: 'a resource could not be deleted (the events above name it): fix it in the cloud, then run corekube down again',
  });
}

/** Runs `fn` with Ctrl-C turned into the io's abort signal (unless the io brings its own), for its duration only. */
async function interruptible(io: CloudIo, fn: (io: CloudIo) => Promise<number>): Promise<number> {
  if (io.signal) return fn(io);
  const controller = new AbortController();
  const onInterrupt = () => controller.abort(new CorekubeError('E_HEAT', 'interrupted'));
  process.once('SIGINT', onInterrupt);
  try {
    return await fn({ ...io, signal: controller.signal });
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

/** Follows a stack action, printing events; undefined when the user stopped following (Ctrl-C). */
async function follow(io: CloudIo, heat: HeatClient, ref: StackRef, action: 'CREATE' | 'UPDATE' | 'DELETE', sinceEventId?: string): Promise<Stack | undefined> {
  try {
    return await heat.waitForStack(ref, action, {
      sinceEventId,
      onEvent: (e) => io.out(formatEvent(e)),
      ...(io.signal ? { signal: io.signal } : {}),
      ...(io.sleep ? { sleep: io.sleep } : {}),
    });
  } catch (err) {
    if (io.signal?.aborted) {
      io.err(`corekube: stopped following; stack ${ref.name} goes on in Heat: corekube stack status --stack ${ref.name}\n`);
      return undefined;
    }
    throw err;
  }
}

/** `-P key=value` pairs → parameters; a pair without '=' or with an empty key is a problem. Pure. */
export function parseParameters(pairs: readonly string[], problems: FieldProblem[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs) {
    const i = pair.indexOf('=');
    if (i <= 0) {
      problems.push({ field: '--parameter', value: pair, message: 'is not KEY=VALUE', fix: 'write it as --parameter key_name=mykey' });
      continue;
    }
    const key = pair.slice(0, i);
    if (key in out) {
      problems.push({ field: '--parameter', value: pair, message: `sets ${key} twice`, fix: 'give each parameter once' });
      continue;
    }
    out[key] = pair.slice(i + 1);
  }
  return out;
}

function parseTimeout(raw: string | undefined, problems: FieldProblem[]): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1440) {
    problems.push({ field: '--timeout', value: raw, message: 'is not a whole number of minutes between 1 and 1440', fix: 'for example --timeout 90' });
    return undefined;
  }
  return n;
}

/**
 * Parameters the template declares without a default that nobody gives, and given parameters the template
 * does not declare: both would be Heat's 400 after a round trip; found here, each with its fix. Pure.
 */
export function missingParameters(input: TemplateInput, given: Readonly<Record<string, string>>): FieldProblem[] {
  if (typeof input.template !== 'object') return [];
  const declared = ((input.template as { parameters?: Record<string, { default?: unknown }> }).parameters ?? {}) as Record<string, { default?: unknown }>;
  const problems: FieldProblem[] = [];
  for (const [name, p] of Object.entries(declared)) {
    if (p.default === undefined && given[name] === undefined && input.parameters?.[name] === undefined) {
      const flag = SPEC_FLAG_OF[name];
      problems.push({
        field: name, value: undefined, message: 'has no default and is not given',
        fix: `give --parameter ${name}=VALUE${flag ? ` (or the spec option --${flag})` : ''}`,
      });
    }
  }
  for (const name of Object.keys(given)) {
    if (!(name in declared)) {
      problems.push({ field: `--parameter ${name}`, value: given[name], message: 'is not a parameter of the template', fix: `use one of: ${Object.keys(declared).join(', ')}` });
    }
  }
  return problems;
}

/** Template parameters that a spec option also sets (as the parameter's default). */
const SPEC_FLAG_OF: Readonly<Record<string, string>> = { key_name: 'key-name', image: 'image', external_network: 'external-network' };

/** One event as a line: `12:00:03  overlord  CREATE_COMPLETE  state changed`. Pure. */
export function formatEvent(e: StackEvent): string {
  const time = /T(\d\d:\d\d:\d\d)/.exec(e.time)?.[1] ?? e.time;
  const reason = e.statusReason && e.statusReason !== 'state changed' ? `  ${e.statusReason}` : '';
  return `${time}  ${e.resourceName.padEnd(22)}  ${e.status.padEnd(20)}${reason}\n`;
}

/** Status + outputs, for a person. Outputs sorted by key; strings as they are, the rest as JSON. Pure. */
export function formatStack(s: Stack): string {
  const lines = [
    `stack    ${s.name} (${s.id})`,
    `status   ${s.status}${s.statusReason ? ` — ${s.statusReason}` : ''}`,
    `created  ${s.createdTime ?? '-'}${s.updatedTime ? `   updated ${s.updatedTime}` : ''}`,
  ];
  const outputs = [...s.outputs].sort((a, b) => a.key.localeCompare(b.key));
  if (outputs.length > 0) {
    lines.push('outputs');
    const width = Math.max(...outputs.map((o) => o.key.length));
    for (const o of outputs) {
      const value = o.error ? `(unavailable: ${o.error})` : typeof o.value === 'string' ? o.value : JSON.stringify(o.value);
      lines.push(`  ${o.key.padEnd(width)}  ${value}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export function stackJson(s: Stack): Record<string, unknown> {
  return {
    name: s.name,
    id: s.id,
    status: s.status,
    statusReason: s.statusReason,
    createdTime: s.createdTime ?? null,
    updatedTime: s.updatedTime ?? null,
    outputs: Object.fromEntries([...s.outputs].sort((a, b) => a.key.localeCompare(b.key)).map((o) => [o.key, o.value])),
  };
}
