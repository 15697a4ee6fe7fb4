import { Scalar } from 'yaml';
import { toYaml } from '../core/yaml.ts';
import type { BootPlan } from './boot-plan.ts';

/**
 * The `flatcar` envelope: Flatcar Container Linux's coreos-cloudinit dialect. Units go into `coreos.units`
 * (written to /etc/systemd/system; enabled and started unless another unit starts them), files into
 * `write_files`, the user into `users`.
 * coreos-cloudinit knows no runcmd, reads snake_case keys only (`reboot_strategy`; a dashed key is
 * silently dropped) and parses YAML 1.1. Docker ships with Flatcar.
 *
 * reboot_strategy "off": Flatcar still downloads updates, but a machine of a running cluster (above all
 * the single discovery etcd) reboots only when its operator says so. Quoted, since YAML 1.1 reads a bare
 * `off` as false.
 */
export function flatcarCloudConfig(plan: BootPlan): string {
  const off = new Scalar('off');
  off.type = 'QUOTE_DOUBLE';
  return toYaml(
    {
      coreos: {
        update: { reboot_strategy: off },
        units: plan.units.map((u) => (u.atBoot === false ? { name: u.name, content: u.content } : { name: u.name, enable: true, command: 'start', content: u.content })),
      },
      users: [{ name: plan.user.name, gecos: plan.user.gecos }],
      write_files: plan.files.map((f) => ({
        path: f.path,
        permissions: f.mode,
        owner: 'root',
        ...(f.base64 ? { encoding: 'b64' } : {}),
        content: f.content,
      })),
    },
    { header: '#cloud-config' },
  );
}
