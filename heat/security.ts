import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { getParam, getResource, ifCondition, type HeatValue, type Resource } from './hot.ts';

/**
 * Security groups, least privilege. Nothing is open to 0.0.0.0/0; every rule names its protocol and a port
 * range starting at 1 or more (ICMP names no ports). Egress stays Neutron's default (allow), which machines
 * need to download releases.
 * - cluster: every machine. Between members only (remote_group = the group itself): etcd client + peer,
 *   flannel VXLAN, kubelet, kube-apiserver, ICMP. SSH only from the overlord's group.
 * - overlord: SSH from admin_cidr (to follow `docker logs overlord`).
 * - master: kube-apiserver from admin_cidr, and from the private network when an Octavia load balancer fronts
 *   the masters (its amphorae reach the members, and probe /readyz, from their own ports on that network).
 * - minion: NodePorts (TCP + UDP) from node_port_cidr, only when it is not empty.
 */
export const CLUSTER_SECGROUP = 'cluster_secgroup';
export const OVERLORD_SECGROUP = 'overlord_secgroup';
export const MASTER_SECGROUP = 'master_secgroup';
export const MINION_SECGROUP = 'minion_secgroup';
export const NODE_PORTS_OPEN = 'node_ports_open';

export const PORTS = {
  ssh: 22,
  etcdClient: 2379,
  etcdPeer: 2380,
  flannelVxlan: 8472,
  kubelet: 10250,
  apiserver: 6443,
  nodePortMin: 30000,
  nodePortMax: 32767,
} as const;

type Rule = Record<string, HeatValue>;

const fromMembers = (protocol: string, min?: number, max?: number): Rule => ({
  direction: 'ingress',
  ethertype: 'IPv4',
  protocol,
  ...(min === undefined ? {} : { port_range_min: min, port_range_max: max ?? min }),
  remote_mode: 'remote_group_id', // without remote_group_id: this group itself
});

const fromCidr = (protocol: string, min: number, max: number, cidr: HeatValue): Rule => ({
  direction: 'ingress',
  ethertype: 'IPv4',
  protocol,
  port_range_min: min,
  port_range_max: max,
  remote_mode: 'remote_ip_prefix',
  remote_ip_prefix: cidr,
});

export const securityConditions: Record<string, HeatValue> = {
  [NODE_PORTS_OPEN]: { not: { equals: [getParam('node_port_cidr'), ''] } },
};

export function securityResources(spec: ClusterSpec): Record<string, Resource> {
  const group = (role: string, description: string, rules: HeatValue): Resource => ({
    type: 'OS::Neutron::SecurityGroup',
    properties: { name: `${spec.name}-${role}`, description, rules },
  });
  return {
    [OVERLORD_SECGROUP]: group('overlord', 'corekube overlord: SSH from admin_cidr', [
      fromCidr('tcp', PORTS.ssh, PORTS.ssh, getParam('admin_cidr')),
    ]),
    [CLUSTER_SECGROUP]: group('cluster', 'corekube members: etcd, flannel, kubelet, API between members; SSH from the overlord', [
      fromMembers('tcp', PORTS.etcdClient, PORTS.etcdPeer),
      fromMembers('udp', PORTS.flannelVxlan),
      fromMembers('tcp', PORTS.kubelet),
      fromMembers('tcp', PORTS.apiserver),
      fromMembers('icmp'),
      {
        direction: 'ingress',
        ethertype: 'IPv4',
        protocol: 'tcp',
        port_range_min: PORTS.ssh,
        port_range_max: PORTS.ssh,
        remote_mode: 'remote_group_id',
        remote_group_id: getResource(OVERLORD_SECGROUP),
      },
    ]),
    [MASTER_SECGROUP]: group(
      'master',
      spec.apiLoadBalancer === 'octavia' ? 'corekube masters: Kubernetes API from admin_cidr and the load balancer' : 'corekube masters: Kubernetes API from admin_cidr',
      [
        fromCidr('tcp', PORTS.apiserver, PORTS.apiserver, getParam('admin_cidr')),
        ...(spec.apiLoadBalancer === 'octavia' ? [fromCidr('tcp', PORTS.apiserver, PORTS.apiserver, spec.network.privateCidr)] : []),
      ],
    ),
    [MINION_SECGROUP]: group(
      'minion',
      'corekube minions: NodePorts from node_port_cidr when it is set',
      ifCondition(
        NODE_PORTS_OPEN,
        [
          fromCidr('tcp', PORTS.nodePortMin, PORTS.nodePortMax, getParam('node_port_cidr')),
          fromCidr('udp', PORTS.nodePortMin, PORTS.nodePortMax, getParam('node_port_cidr')),
        ],
        [],
      ),
    ),
  };
}
