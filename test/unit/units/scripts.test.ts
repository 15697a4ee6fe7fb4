/**
 * The helper scripts whose output matters beyond their exit code, run as shipped (the rendered file) by bash
 * on sample inputs in a temp directory: hermetic and fast (no network, no root, nothing outside the temp dir).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderUnits } from '../../../units/index.ts';
import { context } from './fixtures.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-scripts-'));
  for (const f of renderUnits(context('minion')).files.filter((x) => x.path.startsWith('/opt/corekube/libexec/'))) {
    await writeFile(path.join(dir, path.basename(f.path)), f.content, { mode: parseInt(f.mode, 8) });
  }
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function run(script: string, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(path.join(dir, script), args, { timeout: 10_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('corekube-cni-config', () => {
  /** flanneld's subnet file as flanneld writes it: the bridge's own address, its MTU, whether it masquerades */
  const subnetEnv = (masq: 'true' | 'false', subnet = '10.244.7.1/24') => `FLANNEL_NETWORK=10.244.0.0/14\nFLANNEL_SUBNET=${subnet}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=${masq}\n`;

  async function configFor(env: string): Promise<{ code: number; stdout: string; stderr: string; netd: string; conflist: string }> {
    const work = await mkdtemp(path.join(dir, 'cni-'));
    const netd = path.join(work, 'net.d');
    await writeFile(path.join(work, 'subnet.env'), env);
    const conflist = path.join(netd, '10-corekube.conflist');
    return { ...(await run('corekube-cni-config', [path.join(work, 'subnet.env'), conflist])), netd, conflist };
  }

  it("writes the bridge plugin with host-local IPAM over the node's subnet, a route to the pod network, flanneld's MTU, then portmap", async () => {
    const r = await configFor(subnetEnv('true'));
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(await readFile(r.conflist, 'utf8'))).toEqual({
      name: 'corekube',
      cniVersion: '1.0.0',
      plugins: [
        {
          type: 'bridge',
          bridge: 'cni0',
          isGateway: true,
          isDefaultGateway: true,
          hairpinMode: true,
          // flanneld masquerades (--ip-masq): the bridge must not do it a second time
          ipMasq: false,
          mtu: 1450,
          // the subnet's network, not the bridge address flanneld writes
          ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.7.0/24' }]], routes: [{ dst: '10.244.0.0/14' }] },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    });
    expect(r.stdout).toContain('pod subnet 10.244.7.0/24 of 10.244.0.0/14, mtu 1450');
  });

  it('lets the bridge masquerade when flanneld does not', async () => {
    const r = await configFor(subnetEnv('false'));
    expect(r.code).toBe(0);
    expect(JSON.parse(await readFile(r.conflist, 'utf8')).plugins[0].ipMasq).toBe(true);
  });

  it('computes the network of any prefix length', async () => {
    const r = await configFor(subnetEnv('true', '10.245.3.129/25'));
    expect(r.code).toBe(0);
    expect(JSON.parse(await readFile(r.conflist, 'utf8')).plugins[0].ipam.ranges).toEqual([[{ subnet: '10.245.3.128/25' }]]);
  });

  it('leaves exactly its own config in the directory (a flannel conflist of an earlier corekube is removed), and is idempotent', async () => {
    const first = await configFor(subnetEnv('true'));
    const written = await readFile(first.conflist, 'utf8');
    await writeFile(path.join(first.netd, '10-flannel.conflist'), '{"name":"old"}\n');
    await writeFile(path.join(first.netd, '99-other.conf'), '{}\n');
    await writeFile(path.join(first.netd, 'README'), 'not a CNI config\n');
    const again = await run('corekube-cni-config', [path.join(path.dirname(first.netd), 'subnet.env'), first.conflist]);
    expect(again.code).toBe(0);
    expect(await readFile(first.conflist, 'utf8')).toBe(written);
    expect((await readdir(first.netd)).sort()).toEqual(['10-corekube.conflist', 'README']);
  });

  it('refuses a subnet file without a usable value, naming it, and writes nothing', async () => {
    for (const [env, message] of [
      ['FLANNEL_NETWORK=10.244.0.0/14\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n', /FLANNEL_SUBNET '' in .*subnet\.env is not a CIDR/],
      [subnetEnv('true').replace('FLANNEL_MTU=1450', 'FLANNEL_MTU=big'), /FLANNEL_MTU 'big' .* is not an MTU/],
      [subnetEnv('true').replace('FLANNEL_IPMASQ=true', 'FLANNEL_IPMASQ=yes'), /FLANNEL_IPMASQ 'yes' .* is not true or false/],
    ] as const) {
      const r = await configFor(env);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(message);
      await expect(readdir(r.netd)).rejects.toThrow(/ENOENT/);
    }
  });
});

describe('corekube-redact', () => {
  const SECRET = 'Zq9-not-for-the-journal';

  it("never lets a password the program prints (stdout or stderr) reach the output, and keeps the program's exit code", async () => {
    // what flanneld prints at start (its options, %+v of a struct), and other ways a program may show a password
    const program = [
      `echo "I1206 main.go:230] CLI flags config: {etcdEndpoints:https://10.240.0.10:2379 etcdPrefix:/corekube/demo/network etcdUsername:machine-b etcdPassword:${SECRET} iface:[10.240.0.40] ipMasq:true}"`,
      `echo "connecting with password=${SECRET}" >&2`,
      `echo "Password: ${SECRET}"`,
      'echo "a line without secrets"',
      'exit 3',
    ].join('; ');
    const r = await run('corekube-redact', ['/bin/bash', '-c', program]);
    expect(r.code).toBe(3);
    const out = `${r.stdout}${r.stderr}`;
    expect(out).not.toContain(SECRET);
    expect(r.stdout).toContain('etcdUsername:machine-b etcdPassword:[redacted] iface:[10.240.0.40]');
    expect(r.stdout).toContain('connecting with password=[redacted]');
    expect(r.stdout).toContain('Password: [redacted]');
    expect(r.stdout).toContain('a line without secrets');
  });

  it('runs the program with its arguments unchanged, and says how to use it without one', async () => {
    const r = await run('corekube-redact', ['/bin/echo', '--etcd-prefix=/x', 'a b']);
    expect(r).toEqual({ code: 0, stdout: '--etcd-prefix=/x a b\n', stderr: '' });
    const usage = await run('corekube-redact', []);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^usage: corekube-redact PROGRAM/);
  });
});
