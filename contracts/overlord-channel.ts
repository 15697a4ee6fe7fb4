import { InvalidInputError, type FieldProblem } from '../core/errors.ts';

/**
 * The channel from the Heat stack to the running overlords: one resource of the stack, `overlord_channel` (an
 * OS::Heat::DeployedServer: Heat gives it a stack user that may read that resource's metadata and nothing else),
 * whose metadata carries what the user may change after creation with `openstack stack update --existing`, under
 * `corekube_members`, and — with the OpenStack cloud provider — the application credential under `corekube_cloud`
 * (contracts/openstack-cloud.ts). Heat updates the metadata in place on every stack update (the stack user stays);
 * the overlord polls it (overlord/lifecycle/stack-members.ts). Parsed once, here, into a validated value.
 */
export const OVERLORD_CHANNEL = 'overlord_channel';
/** the metadata key of the counts */
export const MEMBERS_METADATA_KEY = 'corekube_members';
/** the metadata key of the versions the stack asks for (`kubernetes_version`) */
export const VERSIONS_METADATA_KEY = 'corekube_versions';

/** The machines the stack asks for, as its parameters say now. */
export interface StackMembers {
  readonly masterCount: number;
  readonly minionCount: number;
}

const MAX_COUNT = 1000;

/**
 * Parses what Heat hands over (untrusted shape; Heat renders a get_param of a number as a number or a string)
 * into StackMembers, or throws an InvalidInputError naming every bad field. `where` names the source.
 */
export function parseStackMembers(value: unknown, where: string): StackMembers {
  const v = (value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {}) as Record<string, unknown>;
  const problems: FieldProblem[] = [];
  const count = (key: string, min: number): number => {
    const raw = v[key];
    const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\d{1,4}$/.test(raw.trim()) ? Number(raw.trim()) : NaN;
    if (!Number.isInteger(n) || n < min || n > MAX_COUNT) {
      problems.push({ field: `${where}.${key}`, value: raw, message: `is not a whole number from ${min} to ${MAX_COUNT}`, fix: 'regenerate the template with `corekube heat generate`: it writes the stack\'s counts there' });
    }
    return n;
  };
  const masterCount = count('master_count', 1);
  const minionCount = count('minion_count', 0);
  if (problems.length > 0) throw new InvalidInputError('the stack\'s member counts do not parse', problems);
  return Object.freeze({ masterCount, minionCount });
}

/**
 * PURE: the index of a server Heat named `<cluster>-<role>-<index>` (heat/servers.ts: ResourceGroup members,
 * `%index%`), from a machine's hostname — a cloud may append its DNS domain (`demo-minion-2.novalocal`).
 * undefined for any other name (a machine booted by hand): such a machine is never removed by a count.
 */
export function memberIndex(cluster: string, role: 'master' | 'minion', hostname: string): number | undefined {
  const head = hostname.split('.')[0]!.toLowerCase();
  const prefix = `${cluster.toLowerCase()}-${role}-`;
  if (!head.startsWith(prefix)) return undefined;
  const rest = head.slice(prefix.length);
  return /^(0|[1-9]\d{0,3})$/.test(rest) ? Number(rest) : undefined;
}

/** The versions the stack asks for, as its parameters say now. */
export interface StackVersions {
  readonly kubernetes: string;
}

const RELEASE_TAG = /^v(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** PURE: a release tag vMAJOR.MINOR.PATCH (what kubernetes_version holds). */
export function isReleaseTag(value: unknown): value is string {
  return typeof value === 'string' && RELEASE_TAG.test(value);
}

/** Parses `corekube_versions` (untrusted shape) into StackVersions, or throws an InvalidInputError naming the field. */
export function parseStackVersions(value: unknown, where: string): StackVersions {
  const v = (value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {}) as Record<string, unknown>;
  const k = typeof v.kubernetes === 'string' ? v.kubernetes.trim() : '';
  if (!RELEASE_TAG.test(k)) {
    throw new InvalidInputError('the stack\'s versions do not parse', [{ field: `${where}.kubernetes`, value: v.kubernetes, message: 'is not a release tag vMAJOR.MINOR.PATCH', fix: 'pass e.g. --parameter kubernetes_version=v1.36.5 to openstack stack update' }]);
  }
  return Object.freeze({ kubernetes: k });
}

/**
 * PURE: why a running cluster cannot go from Kubernetes `from` to `to` (undefined: it can) — upstream's version
 * skew policy: one minor at a time, upwards (kube-apiserver first, then the kubelets: the rollout's order); any
 * patch of the same minor, down too (a rollback of a patch release); never a minor back (the API's storage
 * versions may have moved).
 */
export function skewProblem(from: string, to: string, supportedMinors: readonly string[]): string | undefined {
  const a = RELEASE_TAG.exec(from);
  const b = RELEASE_TAG.exec(to);
  if (!a || !b) return `${!a ? from : to} is not a release tag vMAJOR.MINOR.PATCH`;
  if (!supportedMinors.includes(`${b[1]}.${b[2]}`)) return `Kubernetes ${b[1]}.${b[2]} is not supported (supported minors: ${supportedMinors.join(', ')})`;
  if (a[1] !== b[1]) return `${from} to ${to} changes the major version`;
  const step = Number(b[2]) - Number(a[2]);
  if (step > 1) return `${from} to ${to} skips a minor: upgrade one minor at a time (first to v${a[1]}.${Number(a[2]) + 1}.x)`;
  if (step < 0) return `${from} to ${to} goes back a minor: only a patch release of the same minor can be rolled back`;
  return undefined;
}
