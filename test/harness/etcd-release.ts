import { copyFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { ensureBuilt } from '../../release/build.ts';
import { releaseCatalog } from '../../release/catalog.ts';
import { packedArtifact, sha256File } from '../../release/package.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';

/**
 * A release mirror holding only etcd — what a discovery machine downloads: the release tarball of the spec's
 * etcd, built from its Go module (release/build.ts, cached by version), at its mirror path under `tree`, and its
 * digest as a mirror's manifest pins it (pass `digests` as the spec's `release-digests`).
 */
export async function etcdReleaseMirror(tree: string, versions: ClusterSpec['versions']): Promise<{ readonly mirrorPath: string; readonly digests: Readonly<Record<string, string>> }> {
  const etcd = releaseCatalog(versions).find((a) => a.project === 'etcd')!;
  const built = (await ensureBuilt(versions, { projects: ['etcd'] })).get('etcd')!;
  const tarball = path.join(tree, etcd.mirrorPath);
  await mkdir(path.dirname(tarball), { recursive: true });
  copyFileSync(await packedArtifact(etcd, built, new Date(0)), tarball);
  return { mirrorPath: etcd.mirrorPath, digests: { [etcd.mirrorPath]: await sha256File(tarball) } };
}
