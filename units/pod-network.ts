import { addressPlan } from '../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { clusterKeys } from '../contracts/keys.ts';
import type { Role } from '../contracts/roles.ts';
import type { Until } from '../contracts/step.ts';
import { PORTS } from './layout.ts';
import { DISCOVERY_CLIENT_PATHS } from './pki-paths.ts';

/**
 * The pod network's part of every machine's units — a variation point with one implementation, flannel:
 * flanneld on every machine (VXLAN; its config and subnet leases in discovery's etcd, under the machine's own etcd
 * user), and on each minion the bridge CNI config written from flanneld's subnet file (corekube-cni-config: the
 * config the flannel CNI plugin would hand the bridge plugin, without that plugin). The overlord's side is
 * overlord/pod-network/. A second CNI is a second PodNetworkUnits here — its units, scripts and templates, the
 * context they read (UnitContext.podNetwork) — chosen in podNetworkUnits, and its overlord side.
 */
export interface PodNetworkUnits {
  readonly name: string;
  /** its units, in start order: after the control plane, before the container runtime */
  readonly units: readonly { readonly unit: string; readonly roles: readonly Role[]; readonly until: Until }[];
  /** its helper scripts (units/scripts/), per role */
  readonly scripts: readonly { readonly name: string; readonly roles: readonly Role[] }[];
  /** what its templates read of one machine (UnitContext.podNetwork) */
  context(spec: ClusterSpec, machine: { readonly ip: string }): PodNetworkContext;
}

/** What flanneld.service.hbs reads. */
export interface PodNetworkContext {
  /** the discovery etcd (https), where the overlord keeps flannel's config and reservations */
  readonly etcdEndpoints: string;
  /** discovery's CA, and the EnvironmentFile with the machine's own discovery etcd user and password */
  readonly caFile: string;
  readonly envFile: string;
  /** `/corekube/<cluster>/network`: flannel reads `<prefix>/config` and leases `<prefix>/subnets/` */
  readonly etcdPrefix: string;
  readonly iface: string;
  readonly healthzPort: number;
}

export const FLANNEL_UNITS: PodNetworkUnits = Object.freeze({
  name: 'flannel',
  units: Object.freeze([{ unit: 'flanneld.service', roles: ['master', 'minion'], until: 'active' }]),
  scripts: Object.freeze([
    // flanneld prints its options, the etcd password among them: it runs through corekube-redact
    { name: 'corekube-redact', roles: ['master', 'minion'] },
    { name: 'corekube-cni-config', roles: ['minion'] },
  ]),
  context: (spec: ClusterSpec, machine: { readonly ip: string }): PodNetworkContext => ({
    etcdEndpoints: addressPlan(spec).discoveryEndpoint,
    caFile: DISCOVERY_CLIENT_PATHS.ca,
    envFile: DISCOVERY_CLIENT_PATHS.credentials,
    etcdPrefix: clusterKeys(spec.name).network.replace(/\/$/, ''),
    iface: machine.ip,
    healthzPort: PORTS.flannelHealthz,
  }),
} satisfies PodNetworkUnits);

/** The pod network of a cluster spec: flannel. */
export function podNetworkUnits(_spec: ClusterSpec): PodNetworkUnits {
  return FLANNEL_UNITS;
}
