import type { ClusterSpec } from '../spec/cluster-spec.ts';
import { placeholderFile, plan, type BootPlan } from './boot-plan.ts';
import { CONFIG_DIR, configPath, MACHINE_PATHS, OVERLORD_HEALTH_PORT, OVERLORD_IMAGE_USER } from './machine-paths.ts';
import { renderOverlordConfig } from './overlord-config.ts';
import { PLACEHOLDERS } from './placeholders.ts';
import { renderCloudTemplate } from './templates.ts';

/**
 * The overlord server: Docker, its configuration (overlord-config.ts), the join token and its two Heat
 * signals (overlord_ready, cluster_ready) as files, and `overlord.service` running the overlord container.
 * The container itself makes the SSH key and the discovery CA and signals; nobody logs into this machine
 * as `corekube` (the user exists on every machine for uniformity, with no key).
 */
export function overlordPlan(spec: ClusterSpec): BootPlan {
  return plan('overlord', {
    files: [
      { path: configPath('overlordConfig'), content: renderOverlordConfig(spec), mode: '0644' },
      placeholderFile(configPath('joinToken'), PLACEHOLDERS.joinToken, '0600'),
      placeholderFile(configPath('readyUrl'), PLACEHOLDERS.readyUrl, '0644'),
      placeholderFile(configPath('readyHeader'), `X-Auth-Token: ${PLACEHOLDERS.readyToken}`, '0600'),
      placeholderFile(configPath('clusterReadyUrl'), PLACEHOLDERS.clusterReadyUrl, '0644'),
      placeholderFile(configPath('clusterReadyHeader'), `X-Auth-Token: ${PLACEHOLDERS.clusterReadyToken}`, '0600'),
    ],
    units: [
      {
        name: 'overlord.service',
        content: renderCloudTemplate('overlord.service', {
          cluster: spec.name,
          image: spec.overlord.image,
          configDir: CONFIG_DIR,
          configFile: configPath('overlordConfig'),
          stateDir: MACHINE_PATHS.overlordState,
          imageUser: `${OVERLORD_IMAGE_USER.uid}:${OVERLORD_IMAGE_USER.gid}`,
          imageUid: OVERLORD_IMAGE_USER.uid,
          imageGid: OVERLORD_IMAGE_USER.gid,
          secretFiles: [configPath('joinToken'), configPath('readyHeader'), configPath('clusterReadyHeader')],
          healthPort: OVERLORD_HEALTH_PORT,
        }),
      },
    ],
    needsDocker: true,
  });
}
