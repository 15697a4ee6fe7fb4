import { describe, expect, it } from 'vitest';
import { InvalidInputError, type FieldProblem } from '../../../core/errors.ts';
import { addressPlan } from '../../../clusterspec/address-plan.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import type { SpecSources } from '../../../clusterspec/sources.ts';

function problemsOf(sources: SpecSources): FieldProblem[] {
  try {
    parseClusterSpec(sources);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidInputError);
    return [...(err as InvalidInputError).problems];
  }
  throw new Error('expected the spec to be rejected');
}

describe('cluster spec', () => {
  it('has working defaults: 1 master, 3 minions, flatcar, Kubernetes 1.36, nothing open to the world', () => {
    const spec = parseClusterSpec({});
    expect(spec).toMatchObject({ name: 'corekube', masters: 1, minions: 3, overlords: 1, os: 'flatcar' });
    expect(spec.versions.kubernetes).toMatch(/^v1\.36\.\d+$/);
    expect(spec.network.adminCidr).toBe(spec.network.privateCidr);
    expect(spec.network.nodePortCidr).toBeUndefined();
    expect(spec.openstack.image).toBeUndefined();
    expect(spec.openstack.keyName).toBeUndefined();
    expect(spec.network.externalNetwork).toBeUndefined();
  });

  it('drains one minion at a time by default, and refuses a rollout that would drain none or too many', () => {
    expect(parseClusterSpec({}).rollout.maxUnavailable).toBe(1);
    expect(parseClusterSpec({ flags: { 'max-unavailable': '3' } }).rollout.maxUnavailable).toBe(3);
    const [p] = problemsOf({ flags: { 'max-unavailable': '0' } });
    expect(p).toMatchObject({ field: '--max-unavailable', value: '0', fix: expect.stringContaining('--max-unavailable 1') });
  });

  it('is frozen all the way down', () => {
    const spec = parseClusterSpec({});
    expect(Object.isFrozen(spec)).toBe(true);
    expect(Object.isFrozen(spec.network)).toBe(true);
    expect(Object.isFrozen(spec.openstack.flavors)).toBe(true);
  });

  it('takes flags over env over file over defaults', () => {
    const file = { masters: 5, minions: 10, os: 'ubuntu', network: { podCidr: '10.32.0.0/16' } };
    const spec = parseClusterSpec({
      flags: { masters: '3' },
      env: { COREKUBE_MASTERS: '5', COREKUBE_MINIONS: '7' },
      file,
    });
    expect(spec.masters).toBe(3);
    expect(spec.minions).toBe(7);
    expect(spec.os).toBe('ubuntu');
    expect(spec.network.podCidr).toBe('10.32.0.0/16');
  });

  it('takes the overlord count from --overlords, COREKUBE_OVERLORDS or the file\'s overlords', () => {
    expect(parseClusterSpec({ flags: { overlords: '3' } }).overlords).toBe(3);
    expect(parseClusterSpec({ env: { COREKUBE_OVERLORDS: '5' } }).overlords).toBe(5);
    expect(parseClusterSpec({ file: { overlords: 2 } }).overlords).toBe(2);
    expect(parseClusterSpec({ flags: { overlords: '1' }, env: { COREKUBE_OVERLORDS: '3' } }).overlords).toBe(1);
  });

  it('counts the standby overlords in the private network\'s room', () => {
    // a /26 holds 64 - 32 reserved - 1 = 31 DHCP addresses
    expect(parseClusterSpec({ flags: { minions: '28', 'private-cidr': '10.240.0.0/26' } }).minions).toBe(28);
    const [p] = problemsOf({ flags: { minions: '28', overlords: '3', 'private-cidr': '10.240.0.0/26' } });
    expect(p!.message).toMatch(/fewer than the 29 machines plus 2 standby overlords, overlord and discovery/);
  });

  it('reads comma-separated lists from flags and YAML lists from files', () => {
    expect(parseClusterSpec({ flags: { 'dns-nameservers': '1.1.1.1, 9.9.9.9' } }).network.dnsNameservers).toEqual(['1.1.1.1', '9.9.9.9']);
    expect(parseClusterSpec({ file: { network: { dnsNameservers: ['8.8.8.8'] } } }).network.dnsNameservers).toEqual(['8.8.8.8']);
  });

  it('reports every problem at once, each naming the field, the value and the fix', () => {
    const problems = problemsOf({
      flags: { masters: '2', minions: '501', os: 'coreos', 'kubernetes-version': '1.36' },
    });
    expect(problems.map((p) => p.field)).toEqual(['--masters', '--minions', '--os', '--kubernetes-version']);
    for (const p of problems) {
      expect(p.message.length).toBeGreaterThan(5);
      expect(p.fix.length).toBeGreaterThan(5);
    }
    expect(problems[0]).toMatchObject({ value: '2', fix: 'use --masters 3' });
  });

  it.each([
    [{ masters: '4' }, '--masters', /odd number/],
    [{ masters: 'three' }, '--masters', /whole number/],
    [{ minions: '-1' }, '--minions', /between 0 and 500/],
    [{ overlords: '0' }, '--overlords', /between 1 and 5/],
    [{ overlords: '6' }, '--overlords', /between 1 and 5/],
    [{ overlords: 'two' }, '--overlords', /whole number/],
    [{ name: 'Prod_Cluster' }, '--name', /DNS label/],
    [{ 'kubernetes-version': 'v1.29.0' }, '--kubernetes-version', /not supported/],
    [{ 'etcd-version': 'v2.3.8' }, '--etcd-version', /v3 release/],
    [{ 'flannel-version': 'latest' }, '--flannel-version', /vMAJOR\.MINOR\.PATCH/],
    [{ 'private-cidr': '10.240.0.1/16' }, '--private-cidr', /host bits set; the network is 10\.240\.0\.0\/16/],
    [{ 'private-cidr': '10.240.0.0/30' }, '--private-cidr', /too small/],
    [{ 'pod-cidr': '10.240.0.0/16' }, '--pod-cidr', /overlaps network\.privateCidr/],
    [{ 'service-cidr': '10.244.0.0/16' }, '--service-cidr', /overlaps network\.podCidr/],
    [{ 'service-cidr': '100.64.0.0/10' }, '--service-cidr', /between a \/12 and a \/24/],
    [{ 'admin-cidr': '0.0.0.0/0' }, '--admin-cidr', /whole Internet/],
    [{ 'admin-cidr': 'everywhere' }, '--admin-cidr', /not an IPv4 CIDR/],
    [{ 'dns-nameservers': '1.1.1.1,dns.example' }, '--dns-nameservers', /not an IPv4 address/],
    [{ 'vxlan-id': '0' }, '--vxlan-id', /between 1 and 16777215/],
    [{ 'pod-subnet-length': '30' }, '--pod-subnet-length', /between 16 and 28/],
    [{ image: 'my image' }, '--image', /without spaces/],
    [{ 'overlord-image': 'Not An Image' }, '--overlord-image', /container image/],
    [{ 'release-base-url': 'ftp://mirror/' }, '--release-base-url', /http\(s\) URL/],
    [{ bogus: 'x' }, '--bogus', /not a cluster spec option/],
  ])('rejects %j naming %s', (flags, field, message) => {
    const problems = problemsOf({ flags });
    expect(problems).toHaveLength(1);
    expect(problems[0]!.field).toBe(field);
    expect(problems[0]!.message).toMatch(message);
  });

  it('takes node-local as the API load balancer (a proxy on every minion), with 3 masters or with 1, from the flag, env or file', () => {
    expect(parseClusterSpec({ flags: { masters: '3', 'api-load-balancer': 'node-local' } }).apiLoadBalancer).toBe('node-local');
    // one master behind a proxy of one endpoint: pointless, harmless
    expect(parseClusterSpec({ flags: { masters: '1', 'api-load-balancer': 'node-local' } }).apiLoadBalancer).toBe('node-local');
    expect(parseClusterSpec({ env: { COREKUBE_API_LOAD_BALANCER: 'node-local' } }).apiLoadBalancer).toBe('node-local');
    expect(parseClusterSpec({ file: { masters: 3, apiLoadBalancer: 'node-local' } }).apiLoadBalancer).toBe('node-local');
    // the defaults are unchanged: octavia with more than one master, none with one
    expect(parseClusterSpec({ flags: { masters: '3' } }).apiLoadBalancer).toBe('octavia');
    expect(parseClusterSpec({ flags: { masters: '1' } }).apiLoadBalancer).toBe('none');
  });

  it('refuses an unknown API load balancer, naming the field, the value, every choice and what each does', () => {
    const problems = problemsOf({ flags: { masters: '3', 'api-load-balancer': 'haproxy' } });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatchObject({ field: '--api-load-balancer', value: 'haproxy', message: 'must be one of octavia, node-local, none' });
    expect(problems[0]!.fix).toMatch(/^use octavia \(.+\), node-local \(a proxy on every minion .+\) or none \(.+\)$/);
  });

  it('rejects a pod network too small for the machines, saying what size would fit', () => {
    const [p] = problemsOf({ flags: { minions: '300', 'pod-cidr': '10.244.0.0/16' } });
    expect(p!.message).toMatch(/holds 256 \/24 pod subnets, fewer than the 301 machines/);
    expect(p!.fix).toMatch(/\/15 or larger/);
  });

  it('rejects a private network too small for the machines', () => {
    const [p] = problemsOf({ flags: { minions: '300', 'private-cidr': '10.240.0.0/24' } });
    expect(p!.field).toBe('--private-cidr');
    expect(p!.message).toMatch(/holds 223 machine addresses/);
  });

  it('names the env variable or the file path a bad value came from', () => {
    expect(problemsOf({ env: { COREKUBE_MASTERS: '2' } })[0]!.field).toBe('COREKUBE_MASTERS');
    expect(problemsOf({ file: { network: { podCidr: 'x' } } })[0]!.field).toBe('network.podCidr');
  });

  it('rejects unknown and misspelt file keys, suggesting the right one', () => {
    const problems = problemsOf({ file: { network: { pod_cidr: '10.0.0.0/16' }, master: 3 }, fileName: 'cluster.yaml' });
    expect(problems.map((p) => p.field)).toEqual(['cluster.yaml: network.pod_cidr', 'cluster.yaml: master']);
    expect(problems[0]!.fix).toBe('did you mean network.podCidr?');
  });

  it('rejects a file that is not a mapping', () => {
    expect(problemsOf({ file: ['masters: 3'], fileName: 'c.yaml' })[0]!.message).toMatch(/mapping/);
  });
});

describe('address plan', () => {
  it('puts discovery and the overlord at fixed addresses outside the DHCP range', () => {
    const plan = addressPlan(parseClusterSpec({ flags: { 'private-cidr': '192.168.8.0/22' } }));
    expect(plan).toMatchObject({
      gateway: '192.168.8.1',
      discovery: '192.168.8.10',
      overlord: '192.168.8.11',
      dhcpStart: '192.168.8.32',
      dhcpEnd: '192.168.11.254',
      kubernetesServiceIp: '10.96.0.1',
      clusterDnsIp: '10.96.0.10',
      discoveryEndpoint: 'https://192.168.8.10:2379',
    });
  });
});
