/**
 * The cluster spec's options: every field with its YAML path, flag and default (the one table flags, env and the
 * file are read by), and the values some of them may take.
 */
export type OsProfile = 'flatcar' | 'ubuntu';
export const OS_PROFILES: readonly OsProfile[] = ['flatcar', 'ubuntu'];
export const MASTER_COUNTS = [1, 3, 5] as const;
export const MAX_MINIONS = 500;
/** Overlords: one bootstrap overlord plus up to four standbys (leader election, overlord/availability/leader.ts). */
export const MIN_OVERLORDS = 1;
export const MAX_OVERLORDS = 5;
/**
 * How nodes reach the Kubernetes API: `octavia` = an OpenStack load balancer (listener 6443, a pool of the
 * masters, a health monitor) whose fixed VIP every kubeconfig names; `node-local` = a TCP proxy on every minion
 * (127.0.0.1:6443, etcd's gateway) in front of every master, which the minion's kubeconfigs name — for clouds
 * without Octavia; `none` = the first master's address.
 */
export type ApiLoadBalancer = 'octavia' | 'node-local' | 'none';
export const API_LOAD_BALANCERS: readonly ApiLoadBalancer[] = ['octavia', 'node-local', 'none'];
/**
 * The cloud integration: `openstack` = the OpenStack cloud controller manager and the Cinder CSI driver as
 * add-ons (LoadBalancer Services through Octavia, PersistentVolumes on Cinder), kubelets with
 * `--cloud-provider=external`, cloud.conf from an application credential given as hidden stack parameters;
 * `none` = neither (a cloud without those APIs, the local cloud).
 */
export type CloudProvider = 'openstack' | 'none';
export const CLOUD_PROVIDERS: readonly CloudProvider[] = ['openstack', 'none'];
/** Machine certificates are valid a year; the overlord issues one again this many days before it expires. */
export const RENEW_BEFORE_DAYS = { min: 1, max: 180 } as const;
/** minions drained at once by a rolling change */
export const MAX_UNAVAILABLE = { min: 1, max: 50 } as const;
/** Kubernetes minors corekube's units are written and tested for. */
export const KUBERNETES_MINORS = ['1.34', '1.35', '1.36'] as const;

/** Addresses .0–.31 of the private network are kept out of DHCP: .1 gateway, see `addressPlan`. */
export const RESERVED_HOSTS = 32;

export type Kind = 'string' | 'int' | 'list' | 'digests';

export interface Field {
  /** dotted path in the YAML file and in ClusterSpec */
  path: string;
  flag: string;
  kind: Kind;
  default: string | number | readonly string[] | Readonly<Record<string, string>> | undefined;
}

export const SPEC_FIELDS: readonly Field[] = [
  { path: 'name', flag: 'name', kind: 'string', default: 'corekube' },
  { path: 'masters', flag: 'masters', kind: 'int', default: 1 },
  { path: 'minions', flag: 'minions', kind: 'int', default: 3 },
  { path: 'overlords', flag: 'overlords', kind: 'int', default: 1 },
  { path: 'os', flag: 'os', kind: 'string', default: 'flatcar' },
  { path: 'apiLoadBalancer', flag: 'api-load-balancer', kind: 'string', default: undefined },
  { path: 'cloudProvider', flag: 'cloud-provider', kind: 'string', default: 'openstack' },
  { path: 'versions.kubernetes', flag: 'kubernetes-version', kind: 'string', default: 'v1.36.5' },
  { path: 'versions.etcd', flag: 'etcd-version', kind: 'string', default: 'v3.6.17' },
  { path: 'versions.flannel', flag: 'flannel-version', kind: 'string', default: 'v0.28.10' },
  { path: 'versions.containerd', flag: 'containerd-version', kind: 'string', default: 'v2.3.7' },
  { path: 'versions.runc', flag: 'runc-version', kind: 'string', default: 'v1.4.4' },
  { path: 'versions.cniPlugins', flag: 'cni-plugins-version', kind: 'string', default: 'v1.10.0' },
  { path: 'versions.coredns', flag: 'coredns-version', kind: 'string', default: 'v1.15.0' },
  { path: 'versions.pause', flag: 'pause-version', kind: 'string', default: '3.10.2' },
  { path: 'network.privateCidr', flag: 'private-cidr', kind: 'string', default: '10.240.0.0/16' },
  { path: 'network.podCidr', flag: 'pod-cidr', kind: 'string', default: '10.244.0.0/14' },
  { path: 'network.serviceCidr', flag: 'service-cidr', kind: 'string', default: '10.96.0.0/12' },
  { path: 'network.adminCidr', flag: 'admin-cidr', kind: 'string', default: undefined },
  { path: 'network.nodePortCidr', flag: 'node-port-cidr', kind: 'string', default: undefined },
  { path: 'network.externalNetwork', flag: 'external-network', kind: 'string', default: undefined },
  { path: 'network.dnsNameservers', flag: 'dns-nameservers', kind: 'list', default: [] },
  { path: 'network.podSubnetLength', flag: 'pod-subnet-length', kind: 'int', default: 24 },
  { path: 'network.vxlanId', flag: 'vxlan-id', kind: 'int', default: 1 },
  { path: 'openstack.image', flag: 'image', kind: 'string', default: undefined },
  { path: 'openstack.keyName', flag: 'key-name', kind: 'string', default: undefined },
  { path: 'openstack.flavors.discovery', flag: 'discovery-flavor', kind: 'string', default: 'm1.small' },
  { path: 'openstack.flavors.overlord', flag: 'overlord-flavor', kind: 'string', default: 'm1.small' },
  { path: 'openstack.flavors.master', flag: 'master-flavor', kind: 'string', default: 'm1.medium' },
  { path: 'openstack.flavors.minion', flag: 'minion-flavor', kind: 'string', default: 'm1.medium' },
  { path: 'overlord.image', flag: 'overlord-image', kind: 'string', default: 'corekube/overlord:0.1.0' },
  { path: 'certificates.renewBeforeDays', flag: 'cert-renew-before-days', kind: 'int', default: 30 },
  { path: 'rollout.maxUnavailable', flag: 'max-unavailable', kind: 'int', default: 1 },
  { path: 'releaseBaseUrl', flag: 'release-base-url', kind: 'string', default: undefined },
  { path: 'releaseDigests', flag: 'release-digests', kind: 'digests', default: {} },
  { path: 'registryMirror', flag: 'registry-mirror', kind: 'string', default: undefined },
];

/** `pod-cidr` → `COREKUBE_POD_CIDR` */
export function envNameOf(flag: string): string {
  return `COREKUBE_${flag.toUpperCase().replace(/-/g, '_')}`;
}

