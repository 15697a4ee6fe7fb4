import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { KUBERNETES_MINORS, MASTER_COUNTS, MAX_MINIONS, MAX_OVERLORDS, MIN_OVERLORDS } from '../clusterspec/fields.ts';
import type { Parameter, Template } from './hot.ts';
import { clusterReadyTimeoutParameter } from './wait-conditions.ts';

/**
 * The cluster template's parameters. Defaults come from the ClusterSpec; key_name, image and
 * external_network have none unless the spec gives one, because no default fits every cloud. Values that
 * user_data carries (CIDRs, versions, the overlord image) are fixed at generation and are not parameters:
 * a parameter that user_data ignored would lie.
 */
/** Heat matches allowed_pattern from the start and requires it to consume the whole value: longest alternatives first. */
export const IPV4_CIDR_PATTERN = '(\\d{1,3}\\.){3}\\d{1,3}/(3[0-2]|[12][0-9]|[0-9])';
/** Like IPV4_CIDR_PATTERN without /0: SSH and the Kubernetes API are never open to the whole Internet. */
const ADMIN_CIDR_PATTERN = '(\\d{1,3}\\.){3}\\d{1,3}/(3[0-2]|[12][0-9]|[1-9])';

const withDefault = <T extends string | number | string[]>(p: Parameter, value: T | undefined): Parameter =>
  value === undefined ? p : { ...p, default: value };

export function keyNameParameter(value: string | undefined): Parameter {
  return withDefault(
    {
      type: 'string',
      label: 'SSH key pair',
      description: 'Name of the Nova key pair installed for the image\'s default user on every server (emergency access; the overlord uses its own key).',
      constraints: [{ custom_constraint: 'nova.keypair', description: 'must be an existing Nova key pair' }],
    },
    value,
  );
}

export function imageParameter(value: string | undefined, os: ClusterSpec['os']): Parameter {
  return withDefault(
    {
      type: 'string',
      label: 'Image',
      description: `Glance image (name or ID) of every server. This template's user_data is written for ${os === 'flatcar' ? 'Flatcar Container Linux (Ignition)' : 'Ubuntu (cloud-init)'}; generate with --os for another OS.`,
      constraints: [{ custom_constraint: 'glance.image', description: 'must be an existing Glance image' }],
    },
    value,
  );
}

export function flavorParameter(what: string, value: string): Parameter {
  return {
    type: 'string',
    label: `${what[0]!.toUpperCase()}${what.slice(1)} flavor`,
    description: `Nova flavor of the ${what}.`,
    default: value,
    constraints: [{ custom_constraint: 'nova.flavor', description: 'must be an existing Nova flavor' }],
  };
}

export function clusterParameters(spec: ClusterSpec): Record<string, Parameter> {
  const f = spec.openstack.flavors;
  return {
    key_name: keyNameParameter(spec.openstack.keyName),
    image: imageParameter(spec.openstack.image, spec.os),
    external_network: withDefault(
      {
        type: 'string',
        label: 'External network',
        description: 'Neutron network (name or ID) that gives the router its gateway and the overlord its floating IP.',
        constraints: [{ custom_constraint: 'neutron.network', description: 'must be an existing Neutron network' }],
      },
      spec.network.externalNetwork,
    ),
    master_count: {
      type: 'number',
      label: 'Masters',
      description: 'Number of Kubernetes masters, each running an etcd member (odd, to keep a quorum).',
      default: spec.masters,
      constraints: [{ allowed_values: [...MASTER_COUNTS], description: 'must be 1, 3 or 5' }],
    },
    minion_count: {
      type: 'number',
      label: 'Minions',
      description: 'Number of Kubernetes worker nodes. Change it with `openstack stack update --existing --parameter minion_count=N`: existing servers are kept.',
      default: spec.minions,
      constraints: [{ range: { min: 0, max: MAX_MINIONS }, description: `between 0 and ${MAX_MINIONS}` }],
    },
    overlord_count: {
      type: 'number',
      label: 'Overlords',
      description:
        'Number of overlord servers: the bootstrap overlord plus overlord_count - 1 standbys, which fetch its state from discovery (sealed with overlord_secret) and take over within the leader lease when the leading overlord is gone. Change it with `openstack stack update --existing --parameter overlord_count=3`: existing servers are kept.',
      default: spec.overlords,
      constraints: [{ range: { min: MIN_OVERLORDS, max: MAX_OVERLORDS }, description: `between ${MIN_OVERLORDS} and ${MAX_OVERLORDS}` }],
    },
    kubernetes_version: {
      type: 'string',
      label: 'Kubernetes version',
      description: `The Kubernetes release the cluster runs. Change it with \`openstack stack update --existing --parameter kubernetes_version=v1.36.5\`: the overlord rolls it out — masters one at a time, then each minion drained (PodDisruptionBudgets respected), changed, Ready and uncordoned — one minor at a time (supported: ${KUBERNETES_MINORS.join(', ')}); a patch release can be rolled back the same way. No server is replaced.`,
      default: spec.versions.kubernetes,
      constraints: [{ allowed_pattern: 'v1\\.[0-9]{1,3}\\.[0-9]{1,3}', description: 'must be a Kubernetes release tag such as v1.36.5' }],
    },
    previous_kubernetes_version: {
      type: 'string',
      label: 'Previous Kubernetes version',
      description: 'Set by `corekube upgrade`: the release the last upgrade replaced, where `corekube upgrade --rollback` goes back to. Nothing reads it but that command.',
      default: '',
    },
    discovery_flavor: flavorParameter('discovery server', f.discovery),
    overlord_flavor: flavorParameter('overlord servers', f.overlord),
    master_flavor: flavorParameter('masters', f.master),
    minion_flavor: flavorParameter('minions', f.minion),
    admin_cidr: {
      type: 'string',
      label: 'Admin CIDR',
      description: 'IPv4 network allowed to SSH to the overlord and to reach the Kubernetes API (6443) on masters. Never 0.0.0.0/0.',
      default: spec.network.adminCidr,
      constraints: [
        { allowed_pattern: ADMIN_CIDR_PATTERN, description: 'must be an IPv4 CIDR a.b.c.d/len with len 1..32 (0.0.0.0/0 is refused)' },
        { custom_constraint: 'net_cidr', description: 'must be a valid network CIDR' },
      ],
    },
    node_port_cidr: {
      type: 'string',
      label: 'NodePort CIDR',
      description: 'IPv4 network allowed to reach NodePorts (30000-32767, TCP and UDP) on minions; empty keeps them closed from outside the cluster.',
      default: spec.network.nodePortCidr ?? '',
      constraints: [{ allowed_pattern: `(${IPV4_CIDR_PATTERN})?`, description: 'must be empty or an IPv4 CIDR a.b.c.d/len' }],
    },
    dns_nameservers: {
      type: 'comma_delimited_list',
      label: 'DNS servers',
      description: 'DNS servers handed out by the private subnet\'s DHCP (comma-separated); empty = the cloud\'s default.',
      default: [...spec.network.dnsNameservers],
    },
    cluster_ready_timeout: clusterReadyTimeoutParameter,
  };
}

export const clusterParameterGroups: NonNullable<Template['parameter_groups']> = [
  { label: 'Required', description: 'No default fits every cloud: give these.', parameters: ['key_name', 'image', 'external_network'] },
  { label: 'Size', description: 'How many machines (minion_count and overlord_count may change on stack update).', parameters: ['master_count', 'minion_count', 'overlord_count'] },
  { label: 'Release', description: 'What the cluster runs (kubernetes_version may change on stack update: a rolling upgrade).', parameters: ['kubernetes_version', 'previous_kubernetes_version'] },
  { label: 'Flavors', description: 'Nova flavors per role.', parameters: ['discovery_flavor', 'overlord_flavor', 'master_flavor', 'minion_flavor'] },
  { label: 'Access', description: 'Who may reach the cluster from outside.', parameters: ['admin_cidr', 'node_port_cidr', 'dns_nameservers'] },
  { label: 'Timeouts', description: 'How long stack create waits.', parameters: ['cluster_ready_timeout'] },
];
