import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { AddressPlan } from '../clusterspec/address-plan.ts';
import { getParam, getResource, type Resource } from './hot.ts';

/**
 * The private network: one Net + Subnet behind one Router with its gateway on the external network. DHCP
 * hands out only dhcpStart..dhcpEnd, so the fixed addresses of the address plan (gateway, discovery,
 * overlord) never collide with a DHCP lease.
 */
export const PRIVATE_NET = 'private_net';
export const PRIVATE_SUBNET = 'private_subnet';
export const ROUTER = 'router';
export const ROUTER_INTERFACE = 'router_interface';

export function networkResources(spec: ClusterSpec, plan: AddressPlan): Record<string, Resource> {
  return {
    [PRIVATE_NET]: {
      type: 'OS::Neutron::Net',
      properties: { name: `${spec.name}-private` },
    },
    [PRIVATE_SUBNET]: {
      type: 'OS::Neutron::Subnet',
      properties: {
        name: `${spec.name}-private`,
        network: getResource(PRIVATE_NET),
        ip_version: 4,
        cidr: spec.network.privateCidr,
        gateway_ip: plan.gateway,
        enable_dhcp: true,
        allocation_pools: [{ start: plan.dhcpStart, end: plan.dhcpEnd }],
        dns_nameservers: getParam('dns_nameservers'),
      },
    },
    [ROUTER]: {
      type: 'OS::Neutron::Router',
      properties: {
        name: `${spec.name}-router`,
        external_gateway_info: { network: getParam('external_network') },
      },
    },
    [ROUTER_INTERFACE]: {
      type: 'OS::Neutron::RouterInterface',
      properties: { router: getResource(ROUTER), subnet: getResource(PRIVATE_SUBNET) },
    },
  };
}
