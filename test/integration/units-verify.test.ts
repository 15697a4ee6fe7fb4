/**
 * The rendered units against the REAL programs they run, built from source at the spec's versions
 * (release/build.ts; cached by version, so this file finds them built) — no stand-ins:
 * - `systemd-analyze verify` of every unit of both roles (and of a minion with the node-local API proxy) under a --root that holds the real programs at their
 *   install paths, failing on any output;
 * - command lines: each program parses its unit's ExecStart (`PROGRAM ARGS… --help`: every Kubernetes
 *   component, etcd, containerd and flanneld parse all their flags before they print help, so an unknown flag or
 *   a value of the wrong type fails it);
 * - config files, with what each program offers to check one: kube-proxy validates its KubeProxyConfiguration
 *   and exits (`--config F --write-config-to OUT`); the kubelet loads and validates its KubeletConfiguration and
 *   the drop-in directory (it has no dry run: run unprivileged, it gets past the validation and stops at the
 *   kubeconfig's certificates, which are not here); containerd loads config.toml and its imports (`config
 *   dump`: every rendered setting kept with its value, no unknown key); flanneld starts on its unit's command line
 *   through corekube-redact and prints its options, the etcd password redacted, then stops at the client
 *   certificate it cannot read. The programs run as nobody (setpriv), so none of them can touch this host;
 * - the download script against a local HTTP mirror of the real artifacts (release/mirror.ts buildMirror):
 *   pinned digests, checksum files, `none`, a tampered file, the install stamp.
 * etcd's and the API server's flags are checked by parsing only: past that, they bind the machine's address and
 * read the cluster's certificates (the local cloud's e2e test runs them for real).
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseYaml } from '../../core/yaml.ts';
import type { Role } from '../../contracts/roles.ts';
import { buildToolsMissing } from '../../release/build.ts';
import { clusterImages } from '../../release/catalog.ts';
import { buildMirror, type MirrorResult } from '../../release/mirror.ts';
import { linkOrCopy, sha256File } from '../../release/package.ts';
import { parseClusterSpec, type ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { artifactsFor, buildUnitContext, LAYOUT, PKI_PATHS, renderUnits } from '../../units/index.ts';
import type { RenderedUnits } from '../../contracts/step.ts';
import { missingParts } from '../harness/requirements.ts';

const has = (bin: string) => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;
const need = (...bins: string[]) => bins.filter((b) => !has(b)).map((b) => `${b} is not installed`);
/** systemd's own units (targets etc.), copied into each --root so dependencies resolve */
const SYSTEM_UNIT_DIR = ['/usr/lib/systemd/system', '/lib/systemd/system'].find((d) => existsSync(path.join(d, 'multi-user.target')));
const NOBODY = 65534;

const MASTER_IPS = ['10.240.0.32', '10.240.0.33', '10.240.0.34'];
const spec = parseClusterSpec({ flags: { name: 'verify', masters: '3' } });
/** the same cluster with the node-local API proxy on its minions (apiLoadBalancer node-local) */
const nodeLocal = parseClusterSpec({ flags: { name: 'verify', masters: '3', 'api-load-balancer': 'node-local' } });

function render(s: ClusterSpec, role: Role): RenderedUnits {
  const ip = role === 'master' ? MASTER_IPS[0]! : '10.240.0.40';
  return renderUnits(buildUnitContext(s, { id: 'd'.repeat(32), role, ip, hostname: `t-${role}-0` }, { masterIps: MASTER_IPS }, PKI_PATHS));
}

const fileOf = (rendered: RenderedUnits, p: string) => rendered.files.find((f) => f.path === p)!.content;

/** ExecStart of a rendered unit, continuation lines joined, as [program, ...args]. */
function execStart(rendered: RenderedUnits, unit: string): string[] {
  const line = fileOf(rendered, `/etc/systemd/system/${unit}`).replace(/\\\n\s*/g, '').split('\n').find((l) => l.startsWith('ExecStart='))!;
  return line.slice('ExecStart='.length).trim().split(/\s+/);
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
/** a temp dir nobody may read (the programs run as nobody) */
async function tmp(prefix: string): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), `corekube-${prefix}-`));
  await chmod(d, 0o755);
  tmpDirs.push(d);
  return d;
}
afterAll(async () => {
  await Promise.all(tmpDirs.map((d) => rm(d, { recursive: true, force: true })));
});

interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function runFile(file: string, args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Runs a program as nobody: it can read what is world-readable and change nothing of this host. */
const unprivileged = (file: string, args: readonly string[], env: NodeJS.ProcessEnv = {}) =>
  runFile('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', file, ...args], { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, 30_000);

/** The release (real programs and the mirror tree of their artifacts), built once for this file. */
let releaseOnce: Promise<{ mirror: MirrorResult; programs: Map<string, string> }> | undefined;
function release(): Promise<{ mirror: MirrorResult; programs: Map<string, string> }> {
  releaseOnce ??= (async () => {
    const mirror = await buildMirror({ versions: spec.versions, outDir: path.join(await tmp('mirror'), 'tree'), fromSource: true });
    const programs = new Map([...mirror.built.values()].flatMap((b) => [...b.programs]));
    return { mirror, programs };
  })();
  return releaseOnce;
}

/** The real programs a role's machines install, at their install paths under `root` (hard links into the build cache). */
async function installPrograms(root: string, role: Role, programs: ReadonlyMap<string, string>, s: ClusterSpec = spec): Promise<string[]> {
  const installed: string[] = [];
  for (const a of artifactsFor(s, role)) {
    for (const p of a.archive ? a.archive.map((m) => m.installPath) : [a.installPath]) {
      const source = programs.get(path.basename(p));
      if (!source) throw new Error(`no program ${path.basename(p)} was built`);
      await mkdir(path.dirname(path.join(root, p)), { recursive: true });
      await linkOrCopy(source, path.join(root, p));
      installed.push(p);
    }
  }
  return installed;
}

// a cold build cache builds every program first (tens of minutes); a warm one answers at once
const BUILD_TIMEOUT_MS = 60 * 60_000;
const releaseSkip = buildToolsMissing(true).then((m) => m && `the release cannot be built from source here: ${m}`);

// ---------------------------------------------------------------------------------------------------------
const verifySkip = missingParts(...need('systemd-analyze'), SYSTEM_UNIT_DIR ? undefined : 'no systemd unit directory with multi-user.target', await releaseSkip);

describe.skipIf(verifySkip)('systemd-analyze verify, with the real programs at their install paths', () => {
  const roots = new Map<string, { root: string; units: string[] }>();
  const machines = [['master', 'master', spec], ['minion', 'minion', spec], ['node-local minion', 'minion', nodeLocal]] as const;

  beforeAll(async () => {
    const { programs } = await release();
    for (const [name, role, s] of machines) {
      const root = await tmp(`verify-${name.replace(' ', '-')}`);
      await cp(SYSTEM_UNIT_DIR!, path.join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true });
      await writeRendered(root, render(s, role));
      await installPrograms(root, role, programs, s);
      const units = render(s, role).files.filter((f) => f.path.startsWith('/etc/systemd/system/')).map((f) => path.join(root, f.path));
      roots.set(name, { root, units });
    }
  }, BUILD_TIMEOUT_MS);

  /** Every line systemd-analyze prints: warnings only warn (exit 0), so any output is a failure. */
  async function verify(root: string, unit: string): Promise<string> {
    const r = await runFile('systemd-analyze', ['verify', '--man=no', `--root=${root}`, unit]);
    return `${r.stdout}${r.stderr}`.trim() + (r.code !== 0 ? `\n(exit ${r.code})` : '');
  }

  for (const [name] of machines) {
    it(`accepts every ${name} unit without a single line of output`, async () => {
      const { root, units } = roots.get(name)!;
      expect(units.length).toBeGreaterThanOrEqual(5);
      for (const unit of units) expect(await verify(root, unit), path.basename(unit)).toBe('');
    });
  }

  it('reports a unit whose program is missing and one with an unknown key (the check is not blind)', async () => {
    const { root, units } = roots.get('minion')!;
    const kubelet = units.find((u) => u.endsWith('/kubelet.service'))!;
    await rm(path.join(root, LAYOUT.binDir, 'kubelet'));
    expect(await verify(root, kubelet)).toMatch(/kubelet is not executable/);
    const proxy = units.find((u) => u.endsWith('/kube-proxy.service'))!;
    await writeFile(proxy, `${await readFile(proxy, 'utf8')}Bogus=1\n`);
    expect(await verify(root, proxy)).toMatch(/Unknown key 'Bogus'/);
  });
});

// ---------------------------------------------------------------------------------------------------------
const programsSkip = missingParts(...need('setpriv', 'bash', 'sed'), await releaseSkip);

describe.skipIf(programsSkip)('the real programs accept what the units give them', () => {
  const master = render(spec, 'master');
  const minion = render(spec, 'minion');
  const nodeLocalMinion = render(nodeLocal, 'minion');
  let programs: Map<string, string>;
  beforeAll(async () => {
    programs = (await release()).programs;
  }, BUILD_TIMEOUT_MS);

  const program = (installPath: string) => programs.get(path.basename(installPath))!;
  /** what a program prints when it does not know a flag (cobra, Go's flag package, urfave/cli) */
  const UNKNOWN_FLAG = /unknown flag|unknown shorthand|flag provided but not defined/;

  const commandLines: [RenderedUnits, string][] = [
    [master, 'corekube-etcd.service'],
    [master, 'kube-apiserver.service'],
    [master, 'kube-controller-manager.service'],
    [master, 'kube-scheduler.service'],
    [master, 'flanneld.service'],
    [minion, 'corekube-containerd.service'],
    [minion, 'kubelet.service'],
    [minion, 'kube-proxy.service'],
    // the node-local API proxy: `etcd gateway start` (cobra)
    [nodeLocalMinion, 'corekube-api-proxy.service'],
  ];
  for (const [rendered, unit] of commandLines) {
    it(`${unit}: the real program parses its ExecStart (and refuses a flag it does not know)`, async () => {
      // flanneld runs through corekube-redact: the program is its first argument
      const argv = execStart(rendered, unit).filter((a) => !a.endsWith('/corekube-redact'));
      const [bin, ...args] = argv as [string, ...string[]];
      const good = await unprivileged(program(bin), [...args, '--help']);
      expect(`${good.stdout}${good.stderr}`, unit).not.toMatch(UNKNOWN_FLAG);
      expect(good.code, `${unit}: ${good.stderr.slice(-500)}`).toBe(0);
      const bad = await unprivileged(program(bin), [...args, '--no-such-flag=1', '--help']);
      expect(`${bad.stdout}${bad.stderr}`, unit).toMatch(UNKNOWN_FLAG);
    });
  }

  it("kube-proxy validates its KubeProxyConfiguration: every field known, every value valid; a bad mode is refused", async () => {
    const dir = await tmp('kube-proxy');
    const config = path.join(dir, 'config.yaml');
    await writeFile(config, fileOf(minion, `${LAYOUT.configDir}/kube-proxy/config.yaml`));
    const out = path.join(dir, 'out');
    await mkdir(out);
    await chmod(out, 0o777);
    const bin = program(`${LAYOUT.binDir}/kube-proxy`);
    const r = await unprivileged(bin, [`--config=${config}`, `--write-config-to=${out}/written.yaml`]);
    expect(r.code, r.stderr).toBe(0);
    // an unknown field is decoded leniently with this message: there is none
    expect(r.stderr).not.toMatch(/strict decoding error/);
    const written = parseYaml(await readFile(`${out}/written.yaml`, 'utf8')) as Record<string, unknown>;
    expect(written).toMatchObject({ mode: 'iptables', clusterCIDR: spec.network.podCidr, healthzBindAddress: '10.240.0.40:10256', nodePortAddresses: ['primary'], metricsBindAddress: '127.0.0.1:10249' });
    expect(written.clientConnection).toMatchObject({ kubeconfig: `${LAYOUT.kubeconfigDir}/kube-proxy.kubeconfig` });

    await writeFile(config, `${fileOf(minion, `${LAYOUT.configDir}/kube-proxy/config.yaml`).replace('mode: iptables', 'mode: bogus')}typoField: 1\n`);
    const bad = await unprivileged(bin, [`--config=${config}`, `--write-config-to=${out}/bad.yaml`]);
    expect(bad.code).not.toBe(0);
    // (klog quotes the quotes)
    expect(bad.stderr).toMatch(/Invalid value: \\?"bogus\\?"/);
    expect(bad.stderr).toMatch(/strict decoding error: unknown field \\?"typoField\\?"/);
  });

  it('the kubelet loads and validates its KubeletConfiguration and drop-ins, and reads its kubeconfig (stopping at the certificates)', async () => {
    const root = await tmp('kubelet');
    const rooted = (c: string) => c.replaceAll(`${LAYOUT.configDir}/`, `${root}${LAYOUT.configDir}/`);
    await writeRendered(root, minion);
    const dropIns = path.join(root, LAYOUT.kubeletDropInDir);
    await mkdir(dropIns, { recursive: true });
    // what the local cloud's machine image adds on a cgroup v1 host (real clouds' images are cgroup v2)
    const cgroupV1 = !existsSync('/sys/fs/cgroup/cgroup.controllers');
    if (cgroupV1) await writeFile(path.join(dropIns, '50-cgroup-v1.conf'), 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nfailCgroupV1: false\n');
    const [bin, ...args] = execStart(minion, 'kubelet.service') as [string, ...string[]];
    const kubelet = () => unprivileged(program(bin), args.map(rooted));

    const r = await kubelet();
    const out = `${r.stdout}${r.stderr}`;
    expect(out).not.toMatch(/failed to (load|validate) kubelet config|strict decoding error/);
    // past the configuration: it runs, and stops where the machine's certificates would be
    expect(out).toContain(`"Kubelet version" kubeletVersion="${spec.versions.kubernetes}"`);
    expect(out).toMatch(new RegExp(`invalid kubeconfig: .*unable to read client-cert ${PKI_PATHS.kubelet.cert.replace(/\./g, '\\.')}`));
    expect(r.code).not.toBe(0);

    // a drop-in with an invalid value is refused: the check is not blind, and the drop-ins are read
    await writeFile(path.join(dropIns, '90-bad.conf'), 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 70000\n');
    const bad = await kubelet();
    expect(`${bad.stdout}${bad.stderr}`).toMatch(/failed to validate kubelet configuration, error: invalid configuration: healthzPort \(--healthz-port\) 70000 must be between 1 and 65535/);
  });

  it("containerd loads config.toml and its imports: every rendered setting is one it knows, kept with the rendered value", async () => {
    const root = await tmp('containerd');
    const rooted = (c: string) => c.replaceAll(`${LAYOUT.configDir}/`, `${root}${LAYOUT.configDir}/`);
    await writeRendered(root, minion, rooted);
    const config = path.join(root, LAYOUT.configDir, 'containerd/config.toml');
    const bin = program(`${LAYOUT.binDir}/containerd`);
    const dump = await unprivileged(bin, ['--config', config, 'config', 'dump']);
    expect(dump.code, dump.stderr).toBe(0);
    expect(dump.stderr).not.toMatch(/unknown key|level=error/i);
    const settings = (await readFile(config, 'utf8')).split('\n').map((l) => /^\s*([\w_]+) = (.+)$/.exec(l)).filter((m) => m !== null && !['version', 'imports'].includes(m[1]!)) as RegExpExecArray[];
    expect(settings.length).toBeGreaterThanOrEqual(12);
    for (const [, key, value] of settings) expect(dump.stdout, `${key} = ${value}`).toMatch(new RegExp(`^\\s*${key} = ${value!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'));
    expect(dump.stdout).toContain(`sandbox = '${clusterImages(spec.versions).pause}'`);
    expect(dump.stdout).toMatch(new RegExp(`^imports = \\[.*'${root}${LAYOUT.containerdDropInDir}/\\*\\.toml'`, 'm'));

    // a site's drop-in is imported over it; a misspelt key is reported
    await mkdir(path.join(root, LAYOUT.containerdDropInDir), { recursive: true });
    await writeFile(path.join(root, LAYOUT.containerdDropInDir, '50-site.toml'), "version = 3\n[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = 'registry.example.org/pause:site'\n[plugins.'io.containerd.cri.v1.images']\n  snapshoter = 'native'\n");
    const site = await unprivileged(bin, ['--config', config, 'config', 'dump']);
    expect(site.stdout).toContain("sandbox = 'registry.example.org/pause:site'");
    expect(site.stderr).toMatch(/unknown key.*key=snapshoter/i);
  });

  it("flanneld starts on its unit's command line through corekube-redact: its options printed, the etcd password never", async () => {
    const root = await tmp('flanneld');
    await writeRendered(root, minion);
    const [redact, bin, ...args] = execStart(minion, 'flanneld.service') as [string, string, ...string[]];
    const password = 'Zq9-never-in-the-journal';
    // the unit's EnvironmentFile (discovery-credentials.env) holds these
    const r = await unprivileged(path.join(root, redact), [program(bin), ...args], { FLANNELD_ETCD_USERNAME: 'machine-dddd', FLANNELD_ETCD_PASSWORD: password });
    const out = `${r.stdout}${r.stderr}`;
    expect(out).not.toContain(password);
    expect(r.stdout).toMatch(/CLI flags config: \{etcdEndpoints:https:\/\/10\.240\.0\.10:2379 etcdPrefix:\/corekube\/verify\/network /);
    expect(r.stdout).toContain(`etcdKeyfile:${PKI_PATHS.discoveryClient.key} etcdCertfile:${PKI_PATHS.discoveryClient.cert} etcdCAFile:${PKI_PATHS.dir}/discovery-ca.crt etcdUsername:machine-dddd etcdPassword:[redacted]`);
    expect(r.stdout).toContain('iface:[10.240.0.40]');
    expect(r.stdout).toContain('ipMasq:true');
    // it goes on to dial etcd over TLS with the machine's client certificate (absent here), and corekube-redact keeps its exit code
    expect(r.stdout).toContain(`Failed to create SubnetManager: open ${PKI_PATHS.discoveryClient.cert}: no such file or directory`);
    expect(r.code).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------------------
const downloadSkip = missingParts(...need('bash', 'curl', 'sha256sum', 'tar', 'gzip', 'install'), await releaseSkip);

describe.skipIf(downloadSkip)('corekube-download against a local mirror of the real artifacts', () => {
  let server: http.Server;
  let base: string;
  let mirror: MirrorResult;
  let programs: Map<string, string>;
  let requests: string[] = [];
  /** what the server answers instead of the mirror's file, by path (a tampered file, a checksum file) */
  const served = new Map<string, string>();

  beforeAll(async () => {
    ({ mirror, programs } = await release());
    server = http.createServer(async (req, res) => {
      // `again/…` serves the same tree at other URLs (as a new release's URLs would be)
      const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '');
      requests.push(rel);
      const alt = served.get(rel);
      if (alt !== undefined) {
        res.writeHead(200).end(alt);
        return;
      }
      const file = path.join(mirror.dir, rel.replace(/^again\//, ''));
      if (!file.startsWith(mirror.dir + path.sep) || !existsSync(file) || !(await stat(file)).isFile()) {
        res.writeHead(404).end('not found\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': (await stat(file)).size });
      const { createReadStream } = await import('node:fs');
      createReadStream(file).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }, BUILD_TIMEOUT_MS);
  afterAll(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  });

  /** The spec a machine of this mirror is rendered from: its base URL and the digests of its manifest. */
  const mirrorSpec = () => parseClusterSpec({ flags: { name: 'dl', 'release-base-url': base, 'release-digests': Object.fromEntries(mirror.manifest.artifacts.map((a) => [a.path, a.sha256])) } });

  type Line = string[];
  /** Both roles' manifest lines (tab-separated fields), each artifact once, as the overlord renders them. */
  function manifestLines(s: ClusterSpec): Line[] {
    const lines = (['master', 'minion'] as const).flatMap((role) => fileOf(render(s, role), LAYOUT.releaseManifest).split('\n').filter((l) => l && !l.startsWith('#')));
    return [...new Set(lines)].map((l) => l.split('\t'));
  }
  const line = (lines: Line[], name: string) => lines.find((l) => l[1] === name)!;

  async function machine(): Promise<{ root: string; download(lines: Line[]): Promise<Ran> }> {
    const root = await tmp('download-root');
    const files = await tmp('download-files');
    const script = fileOf(render(mirrorSpec(), 'minion'), `${LAYOUT.libexecDir}/corekube-download`);
    await writeFile(path.join(files, 'corekube-download'), script, { mode: 0o755 });
    return {
      root,
      download: async (lines) => {
        await writeFile(path.join(files, 'release.manifest'), `# test manifest\n${lines.map((l) => l.join('\t')).join('\n')}\n`);
        return runFile(path.join(files, 'corekube-download'), [path.join(files, 'release.manifest')], { COREKUBE_INSTALL_ROOT: root });
      },
    };
  }

  /** Install paths of a manifest line: `file … PATH`, `tar … member=PATH …`. */
  const installPathsOf = (l: Line) => l.slice(4).map((f) => (l[0] === 'tar' ? f.slice(f.indexOf('=') + 1) : f));
  const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

  it("installs every artifact of both roles, each checked against the spec's pinned digest (never fetched), then a second run contacts the mirror for nothing", async () => {
    const lines = manifestLines(mirrorSpec());
    expect(lines.every((l) => /^sha256:[0-9a-f]{64}$/.test(l[3]!))).toBe(true);
    const m = await machine();
    requests = [];
    const first = await m.download(lines);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`done: ${lines.length} installed, 0 already up to date`);
    // one request per artifact: the digests travel with the manifest, no .sha256 is asked for
    expect(requests.sort()).toEqual(lines.map((l) => l[2]!.slice(base.length + 1)).sort());
    for (const l of lines) {
      for (const p of installPathsOf(l)) {
        const file = path.join(m.root, p);
        expect((await stat(file)).mode & 0o777, p).toBe(0o755);
        // the very program that was built: a file artifact is its own digest, a tarball's member the built file
        expect(await sha256File(file), p).toBe(l[0] === 'file' ? l[3]!.slice('sha256:'.length) : await sha256File(programs.get(path.basename(p))!));
      }
    }
    const kubelet = await runFile(path.join(m.root, LAYOUT.binDir, 'kubelet'), ['--version']);
    expect(kubelet.stdout.trim()).toBe(`Kubernetes ${spec.versions.kubernetes}`);

    requests = [];
    const second = await m.download(lines);
    expect(second.code).toBe(0);
    expect(second.stdout).toContain(`done: 0 installed, ${lines.length} already up to date`);
    expect(requests).toEqual([]);
  });

  it('installs again only what changed: an installed program modified by hand, or an artifact at a new URL', async () => {
    // a few artifacts (each is stamped on its own): both kinds, the small ones
    const lines = manifestLines(mirrorSpec()).filter((l) => ['etcd', 'kube-proxy', 'runc', 'flannel'].includes(l[1]!));
    expect(lines).toHaveLength(4);
    const m = await machine();
    expect((await m.download(lines)).code).toBe(0);

    await writeFile(path.join(m.root, LAYOUT.binDir, 'etcdctl'), 'changed by hand\n');
    requests = [];
    const repaired = await m.download(lines);
    expect(repaired.stdout).toContain(`done: 1 installed, ${lines.length - 1} already up to date`);
    expect(requests).toEqual([line(lines, 'etcd')[2]!.slice(base.length + 1)]);
    expect(await sha256File(path.join(m.root, LAYOUT.binDir, 'etcdctl'))).toBe(await sha256File(programs.get('etcdctl')!));

    // a new release is a new URL (versions are in the path): that artifact alone is downloaded again
    const moved = lines.map((l) => (l[1] === 'kube-proxy' ? [l[0]!, l[1]!, l[2]!.replace(base, `${base}/again`), ...l.slice(3)] : l));
    requests = [];
    const again = await m.download(moved);
    expect(again.stdout).toContain(`done: 1 installed, ${lines.length - 1} already up to date`);
    expect(requests).toEqual([line(moved, 'kube-proxy')[2]!.slice(base.length + 1)]);
  });

  it('refuses a tampered file, naming the URL and both digests, and installs nothing of it', async () => {
    const lines = manifestLines(mirrorSpec());
    const kubelet = line(lines, 'kubelet');
    const rel = kubelet[2]!.slice(base.length + 1);
    const evil = '#!/bin/sh\necho evil\n';
    served.set(rel, evil);
    try {
      const m = await machine();
      const r = await m.download([kubelet]);
      expect(r.code).toBe(1);
      const pinned = kubelet[3]!.slice('sha256:'.length);
      expect(r.stderr).toContain(`sha256 mismatch for ${kubelet[2]}: expected ${pinned} (sha256:${pinned}), got ${sha(evil)}; refusing to install it`);
      expect(existsSync(path.join(m.root, LAYOUT.binDir, 'kubelet'))).toBe(false);
      expect(existsSync(path.join(m.root, 'var/lib/corekube/download/kubelet.stamp'))).toBe(false);
    } finally {
      served.delete(rel);
    }
  });

  it("checks against an upstream's checksum file: a bare digest, or a sha256sum list naming the file among others", async () => {
    const lines = manifestLines(mirrorSpec());
    const [runc, etcd] = [line(lines, 'runc'), line(lines, 'etcd')];
    const digestOf = (l: Line) => l[3]!.slice('sha256:'.length);
    const fileName = (l: Line) => l[2]!.split('/').pop()!;
    served.set('sums/runc.sha256', `${digestOf(runc)}\n`);
    served.set('sums/SHA256SUMS', `${'0'.repeat(64)}  other-file.tar.gz\n${digestOf(etcd)} *${fileName(etcd)}\n${digestOf(runc)}  ./${fileName(runc)}\n`);
    try {
      const m = await machine();
      const withCheck = (l: Line, check: string) => [l[0]!, l[1]!, l[2]!, check, ...l.slice(4)];
      const r = await m.download([withCheck(runc, `${base}/sums/runc.sha256`), withCheck(etcd, `${base}/sums/SHA256SUMS`)]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('done: 2 installed, 0 already up to date');
      expect(await sha256File(path.join(m.root, LAYOUT.binDir, 'runc'))).toBe(digestOf(runc));
      expect(await sha256File(path.join(m.root, LAYOUT.binDir, 'etcd'))).toBe(await sha256File(programs.get('etcd')!));
      // the mirror's own `.sha256` next to each file is such a list too
      const fresh = await machine();
      const own = await fresh.download([withCheck(runc, `${runc[2]}.sha256`)]);
      expect(own.code, own.stderr).toBe(0);

      // a checksum file that names another digest: refused, naming the check it came from
      served.set('sums/runc.sha256', `${'e'.repeat(64)}\n`);
      const other = await machine();
      const bad = await other.download([withCheck(runc, `${base}/sums/runc.sha256`)]);
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain(`sha256 mismatch for ${runc[2]}: expected ${'e'.repeat(64)} (${base}/sums/runc.sha256), got ${digestOf(runc)}`);
      expect(existsSync(path.join(other.root, LAYOUT.binDir, 'runc'))).toBe(false);
    } finally {
      served.delete('sums/runc.sha256');
      served.delete('sums/SHA256SUMS');
    }
  });

  it('installs an artifact whose upstream publishes no checksum (`none`) with a warning naming its digest', async () => {
    const flannel = line(manifestLines(mirrorSpec()), 'flannel');
    const m = await machine();
    const r = await m.download([[flannel[0]!, flannel[1]!, flannel[2]!, 'none', ...flannel.slice(4)]]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(`corekube-download: warning: ${flannel[2]} is installed unverified (sha256 ${flannel[3]!.slice('sha256:'.length)}): its upstream publishes no checksum; pin it with --release-digests\n`);
    expect(await sha256File(path.join(m.root, LAYOUT.binDir, 'flanneld'))).toBe(await sha256File(programs.get('flanneld')!));
  });
});
