import { InvalidInputError, type FieldProblem } from '../core/errors.ts';
import { isRole, ROLES, type Role } from '../contracts/roles.ts';
import { ETCD_BOOTSTRAP_ENV, etcdMemberName } from '../contracts/etcd-members.ts';
import { addressPlan } from '../clusterspec/address-plan.ts';
import { parseIpv4 } from '../clusterspec/cidr.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { CLUSTER_DOMAIN, FRONT_PROXY_CLIENT_NAME, LAYOUT, PORTS, TIMEOUTS, type Layout } from './layout.ts';
import type { PkiPaths } from './pki-paths.ts';
import { podNetworkUnits as podNetworkUnitsOf, type PodNetworkContext, type PodNetworkUnits } from './pod-network.ts';
import { clusterImages } from '../release/catalog.ts';
import { artifactsFor, type ReleaseArtifact } from './release.ts';

/**
 * Everything the unit templates of one machine read, computed once from the spec, the machine's record
 * and the cluster's deployed masters. Templates only print these values (no logic beyond `#if role`),
 * so what a unit says is decided and tested here.
 */
export interface UnitMachine {
  /** machine id (32 hex) */
  readonly id: string;
  readonly role: Role;
  readonly ip: string;
  readonly hostname: string;
}

export interface UnitClusterView {
  /** private IPs of the deployed masters (sorted numerically and deduplicated here) */
  readonly masterIps: readonly string[];
}

export interface UnitContext {
  readonly cluster: string;
  readonly role: Role;
  readonly isMaster: boolean;
  readonly machine: UnitMachine;
  readonly versions: ClusterSpec['versions'];
  readonly paths: Layout;
  readonly pki: PkiPaths;
  readonly timeouts: typeof TIMEOUTS;
  /** the artifacts this machine downloads */
  readonly artifacts: readonly ReleaseArtifact[];
  readonly network: {
    readonly podCidr: string;
    readonly serviceCidr: string;
    readonly kubernetesServiceIp: string;
    readonly clusterDnsIp: string;
    readonly clusterDomain: string;
  };
  readonly masterIps: readonly string[];
  readonly etcd: {
    /** member name, derived from the IP so every master computes the same initial cluster */
    readonly name: string;
    readonly listenClientUrls: string;
    readonly advertiseClientUrl: string;
    readonly peerUrl: string;
    /**
     * `name=https://ip:2380,…` over masterIps: the initial cluster of masters that form it together. Not in the
     * unit: the overlord writes it, or the member list of a cluster it joins, to `bootstrapEnv` before the
     * member's first start (its `etcd-member` step) — so masters that come and go change no running member's unit.
     */
    readonly initialCluster: string;
    /** the environment file with ETCD_INITIAL_CLUSTER and ETCD_INITIAL_CLUSTER_STATE (contracts/etcd-members.ts) */
    readonly bootstrapEnv: string;
    readonly dataDir: string;
    readonly initialClusterToken: string;
    /** `https://ip:2379,…` over masterIps: what the API server connects to */
    readonly servers: string;
    /**
     * whether etcd takes `--tls-min-version` (v3.6 and later). Older releases have no such flag (v3.4.23 refuses
     * it) and a fixed minimum of TLS 1.2 — the same floor, so leaving it out changes nothing.
     */
    readonly tlsMinVersionFlag: boolean;
  };
  readonly apiServer: {
    readonly port: number;
    /**
     * the URL this machine's clients use: 127.0.0.1 on masters (their own API server); on minions the API load
     * balancer's VIP (spec.apiLoadBalancer `octavia`), their node-local proxy at 127.0.0.1 (`node-local`), else
     * the first deployed master (`none`)
     */
    readonly url: string;
    /** the AuthenticationConfiguration file: anonymous requests only to the health endpoints (a load balancer's monitor) */
    readonly authenticationConfig: string;
    readonly serviceAccountIssuer: string;
    /** the CN of the front-proxy client certificate the API server accepts request headers from */
    readonly frontProxyClientName: string;
  };
  /**
   * A minion's node-local API proxy (spec.apiLoadBalancer `node-local`), undefined on masters and with `octavia`
   * or `none`: etcd's gateway, a TCP proxy listening where the minion's kubeconfigs point, in front of every
   * deployed master's API server (TLS passes through: the API server's certificate carries 127.0.0.1).
   */
  readonly apiProxy: ApiProxyContext | undefined;
  /** the pod network's units (units/pod-network.ts) and what its templates read */
  readonly podNetworkUnits: PodNetworkUnits;
  readonly podNetwork: PodNetworkContext;
  readonly kubeProxy: { readonly mode: 'iptables' | 'nftables'; readonly healthzPort: number };
  /** `--cloud-provider=external` (spec.cloudProvider openstack): the cloud controller manager initialises the Node */
  readonly kubelet: { readonly externalCloudProvider: boolean };
  /** the images containerd pulls for the cluster itself (the pod sandbox) */
  readonly images: { readonly pause: string };
  /** the registry mirror containerd pulls through (spec.registryMirror), or undefined */
  readonly registryMirror: { readonly url: string; readonly host: string } | undefined;
}

/** What corekube-api-proxy.service.hbs reads. */
export interface ApiProxyContext {
  /** `127.0.0.1:6443`: loopback only, so nothing off the machine reaches the masters through it */
  readonly listenAddr: string;
  /** `ip:6443,…` over masterIps (sorted): a master at a new address changes the unit, and the overlord restarts it */
  readonly endpoints: string;
  /** how long the gateway leaves a master it failed to dial before dialling it again (`--retry-delay`) */
  readonly retryDelay: string;
}

/** How long the node-local API proxy leaves a master it could not dial (etcd's default is a minute). */
export const API_PROXY_RETRY_DELAY = '10s';

const MACHINE_ID = /^[0-9a-f]{32}$/;
const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$/;

/** True for etcd v3.6 and later (`v3.6.6`), which take `--tls-min-version`. */
export function etcdTakesTlsMinVersion(version: string): boolean {
  const m = /^v?(\d+)\.(\d+)/.exec(version);
  if (!m) return true;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 3 || (major === 3 && minor >= 6);
}

export { etcdMemberName };

/**
 * Builds and validates the context of one machine. Throws InvalidInputError (E_RECORD_INVALID) listing every
 * problem: a bad id/IP/hostname, no deployed master, or a master missing from masterIps (its etcd must be
 * part of the initial cluster it starts with).
 */
export function buildUnitContext(spec: ClusterSpec, machine: UnitMachine, cluster: UnitClusterView, pki: PkiPaths): UnitContext {
  const problems: FieldProblem[] = [];
  const bad = (field: string, value: unknown, message: string, fix: string) => problems.push({ field, value, message, fix });
  if (!MACHINE_ID.test(machine.id)) bad('machine.id', machine.id, 'is not a 32-hex machine id', 'pass the id of the machine record');
  if (!isRole(machine.role)) bad('machine.role', machine.role, `is not one of ${ROLES.join(', ')}`, 'pass master or minion');
  if (parseIpv4(machine.ip) === undefined) bad('machine.ip', machine.ip, 'is not an IPv4 address', 'pass the private IP of the machine record');
  if (!HOSTNAME.test(machine.hostname)) bad('machine.hostname', machine.hostname, 'is not a valid host name', 'pass the hostname of the machine record');
  const invalid = cluster.masterIps.filter((ip) => parseIpv4(ip) === undefined);
  if (invalid.length > 0) bad('cluster.masterIps', invalid, 'contains entries that are not IPv4 addresses', 'pass the private IPs of the deployed masters');
  const masterIps = [...new Set(cluster.masterIps.filter((ip) => parseIpv4(ip) !== undefined))].sort((a, b) => parseIpv4(a)! - parseIpv4(b)!);
  if (masterIps.length === 0) bad('cluster.masterIps', cluster.masterIps, 'is empty: every machine needs a master (etcd, API server)', 'render units once at least one master is known');
  if (machine.role === 'master' && masterIps.length > 0 && !masterIps.includes(machine.ip)) {
    bad('cluster.masterIps', cluster.masterIps, `does not contain this master's own IP ${machine.ip}`, "include every master being deployed, this one too: its etcd member is part of the initial cluster");
  }
  if (problems.length > 0) throw new InvalidInputError(`units of machine ${machine.id}`, problems, 'E_RECORD_INVALID');

  const plan = addressPlan(spec);
  const podNetworkUnits = podNetworkUnitsOf(spec);
  const isMaster = machine.role === 'master';
  const etcdServers = masterIps.map((ip) => `https://${ip}:${PORTS.etcdClient}`).join(',');
  const loopbackApi = `127.0.0.1:${PORTS.apiServer}`;
  const apiProxy: ApiProxyContext | undefined = !isMaster && spec.apiLoadBalancer === 'node-local'
    ? { listenAddr: loopbackApi, endpoints: masterIps.map((ip) => `${ip}:${PORTS.apiServer}`).join(','), retryDelay: API_PROXY_RETRY_DELAY }
    : undefined;
  const minionApiHost = spec.apiLoadBalancer === 'octavia' ? `${plan.apiVip}:${PORTS.apiServer}` : apiProxy ? loopbackApi : `${masterIps[0]}:${PORTS.apiServer}`;
  const ctx: UnitContext = {
    cluster: spec.name,
    role: machine.role,
    isMaster,
    machine: { id: machine.id, role: machine.role, ip: machine.ip, hostname: machine.hostname },
    versions: spec.versions,
    paths: LAYOUT,
    pki,
    timeouts: TIMEOUTS,
    artifacts: artifactsFor(spec, machine.role),
    network: {
      podCidr: spec.network.podCidr,
      serviceCidr: spec.network.serviceCidr,
      kubernetesServiceIp: plan.kubernetesServiceIp,
      clusterDnsIp: plan.clusterDnsIp,
      clusterDomain: CLUSTER_DOMAIN,
    },
    masterIps,
    etcd: {
      name: etcdMemberName(machine.ip),
      listenClientUrls: `https://${machine.ip}:${PORTS.etcdClient},https://127.0.0.1:${PORTS.etcdClient}`,
      advertiseClientUrl: `https://${machine.ip}:${PORTS.etcdClient}`,
      peerUrl: `https://${machine.ip}:${PORTS.etcdPeer}`,
      initialCluster: masterIps.map((ip) => `${etcdMemberName(ip)}=https://${ip}:${PORTS.etcdPeer}`).join(','),
      bootstrapEnv: ETCD_BOOTSTRAP_ENV,
      dataDir: `${LAYOUT.stateDir}/etcd`,
      initialClusterToken: `corekube-${spec.name}`,
      servers: etcdServers,
      tlsMinVersionFlag: etcdTakesTlsMinVersion(spec.versions.etcd),
    },
    apiServer: {
      port: PORTS.apiServer,
      url: `https://${isMaster ? loopbackApi : minionApiHost}`,
      authenticationConfig: `${LAYOUT.configDir}/kube-apiserver/authentication.yaml`,
      serviceAccountIssuer: `https://kubernetes.default.svc.${CLUSTER_DOMAIN}`,
      frontProxyClientName: FRONT_PROXY_CLIENT_NAME,
    },
    apiProxy,
    podNetworkUnits,
    podNetwork: podNetworkUnits.context(spec, machine),
    kubeProxy: { mode: 'iptables', healthzPort: PORTS.kubeProxyHealthz },
    kubelet: { externalCloudProvider: spec.cloudProvider === 'openstack' },
    images: { pause: clusterImages(spec.versions).pause },
    registryMirror: spec.registryMirror === undefined ? undefined : { url: spec.registryMirror, host: new URL(spec.registryMirror).host },
  };
  return deepFreeze(ctx);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
