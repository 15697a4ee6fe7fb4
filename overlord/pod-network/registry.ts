import type { ClusterKeys } from '../../contracts/keys.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import type { Store } from '../edges/store.ts';
import { flannelConfig, FlannelNetwork, flannelGrants, subnetsByMachine, type FlannelConfig } from './flannel.ts';
import type { PodNetwork, PodNetworkGrants, PodNetworkPorts } from './pod-network.ts';

/**
 * Which pod network a cluster runs, as data (what a term is given and makes its PodNetwork from), and the one
 * place that maps it to its implementation. flannel is the only one; a second adds a kind here.
 */
export type PodNetworkSpec = { readonly kind: 'flannel'; readonly config: FlannelConfig };

/** The pod network of a cluster spec. */
export function podNetworkOf(spec: ClusterSpec): PodNetworkSpec {
  return { kind: 'flannel', config: flannelConfig(spec) };
}

/** The pod network of one leader term (its own book of reservations). */
export function createPodNetwork(net: PodNetworkSpec, ports: PodNetworkPorts): PodNetwork {
  return new FlannelNetwork(net.config, ports);
}

/** What the pod network grants each machine's own discovery etcd user. */
export function podNetworkGrants(net: PodNetworkSpec): PodNetworkGrants {
  return net.kind === 'flannel' ? flannelGrants : () => [];
}

/** Every machine's pod subnet (CIDR) by machine id, for `corekube status`: one list request. */
export function podSubnets(store: Store, keys: ClusterKeys): Promise<Map<string, string>> {
  return subnetsByMachine(store, keys);
}
