import { toYaml } from '../core/yaml.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { getAttr, getParam, HOT_VERSION, ifCondition, type Parameter, type Template } from './hot.ts';
import { flavorParameter, imageParameter, keyNameParameter } from './parameters.ts';
import { userDataProperty, type PlaceholderValues, type RenderUserData } from './user-data.ts';

/**
 * A small template that boots ONE more master or minion into an existing cluster (`corekube heat node`),
 * for scaling by hand. It must be generated from the cluster's own spec: the discovery address, versions
 * and networks are baked into user_data exactly as in the cluster template. The values only the running
 * cluster knows (its join token, the overlord's SSH key, the discovery CA, network and security groups) are
 * parameters; their descriptions say where to read them.
 */
export type NodeRole = 'master' | 'minion';
export const NODE_ROLES: readonly NodeRole[] = ['master', 'minion'];
const IS_MASTER = 'is_master';
const SERVER = 'server';

function nodeParameters(spec: ClusterSpec, role: NodeRole): Record<string, Parameter> {
  const fromStack = (what: string) => `Read it from the cluster stack: ${what}.`;
  return {
    role: {
      type: 'string',
      label: 'Role',
      description: 'What the new machine becomes; the overlord deploys it once it announces itself to discovery.',
      default: role,
      constraints: [{ allowed_values: [...NODE_ROLES], description: 'must be master or minion' }],
    },
    join_token: {
      type: 'string',
      label: 'Join token',
      description: `The cluster's join token. ${fromStack("`openstack stack resource show <stack> join_token -c attributes` (value)")}`,
      hidden: true,
      constraints: [{ allowed_pattern: '[A-Za-z0-9]{32,}', description: 'letters and digits, at least 32' }],
    },
    overlord_ssh_key: {
      type: 'string',
      label: "Overlord's SSH key (base64)",
      description: `Base64 of the overlord's SSH public key line. ${fromStack("the part before ':' of overlord_ready's data (`openstack stack resource show <stack> overlord_ready -c attributes`)")}`,
      constraints: [{ allowed_pattern: '[A-Za-z0-9+/]+={0,2}', description: 'must be base64' }],
    },
    discovery_ca: {
      type: 'string',
      label: 'Discovery CA (base64)',
      description: `Base64 of the discovery etcd CA certificate PEM. ${fromStack("the part after ':' of overlord_ready's data")}`,
      constraints: [{ allowed_pattern: '[A-Za-z0-9+/]+={0,2}', description: 'must be base64' }],
    },
    network: {
      type: 'string',
      label: 'Private network',
      description: `The cluster's private network. ${fromStack('output private_network')}`,
      constraints: [{ custom_constraint: 'neutron.network', description: 'must be an existing Neutron network' }],
    },
    subnet: {
      type: 'string',
      label: 'Private subnet',
      description: `The cluster's private subnet. ${fromStack('output private_subnet')}`,
      constraints: [{ custom_constraint: 'neutron.subnet', description: 'must be an existing Neutron subnet' }],
    },
    security_groups: {
      type: 'comma_delimited_list',
      label: 'Security groups',
      description: `The role's security groups, comma-separated. ${fromStack('output master_security_groups or minion_security_groups')}`,
    },
    image: imageParameter(spec.openstack.image, spec.os),
    flavor: flavorParameter('new machine', spec.openstack.flavors[role]),
    key_name: keyNameParameter(spec.openstack.keyName),
  };
}

export function nodeTemplate(spec: ClusterSpec, role: NodeRole, render: RenderUserData): Template {
  const values: PlaceholderValues = {
    joinToken: getParam('join_token'),
    overlordSshKey: getParam('overlord_ssh_key'),
    discoveryCa: getParam('discovery_ca'),
  };
  const userData = (r: NodeRole) => userDataProperty(r, render(r, spec), values, ['masterCount', 'minionCount']);
  return {
    heat_template_version: HOT_VERSION,
    description: `One more master or minion for the corekube cluster "${spec.name}" (server name = stack name). Generated from the cluster's spec.`,
    parameters: nodeParameters(spec, role),
    conditions: { [IS_MASTER]: { equals: [getParam('role'), 'master'] } },
    resources: {
      [SERVER]: {
        type: 'OS::Nova::Server',
        properties: {
          name: getParam('OS::stack_name'),
          image: getParam('image'),
          flavor: getParam('flavor'),
          key_name: getParam('key_name'),
          networks: [{ network: getParam('network'), subnet: getParam('subnet') }],
          security_groups: getParam('security_groups'),
          metadata: { corekube_cluster: spec.name, corekube_role: getParam('role') },
          user_data_format: 'RAW',
          user_data: ifCondition(IS_MASTER, userData('master'), userData('minion')),
        },
      },
    },
    outputs: {
      ip: { description: 'Private IP of the new machine.', value: getAttr(SERVER, 'networks', getParam('network'), 0) },
    },
  };
}

export function renderNodeTemplate(spec: ClusterSpec, role: NodeRole, render: RenderUserData): string {
  return toYaml(nodeTemplate(spec, role, render), { header: '# Generated by corekube heat node from the cluster spec. Regenerate instead of editing this file.' });
}
