/**
 * `corekube mirror build` for real: from source (the programs built from their Go modules — cached by version,
 * so this reuses what scripts/setup built), and from upstream downloads (an HTTP server of this test plays
 * dl.k8s.io and GitHub's release pages, publishing the checksums each project publishes, in its format; a local
 * registry plays registry.k8s.io). Checks the tree against what the rendered units expect: every URL of every
 * machine's release manifest is in the tree, with the digest the manifest pins, every binary reports the pinned
 * version, the images are an intact OCI layout and can be pushed to a registry.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorekubeError } from '../../core/errors.ts';
import { startRegistry, registryMissing, type Registry } from '../../localcloud/mirrors/registry.ts';
import { buildToolsMissing } from '../../release/build.ts';
import { clusterImages, releaseCatalog } from '../../release/catalog.ts';
import { layoutIntact } from '../../release/images.ts';
import { buildMirror, type MirrorResult } from '../../release/mirror.ts';
import { MIRROR_MANIFEST, type MirrorManifest } from '../../release/mirror-manifest.ts';
import { recipes } from '../../release/recipes.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { artifactsFor } from '../../units/release.ts';
import { missingParts } from '../harness/requirements.ts';

const run = promisify(execFile);
const versions = parseClusterSpec({}).versions;
const skip = missingParts(await buildToolsMissing(true), registryMissing(), process.getuid?.() === 0 ? undefined : 'building the images needs root (setcap)');
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe.skipIf(skip)('corekube mirror build', () => {
  let work: string;
  let fromSource: MirrorResult;

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'corekube-mirror-test-'));
    fromSource = await buildMirror({ versions, outDir: path.join(work, 'source'), fromSource: true });
  }, 1_800_000);

  afterAll(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('builds from source every artifact of the catalog at its mirror path, each with its .sha256 and a digest in corekube-mirror.json', async () => {
    const manifest = JSON.parse(await readFile(path.join(fromSource.dir, MIRROR_MANIFEST), 'utf8')) as MirrorManifest;
    expect(manifest).toMatchObject({ schema: 1, source: 'source', versions });
    const catalog = releaseCatalog(versions);
    expect(manifest.artifacts.map((a) => a.path)).toEqual(catalog.map((a) => a.mirrorPath));
    for (const a of manifest.artifacts) {
      const file = path.join(fromSource.dir, a.path);
      expect(sha256(file), a.path).toBe(a.sha256);
      expect(readFileSync(`${file}.sha256`, 'utf8'), a.path).toBe(`${a.sha256}  ${path.basename(a.path)}\n`);
      expect(a.provenance, a.path).toMatch(/^built from source \(\S+@\S+\) by corekube$/);
    }
  });

  it('holds every file the machines\' release manifests name, with the digest the manifest pins (what the units expect)', async () => {
    const manifest = JSON.parse(await readFile(path.join(fromSource.dir, MIRROR_MANIFEST), 'utf8')) as MirrorManifest;
    const base = 'http://mirror.invalid/corekube';
    const spec = parseClusterSpec({ flags: { 'release-base-url': base, 'release-digests': manifest } });
    for (const role of ['master', 'minion'] as const) {
      for (const a of artifactsFor(spec, role)) {
        const file = path.join(fromSource.dir, a.url.slice(base.length + 1));
        expect(existsSync(file), a.url).toBe(true);
        expect(a.verify, a.name).toEqual({ kind: 'pinned', sha256: sha256(file) });
        if (a.archive) {
          const { stdout } = await run('tar', ['-tzf', file]);
          const members = stdout.split('\n').map((l) => l.replace(/^\.\//, ''));
          for (const m of a.archive) expect(members, `${a.name}: ${m.member}`).toContain(m.member.replace(/^\.\//, ''));
        }
      }
    }
  });

  it('gives every binary the version it was pinned at: each reports it', async () => {
    const unpacked = path.join(work, 'unpacked');
    await mkdir(unpacked, { recursive: true });
    const probes = new Map(recipes(versions, '').flatMap((r) => (r.kind === 'go' ? r.programs.map((p) => [p.program, p.probe] as const) : [[r.program, r.probe] as const])));
    for (const a of releaseCatalog(versions)) {
      const file = path.join(fromSource.dir, a.mirrorPath);
      if (a.kind === 'tar') await run('tar', ['-xzf', file, '-C', unpacked]);
      for (const m of a.members) {
        const bin = a.kind === 'tar' ? path.join(unpacked, m.member) : file;
        const probe = probes.get(m.program)!;
        const said = await new Promise<string>((resolve) => execFile(bin, [...probe.args], (_e, out, err) => resolve(`${out}${err}`)));
        expect(said, `${m.program} ${probe.args.join(' ')}`).toContain(probe.expect);
      }
    }
    expect(probes.get('kubelet')!.expect).toBe(`Kubernetes ${versions.kubernetes}`);
    expect(probes.get('etcd')!.expect).toBe(`etcd Version: ${versions.etcd.slice(1)}`);
  });

  it('lays the cluster\'s images out as an intact OCI layout, named as registry.k8s.io names them, and pushes them to a registry', async () => {
    const layout = path.join(fromSource.dir, 'images/oci');
    expect(await layoutIntact(layout)).toBe(true);
    const refs = clusterImages(versions);
    expect(fromSource.manifest.images.map((i) => i.ref)).toEqual([refs.pause, refs.coredns]);
    const registry = await startRegistry({ listenOn: '127.0.0.1', dir: path.join(work, 'registry') });
    try {
      const pushed = await buildMirror({ versions, outDir: path.join(work, 'source'), fromSource: true, push: { registry: registry.host, insecure: true } });
      expect(pushed.manifest.images).toEqual(fromSource.manifest.images);
      const tags = await fetch(`${registry.url}/v2/coredns/coredns/tags/list`).then((r) => r.json() as Promise<{ tags: string[] }>);
      expect(tags.tags).toEqual([versions.coredns]);
      const { stdout } = await run('skopeo', ['inspect', '--tls-verify=false', `docker://${registry.host}/pause:${versions.pause}`]);
      expect(JSON.parse(stdout)).toMatchObject({ Architecture: 'amd64', Os: 'linux' });
    } finally {
      await registry.close();
    }
  });

  it('rebuilds nothing the second time: every project is found in the cache', async () => {
    const t = Date.now();
    const again = await buildMirror({ versions, outDir: path.join(work, 'again'), fromSource: true });
    expect([...again.built.values()].every((b) => b.cached)).toBe(true);
    expect(again.manifest.artifacts).toEqual(fromSource.manifest.artifacts);
    expect(Date.now() - t).toBeLessThan(30_000);
  });

  describe('from upstream downloads', () => {
    let upstream: http.Server;
    let base: string;
    let registry: Registry;
    const served = new Map<string, Buffer>();
    const tampered = new Set<string>();

    beforeAll(async () => {
      // each project's release files, and the checksums each publishes, in its format
      const manifest = fromSource.manifest;
      for (const a of releaseCatalog(versions)) {
        if (!a.upstream) continue;
        const body = readFileSync(path.join(fromSource.dir, a.mirrorPath));
        served.set(new URL(a.upstream.url).pathname, body);
        const digest = manifest.artifacts.find((x) => x.path === a.mirrorPath)!.sha256;
        const c = a.upstream.checksum;
        if (c.kind === 'digest-file') served.set(new URL(c.url).pathname, Buffer.from(a.project === 'kubernetes' ? digest : `${digest}  ${a.fileName}\n`));
        if (c.kind === 'sums-file') {
          const p = new URL(c.url).pathname;
          const listed = `${served.get(p)?.toString() ?? `${'0'.repeat(64)}  other-asset.tar.gz\n`}${digest}  ${a.fileName}\n`;
          served.set(p, Buffer.from(listed));
        }
      }
      upstream = http.createServer((req, res) => {
        const p = new URL(req.url!, 'http://x').pathname;
        const body = served.get(p);
        if (!body) return res.writeHead(404).end();
        res.writeHead(200).end(tampered.has(p) ? Buffer.concat([body, Buffer.from('x')]) : body);
      });
      await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
      base = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
      // registry.k8s.io's images: the ones built from source, in a registry of this test
      registry = await startRegistry({ listenOn: '127.0.0.1', dir: path.join(work, 'upstream-registry') });
      await buildMirror({ versions, outDir: path.join(work, 'source'), fromSource: true, push: { registry: registry.host, insecure: true } });
    }, 600_000);

    afterAll(async () => {
      upstream?.close();
      await registry?.close();
    });

    const rewrite = (url: string) => `${base}${new URL(url).pathname}`;

    it('downloads each artifact from its upstream home, checked against the checksum its project publishes; flannel\'s is recorded as unverified', async () => {
      const out = path.join(work, 'upstream');
      const result = await buildMirror({ versions, outDir: out, fromSource: false, rewrite, imagesFrom: { registry: registry.host, insecure: true } });
      const byName = Object.fromEntries(result.manifest.artifacts.map((a) => [a.name, a]));
      expect(Object.keys(byName)).toEqual(releaseCatalog(versions).filter((a) => a.upstream).map((a) => a.name));
      expect(byName.kubelet!.provenance).toBe(`upstream sha256 from https://dl.k8s.io/release/${versions.kubernetes}/bin/linux/amd64/kubelet.sha256`);
      expect(byName.etcd!.provenance).toBe(`upstream sha256 from https://github.com/etcd-io/etcd/releases/download/${versions.etcd}/SHA256SUMS`);
      expect(byName.flannel!.provenance).toMatch(/^unverified: flannel-io\/flannel publishes no checksums/);
      expect(result.manifest.notes.some((n) => n.startsWith(`flannel ${versions.flannel}: unverified`))).toBe(true);
      for (const a of result.manifest.artifacts) expect(sha256(path.join(out, a.path)), a.path).toBe(fromSource.manifest.artifacts.find((x) => x.path === a.path)!.sha256);
      expect(result.manifest.images.map((i) => i.ref)).toEqual([clusterImages(versions).pause, clusterImages(versions).coredns]);
      expect(await layoutIntact(path.join(out, 'images/oci'))).toBe(true);
    }, 300_000);

    it('refuses a download whose digest differs from the published one, naming both, and keeps nothing of it', async () => {
      const containerd = releaseCatalog(versions).find((a) => a.project === 'containerd')!;
      tampered.add(new URL(containerd.upstream!.url).pathname);
      const out = path.join(work, 'tampered');
      try {
        const err = await buildMirror({ versions, outDir: out, fromSource: false, rewrite, imagesFrom: { registry: registry.host, insecure: true } }).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(CorekubeError);
        expect((err as CorekubeError).message).toMatch(new RegExp(`sha256 mismatch for ${containerd.upstream!.url.replace(/[.]/g, '\\.')}: ${containerd.upstream!.checksum.kind === 'none' ? '' : '\\S+'} says [0-9a-f]{64}, the download is [0-9a-f]{64}; refused`));
        // nothing half written: the tree is built aside and replaces the output only once complete
        expect(existsSync(out)).toBe(false);
        expect(readdirSync(work).filter((f) => f.startsWith('tampered'))).toEqual([]);
      } finally {
        tampered.clear();
      }
    }, 300_000);
  });
});
