import { parseClusterSpec, type ClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import type { Role } from '../../../contracts/roles.ts';
import { buildUnitContext, PKI_PATHS, type UnitContext } from '../../../units/index.ts';

/** Fixed inputs, so renders (and their snapshots) only change when the units do. */
export const MASTER_IPS = ['10.240.0.32', '10.240.0.33', '10.240.0.34'];
export const MINION_IP = '10.240.0.40';

export function spec(flags: Record<string, unknown> = {}): ClusterSpec {
  return parseClusterSpec({ flags: { name: 'demo', masters: '3', ...flags } });
}

export function context(role: Role, s: ClusterSpec = spec(), masterIps: readonly string[] = MASTER_IPS): UnitContext {
  const ip = role === 'master' ? MASTER_IPS[0]! : MINION_IP;
  return buildUnitContext(s, { id: role === 'master' ? 'a'.repeat(32) : 'b'.repeat(32), role, ip, hostname: `demo-${role}-0` }, { masterIps }, PKI_PATHS);
}
