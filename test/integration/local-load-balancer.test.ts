/**
 * The local cloud's Octavia (localcloud/load-balancer.ts) with the real haproxy: a VIP on loopback in front of
 * two HTTPS "API servers" (Node's https with a throwaway certificate, /readyz answering 200 or 500 at the
 * test's word), configured from the same Octavia resources the stand-ins report. A member whose /readyz fails
 * leaves the pool; connections go to the other; a member added reloads haproxy without a restart.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostLoadBalancer, type MemberStat, type OctaviaResource } from '../../localcloud/load-balancer.ts';
import { until } from '../../localcloud/until.ts';
import { missingParts } from '../harness/requirements.ts';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const skip = missingParts(has('haproxy') ? undefined : 'haproxy is not installed (Debian package haproxy)', has('openssl') ? undefined : 'openssl is not installed');

const VIP = '127.0.0.77';

interface Backend {
  readonly name: string;
  readonly address: string;
  port: number;
  ready: boolean;
  server: https.Server;
}

describe.skipIf(skip)("the local cloud's load balancer, served by haproxy", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corekube-lb-'));
  let backends: Backend[] = [];
  let resources: OctaviaResource[] = [];
  let lb: HostLoadBalancer;
  let vipPort = 0;

  const member = (b: Backend, i: number): OctaviaResource => ({ type: 'OS::Octavia::PoolMember', id: `m${i}`, given: { pool: 'p1', address: b.address, protocol_port: b.port, weight: 1, admin_state_up: true } });

  beforeAll(async () => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=api', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
    const cert = readFileSync(path.join(dir, 'cert.pem'));
    const key = readFileSync(path.join(dir, 'key.pem'));
    backends = await Promise.all(['a', 'b', 'c'].map(async (name, i) => {
      const b = { name, address: `127.0.0.${81 + i}`, port: 0, ready: true } as Backend;
      b.server = https.createServer({ cert, key }, (req, res) => {
        if (req.url === '/readyz') res.writeHead(b.ready ? 200 : 500).end(b.ready ? 'ok' : 'etcd failed');
        else res.writeHead(200).end(name);
      });
      await new Promise<void>((r) => b.server.listen(0, b.address, r));
      b.port = (b.server.address() as AddressInfo).port;
      return b;
    }));
    // a free port for the listener
    const probe = https.createServer();
    await new Promise<void>((r) => probe.listen(0, VIP, r));
    vipPort = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    resources = [
      { type: 'OS::Octavia::LoadBalancer', id: 'lb1', given: { name: 'api', vip_address: VIP, admin_state_up: true } },
      { type: 'OS::Octavia::Listener', id: 'l1', given: { protocol_port: vipPort, protocol: 'TCP', loadbalancer: 'lb1', allowed_cidrs: ['127.0.0.0/8'], admin_state_up: true } },
      { type: 'OS::Octavia::Pool', id: 'p1', given: { lb_algorithm: 'ROUND_ROBIN', listener: 'l1', protocol: 'TCP', admin_state_up: true } },
      { type: 'OS::Octavia::HealthMonitor', id: 'h1', given: { delay: 1, timeout: 1, max_retries: 2, pool: 'p1', type: 'HTTPS', http_method: 'GET', url_path: '/readyz', expected_codes: '200', admin_state_up: true } },
      member(backends[0]!, 0),
      member(backends[1]!, 1),
    ];
    lb = new HostLoadBalancer({ resources: async () => resources, dir: path.join(dir, 'lb') });
    await lb.sync();
  }, 60_000);

  afterAll(async () => {
    await lb?.stop();
    await Promise.all(backends.map((b) => new Promise((r) => b.server.close(r))));
    rmSync(dir, { recursive: true, force: true });
  });

  /** One request through the VIP (TLS passes through: the backend's certificate answers). */
  const viaVip = () =>
    new Promise<string>((resolve, reject) => {
      const req = https.get({ host: VIP, port: vipPort, path: '/', rejectUnauthorized: false, agent: false, timeout: 3000 }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('timeout')));
    });
  let lastStats: MemberStat[] = [];
  const upMembers = async () => (lastStats = await lb.stats()).filter((s) => s.status === 'UP').map((s) => s.address).sort();
  const statusOf = async (b: Backend) => (await lb.stats()).find((s) => s.address === b.address)?.status;

  it('passes TLS through the VIP to every healthy member in turn', async () => {
    await until('both members UP', 15_000, async () => ((await upMembers()).length === 2 ? true : undefined));
    const answers = new Set(await Promise.all([1, 2, 3, 4].map(() => viaVip())));
    expect([...answers].sort()).toEqual(['a', 'b']);
    const peer = await new Promise<tls.PeerCertificate>((resolve, reject) => {
      const s = tls.connect({ host: VIP, port: vipPort, rejectUnauthorized: false }, () => (resolve(s.getPeerCertificate()), s.end()));
      s.on('error', reject);
    });
    expect(peer.subject.CN).toBe('api');
  });

  it('takes a member whose /readyz fails out of the pool, sends everything to the other, and names the last one used', async () => {
    backends[0]!.ready = false;
    await until('member a DOWN', 15_000, async () => ((await statusOf(backends[0]!)) === 'DOWN' ? true : undefined));
    const answers = await Promise.all([1, 2, 3, 4].map(() => viaVip()));
    expect(new Set(answers)).toEqual(new Set(['b']));
    expect((await lb.lastUsedMember())?.address).toBe(backends[1]!.address);
    backends[0]!.ready = true;
    await until('member a UP again', 15_000, async () => ((await upMembers()).length === 2 ? true : undefined));
  });

  it('adds a member by reloading haproxy (the same process), when the resources change', async () => {
    const before = readFileSync(path.join(dir, 'lb', 'haproxy.pid'), 'utf8');
    resources = [...resources, member(backends[2]!, 2)];
    await lb.sync();
    await until('three members UP', 15_000, async () => ((await upMembers()).length === 3 ? true : undefined), () => JSON.stringify(lastStats));
    expect(readFileSync(path.join(dir, 'lb', 'haproxy.pid'), 'utf8')).toBe(before);
    const answers = new Set<string>();
    for (let i = 0; i < 9; i++) answers.add(await viaVip());
    expect([...answers].sort()).toEqual(['a', 'b', 'c']);
  });
});
