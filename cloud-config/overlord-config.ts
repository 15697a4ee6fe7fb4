import { toYaml } from '../core/yaml.ts';
import { addressPlan } from '../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { SPEC_FIELDS } from '../clusterspec/fields.ts';
import { configPath, MACHINE_PATHS } from './machine-paths.ts';
import { PLACEHOLDERS } from './placeholders.ts';

/**
 * /etc/corekube/overlord.yaml: the cluster spec in the `-c cluster.yaml` format, so the overlord container
 * reads it with the one spec parser (`corekube overlord --config /etc/corekube/overlord.yaml`). `masters`
 * and `minions` are the placeholders of the initial counts: Heat fills them with decimal strings, which the
 * parser takes as numbers, and the overlord's user_data stays the same when a count changes.
 * Everything else the overlord needs is derived or fixed, not repeated here: the addresses from
 * addressPlan(spec), the file paths from machine-paths.ts (CONFIG_FILES, MACHINE_PATHS). The header
 * comment lists them for a person reading the file. No secret is in this file.
 */
export function overlordSpecFile(spec: ClusterSpec): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of SPEC_FIELDS) {
    // the overlord server count is the template's (overlord_count): no overlord reads it, and leaving it
    // out keeps every overlord's user_data the same whatever the count
    if (f.path === 'overlords') continue;
    const parts = f.path.split('.');
    let from: unknown = spec;
    for (const p of parts) from = (from as Record<string, unknown> | undefined)?.[p];
    if (f.path === 'masters') from = PLACEHOLDERS.masterCount;
    if (f.path === 'minions') from = PLACEHOLDERS.minionCount;
    if (from === undefined) continue;
    let to = out;
    for (const p of parts.slice(0, -1)) to = (to[p] ??= {}) as Record<string, unknown>;
    to[parts.at(-1)!] = Array.isArray(from) ? [...from] : from;
  }
  return out;
}

const stem = (path: string) => path.replace(/\.url$/, '');

export function renderOverlordConfig(spec: ClusterSpec): string {
  const plan = addressPlan(spec);
  const header = [
    '# corekube overlord: the cluster spec (corekube -c format), written by cloud-config at first boot.',
    `# discovery ${plan.discoveryEndpoint} (etcd user for nodes: joiner), overlord ${plan.overlord}`,
    `# join token: ${configPath('joinToken')}; state: ${MACHINE_PATHS.overlordState}`,
    `# Heat signals: ${stem(configPath('readyUrl'))}.{url,header} (overlord_ready), ${stem(configPath('clusterReadyUrl'))}.{url,header} (cluster_ready)`,
  ].join('\n');
  return toYaml(overlordSpecFile(spec), { header });
}
