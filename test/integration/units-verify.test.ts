/**
 * The rendered units against real tools: `systemd-analyze verify` on every unit of both roles (stand-ins at
 * the install paths under --root, failing on any output), the stand-ins against the flags the units pass,
 * and the real download script against a local HTTP mirror built from the stand-ins.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, chmod, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseClusterSpec, type ClusterSpec } from '../../spec/cluster-spec.ts';
import type { Role } from '../../overlord/machine-record.ts';
import { buildUnitContext, PKI_PATHS, releaseArtifacts, renderUnits, type RenderedUnits } from '../../units/index.ts';
import { buildReleaseMirror, installStandins, standinExecutable } from '../standins/index.ts';
import { onExit } from '../harness/cleanup.ts';
import { missingParts } from '../harness/requirements.ts';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const need = (...bins: string[]) => bins.filter((b) => !has(b)).map((b) => `${b} is not installed`);
/** systemd's own units (targets etc.), copied into each --root so dependencies resolve */
const SYSTEM_UNIT_DIR = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((d) => existsSync(path.join(d, 'multi-user.target')));

const MASTER_IPS = ['10.240.0.32', '10.240.0.33', '10.240.0.34'];

function render(spec: ClusterSpec, role: Role): RenderedUnits {
  const ip = role === 'master' ? MASTER_IPS[0]! : '10.240.0.40';
  return renderUnits(buildUnitContext(spec, { id: 'd'.repeat(32), role, ip, hostname: `t-${role}-0` }, { masterIps: MASTER_IPS }, PKI_PATHS));
}

async function writeRendered(root: string, rendered: RenderedUnits, rewrite: (content: string) => string = (c) => c): Promise<void> {
  for (const f of rendered.files) {
    const target = path.join(root, f.path);
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, rewrite(f.content));
    await chmod(target, parseInt(f.mode, 8));
  }
}

const tmpDirs: string[] = [];
async function tmp(prefix: string): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), `corekube-${prefix}-`));
  tmpDirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(tmpDirs.map((d) => rm(d, { recursive: true, force: true })));
});

function runFile(file: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
const verifySkip = missingParts(...need('systemd-analyze'), SYSTEM_UNIT_DIR ? undefined : 'no systemd unit directory with multi-user.target');

describe.skipIf(verifySkip)('systemd-analyze verify', () => {
  const spec = parseClusterSpec({ flags: { name: 'verify', masters: '3' } });

  async function verifyRoot(role: Role): Promise<{ root: string; units: string[] }> {
    const root = await tmp(`verify-${role}`);
    await cp(SYSTEM_UNIT_DIR!, path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
    await writeRendered(root, render(spec, role));
    await installStandins(spec, root, [role]);
    const units = render(spec, role).files.filter((f) => f.path.startsWith('/etc/systemd/system/')).map((f) => path.join(root, f.path));
    return { root, units };
  }

  /** Every line systemd-analyze prints: warnings only warn (exit 0), so any output is a failure. */
  async function verify(root: string, unit: string): Promise<string> {
    const r = await runFile('systemd-analyze', ['verify', '--man=no', `--root=${root}`, unit]);
    return `${r.stdout}${r.stderr}`.trim() + (r.code !== 0 ? `\n(exit ${r.code})` : '');
  }

  for (const role of ['master', 'minion'] as const) {
    it(`accepts every ${role} unit without a single line of output`, async () => {
      const { root, units } = await verifyRoot(role);
      expect(units.length).toBeGreaterThanOrEqual(5);
      for (const unit of units) expect(await verify(root, unit), path.basename(unit)).toBe('');
    });
  }

  it('reports a unit whose binary is missing and one with an unknown key (the check is not blind)', async () => {
    const { root, units } = await verifyRoot('minion');
    const kubelet = units.find((u) => u.endsWith('/kubelet.service'))!;
    await rm(path.join(root, 'opt/corekube/bin/kubelet'));
    expect(await verify(root, kubelet)).toMatch(/kubelet is not executable/);
    const proxy = units.find((u) => u.endsWith('/kube-proxy.service'))!;
    await writeFile(proxy, `${await readFile(proxy, 'utf8')}Bogus=1\n`);
    expect(await verify(root, proxy)).toMatch(/Unknown key 'Bogus'/);
  });
});

// ---------------------------------------------------------------------------------------------------------
const standinSkip = missingParts(...need('bash', 'sleep'));

describe.skipIf(standinSkip)('stand-in executables', () => {
  const spec = parseClusterSpec({ flags: { name: 'standin', masters: '3' } });
  let root: string;
  let state: string;
  const children = new Set<ChildProcess>();
  // each stand-in runs in its own process group, so a kill also takes its `sleep` child
  const killAll = () => {
    for (const c of children) {
      try {
        if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) process.kill(-c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    children.clear();
  };
  const unregister = onExit('units-verify stand-ins', killAll);

  beforeAll(async () => {
    root = await tmp('standins');
    state = path.join(root, 'standin-state');
    // the units name absolute paths; the stand-ins check the files corekube writes, so root them here
    const rooted = (c: string) => c.replace(/(=| )(\/etc\/corekube\/|\/run\/flannel\/)/g, `$1${root}$2`);
    await writeRendered(root, render(spec, 'master'), rooted);
    await writeRendered(root, render(spec, 'minion'), rooted);
    await installStandins(spec, path.join(root, 'installed'));
  });
  afterEach(killAll);
  afterAll(() => unregister());

  /** ExecStart of a rendered unit (continuation lines joined) as [binary, ...args]. */
  async function execStart(unit: string): Promise<[string, string[]]> {
    const text = await readFile(path.join(root, 'etc/systemd/system', unit), 'utf8');
    const line = text.replace(/\\\n\s*/g, '').split('\n').find((l) => l.startsWith('ExecStart='))!;
    const [bin, ...args] = line.slice('ExecStart='.length).trim().split(/\s+/);
    return [path.join(root, 'installed', bin!), args];
  }

  // flanneld.service's EnvironmentFile gives the real one (and its stand-in) its discovery etcd user
  const env = () => ({ COREKUBE_STANDIN_DIR: state, COREKUBE_STANDIN_SUBNET_FILE: path.join(root, 'run/flannel/subnet.env'), FLANNELD_ETCD_USERNAME: 'flannel', FLANNELD_ETCD_PASSWORD: 'test-only' });

  /** Starts a stand-in and resolves once it says it runs, or with its exit if it stops first. */
  function start(bin: string, args: string[]): Promise<{ child: ChildProcess; exited?: { code: number | null; stderr: string } }> {
    return new Promise((resolve) => {
      const child = spawn(bin, args, { env: { ...process.env, ...env() }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      children.add(child);
      let stderr = '';
      child.stderr!.on('data', (d) => (stderr += d));
      child.stdout!.on('data', (d) => {
        if (String(d).includes('flags accepted, running')) resolve({ child });
      });
      child.on('exit', (code) => resolve({ child, exited: { code, stderr } }));
    });
  }

  const stop = (child: ChildProcess) =>
    new Promise<number | null>((resolve) => {
      child.on('exit', (code) => resolve(code));
      child.kill('SIGTERM');
    });

  it('flanneld accepts its unit flags, writes the subnet file like the real one and stays up until SIGTERM', async () => {
    // without an etcd here, the stand-in takes the reserved subnet from flannel.env (the e2e tests give it
    // the discovery etcd the overlord wrote the reservation to)
    await mkdir(state, { recursive: true });
    await writeFile(path.join(state, 'flannel.env'), 'FLANNEL_NETWORK=10.244.0.0/14\nFLANNEL_SUBNET=10.244.7.1/24\n');
    const [bin, args] = await execStart('flanneld.service');
    const r = await start(bin, args);
    expect(r.exited, r.exited?.stderr).toBeUndefined();
    const subnetEnv = await readFile(path.join(root, 'run/flannel/subnet.env'), 'utf8');
    expect(subnetEnv).toBe('FLANNEL_NETWORK=10.244.0.0/14\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    expect(await stop(r.child)).toBe(0);
    await rm(path.join(state, 'flannel.env'));
  });

  for (const unit of ['corekube-etcd.service', 'kube-apiserver.service', 'kube-controller-manager.service', 'kube-scheduler.service', 'corekube-containerd.service', 'kubelet.service', 'kube-proxy.service']) {
    it(`${unit}: its stand-in accepts the rendered flags, counts the start and stops on SIGTERM`, async () => {
      await mkdir(path.join(root, 'run/flannel'), { recursive: true });
      await writeFile(path.join(root, 'run/flannel/subnet.env'), 'FLANNEL_SUBNET=10.244.1.1/24\n');
      const [bin, args] = await execStart(unit);
      const name = path.basename(bin);
      const counter = path.join(state, `${name}.starts`);
      const before = existsSync(counter) ? (await readFile(counter, 'utf8')).split('\n').filter(Boolean).length : 0;
      const r = await start(bin, args);
      expect(r.exited, r.exited?.stderr).toBeUndefined();
      expect((await readFile(counter, 'utf8')).split('\n').filter(Boolean)).toHaveLength(before + 1);
      expect(await stop(r.child)).toBe(0);
    });
  }

  const rejections: [string, (args: string[]) => string[], RegExp][] = [
    ['kube-apiserver.service', (a) => a.map((x) => (x.startsWith('--authorization-mode=') ? '--authorization-mode=AlwaysAllow' : x)), /--authorization-mode must include Node/],
    ['kube-apiserver.service', (a) => a.map((x) => (x.startsWith('--authorization-mode=') ? '--authorization-mode=Node' : x)), /--authorization-mode must include RBAC/],
    ['kube-apiserver.service', (a) => [...a, '--insecure-port=8080'], /--insecure-port must not be given/],
    ['kube-apiserver.service', (a) => a.map((x) => (x === '--anonymous-auth=false' ? '--anonymous-auth=true' : x)), /--anonymous-auth must be false/],
    ['kube-apiserver.service', (a) => a.filter((x) => !x.startsWith('--tls-cert-file=')), /--tls-cert-file is required/],
    ['corekube-etcd.service', (a) => a.map((x) => (x === '--client-cert-auth=true' ? '--client-cert-auth=false' : x)), /--client-cert-auth must be true/],
    ['corekube-etcd.service', (a) => a.map((x) => x.replace(/^--listen-client-urls=https/, '--listen-client-urls=http')), /--listen-client-urls must list only https/],
    ['flanneld.service', (a) => a.map((x) => x.replace(/^--etcd-endpoints=https/, '--etcd-endpoints=http')), /--etcd-endpoints must list only https/],
    ['flanneld.service', (a) => a.filter((x) => x !== '--ip-masq'), /--ip-masq must be true/],
    ['kube-controller-manager.service', (a) => a.map((x) => (x.startsWith('--bind-address=') ? '--bind-address=0.0.0.0' : x)), /--bind-address must be 127\.0\.0\.1/],
  ];
  for (const [unit, change, message] of rejections) {
    it(`${unit}: its stand-in exits 2 naming the flag when given ${message.source.replace(/\\/g, '')}`, async () => {
      const [bin, args] = await execStart(unit);
      const r = await runFile(bin, change(args), env());
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toMatch(/^STAND-IN /);
    });
  }

  it("kubelet's stand-in refuses to start before flannel's subnet file exists", async () => {
    await rm(path.join(root, 'run/flannel/subnet.env'), { force: true });
    const [bin, args] = await execStart('kubelet.service');
    const r = await runFile(bin, args, env());
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/subnet\.env does not exist/);
  });

  it('every stand-in says what it is in its second line, also once installed', async () => {
    for (const a of releaseArtifacts(spec)) {
      for (const p of a.archive ? a.archive.map((m) => m.installPath) : [a.installPath]) {
        const name = path.basename(p);
        const second = (await readFile(path.join(root, 'installed', p), 'utf8')).split('\n')[1];
        expect(second).toBe(`# STAND-IN: not the real ${name}; used only where the real one cannot run here.`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------------------
const downloadSkip = missingParts(...need('bash', 'curl', 'sha256sum', 'tar', 'gzip'));

describe.skipIf(downloadSkip)('corekube-download against a local mirror of stand-ins', () => {
  let server: http.Server;
  let base: string;
  let mirrorDir: string;
  let requests: string[] = [];

  beforeAll(async () => {
    mirrorDir = await tmp('mirror');
    server = http.createServer(async (req, res) => {
      const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '');
      requests.push(rel);
      const file = path.join(mirrorDir, rel);
      if (!file.startsWith(mirrorDir + path.sep) || !existsSync(file) || !(await stat(file)).isFile()) {
        res.writeHead(404).end('not found\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(await readFile(file));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const specAt = (flags: Record<string, string> = {}) => parseClusterSpec({ flags: { name: 'dl', 'release-base-url': base, ...flags } });

  /** Writes both roles' scripts and manifests (one manifest with every artifact) and returns a runner. */
  async function machine(spec: ClusterSpec, existingRoot?: string): Promise<{ root: string; download(): Promise<{ code: number; stdout: string; stderr: string }> }> {
    const root = existingRoot ?? (await tmp('download-root'));
    const files = await tmp('download-files');
    const script = render(spec, 'minion').files.find((f) => f.path.endsWith('/corekube-download'))!;
    const manifest = ['master', 'minion'].flatMap((role) =>
      render(spec, role as Role).files.find((f) => f.path === '/etc/corekube/release.manifest')!.content.split('\n').filter((l) => l && !l.startsWith('#')),
    );
    await writeFile(path.join(files, 'corekube-download'), script.content, { mode: 0o755 });
    await writeFile(path.join(files, 'release.manifest'), `${[...new Set(manifest)].join('\n')}\n`);
    return {
      root,
      download: () => runFile(path.join(files, 'corekube-download'), [path.join(files, 'release.manifest')], { COREKUBE_INSTALL_ROOT: root }),
    };
  }

  const installPaths = (spec: ClusterSpec) => releaseArtifacts(spec).flatMap((a) => (a.archive ? a.archive.map((m) => m.installPath) : [a.installPath]));

  it('installs every artifact, verified, then a second run downloads nothing', async () => {
    const spec = specAt();
    await buildReleaseMirror(spec, mirrorDir);
    const m = await machine(spec);

    requests = [];
    const first = await m.download();
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const count = releaseArtifacts(spec).length;
    expect(first.stdout).toContain(`done: ${count} installed, 0 already up to date`);
    expect(requests.filter((r) => r.endsWith('.sha256'))).toHaveLength(count);
    for (const p of installPaths(spec)) {
      const file = path.join(m.root, p);
      expect(await readFile(file, 'utf8'), p).toBe(standinExecutable(path.basename(p)));
      expect((await stat(file)).mode & 0o777, p).toBe(0o755);
    }
    expect((await readdir(path.join(m.root, 'opt/corekube/bin'))).filter((n) => n.includes('corekube-new'))).toEqual([]);

    requests = [];
    const second = await m.download();
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`done: 0 installed, ${count} already up to date`);
    expect(requests).toEqual([]);
  });

  it('re-downloads only what changed: a new Kubernetes version, or an installed binary modified by hand', async () => {
    const spec = specAt();
    await buildReleaseMirror(spec, mirrorDir);
    const m = await machine(spec);
    expect((await m.download()).code).toBe(0);

    await writeFile(path.join(m.root, 'opt/corekube/bin/etcdctl'), 'changed by hand\n');
    requests = [];
    const repaired = await m.download();
    expect(repaired.stdout).toContain(`done: 1 installed, ${releaseArtifacts(spec).length - 1} already up to date`);
    expect(requests.filter((r) => !r.endsWith('.sha256'))).toEqual([spec.versions.etcd].map((v) => `etcd/${v}/etcd-${v}-linux-amd64.tar.gz`));
    expect(await readFile(path.join(m.root, 'opt/corekube/bin/etcdctl'), 'utf8')).toBe(standinExecutable('etcdctl'));

    const upgraded = specAt({ 'kubernetes-version': 'v1.36.3' });
    await buildReleaseMirror(upgraded, mirrorDir);
    requests = [];
    const again = await (await machine(upgraded, m.root)).download();
    expect(again.stdout).toContain(`done: 6 installed, ${releaseArtifacts(upgraded).length - 6} already up to date`);
    expect(requests.filter((x) => !x.endsWith('.sha256')).sort()).toEqual(
      ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'kubelet', 'kube-proxy'].map((b) => `release/v1.36.3/bin/linux/amd64/${b}`).sort(),
    );
  });

  it('refuses a tampered file with a clear message and installs nothing of it', async () => {
    const spec = specAt();
    const mirror = await buildReleaseMirror(spec, mirrorDir);
    const kubelet = mirror.artifacts.find((a) => a.name === 'kubelet')!;
    await writeFile(path.join(mirrorDir, kubelet.mirrorPath), '#!/bin/sh\necho evil\n');
    try {
      const m = await machine(spec);
      const r = await m.download();
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`sha256 mismatch for ${kubelet.url}`);
      expect(r.stderr).toMatch(/expected [0-9a-f]{64} \(from .*kubelet\.sha256\), got [0-9a-f]{64}; refusing to install it/);
      expect(existsSync(path.join(m.root, kubelet.installPath))).toBe(false);
      expect(existsSync(path.join(m.root, 'var/lib/corekube/download/kubelet.stamp'))).toBe(false);
    } finally {
      await buildReleaseMirror(spec, mirrorDir);
    }
  });
});
