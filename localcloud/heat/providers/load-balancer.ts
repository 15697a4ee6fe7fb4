import type { HeatValue } from '../../../heat/hot.ts';
import { output, param, STACK_ID_OUTPUT, template, type ProviderTemplate } from './provider.ts';

/**
 * Octavia stand-ins. Like the Neutron ones they create nothing: they accept the properties of the real types,
 * echo them back as the real attributes, and hand the harness what it needs in one `given` output (every
 * property as given; ids are the nested stacks' ids). The load balancer itself is real: localcloud/
 * load-balancer.ts reads the stand-ins and runs haproxy on the host with the VIP, the listener, the pool's
 * members and the health monitor they describe.
 */
const getParam = (name: string): HeatValue => ({ get_param: name });
const given = (names: readonly string[]) =>
  output('Every property as given (what the local cloud configures its load balancer from).', Object.fromEntries(names.map((n) => [n, getParam(n)])));
const tenant = { tenant_id: param('string', 'tenant_id (ignored)', '') };

export const loadBalancer: ProviderTemplate = template('Local cloud stand-in for OS::Octavia::LoadBalancer: the VIP is served by haproxy on the host.', {
  parameters: {
    description: param('string', 'description', ''),
    name: param('string', 'name', ''),
    provider: param('string', 'provider (ignored)', ''),
    vip_address: param('string', 'vip_address: the VIP (the local cloud requires one)', ''),
    vip_subnet: param('string', 'vip_subnet: the subnet of the VIP'),
    admin_state_up: param('boolean', 'admin_state_up', true),
    ...tenant,
    flavor: param('string', 'flavor (ignored)', ''),
    availability_zone: param('string', 'availability_zone (ignored)', ''),
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    given: given(['name', 'vip_address', 'vip_subnet', 'admin_state_up']),
    vip_address: output('The VIP.', getParam('vip_address')),
    vip_port_id: output('The VIP port (none in the local cloud).', ''),
    vip_subnet_id: output('The VIP subnet.', getParam('vip_subnet')),
    pools: output('Pools (not tracked).', []),
    flavor_id: output('Flavor.', getParam('flavor')),
  },
});

export const listener: ProviderTemplate = template('Local cloud stand-in for OS::Octavia::Listener.', {
  parameters: {
    protocol_port: param('number', 'protocol_port'),
    protocol: param('string', 'protocol: TCP is what the local cloud serves'),
    loadbalancer: param('string', 'loadbalancer', ''),
    default_pool: param('string', 'default_pool', ''),
    name: param('string', 'name', ''),
    admin_state_up: param('boolean', 'admin_state_up', true),
    description: param('string', 'description', ''),
    default_tls_container_ref: param('string', 'default_tls_container_ref (ignored)', ''),
    sni_container_refs: param('list', 'sni_container_refs (ignored)', []),
    connection_limit: param('number', 'connection_limit', -1),
    ...tenant,
    allowed_cidrs: param('list', 'allowed_cidrs: who may connect', []),
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    given: given(['protocol_port', 'protocol', 'loadbalancer', 'allowed_cidrs', 'admin_state_up']),
    loadbalancers: output('Load balancers.', [{ id: getParam('loadbalancer') }]),
    default_pool_id: output('Default pool.', getParam('default_pool')),
  },
});

export const pool: ProviderTemplate = template('Local cloud stand-in for OS::Octavia::Pool.', {
  parameters: {
    admin_state_up: param('boolean', 'admin_state_up', true),
    description: param('string', 'description', ''),
    session_persistence: param('map', 'session_persistence (ignored)', {}),
    name: param('string', 'name', ''),
    lb_algorithm: param('string', 'lb_algorithm: ROUND_ROBIN, LEAST_CONNECTIONS or SOURCE_IP'),
    listener: param('string', 'listener', ''),
    loadbalancer: param('string', 'loadbalancer', ''),
    protocol: param('string', 'protocol'),
    tls_enabled: param('boolean', 'tls_enabled (ignored)', false),
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    given: given(['lb_algorithm', 'listener', 'loadbalancer', 'protocol', 'admin_state_up']),
    healthmonitor_id: output('Health monitor (not tracked).', ''),
    listeners: output('Listeners.', [{ id: getParam('listener') }]),
    members: output('Members (not tracked).', []),
  },
});

export const healthMonitor: ProviderTemplate = template('Local cloud stand-in for OS::Octavia::HealthMonitor.', {
  parameters: {
    admin_state_up: param('boolean', 'admin_state_up', true),
    delay: param('number', 'delay: seconds between probes'),
    expected_codes: param('string', 'expected_codes', '200'),
    http_method: param('string', 'http_method', 'GET'),
    max_retries: param('number', 'max_retries: probes before a member is marked up or down'),
    pool: param('string', 'pool'),
    timeout: param('number', 'timeout: seconds a probe may take'),
    type: param('string', 'type: HTTPS, HTTP or TCP is what the local cloud probes'),
    url_path: param('string', 'url_path', '/'),
    ...tenant,
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    given: given(['delay', 'expected_codes', 'http_method', 'max_retries', 'pool', 'timeout', 'type', 'url_path', 'admin_state_up']),
    pools: output('Pools.', [{ id: getParam('pool') }]),
  },
});

export const poolMember: ProviderTemplate = template('Local cloud stand-in for OS::Octavia::PoolMember.', {
  parameters: {
    pool: param('string', 'pool'),
    address: param('string', 'address: the member'),
    protocol_port: param('number', 'protocol_port'),
    monitor_address: param('string', 'monitor_address', ''),
    monitor_port: param('number', 'monitor_port (0 = protocol_port)', 0),
    weight: param('number', 'weight', 1),
    admin_state_up: param('boolean', 'admin_state_up', true),
    subnet: param('string', 'subnet', ''),
    tags: param('list', 'tags', []),
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    given: given(['pool', 'address', 'protocol_port', 'weight', 'admin_state_up']),
    address: output('The member address.', getParam('address')),
    pool_id: output('The pool.', getParam('pool')),
  },
});
