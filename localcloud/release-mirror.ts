/**
 * The local cloud's release mirror tree (served by mirror.ts on the bridge): everything its machines
 * download.
 * - Kubernetes, flannel, containerd, runc and the CNI plugins: stand-in executables (standins/), each saying
 *   STAND-IN in its second line, under units/release.ts's layout;
 * - etcd: the REAL etcd — the host's Debian etcd-server binaries (`/usr/bin/etcd`, `/usr/bin/etcdctl`) packed
 *   as the upstream release tarball of their own version, so discovery and the masters run real etcd. Only
 *   `etcdutl`, which that release does not have, is a stand-in. The cluster spec must name that version
 *   (hostEtcdVersion());
 * - apt/: the repository with the Docker stand-in package (apt-repo.ts).
 */
import { execFile, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CorekubeError } from '../core/errors.ts';
import type { ClusterSpec } from '../spec/cluster-spec.ts';
import { releaseArtifacts } from '../units/release.ts';
import { buildAptRepo } from './apt-repo.ts';
import { buildReleaseMirror, standinExecutable } from './standins/index.ts';

const run = promisify(execFile);
const HOST_ETCD = '/usr/bin/etcd';
const HOST_ETCDCTL = '/usr/bin/etcdctl';

/** The tag of the host's etcd (`v3.4.23`), or undefined when there is none. */
export function hostEtcdVersion(): string | undefined {
  const r = spawnSync(HOST_ETCD, ['--version'], { encoding: 'utf8' });
  const m = /etcd Version: (\d+\.\d+\.\d+)/.exec(r.stdout ?? '');
  return m ? `v${m[1]}` : undefined;
}

/** Why the mirror cannot be built here, or undefined. */
export function releaseMirrorMissing(): string | undefined {
  if (hostEtcdVersion() === undefined) return `${HOST_ETCD} does not run (Debian package etcd-server)`;
  if (spawnSync(HOST_ETCDCTL, ['version'], { stdio: 'ignore' }).error) return `${HOST_ETCDCTL} is missing (Debian package etcd-client)`;
  if (spawnSync('dpkg-deb', ['--version'], { stdio: 'ignore' }).error) return 'dpkg-deb is missing (Debian package dpkg)';
  if (spawnSync('tar', ['--version'], { stdio: 'ignore' }).error) return 'tar is missing';
  return undefined;
}

export interface LocalCloudMirror {
  readonly dir: string;
  /** the etcd version the tree holds for real */
  readonly etcdVersion: string;
}

/** Builds the whole tree under `dir` for `spec` (whose versions.etcd must be the host etcd's). */
export async function buildLocalCloudMirror(spec: ClusterSpec, dir: string): Promise<LocalCloudMirror> {
  const etcdVersion = hostEtcdVersion();
  if (etcdVersion === undefined) throw new CorekubeError('E_IO', `${HOST_ETCD} does not run`, { hint: 'install Debian\'s etcd-server (scripts/setup)' });
  if (spec.versions.etcd !== etcdVersion) throw new CorekubeError('E_USAGE', `the spec names etcd ${spec.versions.etcd}, but the real etcd here is ${etcdVersion}`, { hint: `give the local cloud's spec --etcd-version ${etcdVersion}` });
  await buildReleaseMirror(spec, dir);
  const etcd = releaseArtifacts(spec).find((a) => a.name === 'etcd');
  if (!etcd?.archive) throw new CorekubeError('E_INTERNAL', 'units/release.ts lists no etcd tarball');
  const stage = await mkdtemp(path.join(os.tmpdir(), 'corekube-etcd-'));
  try {
    for (const m of etcd.archive) {
      const file = path.join(stage, m.member);
      await mkdir(path.dirname(file), { recursive: true });
      const name = path.basename(m.installPath);
      if (name === 'etcd') await copyFile(HOST_ETCD, file);
      else if (name === 'etcdctl') await copyFile(HOST_ETCDCTL, file);
      else await writeFile(file, standinExecutable(name)); // etcdutl: not in this etcd release
      await chmod(file, 0o755);
    }
    const target = path.join(dir, etcd.mirrorPath);
    await run('tar', ['-czf', target, '-C', stage, '--owner=0', '--group=0', ...etcd.archive.map((m) => m.member)]);
    const digest = createHash('sha256').update(await readFile(target)).digest('hex');
    await writeFile(`${target}.sha256`, `${digest}  ${path.basename(target)}\n`);
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
  await buildAptRepo(dir);
  return { dir, etcdVersion };
}
