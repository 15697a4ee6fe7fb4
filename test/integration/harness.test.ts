/**
 * The test harness itself: what other tests rely on when they say "real etcd" and "real machines" —
 * etcd keeps its data across kill and restart, TLS etcd refuses clients without a cert, a machine survives
 * a power cut and reboots with the same identity, and teardown leaves nothing behind. Net 43.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { Etcd3 } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { etcdMissing, startEtcd } from '../../localcloud/etcd/etcd.ts';
import { bootMachines, machinesMissing, netFromEnv, WORK_ROOT } from '../harness/machines.ts';
import { startMirror } from '../harness/mirror.ts';
import { missingParts } from '../harness/requirements.ts';

const NET = netFromEnv(43);

describe.skipIf(missingParts(etcdMissing()))('harness etcd', () => {
  it('keeps its data across a SIGKILL and a restart on the same ports', async () => {
    const etcd = await startEtcd();
    const client = new Etcd3(etcd.clientOptions());
    try {
      await client.put('/harness/k').value('v1');
      const port = etcd.clientPort;
      await etcd.kill();
      expect(etcd.pid).toBeUndefined();
      await etcd.start();
      expect(etcd.clientPort).toBe(port);
      expect(await client.get('/harness/k').string()).toBe('v1');
    } finally {
      client.close();
      await etcd.destroy();
    }
    expect(existsSync(etcd.dir)).toBe(false);
  });

  it('with TLS, serves clients holding a certificate of its CA and refuses others', async () => {
    const etcd = await startEtcd({ tls: true });
    const good = new Etcd3(etcd.clientOptions());
    const { credentials } = etcd.clientOptions();
    const anonymous = new Etcd3({ hosts: etcd.endpoints[0]!, credentials: { rootCertificate: credentials!.rootCertificate } });
    try {
      expect(etcd.endpoints[0]).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      await good.put('/harness/tls').value('yes');
      await expect(anonymous.get('/harness/tls').string()).rejects.toThrow();
      const issued = await etcd.issueClientCert('joiner');
      const other = new Etcd3({ hosts: etcd.endpoints[0]!, credentials: { rootCertificate: credentials!.rootCertificate, certChain: Buffer.from(issued.cert), privateKey: Buffer.from(issued.key) } });
      expect(await other.get('/harness/tls').string()).toBe('yes');
      other.close();
    } finally {
      good.close();
      anonymous.close();
      await etcd.destroy();
    }
  });
});

describe.skipIf(missingParts(machinesMissing()))('harness machines', () => {
  it('reboots a machine after a power cut with its identity, and tears down without a trace', async () => {
    const fleet = await bootMachines([{ hostname: 'h1' }, { hostname: 'h2' }], { net: NET });
    let torn = false;
    try {
      const [m1, m2] = fleet.machines as [typeof fleet.machines[0], typeof fleet.machines[0]];
      expect(m1.ip).toBe(`10.200.${NET}.101`);
      expect((await m1.exec(['hostname'])).stdout.trim()).toBe('h1');
      expect((await m1.exec(['cat', '/etc/machine-id'])).stdout.trim()).toBe(m1.id);
      expect((await m1.exec(['systemctl', 'is-system-running'])).stdout.trim()).toBe('running');
      // the machine sees only its own interface, and reaches its neighbour and the host over the bridge
      expect((await m1.exec(['ls', '/sys/class/net'])).stdout.split('\n').filter(Boolean).sort()).toEqual(['host0', 'lo']);
      const mirror = await startMirror({ root: WORK_ROOT, listenOn: [fleet.gateway] });
      try {
        const r = await m2.exec(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `${mirror.urlOn(fleet.gateway)}/no-such-file`]);
        expect(r.stdout).toBe('404');
        expect(mirror.requests.at(-1)).toMatchObject({ path: '/no-such-file', status: 404, from: m2.ip });
      } finally {
        await mirror.close();
      }

      const bootId = (await m1.exec(['cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim();
      await m1.exec(['sh', '-c', 'echo kept > /var/lib/disk-survives']);
      await m1.stop('SIGKILL');
      expect(m1.running).toBe(false);
      expect(m1.pid).toBeUndefined();
      await m1.boot();
      expect((await m1.exec(['cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim()).not.toBe(bootId);
      expect((await m1.exec(['cat', '/etc/machine-id'])).stdout.trim()).toBe(m1.id);
      expect((await m1.exec(['cat', '/var/lib/disk-survives'])).stdout.trim()).toBe('kept');
      expect(m1.hostKey).toBe(readFileSync(`${m1.root}/etc/ssh/ssh_host_ed25519_key.pub`, 'utf8').split(' ').slice(0, 2).join(' '));

      await fleet.teardown();
      torn = true;
      expect(execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })).not.toMatch(new RegExp(`ckbr${NET}\\b|ck${NET}v\\d`));
      expect(existsSync('/run/netns') ? readdirSync('/run/netns').filter((n) => n.startsWith(`ck${NET}-`)) : []).toEqual([]);
      expect(readFileSync('/proc/self/mounts', 'utf8')).not.toContain(`${WORK_ROOT}/ck${NET}/`);
      const cgroups = existsSync('/sys/fs/cgroup/systemd') ? '/sys/fs/cgroup/systemd' : '/sys/fs/cgroup';
      expect(readdirSync(cgroups).filter((n) => n.startsWith(`ck${NET}-`))).toEqual([]);
      expect(existsSync(`${WORK_ROOT}/ck${NET}`)).toBe(false);
    } finally {
      if (!torn) await fleet.teardown();
    }
  });
});
