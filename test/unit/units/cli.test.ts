import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { unitsRenderCommand } from '../../../cli/units.ts';
import { CorekubeError } from '../../../core/errors.ts';

const dirs: string[] = [];
afterAll(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

async function render(args: string[]): Promise<{ dir: string; stdout: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-units-cli-'));
  dirs.push(dir);
  let stdout = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    stdout += String(chunk);
    return true;
  });
  try {
    expect(await unitsRenderCommand.run([...args, '-o', dir])).toBe(0);
  } finally {
    spy.mockRestore();
  }
  return { dir, stdout };
}

describe('corekube units render', () => {
  it("writes a minion's files rooted inside DIR, with their modes, and prints the start order and hash", async () => {
    const { dir, stdout } = await render(['--role', 'minion', '--ip', '10.240.0.50', '--hostname', 'node-7', '--master-ips', '10.240.0.32,10.240.0.33', '--name', 'clitest']);
    const kubelet = await readFile(path.join(dir, 'etc/systemd/system/kubelet.service'), 'utf8');
    expect(kubelet).toContain('--hostname-override=node-7');
    expect(kubelet).toContain('--node-ip=10.240.0.50');
    expect(await readFile(path.join(dir, 'etc/systemd/system/flanneld.service'), 'utf8')).toContain('--etcd-prefix=/corekube/clitest/network');
    expect((await stat(path.join(dir, 'opt/corekube/libexec/corekube-download'))).mode & 0o777).toBe(0o755);
    expect(stdout).toMatch(/^start: corekube-download\.service \(exited\) → flanneld\.service \(active\)/m);
    expect(stdout).toMatch(/^hash: [0-9a-f]{64}$/m);
  });

  it('renders a master against its own IP when no masters are given', async () => {
    const { dir } = await render(['--role', 'master', '--ip', '10.240.0.32']);
    expect(await readFile(path.join(dir, 'etc/corekube/etcd/bootstrap.env'), 'utf8')).toContain('\nETCD_INITIAL_CLUSTER_STATE=new\nETCD_INITIAL_CLUSTER=etcd-10-240-0-32=https://10.240.0.32:2380\n');
  });

  it('refuses an unknown role and a minion without masters as usage errors', async () => {
    await expect(unitsRenderCommand.run(['--role', 'worker', '-o', os.tmpdir()])).rejects.toMatchObject({ code: 'E_USAGE' });
    await expect(unitsRenderCommand.run(['--role', 'minion', '-o', os.tmpdir()])).rejects.toBeInstanceOf(CorekubeError);
  });
});
