import { describe, expect, it } from 'vitest';
import { bootPlan } from '../../../cloud-config/index.ts';
import { parseYaml } from '../../../core/yaml.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { aptImageFiles } from '../../../localcloud/mirrors/apt-repo.ts';
import { hostDockerRun } from '../../../localcloud/overlord-runner.ts';

describe('hostDockerRun: the host runs the overlord container exactly as the machine\'s overlord.service would', () => {
  const spec = parseClusterSpec({ flags: { os: 'ubuntu', 'overlord-image': 'corekube/overlord:0.1.0' } });
  const unit = bootPlan('overlord', spec).units.find((u) => u.name === 'overlord.service')!.content;

  it('keeps every argument of the unit\'s docker run, detached, with the volumes inside the machine\'s root', () => {
    expect(hostDockerRun(unit, '/tmp/m/root')).toEqual([
      'run', '--detach', '--name', 'overlord', '--rm', '--network', 'host',
      '-v', '/tmp/m/root/etc/corekube:/etc/corekube:ro',
      '-v', '/tmp/m/root/var/lib/corekube:/var/lib/corekube',
      'corekube/overlord:0.1.0', 'overlord', '--config', '/etc/corekube/overlord.yaml', '--health-port', '8740',
    ]);
  });

  it('refuses a unit that runs no docker run, or mounts something that is not a host path', () => {
    expect(() => hostDockerRun('[Service]\nExecStart=/usr/bin/podman run x\n', '/r')).toThrow(/does not run "docker run"/);
    expect(() => hostDockerRun('[Service]\nExecStartPre=/bin/true\n', '/r')).toThrow(/no ExecStart=/);
    expect(() => hostDockerRun('[Service]\nExecStart=/usr/bin/docker run -v data:/data img\n', '/r')).toThrow(/not a host path/);
  });
});

describe('aptImageFiles: machines reach only the local cloud\'s apt repository', () => {
  const files = Object.fromEntries(aptImageFiles('http://10.200.60.1:4321').map((f) => [f.path, f.content]));

  it('points apt at the flat repository on the mirror, trusted by its source line', () => {
    expect(files['/etc/apt/sources.list']!.split('\n').filter((l) => l && !l.startsWith('#'))).toEqual(['deb [trusted=yes] http://10.200.60.1:4321/apt ./']);
  });

  it('tells cloud-init to keep those sources (it would rewrite them to Debian\'s mirror)', () => {
    expect(parseYaml(files['/etc/cloud/cloud.cfg.d/90-corekube-localcloud.cfg']!)).toEqual({ apt: { preserve_sources_list: true } });
  });
});
