import { describe, expect, it } from 'vitest';
import { PLACEHOLDERS } from '../../../cloud-config/placeholders.ts';
import { renderUserData } from '../../../cloud-config/index.ts';
import { parseYaml } from '../../../core/yaml.ts';
import { clusterTemplate, renderClusterTemplate } from '../../../heat/cluster-template.ts';
import type { HeatValue, Resource, Template } from '../../../heat/hot.ts';
import { userDataProperty } from '../../../heat/user-data.ts';
import { addressPlan } from '../../../clusterspec/address-plan.ts';
import { parseIpv4 } from '../../../clusterspec/cidr.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';

const spec = (flags: Record<string, string> = {}) => parseClusterSpec({ flags });
const generate = (flags: Record<string, string> = {}) => clusterTemplate(spec(flags), renderUserData);

/** Every value nested anywhere in a Heat value, depth first. */
function* walk(v: unknown): Generator<unknown> {
  yield v;
  if (Array.isArray(v)) for (const x of v) yield* walk(x);
  else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) yield* walk(x);
}
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** Every security group rule, including both branches of an `if`. */
function rules(t: Template): Record<string, unknown>[] {
  return Object.values(t.resources)
    .filter((r) => r.type === 'OS::Neutron::SecurityGroup')
    .flatMap((r) => [...walk(r.properties!.rules)].filter((x): x is Record<string, unknown> => isObject(x) && 'direction' in x));
}

const strReplaceOf = (userData: HeatValue) => (userData as { str_replace: { template: string; params: Record<string, HeatValue> } }).str_replace;
const groupServer = (t: Template, group: string) => (t.resources[group]!.properties!.resource_def as { properties: Record<string, HeatValue> }).properties;

describe('cluster template parameters', () => {
  it('leaves exactly key_name, image and external_network without a default — and the cloud provider\'s Keystone URL and application credential', () => {
    const required = (t: ReturnType<typeof generate>) => Object.entries(t.parameters).filter(([, p]) => p.default === undefined).map(([name]) => name).sort();
    expect(required(generate({ 'cloud-provider': 'none' }))).toEqual(['external_network', 'image', 'key_name']);
    expect(required(generate())).toEqual(['application_credential_id', 'application_credential_secret', 'external_network', 'image', 'key_name', 'openstack_auth_url']);
  });

  it('takes defaults for key_name, image and external_network from the spec when it gives them', () => {
    const t = generate({ 'key-name': 'ops', image: 'flatcar-stable', 'external-network': 'public', 'cloud-provider': 'none' });
    expect(Object.values(t.parameters).every((p) => p.default !== undefined)).toBe(true);
    expect(t.parameters.key_name!.default).toBe('ops');
  });

  it('gives every parameter a label and a description, and constrains the counts', () => {
    const t = generate({ masters: '3', minions: '42' });
    for (const p of Object.values(t.parameters)) {
      expect(p.label).not.toBe('');
      expect(p.description).not.toBe('');
    }
    expect(t.parameters.master_count).toMatchObject({ default: 3, constraints: [{ allowed_values: [1, 3, 5] }] });
    expect(t.parameters.minion_count).toMatchObject({ default: 42, constraints: [{ range: { min: 0, max: 500 } }] });
    expect(t.parameters.cluster_ready_timeout!.default).toBe(3600);
  });

  it('matches admin_cidr only against IPv4 CIDRs other than /0, and node_port_cidr against empty or a CIDR', () => {
    const t = generate();
    const full = (p: string) => new RegExp(`^(?:${p})$`);
    const admin = full(t.parameters.admin_cidr!.constraints![0]!.allowed_pattern!);
    expect(['10.240.0.0/16', '203.0.113.7/32', '0.0.0.0/1'].every((v) => admin.test(v))).toBe(true);
    expect(['0.0.0.0/0', '', '10.0.0.0', '10.0.0.0/33'].some((v) => admin.test(v))).toBe(false);
    const nodePort = full(t.parameters.node_port_cidr!.constraints![0]!.allowed_pattern!);
    expect(['', '0.0.0.0/0', '192.0.2.0/24'].every((v) => nodePort.test(v))).toBe(true);
    expect(t.parameters.node_port_cidr!.default).toBe('');
  });
});

describe('cluster template security groups', () => {
  it('opens nothing to 0.0.0.0/0 and starts every port range at 1 or more', () => {
    const all = rules(generate({ 'admin-cidr': '198.51.100.0/24', 'node-port-cidr': '198.51.100.0/24' }));
    expect(all.length).toBeGreaterThan(5);
    for (const r of all) {
      expect(r.remote_ip_prefix).not.toBe('0.0.0.0/0');
      if ('port_range_min' in r) expect(r.port_range_min).toBeGreaterThanOrEqual(1);
      expect(r.remote_mode === 'remote_group_id' || isObject(r.remote_ip_prefix)).toBe(true);
    }
  });

  it('lets only cluster members reach etcd, flannel, kubelet and the API, and only the overlord SSH in', () => {
    const t = generate();
    const cluster = t.resources.cluster_secgroup!.properties!.rules as Record<string, unknown>[];
    expect(cluster.every((r) => r.remote_mode === 'remote_group_id')).toBe(true);
    const ports = cluster.map((r) => `${r.protocol}:${r.port_range_min ?? '*'}-${r.port_range_max ?? '*'}`);
    expect(ports.sort()).toEqual(['icmp:*-*', 'tcp:10250-10250', 'tcp:22-22', 'tcp:2379-2380', 'tcp:6443-6443', 'udp:8472-8472']);
    const ssh = cluster.find((r) => r.port_range_min === 22)!;
    expect(ssh.remote_group_id).toEqual({ get_resource: 'overlord_secgroup' });
  });

  it('opens NodePorts on minions only under the node_ports_open condition', () => {
    const t = generate();
    expect(t.conditions).toEqual({ node_ports_open: { not: { equals: [{ get_param: 'node_port_cidr' }, ''] } } });
    const minionRules = t.resources.minion_secgroup!.properties!.rules as { if: [string, Record<string, unknown>[], unknown[]] };
    expect(minionRules.if[0]).toBe('node_ports_open');
    expect(minionRules.if[1].map((r) => `${r.protocol}:${r.port_range_min}-${r.port_range_max}`)).toEqual(['tcp:30000-32767', 'udp:30000-32767']);
    expect(minionRules.if[2]).toEqual([]);
  });

  it('puts masters and minions in the cluster group plus their role group', () => {
    const t = generate();
    expect(groupServer(t, 'masters').security_groups).toEqual([{ get_resource: 'cluster_secgroup' }, { get_resource: 'master_secgroup' }]);
    expect(groupServer(t, 'minions').security_groups).toEqual([{ get_resource: 'cluster_secgroup' }, { get_resource: 'minion_secgroup' }]);
  });
});

describe('cluster template scaling', () => {
  it('keeps master and minion user_data identical whatever the counts, so a stack update never replaces a server', () => {
    const a = generate({ masters: '1', minions: '0' });
    const b = generate({ masters: '5', minions: '500' });
    for (const group of ['masters', 'minions']) {
      expect(groupServer(b, group).user_data).toEqual(groupServer(a, group).user_data);
      expect(JSON.stringify(groupServer(a, group).user_data)).not.toContain('%index%');
    }
    expect(b.resources.discovery).toEqual(a.resources.discovery);
  });

  it('differs for 5 and 500 minions only in the minion_count default, so its size does not grow', () => {
    const five = renderClusterTemplate(spec({ minions: '5' }), renderUserData);
    const many = renderClusterTemplate(spec({ minions: '500' }), renderUserData);
    expect(many.length - five.length).toBe('500'.length - '5'.length);
    expect(many.replace(/(minion_count:[\s\S]*?default: )500/, '$15')).toBe(five);
  });

  it('sizes the groups by the count parameters and lets the overlord ignore user_data updates', () => {
    const t = generate();
    expect(t.resources.masters!.properties!.count).toEqual({ get_param: 'master_count' });
    expect(t.resources.minions!.properties!.count).toEqual({ get_param: 'minion_count' });
    expect(t.resources.overlord!.properties!.user_data_update_policy).toBe('IGNORE');
  });
});

describe('cluster template boot order and user_data', () => {
  const t = generate();
  const paramsOf = (userData: HeatValue) => strReplaceOf(userData).params;

  it('fills every placeholder in every user_data, leaving no token for the machine to see', () => {
    for (const [name, r] of Object.entries(t.resources) as [string, Resource][]) {
      const props = r.type === 'OS::Heat::ResourceGroup' ? groupServer(t, name) : r.properties;
      if (r.type !== 'OS::Heat::ResourceGroup' && r.type !== 'OS::Nova::Server') continue;
      const { template, params } = strReplaceOf(props!.user_data!);
      for (const token of Object.values(PLACEHOLDERS)) {
        if (template.includes(token)) expect(params, `${name} ${token}`).toHaveProperty([token]);
      }
      expect(Object.keys(params).every((k) => template.includes(k))).toBe(true);
    }
  });

  it('gives discovery, masters and minions the overlord key and CA from overlord_ready data, split as the design says', () => {
    const key = { str_split: [':', { str_split: ['"', { get_attr: ['overlord_ready', 'data'] }, 3] }, 0] };
    const ca = { str_split: [':', { str_split: ['"', { get_attr: ['overlord_ready', 'data'] }, 3] }, 1] };
    for (const userData of [t.resources.discovery!.properties!.user_data!, groupServer(t, 'masters').user_data!, groupServer(t, 'minions').user_data!]) {
      const params = paramsOf(userData);
      if (PLACEHOLDERS.overlordSshKey in params) expect(params[PLACEHOLDERS.overlordSshKey]).toEqual(key);
      if (PLACEHOLDERS.discoveryCa in params) expect(params[PLACEHOLDERS.discoveryCa]).toEqual(ca);
    }
    expect(paramsOf(groupServer(t, 'minions').user_data!)).toHaveProperty([PLACEHOLDERS.overlordSshKey]);
    expect(paramsOf(groupServer(t, 'minions').user_data!)).toHaveProperty([PLACEHOLDERS.joinToken], { get_attr: ['join_token', 'value'] });
  });

  it('gives the overlord its wait conditions, the counts and the join token, and nothing from its own signal', () => {
    const params = paramsOf(t.resources.overlord!.properties!.user_data!);
    expect(params[PLACEHOLDERS.readyUrl]).toEqual({ get_attr: ['overlord_ready_handle', 'endpoint'] });
    expect(params[PLACEHOLDERS.readyToken]).toEqual({ get_attr: ['overlord_ready_handle', 'token'] });
    if (PLACEHOLDERS.clusterReadyUrl in params) expect(params[PLACEHOLDERS.clusterReadyUrl]).toEqual({ get_attr: ['cluster_ready_handle', 'endpoint'] });
    if (PLACEHOLDERS.minionCount in params) expect(params[PLACEHOLDERS.minionCount]).toEqual({ get_param: 'minion_count' });
    expect(JSON.stringify(params)).not.toContain('overlord_ready"');
    expect(JSON.stringify(params)).not.toContain('"data"]');
  });

  it('starts masters and minions after discovery_ready, and times cluster_ready from when they exist', () => {
    expect(t.resources.masters!.depends_on).toEqual(['discovery_ready']);
    expect(t.resources.minions!.depends_on).toEqual(['discovery_ready']);
    expect(t.resources.cluster_ready).toMatchObject({ depends_on: ['masters', 'minions'], properties: { timeout: { get_param: 'cluster_ready_timeout' }, count: 1 } });
    expect(t.resources.discovery_ready!.properties).toMatchObject({ handle: { get_resource: 'discovery_ready_handle' }, count: 1 });
  });

  it('makes the join token a long RandomString of letters and digits', () => {
    const props = t.resources.join_token!.properties!;
    expect(t.resources.join_token!.type).toBe('OS::Heat::RandomString');
    expect(props.length).toBeGreaterThanOrEqual(32);
    expect(props.character_classes).toEqual([{ class: 'lettersdigits', min: 1 }]);
  });

  it('keeps every user_data under Nova\'s 64 KiB limit once base64-encoded, with room for the filled values', () => {
    const NOVA_MAX_RAW = (65535 / 4) * 3;
    const FILLED_VALUES_MARGIN = 8192; // CA PEM in base64, key, handle URLs and tokens
    for (const os of ['flatcar', 'ubuntu']) {
      for (const role of ['discovery', 'overlord', 'master', 'minion'] as const) {
        expect(Buffer.byteLength(renderUserData(role, spec({ os, masters: '5', minions: '500' }))) + FILLED_VALUES_MARGIN, `${os} ${role}`).toBeLessThan(NOVA_MAX_RAW);
      }
    }
  });

  it('fails generation when cloud-config puts a count into a minion user_data', () => {
    expect(() => userDataProperty('minion', `x ${PLACEHOLDERS.minionCount}`, {}, ['minionCount'])).toThrow(/must not receive/);
  });
});

describe('cluster template network and outputs', () => {
  it('keeps the fixed addresses of discovery and overlord out of the DHCP pool', () => {
    const s = spec({ 'private-cidr': '10.50.0.0/22' });
    const t = clusterTemplate(s, renderUserData);
    const plan = addressPlan(s);
    const [pool] = t.resources.private_subnet!.properties!.allocation_pools as { start: string; end: string }[];
    expect(pool).toEqual({ start: '10.50.0.32', end: '10.50.3.254' });
    for (const ip of [plan.gateway, plan.discovery, plan.overlord]) expect(parseIpv4(ip)!).toBeLessThan(parseIpv4(pool!.start)!);
    expect(t.resources.discovery_port!.properties!.fixed_ips).toEqual([{ subnet: { get_resource: 'private_subnet' }, ip_address: '10.50.0.10' }]);
    expect(t.resources.overlord_port!.properties!.fixed_ips).toEqual([{ subnet: { get_resource: 'private_subnet' }, ip_address: '10.50.0.11' }]);
    expect(t.resources.router!.properties!.external_gateway_info).toEqual({ network: { get_param: 'external_network' } });
  });

  it('gives the overlord a floating IP on the external network', () => {
    const t = generate();
    expect(t.resources.overlord_floating_ip).toMatchObject({
      type: 'OS::Neutron::FloatingIP',
      properties: { floating_network: { get_param: 'external_network' }, port_id: { get_resource: 'overlord_port' } },
    });
  });

  it('outputs addresses and how to follow progress, never a token, a key or wait-condition data', () => {
    const t = generate();
    expect(Object.keys(t.outputs)).toEqual(expect.arrayContaining([
      'discovery_endpoint', 'discovery_ip', 'overlord_ip', 'master_ips', 'minion_ips', 'api_endpoint', 'follow_progress',
    ]));
    const attrs = [...walk(t.outputs)].filter((v): v is { get_attr: unknown[] } => isObject(v) && 'get_attr' in v).map((v) => v.get_attr[0]);
    for (const forbidden of ['join_token', 'overlord_ready', 'overlord_ready_handle', 'discovery_ready_handle', 'cluster_ready_handle']) {
      expect(attrs).not.toContain(forbidden);
    }
    expect(t.outputs.minion_ips!.value).toEqual({ get_attr: ['minions', 'networks', { get_resource: 'private_net' }, 0] });
    expect(t.outputs.follow_progress!.value).toEqual({
      str_replace: { template: 'ssh core@HOST sudo docker logs -f overlord', params: { HOST: { get_attr: ['overlord_floating_ip', 'floating_ip_address'] } } },
    });
    expect(JSON.stringify(generate({ os: 'ubuntu' }).outputs.follow_progress)).toContain('ssh ubuntu@HOST sudo docker logs -f overlord');
  });
});

describe('cluster template files', () => {
  it('serialises to YAML that parses back to the same template', () => {
    const s = spec();
    expect(parseYaml(renderClusterTemplate(s, renderUserData))).toEqual(JSON.parse(JSON.stringify(clusterTemplate(s, renderUserData))));
  });

  it('renders 1 master, 3 minions on flatcar', async () => {
    await expect(renderClusterTemplate(spec({ masters: '1', minions: '3', os: 'flatcar' }), renderUserData)).toMatchFileSnapshot('__snapshots__/cluster-1-master-3-minions-flatcar.yaml');
  });

  it('renders 3 masters, 0 minions on ubuntu', async () => {
    await expect(renderClusterTemplate(spec({ masters: '3', minions: '0', os: 'ubuntu' }), renderUserData)).toMatchFileSnapshot('__snapshots__/cluster-3-masters-0-minions-ubuntu.yaml');
  });

  it('renders 3 overlords on flatcar', async () => {
    await expect(renderClusterTemplate(spec({ overlords: '3', os: 'flatcar' }), renderUserData)).toMatchFileSnapshot('__snapshots__/cluster-3-overlords-flatcar.yaml');
  });
});

describe('cluster template standby overlords', () => {
  const t = generate({ overlords: '3' });
  const standby = groupServer(t, 'overlord_standbys');
  const paramsOf = (userData: HeatValue) => strReplaceOf(userData).params;

  it('has overlord_count (default: the spec\'s overlords, 1..5) and a group of overlord_count - 1 standbys', () => {
    expect(t.parameters.overlord_count).toMatchObject({ type: 'number', default: 3, constraints: [{ range: { min: 1, max: 5 } }] });
    expect(generate().parameters.overlord_count!.default).toBe(1);
    expect(t.resources.overlord_standbys).toMatchObject({
      type: 'OS::Heat::ResourceGroup',
      depends_on: ['discovery_ready', 'router_interface'],
      properties: { count: { yaql: { expression: '$.data.overlords - 1', data: { overlords: { get_param: 'overlord_count' } } } } },
    });
  });

  it('boots standbys on the private net (DHCP) in the cluster and overlord groups, as overlord flavor, ignoring user_data updates', () => {
    expect(standby).toMatchObject({
      name: 'corekube-overlord-standby-%index%',
      flavor: { get_param: 'overlord_flavor' },
      networks: [{ network: { get_resource: 'private_net' }, subnet: { get_resource: 'private_subnet' } }],
      security_groups: [{ get_resource: 'cluster_secgroup' }, { get_resource: 'overlord_secgroup' }],
      user_data_update_policy: 'IGNORE',
      metadata: { corekube_cluster: 'corekube', corekube_role: 'overlord-standby' },
    });
    expect(JSON.stringify(standby.user_data)).toContain(' --standby');
  });

  it('gives every overlord the overlord secret, standbys the discovery CA and no wait-condition handle, and no node the secret', () => {
    const secret = { get_attr: ['overlord_secret', 'value'] };
    expect(t.resources.overlord_secret).toEqual({ type: 'OS::Heat::RandomString', properties: { length: 64, character_classes: [{ class: 'lettersdigits', min: 1 }] } });
    expect(paramsOf(t.resources.overlord!.properties!.user_data!)[PLACEHOLDERS.overlordSecret]).toEqual(secret);
    const params = paramsOf(standby.user_data!);
    expect(params[PLACEHOLDERS.overlordSecret]).toEqual(secret);
    expect(params[PLACEHOLDERS.joinToken]).toEqual({ get_attr: ['join_token', 'value'] });
    expect(params[PLACEHOLDERS.discoveryCa]).toEqual({ str_split: [':', { str_split: ['"', { get_attr: ['overlord_ready', 'data'] }, 3] }, 1] });
    expect(JSON.stringify(params)).not.toMatch(/_handle/);
    for (const other of [t.resources.discovery!.properties!.user_data!, groupServer(t, 'masters').user_data!, groupServer(t, 'minions').user_data!]) {
      expect(JSON.stringify(other)).not.toContain('overlord_secret');
    }
    const attrs = [...walk(t.outputs)].filter((v): v is { get_attr: unknown[] } => isObject(v) && 'get_attr' in v).map((v) => v.get_attr[0]);
    expect(attrs).not.toContain('overlord_secret');
    expect(t.outputs.overlord_standby_ips!.value).toEqual({ get_attr: ['overlord_standbys', 'networks', { get_resource: 'private_net' }, 0] });
  });

  it('changes nothing but overlord_count\'s default between 1 and 5 overlords, and only the standby group reads it: a stack update adds or removes standbys only', () => {
    const one = generate({ overlords: '1' });
    const five = generate({ overlords: '5' });
    expect(five.resources).toEqual(one.resources);
    expect({ ...five.parameters, overlord_count: undefined }).toEqual({ ...one.parameters, overlord_count: undefined });
    const readers = Object.entries(one.resources).filter(([, r]) => JSON.stringify(r).includes('"overlord_count"')).map(([name]) => name);
    expect(readers).toEqual(['overlord_standbys']);
  });
});

describe('the API endpoint', () => {
  const lbResources = (t: Template) => Object.entries(t.resources).filter(([, r]) => r.type.startsWith('OS::Octavia::'));

  it('puts an Octavia load balancer in front of 3 or 5 masters by default, and none in front of 1', () => {
    expect(lbResources(generate({ masters: '3' })).map(([, r]) => r.type).sort()).toEqual(['OS::Octavia::HealthMonitor', 'OS::Octavia::Listener', 'OS::Octavia::LoadBalancer', 'OS::Octavia::Pool']);
    expect(generate({ masters: '5' }).resources.api_pool_members!.properties!.resource_def).toMatchObject({ type: 'OS::Octavia::PoolMember' });
    expect(lbResources(generate({ masters: '1' }))).toEqual([]);
    expect(lbResources(generate({ masters: '1', 'api-load-balancer': 'octavia' })).length).toBe(4);
    expect(lbResources(generate({ masters: '3', 'api-load-balancer': 'none' }))).toEqual([]);
  });

  it('serves the VIP at the fixed address, passes TCP 6443 through to a pool of every master, probed on /readyz', () => {
    const t = generate({ masters: '3', 'admin-cidr': '203.0.113.0/24' });
    expect(t.resources.api_lb!.properties).toMatchObject({ vip_address: '10.240.0.12', vip_subnet: { get_resource: 'private_subnet' } });
    expect(t.resources.api_listener!.properties).toMatchObject({ protocol: 'TCP', protocol_port: 6443, allowed_cidrs: ['10.240.0.0/16', { get_param: 'admin_cidr' }] });
    expect(t.resources.api_pool!.properties).toMatchObject({ protocol: 'TCP', listener: { get_resource: 'api_listener' } });
    expect(t.resources.api_monitor!.properties).toMatchObject({ type: 'HTTPS', url_path: '/readyz', expected_codes: '200', pool: { get_resource: 'api_pool' } });
    const members = t.resources.api_pool_members!.properties!;
    expect(members.count).toEqual({ get_param: 'master_count' });
    expect((members.resource_def as { properties: Record<string, HeatValue> }).properties).toMatchObject({ address: '10.240.0.2%index%', protocol_port: 6443, pool: { get_resource: 'api_pool' } });
  });

  it('boots the masters at the fixed addresses the pool names, by index; minions on DHCP', () => {
    const t = generate({ masters: '3' });
    expect(groupServer(t, 'masters').networks).toEqual([{ network: { get_resource: 'private_net' }, subnet: { get_resource: 'private_subnet' }, fixed_ip: '10.240.0.2%index%' }]);
    expect(groupServer(t, 'minions').networks).toEqual([{ network: { get_resource: 'private_net' }, subnet: { get_resource: 'private_subnet' } }]);
  });

  it('lets the load balancer reach the masters from the private network, and only with one', () => {
    const fromPrivate = (t: Template) => rules(t).filter((r) => r.remote_ip_prefix === '10.240.0.0/16' && r.port_range_min === 6443);
    expect(fromPrivate(generate({ masters: '3' })).length).toBe(1);
    expect(fromPrivate(generate({ masters: '1' }))).toEqual([]);
  });

  it("gives the VIP as api_endpoint and api_tunnel's target with a load balancer, the first master without", () => {
    const lb = generate({ masters: '3' }).outputs;
    expect(lb.api_endpoint!.value).toEqual({ str_replace: { template: 'https://HOST:6443', params: { HOST: { get_attr: ['api_lb', 'vip_address'] } } } });
    expect(JSON.stringify(lb.api_tunnel!.value)).toContain('"MASTER":{"get_attr":["api_lb","vip_address"]}');
    expect(JSON.stringify(generate({ masters: '1' }).outputs.api_endpoint!.value)).toContain('"resource.0"');
  });

  it("builds no load balancer for node-local and opens nothing new: minions reach every master's 6443 as members of the cluster group", () => {
    const t = generate({ masters: '3', 'api-load-balancer': 'node-local' });
    expect(lbResources(t)).toEqual([]);
    // the cluster group (masters and minions both) lets members reach each other's 6443 (no remote_group_id: the group itself)
    const cluster = t.resources.cluster_secgroup!.properties!.rules as Record<string, unknown>[];
    const api = cluster.find((r) => r.port_range_min === 6443)!;
    expect(api).toMatchObject({ direction: 'ingress', protocol: 'tcp', port_range_max: 6443, remote_mode: 'remote_group_id' });
    expect(api.remote_group_id).toBeUndefined();
    expect(groupServer(t, 'minions').security_groups).toEqual(expect.arrayContaining([{ get_resource: 'cluster_secgroup' }]));
    expect(groupServer(t, 'masters').security_groups).toEqual(expect.arrayContaining([{ get_resource: 'cluster_secgroup' }]));
    // no rule for the whole private network: that was the load balancer's
    expect(rules(t).filter((r) => r.remote_ip_prefix === '10.240.0.0/16' && r.port_range_min === 6443)).toEqual([]);
  });

  it("gives the first master as api_endpoint and api_tunnel's target with node-local, saying the nodes reach every master", () => {
    const outputs = generate({ masters: '3', 'api-load-balancer': 'node-local' }).outputs;
    expect(outputs.api_endpoint!.value).toEqual(generate({ masters: '3', 'api-load-balancer': 'none' }).outputs.api_endpoint!.value);
    expect(JSON.stringify(outputs.api_endpoint!.value)).toContain('"resource.0"');
    expect(outputs.api_endpoint!.description).toMatch(/first master.*node-local proxy/);
    expect(JSON.stringify(outputs.api_tunnel!.value)).toContain('"resource.0"');
  });

  it('refuses an unknown load balancer kind, naming the field and what to use', () => {
    expect(() => spec({ 'api-load-balancer': 'f5' })).toThrow(/api-load-balancer.*must be one of octavia, node-local, none/s);
  });
});

describe('the address plan', () => {
  it.each([
    ['10.240.0.0/16', '10.240.0.20', '10.240.0.2%index%'],
    ['192.168.7.0/24', '192.168.7.20', '192.168.7.2%index%'],
    ['10.1.2.64/26', '10.1.2.80', '10.1.2.8%index%'],
    ['10.1.2.128/26', '10.1.2.150', '10.1.2.15%index%'],
    ['10.1.2.192/26', '10.1.2.210', '10.1.2.21%index%'],
  ])('in %s puts the masters at five fixed addresses below DHCP from %s, written %s for Heat', (cidr, first, pattern) => {
    const plan = addressPlan(spec({ 'private-cidr': cidr }));
    expect(plan.masters[0]).toBe(first);
    expect(plan.masterAddressPattern).toBe(pattern);
    plan.masters.forEach((ip, i) => expect(pattern.replace('%index%', String(i))).toBe(ip));
    const host = (ip: string) => parseIpv4(ip)! - parseIpv4(cidr.split('/')[0]!)!;
    for (const ip of [...plan.masters, plan.apiVip, plan.discovery, plan.overlord]) expect(host(ip)).toBeLessThan(32);
    expect(new Set([...plan.masters, plan.apiVip, plan.discovery, plan.overlord, plan.gateway]).size).toBe(9);
  });
});

describe('the OpenStack cloud provider\'s credentials', () => {
  const t = generate();
  const text = JSON.stringify(t);
  const paramsOf = (userData: HeatValue) => strReplaceOf(userData).params;

  it('takes the application credential as hidden parameters, into the metadata of one resource whose stack user alone may read it', () => {
    expect(t.parameters.application_credential_id).toMatchObject({ hidden: true });
    expect(t.parameters.application_credential_secret).toMatchObject({ hidden: true });
    expect(t.resources.overlord_channel).toEqual({
      type: 'OS::Heat::DeployedServer',
      properties: { software_config_transport: 'POLL_SERVER_HEAT' },
      metadata: {
        corekube_members: { master_count: { get_param: 'master_count' }, minion_count: { get_param: 'minion_count' } },
        corekube_versions: { kubernetes: { get_param: 'kubernetes_version' } },
        corekube_cloud: {
          auth_url: { get_param: 'openstack_auth_url' },
          region: { get_param: 'openstack_region' },
          application_credential_id: { get_param: 'application_credential_id' },
          application_credential_secret: { get_param: 'application_credential_secret' },
          subnet_id: { get_resource: 'private_subnet' },
          floating_network_id: { get_attr: ['router', 'external_gateway_info', 'network_id'] },
        },
      },
    });
    expect(t.parameter_groups!.at(-1)).toMatchObject({ label: 'OpenStack cloud provider', parameters: ['openstack_auth_url', 'openstack_region', 'application_credential_id', 'application_credential_secret'] });
  });

  it('never puts the credential in user_data or an output: the bootstrap overlord gets the stack user, percent-encoded for Ignition', () => {
    const credential = (v: unknown) => JSON.stringify(v).includes('application_credential');
    for (const [name, r] of Object.entries(t.resources)) if (name !== 'overlord_channel') expect(credential(r), name).toBe(false);
    expect(credential(t.outputs)).toBe(false);
    const overlord = paramsOf(t.resources.overlord!.properties!.user_data!);
    expect(overlord[PLACEHOLDERS.cloudUserId]).toEqual({ get_attr: ['overlord_channel', 'os_collect_config', 'heat', 'user_id'] });
    expect(JSON.stringify(overlord[PLACEHOLDERS.cloudPassword])).toContain(".replace('#', '%23')");
    expect(paramsOf(generate({ os: 'ubuntu' }).resources.overlord!.properties!.user_data!)[PLACEHOLDERS.cloudPassword]).toEqual({ get_attr: ['overlord_channel', 'os_collect_config', 'heat', 'password'] });
    for (const role of ['discovery', 'masters', 'minions', 'overlord_standbys']) expect(JSON.stringify(t.resources[role] ?? {}), role).not.toContain('overlord_channel');
    expect(text.match(/application_credential_secret/g)).toHaveLength(4); // the parameter, its group, the metadata's key and value
  });

  it('has neither with --cloud-provider none: the channel carries the counts and versions only, and the bootstrap overlord still gets its stack user', () => {
    const none = generate({ 'cloud-provider': 'none' });
    expect(none.resources.overlord_channel!.metadata).toEqual({ corekube_members: { master_count: { get_param: 'master_count' }, minion_count: { get_param: 'minion_count' } }, corekube_versions: { kubernetes: { get_param: 'kubernetes_version' } } });
    expect(Object.keys(none.parameters).filter((p) => p.includes('credential') || p.startsWith('openstack_'))).toEqual([]);
    expect(JSON.stringify(none.resources.overlord)).toContain('overlord_channel');
    // nothing waits for the channel but the bootstrap overlord: it depends on parameters alone
    expect(JSON.stringify(none.resources.overlord_channel)).not.toMatch(/get_attr|get_resource|depends_on/);
  });
});
