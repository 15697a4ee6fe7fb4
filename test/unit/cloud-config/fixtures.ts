import YAML from 'yaml';
export { dataUrlText, fileAt, machineView, type IgnitionDoc, type MachineView, type WrittenFile } from '../../harness/user-data-view.ts';
import { BOOT_ROLES, type BootRole } from '../../../cloud-config/index.ts';
import type { PlaceholderName } from '../../../cloud-config/placeholders.ts';
import { parseClusterSpec, type ClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import type { OsProfile } from '../../../clusterspec/fields.ts';

export const OSES: readonly OsProfile[] = ['flatcar', 'ubuntu'];
export const CASES: readonly { role: BootRole; os: OsProfile }[] = BOOT_ROLES.flatMap((role) => OSES.map((os) => ({ role, os })));

export function specFor(os: OsProfile, flags: Record<string, string> = {}): ClusterSpec {
  return parseClusterSpec({ flags: { name: 'demo', os, ...flags } });
}

/** The user_data parsed as a YAML 1.2 document (what the yaml library wrote). */
export function parse12(text: string): Record<string, unknown> {
  return YAML.parse(text, { strict: true, uniqueKeys: true }) as Record<string, unknown>;
}

/** The same text read as YAML 1.1 — what PyYAML (cloud-init) sees. */
export function parse11(text: string): Record<string, unknown> {
  return YAML.parse(text, { version: '1.1', strict: true, uniqueKeys: true }) as Record<string, unknown>;
}

/** Realistic values, shaped as Heat fills them: base64 with + / =, a Heat signal URL, a Fernet-like token. */
export const SSH_KEY_LINE = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOb+Zz/9Tq0c2mW6rYV1x8b0Qh5x3cYb2lq9H3Pp4w7k overlord@demo';
export const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIBfake+/test==\n-----END CERTIFICATE-----\n';
export const FILLED: Record<PlaceholderName, string> = {
  joinToken: 'Ab3dEfGh1jKlMn0pQrStUvWxYz0123456789abcdefABCDEF',
  overlordSecret: 'Zy9xWv8uTs7rQp6oNm5lKj4iHg3fEd2cBa1ZYXWVUTSRQPONMLKJIHGFEDCBA098',
  overlordSshKey: Buffer.from(SSH_KEY_LINE).toString('base64'),
  discoveryCa: Buffer.from(CA_PEM).toString('base64'),
  readyUrl: 'http://heat.example:8000/v1/signal/arn%3Aopenstack%3Aheat%3A%3A1234%3Astacks/demo/5678/resources/overlord_ready_handle?Timestamp=2025-01-01T00%3A00%3A00Z&SignatureMethod=HmacSHA256#frag',
  readyToken: 'gAAAAABn-fake_Fernet-token_with-dashes_and_underscores==',
  clusterReadyUrl: 'https://heat.example:8004/v1/abc/stacks/demo/5678/resources/cluster_ready_handle/signal',
  clusterReadyToken: 'gAAAAABn-other_token==',
  // Heat's stack user password: letters, digits and !@#%^&* (heat/common/password_gen.py)
  cloudAuthUrl: 'https://keystone.example:5000/v3/',
  cloudUserId: '4b6f0c1c2a9e4e8f9a2f6f0e1d2c3b4a',
  cloudPassword: 'qx#t@V3TQe%ZPX^DY1JD!n7z&jDlc6*x',
  cloudProjectId: 'c2be9e343ef945dfa3387dc3d68d3cd9',
  cloudStackId: 'demo/ebe9735d-3b42-4734-af7f-6ed51c976f10',
  cloudRegion: 'RegionOne',
  masterCount: '3',
  minionCount: '50',
};
