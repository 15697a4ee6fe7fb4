import { toYaml } from '../core/yaml.ts';
import { addressPlan, type AddressPlan } from '../spec/address-plan.ts';
import { SPEC_FIELDS, type ClusterSpec } from '../spec/cluster-spec.ts';
import { CONFIG_DIR, configPath, JOINER_USER, MACHINE_PATHS } from './machine-paths.ts';
import { PLACEHOLDERS } from './placeholders.ts';

/**
 * /etc/corekube/overlord.yaml: what the overlord container reads at start (`overlord --config FILE`).
 * Contract with the overlord room, schema 1:
 * - `spec`: the cluster spec in the `-c cluster.yaml` format WITHOUT `masters`/`minions` (counts change
 *   without the overlord's user_data changing) — feed it to parseClusterSpec({ file: spec, flags: {
 *   masters, minions } }) with the counts below;
 * - `initialCounts`: the masters and minions of the initial stack, decimal strings filled by Heat
 *   (`''` when the machine was booted by hand: then there is no initial set to wait for);
 * - `addresses`: the address plan (discovery, overlord, gateway, service IPs, discovery endpoint);
 * - `files`: where the secrets and Heat signal files are, and where state goes. No secret is in this file.
 */
export const OVERLORD_CONFIG_SCHEMA = 1;

export interface SignalFiles {
  /** one line: the wait-condition handle's endpoint, '' = nothing to signal */
  readonly url: string;
  /** one line `X-Auth-Token: <token>`, mode 0600 (for `curl -H @file`) */
  readonly header: string;
}

export interface OverlordConfigFile {
  readonly schema: typeof OVERLORD_CONFIG_SCHEMA;
  readonly spec: Record<string, unknown>;
  readonly initialCounts: { readonly masters: string; readonly minions: string };
  readonly addresses: AddressPlan;
  readonly discovery: { readonly endpoint: string; readonly joinerUser: string };
  readonly files: {
    /** the join token (password the overlord gives discovery's `joiner` user), mode 0600 */
    readonly joinToken: string;
    /** overlord_ready: signal once with data "<base64 ssh key line>:<base64 discovery CA PEM>" */
    readonly readySignal: SignalFiles;
    /** cluster_ready: signal when every node of the initial stack is deployed */
    readonly clusterReadySignal: SignalFiles;
    /** the overlord's own state (SSH key pair, CAs), mounted read-write; everything else is read-only */
    readonly stateDir: string;
    readonly configDir: string;
  };
}

/** The spec as a cluster.yaml object, minus the counts. Undefined fields are left out. */
export function specWithoutCounts(spec: ClusterSpec): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of SPEC_FIELDS) {
    if (f.path === 'masters' || f.path === 'minions') continue;
    const parts = f.path.split('.');
    let from: unknown = spec;
    for (const p of parts) from = (from as Record<string, unknown> | undefined)?.[p];
    if (from === undefined) continue;
    let to = out;
    for (const p of parts.slice(0, -1)) to = (to[p] ??= {}) as Record<string, unknown>;
    to[parts.at(-1)!] = Array.isArray(from) ? [...from] : from;
  }
  return out;
}

export function overlordConfig(spec: ClusterSpec): OverlordConfigFile {
  const plan = addressPlan(spec);
  return {
    schema: OVERLORD_CONFIG_SCHEMA,
    spec: specWithoutCounts(spec),
    initialCounts: { masters: PLACEHOLDERS.masterCount, minions: PLACEHOLDERS.minionCount },
    addresses: plan,
    discovery: { endpoint: plan.discoveryEndpoint, joinerUser: JOINER_USER },
    files: {
      joinToken: configPath('joinToken'),
      readySignal: { url: configPath('readyUrl'), header: configPath('readyHeader') },
      clusterReadySignal: { url: configPath('clusterReadyUrl'), header: configPath('clusterReadyHeader') },
      stateDir: MACHINE_PATHS.overlordState,
      configDir: CONFIG_DIR,
    },
  };
}

export function renderOverlordConfig(spec: ClusterSpec): string {
  return toYaml(overlordConfig(spec), { header: '# corekube overlord configuration (cloud-config/overlord-config.ts), schema 1' });
}
