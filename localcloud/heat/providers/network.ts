import type { HeatValue } from '../../../heat/hot.ts';
import { MEMBERS_CHAIN, members, output, param, STACK_ID_OUTPUT, template, yaql, type ProviderTemplate } from './provider.ts';

/**
 * Neutron stand-ins. They create nothing: the local cloud's network is a bridge the machine harness makes.
 * They accept the properties of the real types and echo them back as the real attributes, so every
 * `get_attr` and `get_resource` of corekube's template resolves — in Heat, by Heat.
 *
 * A port's id carries its fixed IP — `port-<ip>-<uuid>`, or `port-dhcp-<uuid>` without one — because
 * whoever is given only the id (a floating IP's `port_id`, a server's `networks: [{port}]`) must be able to
 * tell its address without a Neutron to ask.
 */
const getParam = (name: string): HeatValue => ({ get_param: name });
const common = {
  tenant_id: output('Owner project (none in the local cloud).', ''),
};

/** The port's first requested fixed IP, or '' (a DHCP port: the machine harness assigns the address). */
const FIRST_FIXED_IP = `$.data.list${MEMBERS_CHAIN}.where($.containsKey("ip_address")).select($.ip_address).first("")`;

/** The IP inside a port id made by the port stand-in (`port-<ip>-<uuid>`), or '' for a DHCP port or another id. */
export const PORT_ID_IP = `let(p => $.data.port.split("-")) -> $p.len() > 2 and $p[0] = "port" and $p[1] != "dhcp" and $p[1] or ""`;

export const net: ProviderTemplate = template('Local cloud stand-in for OS::Neutron::Net.', {
  parameters: {
    name: param('string', 'name: network name', ''),
    value_specs: param('map', 'value_specs: extra Neutron arguments (ignored)', {}),
    admin_state_up: param('boolean', 'admin_state_up', true),
    tenant_id: param('string', 'tenant_id (ignored)', ''),
    shared: param('boolean', 'shared', false),
    dhcp_agent_ids: param('list', 'dhcp_agent_ids (ignored)', []),
    port_security_enabled: param('boolean', 'port_security_enabled', true),
    qos_policy: param('string', 'qos_policy (ignored)', ''),
    dns_domain: param('string', 'dns_domain', ''),
    availability_zone_hints: param('list', 'availability_zone_hints (ignored)', []),
    tags: param('list', 'tags', []),
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    name: output('Network name.', getParam('name')),
    admin_state_up: output('Administrative state.', getParam('admin_state_up')),
    l2_adjacency: output('L2 adjacency.', true),
    mtu: output('MTU of the bridge.', 1500),
    port_security_enabled: output('Port security.', getParam('port_security_enabled')),
    qos_policy_id: output('QoS policy.', getParam('qos_policy')),
    segments: output('Segments.', []),
    status: output('Status.', 'ACTIVE'),
    subnets: output('Subnets (not tracked).', []),
    ...common,
  },
});

export const subnet: ProviderTemplate = template('Local cloud stand-in for OS::Neutron::Subnet.', {
  parameters: {
    network: param('string', 'network: the network this subnet belongs to'),
    network_id: param('string', 'network_id (deprecated spelling of network)', ''),
    subnetpool: param('string', 'subnetpool (ignored)', ''),
    prefixlen: param('number', 'prefixlen (ignored)', 0),
    cidr: param('string', 'cidr: the subnet\'s address range', ''),
    value_specs: param('map', 'value_specs (ignored)', {}),
    name: param('string', 'name', ''),
    ip_version: param('number', 'ip_version', 4),
    dns_nameservers: param('list', 'dns_nameservers', []),
    gateway_ip: param('string', 'gateway_ip', ''),
    enable_dhcp: param('boolean', 'enable_dhcp', true),
    allocation_pools: param('list', 'allocation_pools: [{start, end}]', []),
    tenant_id: param('string', 'tenant_id (ignored)', ''),
    host_routes: param('list', 'host_routes', []),
    ipv6_ra_mode: param('string', 'ipv6_ra_mode (ignored)', ''),
    ipv6_address_mode: param('string', 'ipv6_address_mode (ignored)', ''),
    segment: param('string', 'segment (ignored)', ''),
    tags: param('list', 'tags', []),
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    name: output('Subnet name.', getParam('name')),
    network_id: output('The network.', getParam('network')),
    cidr: output('Address range.', getParam('cidr')),
    gateway_ip: output('Gateway.', getParam('gateway_ip')),
    allocation_pools: output('DHCP ranges [{start, end}]: where the machine harness takes DHCP servers\' addresses from.', members('allocation_pools')),
    dns_nameservers: output('DNS servers.', getParam('dns_nameservers')),
    enable_dhcp: output('DHCP on.', getParam('enable_dhcp')),
    host_routes: output('Host routes.', members('host_routes')),
    ip_version: output('IP version.', getParam('ip_version')),
    ...common,
  },
});

export const port: ProviderTemplate = template('Local cloud stand-in for OS::Neutron::Port: its id is port-<fixed ip>-<uuid>.', {
  parameters: {
    network: param('string', 'network: the port\'s network'),
    network_id: param('string', 'network_id (deprecated spelling of network)', ''),
    name: param('string', 'name', ''),
    device_id: param('string', 'device_id', ''),
    device_owner: param('string', 'device_owner', ''),
    fixed_ips: param('list', 'fixed_ips: [{subnet, ip_address}]; ip_address is echoed, none = DHCP', []),
    security_groups: param('list', 'security_groups', []),
    replacement_policy: param('string', 'replacement_policy (ignored)', 'AUTO'),
    dns_name: param('string', 'dns_name', ''),
    tags: param('list', 'tags', []),
    value_specs: param('map', 'value_specs (ignored)', {}),
    admin_state_up: param('boolean', 'admin_state_up', true),
    mac_address: param('string', 'mac_address', ''),
    allowed_address_pairs: param('list', 'allowed_address_pairs', []),
    port_security_enabled: param('boolean', 'port_security_enabled', true),
    qos_policy: param('string', 'qos_policy (ignored)', ''),
    propagate_uplink_status: param('boolean', 'propagate_uplink_status', false),
    no_fixed_ips: param('boolean', 'no_fixed_ips', false),
  },
  resources: {},
  outputs: {
    'OS::stack_id': output('The port id: port-<fixed ip>-<uuid> (port-dhcp-<uuid> without a fixed IP).', {
      str_replace: {
        template: 'port-IP-ID',
        params: { IP: yaql(`let(ip => ${FIRST_FIXED_IP}) -> $ip != "" and $ip or "dhcp"`, { list: getParam('fixed_ips') }), ID: getParam('OS::stack_id') },
      },
    }),
    fixed_ips: output('[{subnet_id, ip_address}] as requested (ip_address absent for DHCP).', yaql(
      `$.data.list${MEMBERS_CHAIN}.select(let(m => $) -> dict("subnet_id" => $m.get("subnet", $m.get("subnet_id", ""))) + ` +
        '($m.containsKey("ip_address") and dict("ip_address" => $m.ip_address) or dict()))',
      { list: getParam('fixed_ips') },
    )),
    name: output('Port name.', getParam('name')),
    network: output('The network.', getParam('network')),
    network_id: output('The network.', getParam('network')),
    admin_state_up: output('Administrative state.', getParam('admin_state_up')),
    allowed_address_pairs: output('Allowed address pairs.', members('allowed_address_pairs')),
    device_id: output('Device.', getParam('device_id')),
    device_owner: output('Device owner.', getParam('device_owner')),
    dns_assignment: output('DNS assignment.', []),
    mac_address: output('MAC address (assigned by the machine harness).', getParam('mac_address')),
    port_security_enabled: output('Port security.', getParam('port_security_enabled')),
    propagate_uplink_status: output('Propagate uplink status.', getParam('propagate_uplink_status')),
    qos_policy_id: output('QoS policy.', getParam('qos_policy')),
    security_groups: output('Security groups.', getParam('security_groups')),
    status: output('Status.', 'ACTIVE'),
    subnets: output('Subnets of the fixed IPs.', yaql(`$.data.list${MEMBERS_CHAIN}.select($.get("subnet", $.get("subnet_id", "")))`, { list: getParam('fixed_ips') })),
    ...common,
  },
});

export const router: ProviderTemplate = template('Local cloud stand-in for OS::Neutron::Router.', {
  parameters: {
    name: param('string', 'name', ''),
    external_gateway_info: param('map', 'external_gateway_info: {network, enable_snat, external_fixed_ips}', {}),
    value_specs: param('map', 'value_specs (ignored)', {}),
    admin_state_up: param('boolean', 'admin_state_up', true),
    l3_agent_id: param('string', 'l3_agent_id (ignored)', ''),
    l3_agent_ids: param('list', 'l3_agent_ids (ignored)', []),
    distributed: param('boolean', 'distributed (ignored)', false),
    ha: param('boolean', 'ha (ignored)', false),
    availability_zone_hints: param('list', 'availability_zone_hints (ignored)', []),
    tags: param('list', 'tags', []),
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    name: output('Router name.', getParam('name')),
    admin_state_up: output('Administrative state.', getParam('admin_state_up')),
    external_gateway_info: output('Gateway as requested.', getParam('external_gateway_info')),
    status: output('Status.', 'ACTIVE'),
    ...common,
  },
});

export const routerInterface: ProviderTemplate = template('Local cloud stand-in for OS::Neutron::RouterInterface.', {
  parameters: {
    router: param('string', 'router'),
    router_id: param('string', 'router_id (deprecated spelling of router)', ''),
    subnet: param('string', 'subnet', ''),
    subnet_id: param('string', 'subnet_id (deprecated spelling of subnet)', ''),
    port: param('string', 'port', ''),
    port_id: param('string', 'port_id (deprecated spelling of port)', ''),
  },
  resources: {},
  outputs: { ...STACK_ID_OUTPUT },
});

export const securityGroup: ProviderTemplate = template('Local cloud stand-in for OS::Neutron::SecurityGroup (rules are recorded, not enforced).', {
  parameters: {
    name: param('string', 'name', ''),
    description: param('string', 'description', ''),
    rules: param('list', 'rules: [{direction, ethertype, protocol, port_range_min, port_range_max, remote_mode, remote_ip_prefix, remote_group_id}]', []),
  },
  resources: {},
  outputs: {
    ...STACK_ID_OUTPUT,
    rules: output('The rules as given (for tests that read the policy).', members('rules')),
  },
});

export const floatingIp: ProviderTemplate = template(
  'Local cloud stand-in for OS::Neutron::FloatingIP. There is no NAT: the "floating" address is the port\'s fixed IP, which the host reaches over the bridge.',
  {
    parameters: {
      floating_network: param('string', 'floating_network'),
      floating_network_id: param('string', 'floating_network_id (deprecated spelling)', ''),
      floating_subnet: param('string', 'floating_subnet (ignored)', ''),
      value_specs: param('map', 'value_specs (ignored)', {}),
      port_id: param('string', 'port_id: the port (a port stand-in\'s id carries its IP)', ''),
      fixed_ip_address: param('string', 'fixed_ip_address', ''),
      floating_ip_address: param('string', 'floating_ip_address: the address to use instead of the port\'s', ''),
      dns_name: param('string', 'dns_name', ''),
      dns_domain: param('string', 'dns_domain', ''),
    },
    resources: {},
    outputs: {
      ...STACK_ID_OUTPUT,
      floating_ip_address: output('The port\'s fixed IP (or floating_ip_address when given).', yaql(
        `$.data.given != "" and $.data.given or (${PORT_ID_IP})`,
        { given: getParam('floating_ip_address'), port: getParam('port_id') },
      )),
      fixed_ip_address: output('The port\'s fixed IP.', yaql(`$.data.given != "" and $.data.given or (${PORT_ID_IP})`, {
        given: getParam('fixed_ip_address'), port: getParam('port_id'),
      })),
      floating_network_id: output('The floating network.', getParam('floating_network')),
      port_id: output('The port.', getParam('port_id')),
      router_id: output('Router (none).', ''),
      ...common,
    },
  },
);
