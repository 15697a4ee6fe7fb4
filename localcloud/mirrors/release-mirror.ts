/**
 * The local cloud's release mirror and images — the real programs, built from their Go modules at the spec's
 * pinned versions (release/build.ts, cached by version), in the mirror tree `corekube mirror build
 * --from-source` writes: its machines download exactly what a real cloud's machines download from a mirror,
 * checked against the mirror manifest's digests (the spec's releaseDigests). Beside it, apt/: the repository
 * with the Docker stand-in package of the overlord server (apt-repo.ts). The images (pause, CoreDNS, and the
 * test workload's busybox) go to the local registry (registry.ts).
 */
import { spawnSync } from 'node:child_process';
import { cp, rm } from 'node:fs/promises';
import path from 'node:path';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import type { BuiltProject } from '../../release/build.ts';
import type { Project } from '../../release/catalog.ts';
import { pushImages, writeImageLayout } from '../../release/images.ts';
import { buildMirror, type MirrorEvent } from '../../release/mirror.ts';
import { MIRROR_IMAGES_DIR, type MirrorManifest } from '../../release/mirror-manifest.ts';
import { buildAptRepo } from './apt-repo.ts';
import type { Registry } from './registry.ts';

export interface LocalCloudRelease {
  /** the mirror root (served on the bridge) */
  readonly dir: string;
  readonly manifest: MirrorManifest;
  /** mirror path → sha256: the spec's releaseDigests */
  readonly digests: Readonly<Record<string, string>>;
  /** the kubectl built for the cluster's version, on this host */
  readonly kubectl: string;
  readonly built: ReadonlyMap<Project, BuiltProject>;
}

/** Why the release cannot be built here, or undefined. */
export function releaseMirrorMissing(): string | undefined {
  for (const [bin, args, what] of [['go', ['version'], 'Go 1.26 (the programs are built from their Go modules)'], ['gcc', ['--version'], 'Debian package gcc'], ['dpkg-deb', ['--version'], 'Debian package dpkg'], ['tar', ['--version'], 'tar'], ['setcap', ['-h'], 'Debian package libcap2-bin']] as const) {
    const r = spawnSync(bin, [...args], { stdio: 'ignore' });
    if (r.error) return `${bin} is missing (${what})`;
  }
  return undefined;
}

/**
 * Builds (or finds in the cache) every program, lays out the mirror tree under `dir`, adds the apt repository.
 * `alsoKubernetes`: more Kubernetes releases the mirror serves beside the spec's (a cluster created at one and
 * upgraded to the other): each is built the same way, its `release/<version>/` tree copied in, its digests added.
 */
export async function buildLocalCloudRelease(versions: ClusterSpec['versions'], dir: string, onEvent?: (e: MirrorEvent) => void, alsoKubernetes: readonly string[] = []): Promise<LocalCloudRelease> {
  const mirror = await buildMirror({ versions, outDir: dir, fromSource: true, ...(onEvent ? { onEvent } : {}) });
  const digests: Record<string, string> = Object.fromEntries(mirror.manifest.artifacts.map((a) => [a.path, a.sha256]));
  const built = new Map(mirror.built);
  for (const kubernetes of alsoKubernetes.filter((v) => v !== versions.kubernetes)) {
    const other = await buildMirror({ versions: { ...versions, kubernetes }, outDir: `${dir}-${kubernetes}`, fromSource: true, ...(onEvent ? { onEvent } : {}) });
    const tree = `release/${kubernetes}/`;
    await cp(path.join(other.dir, tree), path.join(dir, tree), { recursive: true });
    for (const a of other.manifest.artifacts) if (a.path.startsWith(tree)) digests[a.path] = a.sha256;
    await rm(other.dir, { recursive: true, force: true });
  }
  await buildAptRepo(dir);
  const kubectl = mirror.built.get('kubernetes')?.programs.get('kubectl');
  if (!kubectl) throw new Error('the Kubernetes build made no kubectl');
  return { dir, manifest: mirror.manifest, digests, kubectl, built };
}

/**
 * The test workload's image: Debian's static busybox (httpd, wget, nslookup) — an image no registry serves here.
 * (Its wget crashes with -T: time a request out with the timeout applet instead.)
 */
export const WORKLOAD_IMAGE_PATH = 'corekube-e2e/busybox:1.35';

/** Pushes the cluster's images and the workload image to the registry; returns the workload image's reference. */
export async function pushLocalCloudImages(release: LocalCloudRelease, registry: Registry): Promise<string> {
  const layout = path.join(release.dir, MIRROR_IMAGES_DIR);
  const workload = `${registry.host}/${WORKLOAD_IMAGE_PATH}`;
  await writeImageLayout(layout, [{
    ref: workload,
    files: [
      { path: '/bin/busybox', source: '/bin/busybox', mode: 0o755 },
      ...['sh', 'wget', 'nslookup', 'httpd', 'sleep', 'cat', 'echo', 'hostname', 'ip', 'nc', 'timeout'].map((a) => ({ path: `/bin/${a}`, symlink: 'busybox' })),
      { path: '/tmp', mode: 0o1777 },
      { path: '/www', mode: 0o755 },
    ],
    entrypoint: ['/bin/sh'],
    user: '65534:65534',
    created: '1970-01-01T00:00:00Z',
    createdBy: 'corekube local cloud: Debian\'s busybox-static, for the test workload',
  }]);
  await pushImages(layout, [...release.manifest.images.map((i) => i.ref), workload], registry.host, { insecure: true });
  return workload;
}
