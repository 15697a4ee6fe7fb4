import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { getAttr, getParam, getResource, type HeatValue, type Parameter, type Template } from './hot.ts';
import { PRIVATE_SUBNET, ROUTER } from './network.ts';

/**
 * The OpenStack cloud provider's credentials (spec.cloudProvider `openstack`), kept out of user_data, logs and
 * outputs. The user gives an application credential as two hidden stack parameters; the template puts them,
 * with Keystone's URL, the region, the private subnet and the external network's id, into the metadata of the
 * stack's channel to the overlords, `overlord_channel`, under `corekube_cloud` (heat/overlord-channel.ts: an
 * OS::Heat::DeployedServer whose stack user alone may read it). The overlord reads it from Heat
 * (overlord/trust/cloud-credentials.ts), then hands cloud.conf
 * to the cluster as a Secret (overlord/kubernetes/cloud-provider.ts). `openstack stack update --existing
 * --parameter application_credential_secret=…` changes the metadata in place: a restarted overlord reads the
 * new credential and rolls the controller and CSI pods.
 */

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

/** The metadata the overlord reads the credential from (under `corekube_cloud` of heat/overlord-channel.ts), or undefined. */
export function cloudMetadata(spec: ClusterSpec): Record<string, HeatValue> | undefined {
  if (spec.cloudProvider !== 'openstack') return undefined;
  return {
    auth_url: getParam('openstack_auth_url'),
    region: getParam('openstack_region'),
    application_credential_id: getParam('application_credential_id'),
    application_credential_secret: getParam('application_credential_secret'),
    subnet_id: getResource(PRIVATE_SUBNET),
    floating_network_id: getAttr(ROUTER, 'external_gateway_info', 'network_id'),
  };
}
