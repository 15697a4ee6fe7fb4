import { ETCD_CLIENT_PORT } from '../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { OsProfile } from '../clusterspec/fields.ts';
import { getAttr, getResource, strReplace, type Output } from './hot.ts';
import { PRIVATE_NET, PRIVATE_SUBNET } from './network.ts';
import { CLUSTER_SECGROUP, MASTER_SECGROUP, MINION_SECGROUP, PORTS } from './security.ts';
import { addressPlan } from '../clusterspec/address-plan.ts';
import { API_LB } from './api-load-balancer.ts';
import { DISCOVERY_PORT, firstMemberIp, groupIps, MASTERS, MINIONS, OVERLORD_FLOATING_IP, OVERLORD_PORT, OVERLORD_STANDBYS, portIp } from './servers.ts';

/**
 * What `openstack stack output show` tells a person. Addresses and how to follow progress only: no output
 * carries the join token, a wait-condition token or any key. The network and security group IDs are what
 * `corekube heat node` asks for when booting one more node by hand.
 */
/**
 * The key_name key pair lands in the image's default user (Flatcar `core`, Ubuntu `ubuntu`), who has
 * passwordless sudo; the `corekube` user holds only the overlord's own key, so an admin logs in as the
 * default user and reads the container's logs with sudo.
 */
export const ADMIN_SSH_USER: Readonly<Record<OsProfile, string>> = { flatcar: 'core', ubuntu: 'ubuntu' };

export function clusterOutputs(spec: ClusterSpec): Record<string, Output> {
  const user = ADMIN_SSH_USER[spec.os];
  const overlordPublicIp = getAttr(OVERLORD_FLOATING_IP, 'floating_ip_address');
  const lb = spec.apiLoadBalancer === 'octavia';
  // the VIP as Octavia reports it, or the first master's address
  const apiHost = lb ? getAttr(API_LB, 'vip_address') : firstMemberIp(MASTERS);
  return {
    discovery_endpoint: {
      description: 'Client URL of the discovery etcd (TLS, client certificates only).',
      value: strReplace(`https://HOST:${ETCD_CLIENT_PORT}`, { HOST: portIp(DISCOVERY_PORT) }),
    },
    discovery_ip: { description: 'Private IP of the discovery server.', value: portIp(DISCOVERY_PORT) },
    overlord_ip: { description: 'Private IP of the overlord server.', value: portIp(OVERLORD_PORT) },
    overlord_standby_ips: { description: 'Private IPs of the standby overlords (overlord_count - 1), in index order; reach them through the overlord.', value: groupIps(OVERLORD_STANDBYS) },
    overlord_public_ip: { description: 'Floating IP of the overlord server (SSH from admin_cidr).', value: overlordPublicIp },
    master_ips: { description: 'Private IPs of the masters, in index order.', value: groupIps(MASTERS) },
    minion_ips: { description: 'Private IPs of the minions, in index order.', value: groupIps(MINIONS) },
    api_endpoint: {
      description: lb
        ? `Kubernetes API behind the load balancer (VIP ${addressPlan(spec).apiVip}, every master; private address: reach it from admin_cidr or through the overlord, see api_tunnel).`
        : spec.apiLoadBalancer === 'node-local'
          ? "Kubernetes API of the first master, for the admin (the nodes reach every master through their node-local proxy; any master's address serves; private address: reach it from admin_cidr or through the overlord, see api_tunnel)."
          : 'Kubernetes API of the first master (private address: reach it from admin_cidr or through the overlord, see api_tunnel).',
      value: strReplace(`https://HOST:${PORTS.apiserver}`, { HOST: apiHost }),
    },
    api_tunnel: {
      description: 'Forwards the Kubernetes API to localhost:6443 through the overlord.',
      value: strReplace(`ssh -N -L ${PORTS.apiserver}:MASTER:${PORTS.apiserver} ${user}@OVERLORD`, {
        MASTER: apiHost,
        OVERLORD: overlordPublicIp,
      }),
    },
    follow_progress: {
      description: 'Follows the overlord deploying the cluster (log in with the key_name key).',
      value: strReplace(`ssh ${user}@HOST sudo docker logs -f overlord`, { HOST: overlordPublicIp }),
    },
    private_network: { description: 'ID of the private network (for `corekube heat node`).', value: getResource(PRIVATE_NET) },
    private_subnet: { description: 'ID of the private subnet (for `corekube heat node`).', value: getResource(PRIVATE_SUBNET) },
    master_security_groups: {
      description: 'Security groups of a master (for `corekube heat node --role master`).',
      value: [getResource(CLUSTER_SECGROUP), getResource(MASTER_SECGROUP)],
    },
    minion_security_groups: {
      description: 'Security groups of a minion (for `corekube heat node`).',
      value: [getResource(CLUSTER_SECGROUP), getResource(MINION_SECGROUP)],
    },
  };
}
