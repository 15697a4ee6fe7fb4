import { CorekubeError } from '../../../core/errors.ts';
import { addressPlan } from '../../../clusterspec/address-plan.ts';
import { parseIpv4, sortIps } from '../../../clusterspec/cidr.ts';
import type { ClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { CLUSTER_DOMAIN, FRONT_PROXY_CLIENT_NAME } from '../../../units/layout.ts';
import { PKI_FILES_BY_ROLE, type KeyPair, type PkiPaths } from '../../../units/pki-paths.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import type { Role } from '../../../contracts/roles.ts';

/**
 * Which certificates a cluster has: a pure function of the spec and the machine records. Every certificate
 * is described by a CertProfile (who signs it, its subject, its SANs, what it may be used for); issuing,
 * storing and delivering them are other modules' business.
 *
 * Four CAs, never mixed: `cluster` (Kubernetes API, kubelets, kubeconfigs), `etcd` (the masters' etcd:
 * members, peers and their client — the API server), `front-proxy` (the API server's requests to aggregated
 * API servers), `discovery` (discovery's etcd only: its server cert, the overlord's `root` client cert and
 * each machine's client cert). A leaf of one CA is refused by the others' servers.
 *
 * Per-machine certificates follow the units' contract (units/pki-paths.ts PKI_FILES_BY_ROLE): a machine gets
 * exactly the key pairs its role's units read, each with its own key, so a key never leaves the overlord except
 * to the one machine that uses it. The one shared secret is the service-account signing key (every master's
 * API server must verify tokens that any master's controller-manager signed).
 */
export type CaKind = 'cluster' | 'etcd' | 'front-proxy' | 'discovery';
export const CA_KINDS: readonly CaKind[] = ['cluster', 'etcd', 'front-proxy', 'discovery'];

/** Extended key usage: `server` = serverAuth, `client` = clientAuth, `peer` = both. */
export type Usage = 'server' | 'client' | 'peer';

/** The PkiPaths entries that are key pairs (cert + key): the per-machine certificates. */
export type CertEntry = { [K in keyof PkiPaths]: PkiPaths[K] extends KeyPair ? K : never }[keyof PkiPaths];

/** Who holds a certificate's key. */
export type Owner =
  | { readonly kind: 'machine'; readonly id: string; readonly entry: CertEntry }
  | { readonly kind: 'discovery' }
  | { readonly kind: 'overlord' }
  | { readonly kind: 'admin' };

export interface CertProfile {
  /** store name of the pair: `<name>.crt`, `<name>.key` (e.g. `machines/<id>/api-server`) */
  readonly name: string;
  readonly owner: Owner;
  readonly ca: CaKind;
  readonly commonName: string;
  readonly organizations: readonly string[];
  readonly usage: Usage;
  /** sorted, deduplicated */
  readonly dnsNames: readonly string[];
  /** sorted numerically, deduplicated */
  readonly ipAddresses: readonly string[];
}

export interface CatalogOptions {
  /**
   * Extra names or IPs clients reach the API servers by (a floating IP, a load balancer's DNS name): added to
   * every API server serving cert. An IPv4 literal becomes an IP SAN, anything else a DNS SAN.
   */
  readonly apiEndpoints?: readonly string[];
}

export const CA_NAMES: Readonly<Record<CaKind, string>> = Object.freeze({
  cluster: 'ca/cluster',
  etcd: 'ca/etcd',
  'front-proxy': 'ca/front-proxy',
  discovery: 'ca/discovery',
});
export const SERVICE_ACCOUNT_NAME = 'service-account';
export const ADMIN_NAME = 'admin';
export const DISCOVERY_SERVER_NAME = 'discovery/server';
export const OVERLORD_DISCOVERY_CLIENT_NAME = 'overlord/discovery-client';

/** The subject CN of each CA, so `openssl x509 -issuer` says which cluster and which CA. */
export function caCommonName(cluster: string, kind: CaKind): string {
  return kind === 'cluster' ? `corekube-${cluster}-ca` : `corekube-${cluster}-${kind}-ca`;
}

/** `apiServerKubeletClient` → `api-server-kubelet-client` */
function fileName(entry: CertEntry): string {
  return entry.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

export function machineCertName(machineId: string, entry: CertEntry): string {
  return `machines/${machineId}/${fileName(entry)}`;
}

/** The names of the API server inside the cluster (the `kubernetes` service), as kubeadm issues them. */
export function kubernetesServiceNames(): string[] {
  return ['kubernetes', 'kubernetes.default', 'kubernetes.default.svc', `kubernetes.default.svc.${CLUSTER_DOMAIN}`];
}

interface MachineView {
  readonly spec: ClusterSpec;
  readonly apiEndpoints: readonly string[];
}

type Subject = Pick<CertProfile, 'ca' | 'commonName' | 'organizations' | 'usage'> & { dns?: string[]; ips?: string[] };

/**
 * One builder per entry of the units' contract: a new key pair in PkiPaths fails type-checking here until
 * it has a profile.
 */
const ENTRY_PROFILES: Readonly<Record<CertEntry, (m: MachineRecord, v: MachineView) => Subject>> = {
  apiServer: (m, v) => {
    const endpoints = v.apiEndpoints;
    const plan = addressPlan(v.spec);
    return {
      ca: 'cluster',
      commonName: 'kube-apiserver',
      organizations: [],
      usage: 'server',
      dns: [...kubernetesServiceNames(), 'localhost', ...endpoints.filter((e) => !isIpv4(e))],
      // the addresses clients dial this API server at: the `kubernetes` service, the load balancer's VIP (every
      // node's kubeconfig names it with spec.apiLoadBalancer octavia), its own address, loopback and the public
      // endpoints — never the other masters' (so a master that comes or goes re-issues no other master's cert)
      ips: [plan.kubernetesServiceIp, ...(v.spec.apiLoadBalancer === 'octavia' ? [plan.apiVip] : []), m.ip, '127.0.0.1', ...endpoints.filter(isIpv4)],
    };
  },
  // O=system:masters: the API server may proxy, exec and read logs through every kubelet
  apiServerKubeletClient: () => ({ ca: 'cluster', commonName: 'kube-apiserver-kubelet-client', organizations: ['system:masters'], usage: 'client' }),
  apiServerEtcdClient: () => ({ ca: 'etcd', commonName: 'kube-apiserver-etcd-client', organizations: [], usage: 'client' }),
  controllerManager: () => ({ ca: 'cluster', commonName: 'system:kube-controller-manager', organizations: [], usage: 'client' }),
  scheduler: () => ({ ca: 'cluster', commonName: 'system:kube-scheduler', organizations: [], usage: 'client' }),
  // both the kubelet's client identity (Node authorizer) and its serving cert (API server → kubelet)
  kubelet: (m) => ({ ca: 'cluster', commonName: `system:node:${m.hostname}`, organizations: ['system:nodes'], usage: 'peer', dns: [m.hostname], ips: [m.ip] }),
  kubeProxy: () => ({ ca: 'cluster', commonName: 'system:kube-proxy', organizations: [], usage: 'client' }),
  // etcd's gRPC gateway dials its own server with the serving cert: it needs clientAuth too
  etcdServer: (m) => ({ ca: 'etcd', commonName: m.hostname, organizations: [], usage: 'peer', dns: [m.hostname, 'localhost'], ips: [m.ip, '127.0.0.1'] }),
  etcdPeer: (m) => ({ ca: 'etcd', commonName: m.hostname, organizations: [], usage: 'peer', dns: [m.hostname, 'localhost'], ips: [m.ip, '127.0.0.1'] }),
  // the name the API server's --requestheader-allowed-names accepts (as kubeadm issues it)
  frontProxyClient: () => ({ ca: 'front-proxy', commonName: FRONT_PROXY_CLIENT_NAME, organizations: [], usage: 'client' }),
  // presented by flanneld (it speaks TLS to etcd only with a client certificate); discovery authorises by etcd user
  discoveryClient: (m) => ({ ca: 'discovery', commonName: `machine-${m.id}`, organizations: [], usage: 'client' }),
};

/** The certificate entries a machine of `role` holds (its role's PkiPaths key pairs). */
export function certEntriesOf(role: Role): CertEntry[] {
  return PKI_FILES_BY_ROLE[role].filter((e): e is CertEntry => e in ENTRY_PROFILES);
}

/** True when a machine of `role` holds the service-account signing key. */
export function holdsServiceAccountKey(role: Role): boolean {
  return PKI_FILES_BY_ROLE[role].includes('serviceAccount');
}

/** The certificates of one machine: they name the machine alone (its address, name and id), never its peers. */
export function machineProfiles(spec: ClusterSpec, machine: MachineRecord, options: CatalogOptions = {}): CertProfile[] {
  const view: MachineView = { spec, apiEndpoints: validEndpoints(options.apiEndpoints ?? []) };
  return certEntriesOf(machine.role).map((entry) => {
    const s = ENTRY_PROFILES[entry](machine, view);
    return profile(machineCertName(machine.id, entry), { kind: 'machine', id: machine.id, entry }, s);
  });
}

/** The admin user's client cert: CN=admin in system:masters (cluster-admin through the default RBAC binding). */
export function adminProfile(): CertProfile {
  return profile(ADMIN_NAME, { kind: 'admin' }, { ca: 'cluster', commonName: 'admin', organizations: ['system:masters'], usage: 'client' });
}

/**
 * Discovery's etcd serving cert (SANs: the discovery IP of the address plan, loopback for its own health
 * check) and the overlord's client cert for it (CN=root: etcd maps the CN to its `root` user once auth is on).
 */
export function discoveryProfiles(spec: ClusterSpec): CertProfile[] {
  const ip = addressPlan(spec).discovery;
  return [
    profile(DISCOVERY_SERVER_NAME, { kind: 'discovery' }, { ca: 'discovery', commonName: 'discovery', organizations: [], usage: 'peer', dns: ['localhost'], ips: [ip, '127.0.0.1'] }),
    profile(OVERLORD_DISCOVERY_CLIENT_NAME, { kind: 'overlord' }, { ca: 'discovery', commonName: 'root', organizations: [], usage: 'client' }),
  ];
}

/** Every certificate of the cluster: discovery's, the admin's and each machine's. */
export function clusterProfiles(spec: ClusterSpec, machines: readonly MachineRecord[], options: CatalogOptions = {}): CertProfile[] {
  return [...discoveryProfiles(spec), adminProfile(), ...machines.flatMap((m) => machineProfiles(spec, m, options))];
}

function profile(name: string, owner: Owner, s: Subject): CertProfile {
  return Object.freeze({
    name,
    owner: Object.freeze(owner),
    ca: s.ca,
    commonName: s.commonName,
    organizations: Object.freeze([...s.organizations]),
    usage: s.usage,
    dnsNames: Object.freeze([...new Set(s.dns ?? [])].sort()),
    ipAddresses: Object.freeze(sortIps(s.ips ?? [])),
  });
}

function isIpv4(s: string): boolean {
  return parseIpv4(s) !== undefined;
}

const DNS_NAME = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

function validEndpoints(endpoints: readonly string[]): string[] {
  const bad = endpoints.filter((e) => !isIpv4(e) && !DNS_NAME.test(e));
  if (bad.length > 0) {
    throw new CorekubeError('E_PKI', `API endpoint${bad.length === 1 ? '' : 's'} ${bad.map((e) => JSON.stringify(e)).join(', ')} cannot be a certificate SAN`, {
      hint: 'give an IPv4 address or a DNS name (no scheme, no port), e.g. 203.0.113.7 or api.example.org',
    });
  }
  return [...endpoints];
}
