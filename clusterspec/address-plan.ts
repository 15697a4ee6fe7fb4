import { cidrSize, formatIpv4, parseCidr, type Cidr } from './cidr.ts';
import type { ClusterSpec } from './cluster-spec.ts';
import { RESERVED_HOSTS } from './fields.ts';

/**
 * Where the fixed addresses of a cluster sit, derived from the spec alone (pure), so the Heat template,
 * cloud-config, the overlord and the local cloud agree without passing addresses around:
 * - private network: .1 gateway, .10 discovery, .11 overlord, .12 the API load balancer's VIP, the masters at
 *   five fixed addresses from .13–.26 (MASTER_HOSTS); DHCP hands out .32 up to the last address;
 * - service network: .1 is the `kubernetes` service, .10 cluster DNS.
 */
export interface AddressPlan {
  readonly gateway: string;
  readonly discovery: string;
  readonly overlord: string;
  /** the fixed VIP of the API load balancer (spec.apiLoadBalancer `octavia`) */
  readonly apiVip: string;
  /**
   * The masters' fixed addresses, by ResourceGroup index (0–4): a master replaced at an index keeps its
   * address (its etcd member's peer URL), and the load balancer's pool names them without asking Nova.
   */
  readonly masters: readonly string[];
  /**
   * The same addresses as one string with `%index%` for its last digit, as a Heat ResourceGroup fills it in
   * (HOT has no arithmetic, and a group's functions resolve before `%index%` is replaced): the first master's
   * address ends in 0, and there are at most five.
   */
  readonly masterAddressPattern: string;
  /** the host every node's kubeconfig names: the VIP, or the first master's address */
  readonly apiHost: string;
  readonly dhcpStart: string;
  readonly dhcpEnd: string;
  readonly kubernetesServiceIp: string;
  readonly clusterDnsIp: string;
  /** https URL of the discovery etcd's client port */
  readonly discoveryEndpoint: string;
}

export const DISCOVERY_HOST = 10;
export const OVERLORD_HOST = 11;
export const API_VIP_HOST = 12;
/** The first master's host offset lies here, chosen so that its last decimal digit is 0 (see masterAddressPattern). */
export const MASTER_HOSTS = { first: 13, last: 26 } as const;
export const MAX_MASTERS = 5;
export const ETCD_CLIENT_PORT = 2379;
export const API_PORT = 6443;

export function addressPlan(spec: ClusterSpec): AddressPlan {
  const priv = parseCidr(spec.network.privateCidr) as Cidr;
  const svc = parseCidr(spec.network.serviceCidr) as Cidr;
  const at = (c: Cidr, n: number) => formatIpv4(c.network + n);
  const discovery = at(priv, DISCOVERY_HOST);
  const base = firstMasterHost(priv.network);
  const masters = Object.freeze(Array.from({ length: MAX_MASTERS }, (_, i) => at(priv, base + i)));
  const apiVip = at(priv, API_VIP_HOST);
  return Object.freeze({
    gateway: at(priv, 1),
    discovery,
    overlord: at(priv, OVERLORD_HOST),
    apiVip,
    masters,
    masterAddressPattern: `${masters[0]!.slice(0, -1)}%index%`,
    apiHost: spec.apiLoadBalancer === 'octavia' ? apiVip : masters[0]!,
    dhcpStart: at(priv, RESERVED_HOSTS),
    dhcpEnd: at(priv, cidrSize(priv) - 2),
    kubernetesServiceIp: at(svc, 1),
    clusterDnsIp: at(svc, 10),
    discoveryEndpoint: `https://${discovery}:${ETCD_CLIENT_PORT}`,
  });
}

/** The first master's host offset: the one in MASTER_HOSTS whose address ends in a decimal 0 (its last octet's last digit). */
function firstMasterHost(network: number): number {
  for (let h = MASTER_HOSTS.first; h + MAX_MASTERS - 1 <= MASTER_HOSTS.last; h++) {
    if (((network + h) & 0xff) % 10 === 0) return h;
  }
  throw new RangeError(`no master address block ending in 0 after network ${formatIpv4(network)}`);
}
