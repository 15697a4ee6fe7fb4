import { cidrSize, formatIpv4, parseCidr, type Cidr } from './cidr.ts';
import { RESERVED_HOSTS, type ClusterSpec } from './cluster-spec.ts';

/**
 * Where the fixed addresses of a cluster sit, derived from the spec alone (pure), so the Heat template,
 * cloud-config, the overlord and the local cloud agree without passing addresses around:
 * - private network: .1 gateway, .10 discovery, .11 overlord; DHCP hands out .32 up to the last address;
 * - service network: .1 is the `kubernetes` service, .10 cluster DNS.
 */
export interface AddressPlan {
  readonly gateway: string;
  readonly discovery: string;
  readonly overlord: string;
  readonly dhcpStart: string;
  readonly dhcpEnd: string;
  readonly kubernetesServiceIp: string;
  readonly clusterDnsIp: string;
  /** https URL of the discovery etcd's client port */
  readonly discoveryEndpoint: string;
}

export const DISCOVERY_HOST = 10;
export const OVERLORD_HOST = 11;
export const ETCD_CLIENT_PORT = 2379;

export function addressPlan(spec: ClusterSpec): AddressPlan {
  const priv = parseCidr(spec.network.privateCidr) as Cidr;
  const svc = parseCidr(spec.network.serviceCidr) as Cidr;
  const at = (c: Cidr, n: number) => formatIpv4(c.network + n);
  const discovery = at(priv, DISCOVERY_HOST);
  return Object.freeze({
    gateway: at(priv, 1),
    discovery,
    overlord: at(priv, OVERLORD_HOST),
    dhcpStart: at(priv, RESERVED_HOSTS),
    dhcpEnd: at(priv, cidrSize(priv) - 2),
    kubernetesServiceIp: at(svc, 1),
    clusterDnsIp: at(svc, 10),
    discoveryEndpoint: `https://${discovery}:${ETCD_CLIENT_PORT}`,
  });
}
