/**
 * Packs built programs into their upstream release assets' shape (catalog.ts): a single executable, or a gzip
 * tarball with upstream's member paths. Deterministic — sorted names, owner root, the module's time as every
 * mtime, gzip without a timestamp — so the same build always packs to the same digest. Packed files are kept
 * beside the build (`<build dir>/artifacts/<file>`), so a second mirror costs a hard link, not a gzip.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { copyFile, chmod, link, mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { CorekubeError } from '../core/errors.ts';
import type { Artifact } from './catalog.ts';
import type { BuiltProject } from './build.ts';

/** The packed artifact file of a built project (packed now if it is not yet). */
export async function packedArtifact(artifact: Artifact, built: BuiltProject, mtime: Date): Promise<string> {
  const dest = path.join(built.dir, 'artifacts', artifact.fileName);
  if (existsSync(dest)) return dest;
  await mkdir(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}`;
  const programOf = (program: string) => {
    const p = built.programs.get(program);
    if (!p) throw new CorekubeError('E_INTERNAL', `${artifact.name} needs ${program}, which the ${built.project} build did not make`);
    return p;
  };
  if (artifact.kind === 'file') {
    await copyFile(programOf(artifact.members[0]!.program), tmp);
    await chmod(tmp, 0o755);
  } else {
    await packTar(artifact.members.map((m) => ({ member: m.member, file: programOf(m.program) })), tmp, mtime);
  }
  await rename(tmp, dest);
  return dest;
}

/** A gzip tarball of `files`, each at its member path (mode 0755, owner 0), deterministic. */
export async function packTar(files: readonly { member: string; file: string }[], dest: string, mtime: Date): Promise<void> {
  const stage = await mkdtemp(path.join(os.tmpdir(), 'corekube-pack-'));
  try {
    for (const f of files) {
      const target = path.join(stage, f.member);
      await mkdir(path.dirname(target), { recursive: true });
      await linkOrCopy(f.file, target);
      await chmod(target, 0o755);
    }
    const tar = spawn('tar', [
      '--create', '--file=-', '--format=gnu', '--sort=name', '--owner=0', '--group=0', '--numeric-owner',
      `--mtime=@${Math.floor(mtime.getTime() / 1000)}`, '-C', stage, ...files.map((f) => f.member),
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    tar.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number>((resolve) => tar.on('close', (code) => resolve(code ?? 1)));
    await pipeline(tar.stdout, createGzip({ level: 6 }), createWriteStream(dest));
    const code = await exited;
    if (code !== 0) throw new CorekubeError('E_IO', `tar of ${dest} failed (exit ${code}): ${stderr.trim()}`);
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

/** Hard-links `src` to `dest` (same filesystem), else copies it. */
export async function linkOrCopy(src: string, dest: string): Promise<void> {
  await rm(dest, { force: true });
  try {
    await link(src, dest);
  } catch {
    await copyFile(src, dest);
  }
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(file), h);
  return h.digest('hex');
}

export async function fileSize(file: string): Promise<number> {
  return (await stat(file)).size;
}
