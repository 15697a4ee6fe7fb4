import { InvalidInputError, type FieldProblem } from '../core/errors.ts';

/**
 * The OpenStack cloud provider's credentials between the Heat template and the overlord: the template puts them
 * into the metadata of its `overlord_channel` resource under `corekube_cloud` (contracts/overlord-channel.ts), the
 * overlord reads them from there (overlord/trust/cloud-credentials.ts) and writes cloud.conf for the cluster
 * (overlord/kubernetes/cloud-provider.ts). Parsed once, here, into a validated value.
 */
/** the metadata key the template writes and the overlord reads */
export const CLOUD_METADATA_KEY = 'corekube_cloud';

/** An OpenStack project's coordinates and an application credential in it: what cloud.conf says. */
export interface OpenStackCloud {
  /** Keystone v3 (OS_AUTH_URL) */
  readonly authUrl: string;
  readonly region: string;
  readonly applicationCredentialId: string;
  readonly applicationCredentialSecret: string;
  /** the cluster's private subnet: where Octavia puts the VIPs of LoadBalancer Services */
  readonly subnetId: string;
  /** the external network their floating IPs come from; absent: LoadBalancer Services get private VIPs only */
  readonly floatingNetworkId?: string;
}

const ID = /^[A-Za-z0-9-]{1,255}$/;
const SECRET = /^[\x21-\x7e]{1,255}$/;

/**
 * Parses what Heat hands over (untrusted shape, from a resource's metadata) into an OpenStackCloud, or throws an
 * InvalidInputError naming every bad field. `where` names the source in the errors.
 */
export function parseOpenStackCloud(value: unknown, where: string): OpenStackCloud {
  const v = (value !== null && typeof value === 'object' && !Array.isArray(value) ? value : {}) as Record<string, unknown>;
  const problems: FieldProblem[] = [];
  const str = (key: string): string => (typeof v[key] === 'string' ? (v[key] as string).trim() : '');
  const need = (key: string, ok: (s: string) => boolean, why: string, fix: string) => {
    if (!ok(str(key))) problems.push({ field: `${where}.${key}`, value: key.includes('secret') ? '[redacted]' : v[key], message: why, fix });
  };
  need('auth_url', (s) => /^https?:\/\/[^\s/]+(\/\S*)?$/.test(s), 'is not an http(s) URL', 'pass Keystone\'s v3 URL (OS_AUTH_URL), e.g. https://keystone.example.org:5000/v3, as the stack parameter openstack_auth_url');
  need('region', (s) => /^[\x21-\x7e]{1,255}$/.test(s), 'is empty or not printable', 'pass the region (OS_REGION_NAME) as the stack parameter openstack_region');
  need('application_credential_id', (s) => ID.test(s), 'is not an application credential id', 'create one with `openstack application credential create corekube-<cluster>` and pass its id as application_credential_id');
  need('application_credential_secret', (s) => SECRET.test(s), 'is empty or holds spaces or control characters', 'pass the secret `openstack application credential create` printed as application_credential_secret');
  need('subnet_id', (s) => ID.test(s), 'is not a subnet id', 'the template passes its private subnet: regenerate it with `corekube heat generate`');
  const floating = str('floating_network_id');
  if (floating !== '' && !ID.test(floating)) problems.push({ field: `${where}.floating_network_id`, value: v.floating_network_id, message: 'is not a network id', fix: 'pass the external network\'s id or name as external_network' });
  if (problems.length > 0) throw new InvalidInputError('the OpenStack cloud credentials are incomplete', problems);
  return Object.freeze({
    authUrl: str('auth_url'),
    region: str('region'),
    applicationCredentialId: str('application_credential_id'),
    applicationCredentialSecret: str('application_credential_secret'),
    subnetId: str('subnet_id'),
    ...(floating === '' ? {} : { floatingNetworkId: floating }),
  });
}

/** The inverse of parseOpenStackCloud: the fields as the template writes them (what the overlord keeps, too). */
export function openStackCloudFields(cloud: OpenStackCloud): Record<string, string> {
  return {
    auth_url: cloud.authUrl,
    region: cloud.region,
    application_credential_id: cloud.applicationCredentialId,
    application_credential_secret: cloud.applicationCredentialSecret,
    subnet_id: cloud.subnetId,
    ...(cloud.floatingNetworkId ? { floating_network_id: cloud.floatingNetworkId } : {}),
  };
}
