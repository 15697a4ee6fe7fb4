import { clusterView, stepsOf } from '../overlord/deploy/planner.ts';
import type { MachineRecord } from '../contracts/machine-record.ts';
import type { Role } from '../contracts/roles.ts';
import { unitsForSpec } from '../overlord/deploy/machine-units.ts';
import { parseClusterSpec, type ClusterSpec } from '../clusterspec/cluster-spec.ts';

/**
 * The benchmark's cluster, the same in the driver (bench/run.ts) and the overlord's process: a spec of
 * `machines` machines (`masters` of them masters) whose networks fit that many, and their records —
 * machine i is a master for i < masters, and its id, address and host name follow from i.
 */
export interface BenchCluster {
  readonly spec: ClusterSpec;
  readonly records: readonly MachineRecord[];
  /** steps of one machine of each role (write-units, daemon-reload, one start a unit) */
  readonly steps: Readonly<Record<Role, number>>;
  /** unit files one machine of each role writes */
  readonly files: Readonly<Record<Role, number>>;
}

const SPEC_MAX_MINIONS = 500;

export function benchCluster(name: string, machines: number, masters: number): BenchCluster {
  const podPrefix = Math.min(14, 24 - Math.ceil(Math.log2(Math.max(2, machines))));
  // the spec caps minions at SPEC_MAX_MINIONS; what the overlord deploys is what announces, so a larger
  // benchmark announces more than the spec counts (only cluster-ready would wait for the spec's count)
  const spec = parseClusterSpec({
    flags: { name, masters: String(masters), minions: String(Math.min(SPEC_MAX_MINIONS, machines - masters)), 'pod-cidr': `100.64.0.0/${podPrefix}`, 'private-cidr': '10.240.0.0/14' },
  });
  const records = Array.from({ length: machines }, (_, i): MachineRecord => {
    const n = i + 32;
    return Object.freeze({
      schema: 1,
      id: (0x100000 + i).toString(16).padStart(32, '0'),
      role: i < masters ? 'master' : 'minion',
      ip: `10.${240 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`,
      hostname: `${i < masters ? 'master' : 'minion'}-${i}`,
      bootId: (0xb00 + i).toString(16).padStart(32, '0'),
      announcedAt: '2026-01-01T00:00:00Z',
    });
  });
  const unitsFor = unitsForSpec(spec);
  const view = clusterView(records.slice(0, masters), new Map());
  const master = unitsFor(records[0]!, view);
  const minion = unitsFor(records[masters] ?? records[0]!, { ...view, deployedMasters: view.masters });
  return {
    spec,
    records,
    steps: { master: stepsOf(master).length, minion: stepsOf(minion).length },
    files: { master: master.files.length, minion: minion.files.length },
  };
}
