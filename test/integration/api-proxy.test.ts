/**
 * The node-local API proxy (apiLoadBalancer node-local) with the REAL etcd gateway of the pinned release (built
 * from its Go module, release/build.ts; cached by version), run on the command line of the rendered
 * corekube-api-proxy.service — only the ports moved off 6443 and --retry-delay shortened, so the test takes
 * seconds — in front of two HTTPS "API servers" on loopback addresses (Node's https with a throwaway
 * certificate for 127.0.0.1, as the API server's carries it). TLS passes through: the client verifies the
 * backend's certificate for the address it dialled, 127.0.0.1. A master that refuses connections is failed
 * over at once; one that answers again is taken back after --retry-delay.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { onExit } from '../../localcloud/cleanup.ts';
import { until } from '../../localcloud/until.ts';
import { buildToolsMissing, ensureBuilt } from '../../release/build.ts';
import { buildUnitContext, PKI_PATHS, renderUnits } from '../../units/index.ts';
import { missingParts } from '../harness/requirements.ts';
import { killAll } from '../harness/processes.ts';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const skip = missingParts(await buildToolsMissing(false), has('openssl') ? undefined : 'openssl is not installed');

/** the masters' addresses: loopback addresses of their own, so each backend is told apart by its address */
const MASTERS = ['127.0.0.92', '127.0.0.91'];
const RETRY_DELAY_S = 1;

interface Backend {
  readonly name: string;
  readonly address: string;
  port: number;
  server: https.Server;
}

describe.skipIf(skip)('the node-local API proxy: the real etcd gateway on its unit\'s command line', () => {
  const spec = parseClusterSpec({ flags: { name: 'proxy', masters: '3', 'api-load-balancer': 'node-local' } });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'corekube-api-proxy-'));
  let cert: Buffer;
  let key: Buffer;
  let backends: Backend[] = [];
  let gateway: ChildProcess | undefined;
  let unregister = () => {};
  let log = '';
  let listenPort = 0;

  const serve = async (b: Backend, port: number) => {
    b.server = https.createServer({ cert, key }, (_req, res) => res.writeHead(200).end(b.name));
    await new Promise<void>((r) => b.server.listen(port, b.address, r));
    b.port = (b.server.address() as AddressInfo).port;
  };
  const stop = (b: Backend) => new Promise<void>((r) => {
    b.server.closeAllConnections();
    b.server.close(() => r());
  });

  beforeAll(async () => {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=kube-apiserver',
      '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore' });
    cert = readFileSync(path.join(dir, 'cert.pem'));
    key = readFileSync(path.join(dir, 'key.pem'));
    backends = MASTERS.map((address, i) => ({ name: `master-${i}`, address, port: 0 }) as Backend);
    for (const b of backends) await serve(b, 0);

    // the rendered unit of a minion whose masters are these two
    const units = renderUnits(buildUnitContext(spec, { id: 'e'.repeat(32), role: 'minion', ip: '10.240.0.40', hostname: 'proxy-minion-0' }, { masterIps: MASTERS }, PKI_PATHS));
    const unit = units.files.find((f) => f.path === '/etc/systemd/system/corekube-api-proxy.service')!.content;
    const argv = unit.replace(/\\\n\s*/g, '').split('\n').find((l) => l.startsWith('ExecStart='))!.slice('ExecStart='.length).trim().split(/\s+/);
    expect(argv).toEqual(['/opt/corekube/bin/etcd', 'gateway', 'start', '--listen-addr=127.0.0.1:6443', '--endpoints=127.0.0.91:6443,127.0.0.92:6443', '--retry-delay=10s']);

    // the same command line with the test's ports and a short retry delay
    listenPort = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (probe.address() as AddressInfo).port;
        probe.close(() => resolve(port));
      });
    });
    const byAddress = new Map(backends.map((b) => [b.address, b.port]));
    const args = argv.slice(1).map((a) => {
      if (a.startsWith('--listen-addr=')) return `--listen-addr=127.0.0.1:${listenPort}`;
      if (a.startsWith('--endpoints=')) return `--endpoints=${a.slice('--endpoints='.length).split(',').map((e) => `${e.split(':')[0]}:${byAddress.get(e.split(':')[0]!)}`).join(',')}`;
      if (a.startsWith('--retry-delay=')) return `--retry-delay=${RETRY_DELAY_S}s`;
      return a;
    });
    const etcd = (await ensureBuilt(spec.versions, { projects: ['etcd'] })).get('etcd')!.programs.get('etcd')!;
    gateway = spawn(etcd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const pid = gateway.pid!;
    unregister = onExit('etcd gateway', () => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    });
    gateway.stdout!.on('data', (d) => (log += d));
    gateway.stderr!.on('data', (d) => (log += d));
    await until('the gateway listening', 15_000, () => (log.includes('ready to proxy client requests') ? true : undefined), () => log);
  }, 10 * 60_000);

  afterAll(async () => {
    await killAll([gateway], 'SIGTERM');
    unregister();
    await Promise.all(backends.filter((b) => b.server.listening).map(stop));
    rmSync(dir, { recursive: true, force: true });
  });

  /** One request through the proxy on a new connection, verifying the API server's certificate for 127.0.0.1. */
  const viaProxy = () =>
    new Promise<{ body: string; ms: number }>((resolve, reject) => {
      const started = performance.now();
      const req = https.get({ host: '127.0.0.1', port: listenPort, path: '/', ca: cert, agent: false, timeout: 3000 }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ body, ms: performance.now() - started }));
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('timeout')));
    });
  const answers = async (n: number) => {
    const out: { body: string; ms: number }[] = [];
    for (let i = 0; i < n; i++) out.push(await viaProxy());
    return out;
  };

  it('passes TLS through to every master in turn: the client verifies the certificate for 127.0.0.1', async () => {
    const got = await answers(6);
    expect(new Set(got.map((a) => a.body))).toEqual(new Set(['master-0', 'master-1']));
  });

  it('fails over at once when a master refuses connections: every request is answered by the other', async () => {
    await stop(backends[0]!);
    const got = await answers(8);
    expect(got.map((a) => a.body)).toEqual(Array(8).fill('master-1'));
    // a refused dial costs no wait: each request took well under a second
    expect(Math.max(...got.map((a) => a.ms))).toBeLessThan(1000);
    process.stderr.write(`api-proxy: one master refusing, 8/8 answered, slowest ${Math.max(...got.map((a) => a.ms)).toFixed(1)} ms\n`);
    expect(log).toMatch(/deactivated endpoint.*127\.0\.0\.92/);
  });

  it('takes a master back once it answers again, within --retry-delay', async () => {
    const back = performance.now();
    await serve(backends[0]!, backends[0]!.port);
    await until('master-0 answering through the proxy again', 5_000, async () => ((await viaProxy()).body === 'master-0' ? true : undefined), () => log);
    const ms = performance.now() - back;
    process.stderr.write(`api-proxy: master back in the rotation ${ms.toFixed(0)} ms after it listened again (--retry-delay=${RETRY_DELAY_S}s)\n`);
    expect(ms).toBeLessThan(RETRY_DELAY_S * 1000 * 2 + 1000);
    expect(new Set((await answers(6)).map((a) => a.body))).toEqual(new Set(['master-0', 'master-1']));
  });

  it('closes a connection at once while no master answers, and serves again once one does', async () => {
    await Promise.all(backends.map(stop));
    const started = performance.now();
    await expect(viaProxy()).rejects.toThrow(/disconnected before secure TLS connection|socket hang up|ECONNRESET/);
    expect(performance.now() - started).toBeLessThan(1000);
    await serve(backends[1]!, backends[1]!.port);
    await until('master-1 answering through the proxy again', 5_000, async () => (await viaProxy().catch(() => undefined))?.body === 'master-1' || undefined, () => log);
    expect((await answers(4)).map((a) => a.body)).toEqual(Array(4).fill('master-1'));
  });
});
