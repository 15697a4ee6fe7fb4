import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { placeholderFile, plan, type BootFile, type BootPlan } from './boot-plan.ts';
import { CONFIG_DIR, configPath, MACHINE_PATHS, OVERLORD_HEALTH_PORT, OVERLORD_IMAGE_USER } from './machine-paths.ts';
import { renderOverlordConfig } from './overlord-config.ts';
import { PLACEHOLDERS } from './placeholders.ts';
import { renderCloudTemplate } from './templates.ts';

/**
 * An overlord server: Docker, its configuration (overlord-config.ts), the join token, the overlord secret and
 * `overlord.service` running the overlord container. Nobody logs into this machine as `corekube` (the user
 * exists on every machine for uniformity, with no key).
 *
 * - The bootstrap overlord (role `overlord`) also gets its two Heat signals (overlord_ready, cluster_ready) as
 *   files: its container makes the SSH key and the discovery CA and signals.
 * - A standby (role `overlord-standby`) gets the discovery CA instead (from overlord_ready's data) and no Heat
 *   handle: its container runs with `--standby`, fetches the bootstrap overlord's state from discovery (sealed
 *   with the overlord secret, overlord/trust/shared-state.ts), signals nothing and stands by in the leader election.
 */
export function overlordPlan(spec: ClusterSpec, options: { standby?: boolean } = {}): BootPlan {
  const standby = options.standby ?? false;
  const secrets: BootFile[] = [
    placeholderFile(configPath('joinToken'), PLACEHOLDERS.joinToken, '0600'),
    placeholderFile(configPath('overlordSecret'), PLACEHOLDERS.overlordSecret, '0600'),
  ];
  const heat: BootFile[] = standby
    ? []
    : [
        placeholderFile(configPath('readyUrl'), PLACEHOLDERS.readyUrl, '0644'),
        placeholderFile(configPath('readyHeader'), `X-Auth-Token: ${PLACEHOLDERS.readyToken}`, '0600'),
        placeholderFile(configPath('clusterReadyUrl'), PLACEHOLDERS.clusterReadyUrl, '0644'),
        placeholderFile(configPath('clusterReadyHeader'), `X-Auth-Token: ${PLACEHOLDERS.clusterReadyToken}`, '0600'),
        // the stack user of the stack's overlord_channel (heat/overlord-channel.ts): the counts, the cloud credentials
        placeholderFile(configPath('cloudAuthUrl'), PLACEHOLDERS.cloudAuthUrl, '0644'),
        placeholderFile(configPath('cloudUserId'), PLACEHOLDERS.cloudUserId, '0644'),
        placeholderFile(configPath('cloudPassword'), PLACEHOLDERS.cloudPassword, '0600'),
        placeholderFile(configPath('cloudProjectId'), PLACEHOLDERS.cloudProjectId, '0644'),
        placeholderFile(configPath('cloudStackId'), PLACEHOLDERS.cloudStackId, '0644'),
        placeholderFile(configPath('cloudRegion'), PLACEHOLDERS.cloudRegion, '0644'),
      ];
  const trust: BootFile[] = standby ? [placeholderFile(configPath('discoveryCa'), PLACEHOLDERS.discoveryCa, '0644', true)] : [];
  const files = [{ path: configPath('overlordConfig'), content: renderOverlordConfig(spec), mode: '0644' } as const, ...secrets, ...trust, ...heat];
  return plan(standby ? 'overlord-standby' : 'overlord', {
    files,
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
          secretFiles: files.filter((f) => f.mode === '0600').map((f) => f.path),
          healthPort: OVERLORD_HEALTH_PORT,
          standby,
        }),
      },
    ],
    needsDocker: true,
  });
}
