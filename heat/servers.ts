import { CorekubeError } from '../core/errors.ts';
import type { PlaceholderName } from '../cloud-config/placeholders.ts';
import type { AddressPlan } from '../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { getAttr, getParam, getResource, type HeatValue, type Resource } from './hot.ts';
import { joinTokenValue } from './join-token.ts';
import { channelAgentValues, CHANNEL_AGENT_PLACEHOLDERS } from './overlord-channel.ts';
import { overlordSecretValue } from './overlord-secret.ts';
import { PRIVATE_NET, PRIVATE_SUBNET, ROUTER_INTERFACE } from './network.ts';
import { CLUSTER_SECGROUP, MASTER_SECGROUP, MINION_SECGROUP, OVERLORD_SECGROUP } from './security.ts';
import { userDataProperty, type PlaceholderValues, type RenderUserData, type Role } from './user-data.ts';
import { CLUSTER_READY, DISCOVERY_READY, OVERLORD_READY, overlordReadyPart, signalToken, signalUrl } from './wait-conditions.ts';

/**
 * The cluster's servers. discovery and overlord sit on Neutron ports with the address plan's fixed IPs;
 * the overlord also gets a floating IP so an admin can SSH in and follow `docker logs overlord`. Masters
 * (at the address plan's fixed addresses, by index) and minions (DHCP) are ResourceGroups whose user_data never depends on a count nor on %index%, so changing a
 * count adds or removes servers and never replaces one.
 *
 * Boot order follows the data: the overlord boots first; discovery, masters and minions need its SSH key
 * and the discovery CA from overlord_ready's data; masters and minions also wait for discovery_ready.
 *
 * Standby overlords (overlord_count - 1, a ResourceGroup on DHCP addresses, no floating IP) boot once
 * discovery is ready, with the discovery CA from overlord_ready's data and the overlord secret, fetch the
 * bootstrap overlord's state from discovery and stand by in the leader election. Only their group reads
 * overlord_count, so changing it adds or removes standbys and touches nothing else.
 */
export const DISCOVERY_PORT = 'discovery_port';
export const DISCOVERY = 'discovery';
export const OVERLORD_PORT = 'overlord_port';
export const OVERLORD = 'overlord';
export const OVERLORD_FLOATING_IP = 'overlord_floating_ip';
export const OVERLORD_STANDBYS = 'overlord_standbys';
export const MASTERS = 'masters';
export const MINIONS = 'minions';

/** Placeholders whose value would make a server's user_data change with a count: replaced servers. */
const COUNTS: readonly PlaceholderName[] = ['masterCount', 'minionCount'];

const fromOverlord: PlaceholderValues = {
  overlordSshKey: overlordReadyPart('sshKey'),
  discoveryCa: overlordReadyPart('discoveryCa'),
};

function serverProperties(spec: ClusterSpec, role: Role, name: string, network: HeatValue, userData: HeatValue, securityGroups?: HeatValue[]) {
  return {
    name,
    image: getParam('image'),
    flavor: getParam(`${role}_flavor`),
    key_name: getParam('key_name'),
    networks: [network],
    ...(securityGroups ? { security_groups: securityGroups } : {}),
    metadata: { corekube_cluster: spec.name, corekube_role: role },
    user_data_format: 'RAW',
    user_data: userData,
  };
}

function fixedPort(spec: ClusterSpec, role: Role, ip: string, groups: string[]): Resource {
  return {
    type: 'OS::Neutron::Port',
    properties: {
      name: `${spec.name}-${role}`,
      network: getResource(PRIVATE_NET),
      fixed_ips: [{ subnet: getResource(PRIVATE_SUBNET), ip_address: ip }],
      security_groups: groups.map(getResource),
    },
  };
}

function nodeGroup(spec: ClusterSpec, plan: AddressPlan, role: 'master' | 'minion', count: string, roleGroup: string, render: RenderUserData): Resource {
  const text = render(role, spec);
  if (text.includes('%index%')) {
    throw new CorekubeError('E_INTERNAL', `the ${role} user_data contains %index%, which ResourceGroup would replace per server`, {
      hint: 'cloud-config/ must not emit %index%: a machine finds its identity at boot',
    });
  }
  const userData = userDataProperty(role, text, { joinToken: joinTokenValue, ...fromOverlord }, COUNTS);
  return {
    type: 'OS::Heat::ResourceGroup',
    depends_on: [DISCOVERY_READY],
    properties: {
      count: getParam(count),
      resource_def: {
        type: 'OS::Nova::Server',
        properties: serverProperties(
          spec,
          role,
          `${spec.name}-${role}-%index%`,
          // masters sit at the address plan's fixed addresses, by index: the load balancer's pool names them, and a
          // master replaced at an index keeps its etcd member's address; minions take DHCP addresses
          role === 'master'
            ? { network: getResource(PRIVATE_NET), subnet: getResource(PRIVATE_SUBNET), fixed_ip: plan.masterAddressPattern }
            : { network: getResource(PRIVATE_NET), subnet: getResource(PRIVATE_SUBNET) },
          userData,
          [getResource(CLUSTER_SECGROUP), getResource(roleGroup)],
        ),
      },
    },
  };
}

export function serverResources(spec: ClusterSpec, plan: AddressPlan, render: RenderUserData): Record<string, Resource> {
  const overlordUserData = userDataProperty(
    'overlord',
    render('overlord', spec),
    {
      joinToken: joinTokenValue,
      overlordSecret: overlordSecretValue,
      readyUrl: signalUrl(OVERLORD_READY),
      readyToken: signalToken(OVERLORD_READY),
      clusterReadyUrl: signalUrl(CLUSTER_READY),
      clusterReadyToken: signalToken(CLUSTER_READY),
      masterCount: getParam('master_count'),
      minionCount: getParam('minion_count'),
      ...channelAgentValues(spec),
    },
    // the overlord makes these itself; taking them from overlord_ready would wait on its own signal
    ['overlordSshKey', 'discoveryCa'],
  );
  const standbyUserData = userDataProperty(
    'overlord-standby',
    render('overlord-standby', spec),
    {
      joinToken: joinTokenValue,
      overlordSecret: overlordSecretValue,
      discoveryCa: overlordReadyPart('discoveryCa'),
      masterCount: getParam('master_count'),
      minionCount: getParam('minion_count'),
    },
    // a standby signals nothing: it holds no wait-condition handle (and takes the channel's stack user from the sealed state)
    ['readyUrl', 'readyToken', 'clusterReadyUrl', 'clusterReadyToken', ...CHANNEL_AGENT_PLACEHOLDERS],
  );
  const discoveryUserData = userDataProperty(
    'discovery',
    render('discovery', spec),
    { joinToken: joinTokenValue, ...fromOverlord, readyUrl: signalUrl(DISCOVERY_READY), readyToken: signalToken(DISCOVERY_READY) },
    COUNTS,
  );
  return {
    [OVERLORD_PORT]: fixedPort(spec, 'overlord', plan.overlord, [CLUSTER_SECGROUP, OVERLORD_SECGROUP]),
    [OVERLORD_FLOATING_IP]: {
      type: 'OS::Neutron::FloatingIP',
      depends_on: [ROUTER_INTERFACE],
      properties: { floating_network: getParam('external_network'), port_id: getResource(OVERLORD_PORT) },
    },
    [OVERLORD]: {
      type: 'OS::Nova::Server',
      // it pulls its container image at boot: the router must be up
      depends_on: [ROUTER_INTERFACE],
      properties: {
        ...serverProperties(spec, 'overlord', `${spec.name}-overlord`, { port: getResource(OVERLORD_PORT) }, overlordUserData),
        // its user_data carries the initial counts: a scale-up must not replace the overlord
        user_data_update_policy: 'IGNORE',
      },
    },
    [OVERLORD_STANDBYS]: {
      type: 'OS::Heat::ResourceGroup',
      // they need the discovery CA (overlord_ready's data) and a discovery that serves it; they pull the image
      depends_on: [DISCOVERY_READY, ROUTER_INTERFACE],
      properties: {
        count: standbyCount,
        resource_def: {
          type: 'OS::Nova::Server',
          properties: {
            ...serverProperties(
              spec,
              'overlord-standby',
              `${spec.name}-overlord-standby-%index%`,
              { network: getResource(PRIVATE_NET), subnet: getResource(PRIVATE_SUBNET) },
              standbyUserData,
              [getResource(CLUSTER_SECGROUP), getResource(OVERLORD_SECGROUP)],
            ),
            flavor: getParam('overlord_flavor'),
            // like the bootstrap overlord's, its user_data carries the initial counts: a scale-up must not replace it
            user_data_update_policy: 'IGNORE',
          },
        },
      },
    },
    [DISCOVERY_PORT]: fixedPort(spec, 'discovery', plan.discovery, [CLUSTER_SECGROUP]),
    [DISCOVERY]: {
      type: 'OS::Nova::Server',
      depends_on: [ROUTER_INTERFACE],
      properties: serverProperties(spec, 'discovery', `${spec.name}-discovery`, { port: getResource(DISCOVERY_PORT) }, discoveryUserData),
    },
    [MASTERS]: nodeGroup(spec, plan, 'master', 'master_count', MASTER_SECGROUP, render),
    [MINIONS]: nodeGroup(spec, plan, 'minion', 'minion_count', MINION_SECGROUP, render),
  };
}

/** overlord_count - 1, as the integer ResourceGroup's count takes (yaql: HOT has no arithmetic of its own). */
export const standbyCount: HeatValue = { yaql: { expression: '$.data.overlords - 1', data: { overlords: getParam('overlord_count') } } };

/** The private IP of a fixed-port server, and the private IPs of a group's members (a list). */
export const portIp = (port: string): HeatValue => getAttr(port, 'fixed_ips', 0, 'ip_address');
export const groupIps = (group: string): HeatValue => getAttr(group, 'networks', getResource(PRIVATE_NET), 0);
export const firstMemberIp = (group: string): HeatValue => getAttr(group, 'resource.0', 'networks', getResource(PRIVATE_NET), 0);
