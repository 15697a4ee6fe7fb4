import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { PlaceholderName } from '../cloud-config/placeholders.ts';
import { MEMBERS_METADATA_KEY, OVERLORD_CHANNEL, VERSIONS_METADATA_KEY } from '../contracts/overlord-channel.ts';
import { CLOUD_METADATA_KEY } from '../contracts/openstack-cloud.ts';
import { cloudMetadata } from './cloud-provider.ts';
import { getAttr, getParam, type HeatValue, type Resource } from './hot.ts';

/**
 * The channel from the stack to the running overlords (contracts/overlord-channel.ts): one resource,
 * `overlord_channel`, an OS::Heat::DeployedServer — Heat gives it a stack user that may read this resource's
 * metadata and nothing else (os-collect-config's POLL_SERVER_HEAT transport). Its metadata holds the counts the
 * user changes with `openstack stack update --existing --parameter minion_count=N` (`corekube_members`; Heat
 * updates it in place, the stack user stays) and, with the OpenStack cloud provider, the application credential
 * (`corekube_cloud`, heat/cloud-provider.ts). It depends on parameters and the network only, so nothing waits for
 * it but the bootstrap overlord, whose user_data carries only the stack user's id, password, project, the stack
 * and the region; the overlord asks Keystone for a token with them and polls the metadata from Heat
 * (overlord/edges/stack-channel.ts), and hands the stack user to its standbys in the sealed state.
 */

/** the placeholders only the bootstrap overlord's user_data holds */
export const CHANNEL_AGENT_PLACEHOLDERS: readonly PlaceholderName[] = ['cloudAuthUrl', 'cloudUserId', 'cloudPassword', 'cloudProjectId', 'cloudStackId', 'cloudRegion'];

export function overlordChannelResources(spec: ClusterSpec): Record<string, Resource> {
  const cloud = cloudMetadata(spec);
  return {
    [OVERLORD_CHANNEL]: {
      type: 'OS::Heat::DeployedServer',
      properties: { software_config_transport: 'POLL_SERVER_HEAT' },
      metadata: {
        [MEMBERS_METADATA_KEY]: { master_count: getParam('master_count'), minion_count: getParam('minion_count') },
        [VERSIONS_METADATA_KEY]: { kubernetes: getParam('kubernetes_version') },
        ...(cloud ? { [CLOUD_METADATA_KEY]: cloud } : {}),
      },
    },
  };
}

/** The bootstrap overlord's user_data values: the stack user of overlord_channel (what reads its metadata). */
export function channelAgentValues(spec: ClusterSpec): Partial<Record<PlaceholderName, HeatValue>> {
  const heat = (field: string) => getAttr(OVERLORD_CHANNEL, 'os_collect_config', 'heat', field);
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
