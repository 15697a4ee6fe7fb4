import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { PlaceholderName } from '../cloud-config/placeholders.ts';
import { CLOUD_CREDENTIALS, CLOUD_METADATA_KEY } from '../contracts/openstack-cloud.ts';
import { getAttr, getParam, getResource, type HeatValue, type Parameter, type Resource, type Template } from './hot.ts';
import { PRIVATE_SUBNET, ROUTER } from './network.ts';

/**
 * The OpenStack cloud provider's credentials (spec.cloudProvider `openstack`), kept out of user_data, logs and
 * outputs. The user gives an application credential as two hidden stack parameters; the template puts them,
 * with Keystone's URL, the region, the private subnet and the external network's id, into the metadata of one
 * resource, `cloud_credentials` (an OS::Heat::DeployedServer: Heat gives it a stack user that may read that
 * resource's metadata and nothing else — os-collect-config's POLL_SERVER_HEAT transport). The bootstrap
 * overlord's user_data carries only that stack user's id, password and project; the overlord asks Keystone for
 * a token with them and reads the metadata from Heat (overlord/trust/cloud-credentials.ts), then hands cloud.conf
 * to the cluster as a Secret (overlord/kubernetes/cloud-provider.ts). `openstack stack update --existing
 * --parameter application_credential_secret=…` changes the metadata in place: a restarted overlord reads the
 * new credential and rolls the controller and CSI pods.
 */

/** the placeholders only the bootstrap overlord's user_data holds */
export const CLOUD_AGENT_PLACEHOLDERS: readonly PlaceholderName[] = ['cloudAuthUrl', 'cloudUserId', 'cloudPassword', 'cloudProjectId', 'cloudStackId', 'cloudRegion'];

export const CLOUD_PARAMETER_NAMES = ['openstack_auth_url', 'openstack_region', 'application_credential_id', 'application_credential_secret'] as const;

export function cloudProviderParameters(spec: ClusterSpec): Record<string, Parameter> {
  if (spec.cloudProvider !== 'openstack') return {};
  return {
    openstack_auth_url: {
      type: 'string',
      label: 'Keystone URL',
      description: 'Keystone v3 URL of this cloud (OS_AUTH_URL), for the cloud controller manager and Cinder CSI.',
      constraints: [{ allowed_pattern: 'https?://[^ ]+', description: 'must be an http(s) URL, e.g. https://keystone.example.org:5000/v3' }],
    },
    openstack_region: { type: 'string', label: 'Region', description: 'Region of this cloud (OS_REGION_NAME).', default: 'RegionOne' },
    application_credential_id: {
      type: 'string',
      label: 'Application credential ID',
      description: 'ID of an application credential of this project for the cluster (`openstack application credential create corekube-<cluster>`): the cloud controller manager and Cinder CSI act with it.',
      hidden: true,
      constraints: [{ allowed_pattern: '[A-Za-z0-9-]+', description: 'an application credential ID' }],
    },
    application_credential_secret: {
      type: 'string',
      label: 'Application credential secret',
      description: 'Its secret. Hidden: Heat never shows it, and it reaches no user_data, log or output.',
      hidden: true,
      constraints: [{ length: { min: 1 }, description: 'must not be empty' }],
    },
  };
}

export const cloudProviderParameterGroup: NonNullable<Template['parameter_groups']>[number] = {
  label: 'OpenStack cloud provider',
  description: 'LoadBalancer Services (Octavia) and PersistentVolumes (Cinder): an application credential for the cluster (--cloud-provider openstack).',
  parameters: [...CLOUD_PARAMETER_NAMES],
};

export function cloudProviderResources(spec: ClusterSpec): Record<string, Resource> {
  if (spec.cloudProvider !== 'openstack') return {};
  return {
    [CLOUD_CREDENTIALS]: {
      type: 'OS::Heat::DeployedServer',
      properties: { software_config_transport: 'POLL_SERVER_HEAT' },
      metadata: {
        [CLOUD_METADATA_KEY]: {
          auth_url: getParam('openstack_auth_url'),
          region: getParam('openstack_region'),
          application_credential_id: getParam('application_credential_id'),
          application_credential_secret: getParam('application_credential_secret'),
          subnet_id: getResource(PRIVATE_SUBNET),
          floating_network_id: getAttr(ROUTER, 'external_gateway_info', 'network_id'),
        },
      },
    },
  };
}

/** The bootstrap overlord's user_data values: the stack user of cloud_credentials (what reads its metadata). */
export function cloudAgentValues(spec: ClusterSpec): Partial<Record<PlaceholderName, HeatValue>> {
  if (spec.cloudProvider !== 'openstack') return {};
  const heat = (field: string) => getAttr(CLOUD_CREDENTIALS, 'os_collect_config', 'heat', field);
  return {
    cloudAuthUrl: heat('auth_url'),
    cloudUserId: heat('user_id'),
    // Ignition takes a file's content as a data URL (cloud-config/ignition.ts): the password's punctuation is
    // percent-encoded there; cloud-init takes it verbatim (a YAML block scalar)
    cloudPassword: spec.os === 'flatcar' ? percentEncoded(heat('password')) : heat('password'),
    cloudProjectId: heat('project_id'),
    cloudStackId: heat('stack_id'),
    cloudRegion: heat('region_name'),
  };
}

/**
 * A value percent-encoded for a data URL, by Heat (yaql: HOT has no other string function for it): `%` first,
 * then every character Heat's generated passwords may hold beside letters and digits (`!@#%^&*`).
 */
export function percentEncoded(value: HeatValue): HeatValue {
  const steps = [['%', '%25'], ['#', '%23'], ['^', '%5E'], ['&', '%26'], ['*', '%2A'], ['!', '%21'], ['@', '%40']];
  // `or ''`: while Heat validates the template, the attribute is not there yet (null)
  return { yaql: { expression: `($.data.v or '')${steps.map(([a, b]) => `.replace('${a}', '${b}')`).join('')}`, data: { v: value } } };
}
