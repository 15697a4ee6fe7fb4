import type { RemovalRequest } from '../../contracts/removal.ts';
import { CorekubeError } from '../../core/errors.ts';
import type { MachineStatus, StatusReport } from '../status.ts';

/**
 * PURE: what `corekube node remove` asks for, from the cluster's status — the machine a name means, and the request
 * the leading overlord carries out (lifecycle/removals.ts). Also what the local cloud's master replacement asks.
 */

/** PURE: the machine MACHINE names in the status, or an error naming the value and the fix. */
export function machineNamed(report: StatusReport, name: string): MachineStatus {
  const found = report.machines.filter((m) => m.id === name || m.ip === name || m.node?.name === name || (name.length >= 8 && m.id.startsWith(name)));
  if (found.length === 0) throw new CorekubeError('E_USAGE', `MACHINE ${JSON.stringify(name)} is no machine of this cluster`, { hint: 'give an id, IP address or hostname `corekube status` lists' });
  if (found.length > 1) throw new CorekubeError('E_USAGE', `MACHINE ${JSON.stringify(name)} names ${found.length} machines (${found.map((m) => m.id.slice(0, 12)).join(', ')})`, { hint: 'give the full machine id' });
  return found[0]!;
}

/** PURE: the request for a machine of the status (the last master refused: the cluster would have no store). */
export function removalRequestFor(machine: MachineStatus, hostname: string, now: Date, report: StatusReport): RemovalRequest {
  if ((machine.role !== 'minion' && machine.role !== 'master') || machine.ip === null) throw new CorekubeError('E_USAGE', `machine ${machine.id} has no role or address the overlord knows (state ${machine.state})`, { hint: 'only a machine that announced itself can be removed' });
  if (machine.role === 'master') {
    const others = report.machines.filter((m) => m.role === 'master' && m.id !== machine.id && m.state !== 'removing');
    if (others.length === 0) {
      throw new CorekubeError('E_REMOVAL_REFUSED', `${hostname} (${machine.ip}) is the cluster's only master: without it there is no etcd and no API`, {
        hint: 'bring up another master first (a replacement joins etcd by itself), then remove this one',
      });
    }
  }
  return { schema: 1, id: machine.id, hostname, ip: machine.ip, role: machine.role, reason: 'command', requestedAt: now.toISOString(), done: [], error: null };
}
