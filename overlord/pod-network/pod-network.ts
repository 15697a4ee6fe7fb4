import type { ClusterKeys } from '../../contracts/keys.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import type { Logger } from '../edges/log.ts';
import type { Fence, Store } from '../edges/store.ts';
import type { PermissionSpec } from '../trust/discovery-auth.ts';

/**
 * The pod network as the overlord sees it — a variation point with one implementation, flannel (flannel.ts):
 * one cluster-wide config written once, one pod subnet reserved for each machine before its steps (it becomes
 * its Node's podCIDR), and what a machine's own discovery etcd user may read and write of it. The machines'
 * side is units/pod-network.ts; which one a cluster runs, registry.ts. A second CNI is a second implementation
 * of this interface, its units, and a line in each registry.
 */
export interface PodNetwork {
  /** the implementation's name, for the log */
  readonly name: string;
  /** Writes the network's cluster-wide config if absent; a different one there is E_NETWORK_CONFIG_CHANGED (terminal). */
  ensureConfig(fence?: Fence): Promise<void>;
  /**
   * Gives the machine its pod subnet (CIDR), reserving one when it has none, and lets the machine's etcd user hold
   * it; idempotent. E_SUBNET_EXHAUSTED when every subnet is held.
   */
  reserve(record: MachineRecord, fence?: Fence): Promise<string>;
  /** the CIDR of the subnet a machine holds, if any */
  subnetOf(machineId: string): Promise<string | undefined>;
  /**
   * Frees the subnet a removed machine held (overlord/lifecycle/removals.ts): its reservation and index gone, the
   * subnet free for the next machine. Resolves with the CIDR released, or undefined when it held none; idempotent.
   */
  release(machineId: string, fence?: Fence): Promise<string | undefined>;
}

/** What a machine's credentials are given for the pod network: its own grants, once it holds `subnet` (the network's name of it). */
export type PodNetworkGrants = (keys: ClusterKeys, subnet?: string) => readonly PermissionSpec[];

export interface PodNetworkPorts {
  readonly store: Store;
  readonly keys: ClusterKeys;
  readonly log: Logger;
  /** the machines' own discovery users: granted their subnet once reserved; absent = no grants (an overlord run by hand) */
  readonly credentials?: { ensure(id: string, subnet?: string): Promise<readonly string[]> };
}
