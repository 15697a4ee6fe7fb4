import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { ParseArgsConfig } from 'node:util';
import { InvalidInputError, type FieldProblem } from '../core/errors.ts';
import { parseYaml } from '../core/yaml.ts';
import { parseClusterSpec, type ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { envNameOf, SPEC_FIELDS } from '../clusterspec/fields.ts';
import { parseOptions } from './command.ts';

/**
 * The one way a CLI command reads a ClusterSpec: every SPEC_FIELDS flag (`--pod-cidr 10.244.0.0/14`), the
 * `COREKUBE_*` environment and a YAML file (`-c cluster.yaml`), in that order of precedence, through
 * parseClusterSpec. Every problem — a bad flag value, an unreadable or broken file — is reported at once as
 * one InvalidInputError (exit 2), so a command writes nothing on invalid input.
 */
type Options = NonNullable<ParseArgsConfig['options']>;
type StringOption = { type: 'string'; short?: string };

/** The edges a command reads from, passed in so tests need neither the real env nor files. */
export interface SpecInputs {
  env: Readonly<Record<string, string | undefined>>;
  readFile(path: string): string;
}

export const processInputs: SpecInputs = {
  env: process.env,
  readFile: (path) => readFileSync(path, 'utf8'),
};

/** One short line per spec flag, for --help. The field's YAML path and env name are added by specUsage. */
const DESCRIPTIONS: Readonly<Record<string, string>> = {
  name: 'cluster name, prefix of every server name',
  masters: 'number of masters: 1, 3 or 5',
  minions: 'number of minions: 0..500',
  os: 'OS profile of the image: flatcar or ubuntu',
  'api-load-balancer': 'API endpoint: octavia (a load balancer in front of the masters; default with 3 or 5), node-local (a proxy on every minion in front of every master) or none (the first master)',
  'cert-renew-before-days': 'the overlord issues a machine certificate again this many days before it expires (1..180)',
  'cloud-provider': 'openstack (cloud controller manager + Cinder CSI, from an application credential given to the stack; default) or none',
  'kubernetes-version': 'Kubernetes release tag',
  'etcd-version': 'etcd release tag',
  'flannel-version': 'flannel release tag',
  'containerd-version': 'containerd release tag',
  'cni-plugins-version': 'CNI plugins release tag',
  'private-cidr': 'private network of the machines',
  'pod-cidr': 'pod network (flannel)',
  'service-cidr': 'Kubernetes service network',
  'admin-cidr': 'who may SSH to the overlord and reach the API (default: the private network)',
  'node-port-cidr': 'who may reach NodePorts on minions (default: closed)',
  'external-network': 'Neutron network of floating IPs and the router gateway',
  'dns-nameservers': 'comma-separated DNS servers of the private subnet',
  'pod-subnet-length': "prefix length of each machine's pod subnet",
  'vxlan-id': 'flannel VXLAN id',
  image: 'Glance image of every server',
  'key-name': 'Nova key pair for SSH to the servers',
  'discovery-flavor': 'flavor of the discovery server',
  'overlord-flavor': 'flavor of the overlord server',
  'master-flavor': 'flavor of the masters',
  'minion-flavor': 'flavor of the minions',
  'overlord-image': 'container image the overlord server runs',
  'runc-version': 'runc release tag',
  'coredns-version': 'CoreDNS release tag (the cluster DNS add-on)',
  'pause-version': 'pause image tag (the pod sandbox), without a v',
  'release-base-url': 'a corekube mirror machines download release artifacts from (default: each upstream)',
  'release-digests': 'FILE: the corekube-mirror.json of `corekube mirror build`, the digests machines check',
  'registry-mirror': 'registry containerd pulls the cluster\'s images through (mirror of registry.k8s.io)',
};

/** parseArgs options for every spec flag plus `-c/--config`. */
export function specOptionConfig(): Record<string, StringOption> {
  const out: Record<string, StringOption> = { config: { type: 'string', short: 'c' } };
  for (const f of SPEC_FIELDS) out[f.flag] = { type: 'string' };
  return out;
}

/** The --help lines of the spec options, ready to append to a command's usage. */
export function specUsage(): string {
  const rows: [string, string][] = [['-c, --config FILE', 'YAML cluster spec (fields as in the brackets below)']];
  for (const f of SPEC_FIELDS) {
    const def = Array.isArray(f.default) ? (f.default.length ? f.default.join(',') : undefined) : f.default;
    const facts = [f.path, envNameOf(f.flag), def === undefined || typeof def === 'object' ? 'no default' : `default ${def}`];
    rows.push([`--${f.flag} ${f.kind === 'int' ? 'N' : f.kind === 'list' ? 'A,B' : f.kind === 'digests' ? 'FILE' : 'VALUE'}`, `${DESCRIPTIONS[f.flag] ?? f.path} [${facts.join('; ')}]`]);
  }
  const width = Math.max(...rows.map(([l]) => l.length));
  return ['Cluster spec (flag > env > file > default):', ...rows.map(([l, r]) => `  ${l.padEnd(width)}  ${r}`)].join('\n');
}

type ValuesOf<O extends Options> = { [K in keyof O]?: O[K] extends { type: 'boolean' } ? boolean : string };

/**
 * Parses argv holding the spec flags plus the command's own `extra` options. Unknown options are usage
 * errors (exit 2); the spec itself is validated once, with every problem of flags, env and file together.
 */
export function parseSpecArgs<O extends Options>(
  argv: readonly string[],
  extra: O,
  usage: string,
  inputs: SpecInputs = processInputs,
): { spec: ClusterSpec; values: ValuesOf<O> } {
  const specOptions = specOptionConfig();
  const clash = Object.keys(extra).find((k) => k in specOptions);
  if (clash !== undefined) throw new Error(`option --${clash} is a spec option: a command may not redefine it`);
  const { values } = parseOptions(argv, { ...specOptions, ...extra }, usage);
  const all = values as Record<string, string | boolean | undefined>;

  const problems: FieldProblem[] = [];
  const configPath = all.config as string | undefined;
  let file: unknown;
  if (configPath !== undefined) file = readSpecFile(configPath, inputs, problems);

  const flags: Record<string, unknown> = {};
  for (const f of SPEC_FIELDS) flags[f.flag] = all[f.flag] as string | undefined;
  // a `digests` field names a file (flag, env, or a string in the YAML file, relative to it): read it here, so
  // the parser gets the map itself and stays pure
  for (const f of SPEC_FIELDS.filter((x) => x.kind === 'digests')) {
    const env = inputs.env[envNameOf(f.flag)];
    const fromFile = lookup(file, f.path);
    const [where, named] =
      typeof flags[f.flag] === 'string' ? [`--${f.flag}`, flags[f.flag] as string]
      : env ? [envNameOf(f.flag), env]
      : typeof fromFile === 'string' && configPath !== undefined ? [`${configPath}: ${f.path}`, path.resolve(path.dirname(configPath), fromFile)]
      : [undefined, undefined];
    if (where === undefined || named === undefined) continue;
    const value = readDataFile(named, where, inputs, problems);
    if (value === undefined) continue;
    if (where === `${configPath}: ${f.path}`) setPath(file as Record<string, unknown>, f.path, value);
    else flags[f.flag] = value;
  }

  let spec: ClusterSpec | undefined;
  try {
    spec = parseClusterSpec({ flags, file, fileName: configPath, env: inputs.env });
  } catch (err) {
    if (!(err instanceof InvalidInputError)) throw err;
    problems.push(...err.problems);
  }
  if (problems.length > 0 || spec === undefined) throw new InvalidInputError('the cluster spec is invalid', problems);

  const own = {} as Record<string, unknown>;
  for (const k of Object.keys(extra)) own[k] = all[k];
  return { spec, values: own as ValuesOf<O> };
}

/** A JSON or YAML data file a spec field names (`--release-digests FILE`), parsed; undefined after a problem. */
function readDataFile(file: string, field: string, inputs: SpecInputs, problems: FieldProblem[]): unknown {
  let text: string;
  try {
    text = inputs.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    problems.push({ field, value: file, message: `cannot be read (${code})`, fix: 'give the path of the corekube-mirror.json that corekube mirror build wrote' });
    return undefined;
  }
  try {
    return parseYaml(text);
  } catch (err) {
    problems.push({ field, value: file, message: `is not JSON or YAML: ${(err as Error).message.split('\n')[0]}`, fix: 'pass the corekube-mirror.json of corekube mirror build, unchanged' });
    return undefined;
  }
}

function lookup(file: unknown, dotted: string): unknown {
  let node = file;
  for (const p of dotted.split('.')) node = node !== null && typeof node === 'object' ? (node as Record<string, unknown>)[p] : undefined;
  return node;
}

function setPath(file: Record<string, unknown>, dotted: string, value: unknown): void {
  const parts = dotted.split('.');
  let node = file;
  for (const p of parts.slice(0, -1)) node = node[p] as Record<string, unknown>;
  node[parts.at(-1)!] = value;
}

function readSpecFile(path: string, inputs: SpecInputs, problems: FieldProblem[]): unknown {
  let text: string;
  try {
    text = inputs.readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    problems.push({ field: '--config', value: path, message: `cannot be read (${code})`, fix: 'give the path of a readable YAML cluster spec' });
    return undefined;
  }
  try {
    return parseYaml(text);
  } catch (err) {
    const first = (err as Error).message.split('\n')[0];
    problems.push({ field: '--config', value: path, message: `is not valid YAML: ${first}`, fix: 'fix the YAML syntax (duplicate keys are errors too)' });
    return undefined;
  }
}
