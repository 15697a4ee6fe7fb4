import { toYaml } from '../core/yaml.ts';
import { bootUnits, type BootPlan } from './boot-plan.ts';
import { MACHINE_PATHS } from './machine-paths.ts';

/**
 * The `ubuntu` envelope: cloud-init. Units are written by `write_files` into /etc/systemd/system and
 * enabled and started by `runcmd` (argv lists, no shell) with `--no-block`, so a unit that waits long (the
 * discovery etcd waits for its certificate) never holds up cloud-init. `users` keeps the image's `default`
 * user (it gets the Nova key pair). Only keys of cloud-init's schema: UBUNTU_TOP_LEVEL_KEYS, checked in tests.
 */
export const UBUNTU_TOP_LEVEL_KEYS = ['package_update', 'packages', 'users', 'write_files', 'runcmd'] as const;

export function ubuntuCloudConfig(plan: BootPlan): string {
  const units = bootUnits(plan).map((u) => u.name);
  return toYaml(
    {
      ...(plan.needsDocker ? { package_update: true, packages: ['docker.io'] } : {}),
      users: ['default', { name: plan.user.name, gecos: plan.user.gecos, shell: '/bin/bash', lock_passwd: true }],
      write_files: [
        ...plan.files.map((f) => ({
          path: f.path,
          permissions: f.mode,
          owner: 'root:root',
          ...(f.base64 ? { encoding: 'b64' } : {}),
          content: f.content,
        })),
        ...plan.units.map((u) => ({ path: `${MACHINE_PATHS.unitDir}/${u.name}`, permissions: '0644', owner: 'root:root', content: u.content })),
      ],
      runcmd: [
        ['systemctl', 'daemon-reload'],
        ['systemctl', 'enable', ...units],
        ['systemctl', 'start', '--no-block', ...units],
      ],
    },
    { header: '#cloud-config' },
  );
}
