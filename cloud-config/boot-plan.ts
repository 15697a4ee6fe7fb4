import { COREKUBE_USER, configPath, MACHINE_PATHS } from './machine-paths.ts';
import { PLACEHOLDERS } from './placeholders.ts';
import { renderCloudTemplate } from './templates.ts';

/**
 * What one machine gets at first boot, independent of the OS: files, systemd units (enabled and started
 * without blocking boot, unless another unit starts them), whether it needs Docker. The per-OS envelopes (ignition.ts, ubuntu.ts)
 * only translate a BootPlan into their dialect (Ignition, cloud-init); every decision is made here and in the
 * role modules (discovery.ts, overlord.ts, node.ts).
 */
/** `overlord-standby`: a standby overlord server (the overlord profile, fetching the state instead of making it) */
export type BootRole = 'discovery' | 'overlord' | 'overlord-standby' | 'master' | 'minion';
export const BOOT_ROLES: readonly BootRole[] = ['discovery', 'overlord', 'overlord-standby', 'master', 'minion'];

export type FileMode = '0644' | '0600' | '0755' | '0440';

export interface BootFile {
  readonly path: string;
  readonly content: string;
  readonly mode: FileMode;
  /** content is base64 (a placeholder Heat fills with base64): cloud-config decodes it when writing */
  readonly base64?: boolean;
}

export interface BootUnit {
  /** file name under /etc/systemd/system, e.g. `overlord.service` */
  readonly name: string;
  readonly content: string;
  /**
   * true (default): enabled (its [Install] section) and started at first boot without blocking it;
   * false: only written, another unit starts it (discovery-etcd.service, started by its .path unit)
   */
  readonly atBoot?: boolean;
}

export interface BootPlan {
  readonly role: BootRole;
  readonly user: { readonly name: string; readonly gecos: string };
  readonly files: readonly BootFile[];
  readonly units: readonly BootUnit[];
  readonly needsDocker: boolean;
}

/** The units enabled and started at first boot, in plan order. */
export const bootUnits = (plan: BootPlan): BootUnit[] => plan.units.filter((u) => u.atBoot !== false);

/** What every machine gets: user `corekube` with passwordless sudo (the overlord runs `sudo -n`). */
export function commonFiles(): BootFile[] {
  return [{ path: MACHINE_PATHS.sudoers, content: `${COREKUBE_USER} ALL=(ALL) NOPASSWD:ALL\n`, mode: '0440' }];
}

/** A one-line file holding a placeholder (a block scalar in YAML: any single-line value is safe in it). */
export function placeholderFile(path: string, text: string, mode: FileMode, base64 = false): BootFile {
  return { path, content: `${text}\n`, mode, ...(base64 ? { base64: true } : {}) };
}

/** Machines the overlord logs into (all but the overlord): its key, decoded, and the unit authorizing it. */
export function overlordAccess(): { files: BootFile[]; units: BootUnit[] } {
  const ctx = { user: COREKUBE_USER, keyFile: configPath('overlordSshKey'), binDir: MACHINE_PATHS.binDir };
  return {
    files: [
      placeholderFile(configPath('overlordSshKey'), PLACEHOLDERS.overlordSshKey, '0644', true),
      script('corekube-authorize-overlord', renderCloudTemplate('corekube-authorize-overlord', ctx)),
    ],
    units: [{ name: 'corekube-authorize-overlord.service', content: renderCloudTemplate('corekube-authorize-overlord.service', ctx) }],
  };
}

export function script(name: string, content: string): BootFile {
  return { path: `${MACHINE_PATHS.binDir}/${name}`, content, mode: '0755' };
}

export const USER_GECOS = 'corekube overlord access';

export function plan(role: BootRole, parts: { files: BootFile[]; units: BootUnit[]; needsDocker?: boolean }): BootPlan {
  return Object.freeze({
    role,
    user: Object.freeze({ name: COREKUBE_USER, gecos: USER_GECOS }),
    files: Object.freeze([...commonFiles(), ...parts.files].map((f) => Object.freeze(f))),
    units: Object.freeze(parts.units.map((u) => Object.freeze(u))),
    needsDocker: parts.needsDocker ?? false,
  });
}
