import { addressPlan, ETCD_CLIENT_PORT } from '../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { clusterKeys } from '../contracts/keys.ts';
import type { Role } from '../contracts/roles.ts';
import { overlordAccess, placeholderFile, plan, script, type BootPlan } from './boot-plan.ts';
import { CONFIG_DIR, CONFIG_FILES, configPath, JOIN_NONCE_NAME, JOINER_USER, MACHINE_PATHS } from './machine-paths.ts';
import { PLACEHOLDERS } from './placeholders.ts';
import { renderCloudTemplate } from './templates.ts';

/**
 * Masters and minions: they only announce themselves (corekube-announce) and let the overlord in; the
 * overlord deploys everything else over SSH. Their user_data depends on the spec and the role only —
 * never on a count or an index — so a ResourceGroup scales without replacing servers.
 */
export const LEASE_TTL_S = 60;
export const KEEPALIVE_INTERVAL_S = 20;

export function nodePlan(role: Role, spec: ClusterSpec): BootPlan {
  const addresses = addressPlan(spec);
  const bin = MACHINE_PATHS.binDir;
  const runtimeDirectory = MACHINE_PATHS.announceRunDir.replace(/^\/run\//, '');
  const access = overlordAccess();
  return plan(role, {
    files: [
      ...access.files,
      placeholderFile(configPath('discoveryCa'), PLACEHOLDERS.discoveryCa, '0644', true),
      placeholderFile(configPath('joinToken'), PLACEHOLDERS.joinToken, '0600'),
      script(
        'corekube-announce',
        renderCloudTemplate('corekube-announce', {
          role,
          machinesPrefix: clusterKeys(spec.name).machines,
          joinPrefix: clusterKeys(spec.name).join,
          joinerUser: JOINER_USER,
          discoveryIp: addresses.discovery,
          discoveryPort: ETCD_CLIENT_PORT,
          leaseTtl: LEASE_TTL_S,
          keepaliveInterval: KEEPALIVE_INTERVAL_S,
          configDir: CONFIG_DIR,
          runDir: MACHINE_PATHS.announceRunDir,
          nonceName: JOIN_NONCE_NAME,
          files: { discoveryCa: CONFIG_FILES.discoveryCa, joinToken: CONFIG_FILES.joinToken, discoveryCredentials: CONFIG_FILES.discoveryCredentials },
        }),
      ),
    ],
    units: [
      ...access.units,
      {
        name: 'corekube-announce.service',
        content: renderCloudTemplate('corekube-announce.service', { role, discoveryIp: addresses.discovery, binDir: bin, runtimeDirectory }),
      },
    ],
  });
}
