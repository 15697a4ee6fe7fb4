import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { BootPlan, BootRole } from './boot-plan.ts';
import { discoveryPlan } from './discovery.ts';
import { ignitionUserData } from './ignition.ts';
import { nodePlan } from './node.ts';
import { overlordPlan } from './overlord.ts';
import { ubuntuCloudConfig } from './ubuntu.ts';

/**
 * cloud-config/: the user_data of every role on every OS profile — an Ignition config for Flatcar (ignition.ts),
 * a #cloud-config for Ubuntu (ubuntu.ts), both from the same BootPlan. renderUserData is pure: the same role
 * and spec give the same text, with the PLACEHOLDERS tokens left verbatim for Heat's str_replace (or for
 * fillPlaceholders). What each placeholder must hold and the files each role gets: cloud-config/README.md.
 */
export { BOOT_ROLES, bootUnits, type BootPlan, type BootRole } from './boot-plan.ts';
export { fillPlaceholders, placeholdersIn } from './fill-placeholders.ts';
export { PLACEHOLDERS, type PlaceholderName } from './placeholders.ts';

export function bootPlan(role: BootRole, spec: ClusterSpec): BootPlan {
  switch (role) {
    case 'discovery':
      return discoveryPlan(spec);
    case 'overlord':
      return overlordPlan(spec);
    case 'overlord-standby':
      return overlordPlan(spec, { standby: true });
    case 'master':
    case 'minion':
      return nodePlan(role, spec);
  }
}

export function renderUserData(role: BootRole, spec: ClusterSpec): string {
  const plan = bootPlan(role, spec);
  return spec.os === 'flatcar' ? ignitionUserData(plan) : ubuntuCloudConfig(plan);
}
