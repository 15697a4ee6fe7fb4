/**
 * Stand-in executables and the release mirror built from them. Kubernetes, etcd, flannel and containerd
 * cannot be downloaded or run here, so tests serve these small bash scripts (each says STAND-IN in its
 * second line) under the exact mirror layout `corekube-download` fetches from (units/release.ts). A
 * stand-in checks the flags its unit passes (exit 2 naming the flag), counts its starts in
 * `/var/lib/corekube-standin/<name>.starts` ($COREKUBE_STANDIN_DIR) and stays up until SIGTERM.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Role } from '../../overlord/machine-record.ts';
import type { ClusterSpec } from '../../spec/cluster-spec.ts';
import { releaseArtifacts, type ReleaseArtifact } from '../../units/release.ts';

const run = promisify(execFile);

export const STANDIN_DIR = path.dirname(fileURLToPath(import.meta.url));

/** Binaries with their own flag-checking stand-in; every other release binary gets the generic one. */
export const STANDINS = [
  'kube-apiserver',
  'kube-controller-manager',
  'kube-scheduler',
  'kubelet',
  'kube-proxy',
  'etcd',
  'flanneld',
  'containerd',
] as const;

/** Where stand-ins count their starts on a machine (override with COREKUBE_STANDIN_DIR). */
export const STANDIN_STATE_DIR = '/var/lib/corekube-standin';

const LIB_LINE = /^.*# standin-lib\n/m;

/**
 * The self-contained script installed as `binary`: its stand-in with lib.bash inlined, or the generic
 * stand-in (prints what it is, exits 0) named after `binary`.
 */
export function standinExecutable(binary: string): string {
  if ((STANDINS as readonly string[]).includes(binary)) {
    const script = readFileSync(path.join(STANDIN_DIR, binary), 'utf8');
    const lib = readFileSync(path.join(STANDIN_DIR, 'lib.bash'), 'utf8');
    if (!LIB_LINE.test(script)) throw new Error(`stand-in ${binary} does not source lib.bash`);
    return script.replace(LIB_LINE, () => `# ---- inlined from localcloud/standins/lib.bash ----\n${lib}# ---- end of lib.bash ----\n`);
  }
  return readFileSync(path.join(STANDIN_DIR, 'generic'), 'utf8').replace('program it is installed as', binary);
}

export interface MirrorFile {
  /** path relative to the mirror root = to spec.releaseBaseUrl */
  readonly mirrorPath: string;
  readonly sha256: string;
}

export interface ReleaseMirror {
  readonly dir: string;
  readonly files: readonly MirrorFile[];
  readonly artifacts: readonly ReleaseArtifact[];
}

/**
 * Builds, under `dir`, the tree a mirror at spec.releaseBaseUrl must serve for `roles` (default: both):
 * each binary, each tarball (members at the paths the manifest names, built with `tar`), and a `.sha256`
 * next to each — Kubernetes' holding only the digest as dl.k8s.io does, the others `<digest>  <file>` as
 * `sha256sum` writes it, so the download script is exercised with both forms. Serve `dir` over HTTP.
 */
export async function buildReleaseMirror(spec: ClusterSpec, dir: string, roles: readonly Role[] = ['master', 'minion']): Promise<ReleaseMirror> {
  const artifacts = releaseArtifacts(spec).filter((a) => a.roles.some((r) => roles.includes(r)));
  const files: MirrorFile[] = [];
  for (const a of artifacts) {
    const target = path.join(dir, a.mirrorPath);
    await mkdir(path.dirname(target), { recursive: true });
    if (a.archive) {
      const stage = await mkdtemp(path.join(os.tmpdir(), 'corekube-mirror-'));
      try {
        for (const m of a.archive) {
          const file = path.join(stage, m.member);
          await mkdir(path.dirname(file), { recursive: true });
          await writeFile(file, standinExecutable(path.basename(m.installPath)), { mode: 0o755 });
        }
        await run('tar', ['-czf', target, '-C', stage, '--owner=0', '--group=0', ...a.archive.map((m) => m.member)]);
      } finally {
        await rm(stage, { recursive: true, force: true });
      }
    } else {
      await writeFile(target, standinExecutable(path.basename(a.installPath)), { mode: 0o755 });
    }
    const sha256 = createHash('sha256').update(await readFile(target)).digest('hex');
    const kubernetes = a.mirrorPath.startsWith('release/');
    await writeFile(`${target}.sha256`, kubernetes ? sha256 : `${sha256}  ${path.basename(target)}\n`);
    files.push({ mirrorPath: a.mirrorPath, sha256 });
  }
  return { dir, files, artifacts };
}

/**
 * Installs the stand-ins directly at their install paths under `root` (what corekube-download would
 * leave there), for checks that need the binaries present without a download, e.g. `systemd-analyze
 * verify --root`.
 */
export async function installStandins(spec: ClusterSpec, root: string, roles: readonly Role[] = ['master', 'minion']): Promise<void> {
  for (const a of releaseArtifacts(spec).filter((x) => x.roles.some((r) => roles.includes(r)))) {
    for (const installPath of a.archive ? a.archive.map((m) => m.installPath) : [a.installPath]) {
      const file = path.join(root, installPath);
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, standinExecutable(path.basename(installPath)));
      await chmod(file, 0o755);
    }
  }
}
