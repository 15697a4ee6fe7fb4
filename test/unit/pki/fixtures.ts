import type { MachineRecord } from '../../../contracts/machine-record.ts';
import type { Role } from '../../../contracts/roles.ts';
import { parseClusterSpec, type ClusterSpec } from '../../../clusterspec/cluster-spec.ts';

/** A 3-master cluster on the default networks (private 10.240.0.0/16, services 10.96.0.0/12). */
export const spec: ClusterSpec = parseClusterSpec({ flags: { name: 'demo', masters: '3', minions: '2' } });

export function machine(n: number, role: Role, ip: string): MachineRecord {
  return Object.freeze({
    schema: 1,
    id: n.toString(16).padStart(32, '0'),
    role,
    ip,
    hostname: `demo-${role}-${n}`,
    bootId: '0'.repeat(32),
    announcedAt: '2026-11-21T22:00:00.000Z',
  });
}

export const master1 = machine(1, 'master', '10.240.0.32');
export const master2 = machine(2, 'master', '10.240.0.33');
export const master3 = machine(3, 'master', '10.240.0.34');
export const minion1 = machine(11, 'minion', '10.240.0.40');
export const minion2 = machine(12, 'minion', '10.240.0.41');

/** A fixed clock the tests move by hand. */
export function manualClock(start = Date.parse('2026-11-21T22:00:00Z')) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}

export const DAY = 24 * 3600 * 1000;
