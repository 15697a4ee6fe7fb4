import type { AddressPlan } from '../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { getParam, getResource, type Resource } from './hot.ts';
import { PRIVATE_SUBNET } from './network.ts';
import { PORTS } from './security.ts';

/**
 * The Kubernetes API behind an Octavia load balancer (spec.apiLoadBalancer `octavia`): a VIP at the address
 * plan's fixed address, a TCP listener on 6443 open to the private network and admin_cidr only, a pool of the
 * masters and an HTTPS health monitor on /readyz (the API server answers it without credentials: units/
 * render.ts apiServerAuthentication), so a master whose API server or etcd is down leaves the pool.
 *
 * The pool's members are a ResourceGroup counted by master_count, each naming its master's fixed address
 * (addressPlan.masterAddressPattern, `%index%` filled in by the group): raising or lowering master_count adds
 * or removes members with the servers, and a master replaced at an index keeps its address and its place.
 * TCP passthrough: TLS ends at the API servers, whose certificate names the VIP (overlord/trust/pki).
 */
export const API_LB = 'api_lb';
export const API_LISTENER = 'api_listener';
export const API_POOL = 'api_pool';
export const API_MONITOR = 'api_monitor';
export const API_POOL_MEMBERS = 'api_pool_members';

/** The health monitor: a master leaves the pool after 2 failed /readyz a 5 s apart and returns after 2 good ones. */
export const API_MONITOR_SETTINGS = { delay: 5, timeout: 4, max_retries: 2 } as const;

export function apiLoadBalancerResources(spec: ClusterSpec, plan: AddressPlan): Record<string, Resource> {
  if (spec.apiLoadBalancer !== 'octavia') return {};
  return {
    [API_LB]: {
      type: 'OS::Octavia::LoadBalancer',
      properties: {
        name: `${spec.name}-api`,
        description: `corekube ${spec.name}: the Kubernetes API of every master`,
        vip_subnet: getResource(PRIVATE_SUBNET),
        vip_address: plan.apiVip,
      },
    },
    [API_LISTENER]: {
      type: 'OS::Octavia::Listener',
      properties: {
        name: `${spec.name}-api`,
        loadbalancer: getResource(API_LB),
        protocol: 'TCP',
        protocol_port: PORTS.apiserver,
        // the machines and the administrators; nothing else reaches the VIP
        allowed_cidrs: [spec.network.privateCidr, getParam('admin_cidr')],
      },
    },
    [API_POOL]: {
      type: 'OS::Octavia::Pool',
      properties: {
        name: `${spec.name}-api`,
        listener: getResource(API_LISTENER),
        protocol: 'TCP',
        lb_algorithm: 'LEAST_CONNECTIONS',
      },
    },
    [API_MONITOR]: {
      type: 'OS::Octavia::HealthMonitor',
      properties: {
        pool: getResource(API_POOL),
        type: 'HTTPS',
        http_method: 'GET',
        url_path: '/readyz',
        expected_codes: '200',
        delay: API_MONITOR_SETTINGS.delay,
        timeout: API_MONITOR_SETTINGS.timeout,
        max_retries: API_MONITOR_SETTINGS.max_retries,
      },
    },
    [API_POOL_MEMBERS]: {
      type: 'OS::Heat::ResourceGroup',
      properties: {
        count: getParam('master_count'),
        resource_def: {
          type: 'OS::Octavia::PoolMember',
          properties: {
            pool: getResource(API_POOL),
            address: plan.masterAddressPattern,
            protocol_port: PORTS.apiserver,
            subnet: getResource(PRIVATE_SUBNET),
          },
        },
      },
    },
  };
}
