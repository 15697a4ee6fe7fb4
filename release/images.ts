/**
 * Container images without a registry: an OCI image layout (https://github.com/opencontainers/image-spec,
 * image-layout.md) written by hand from files on disk — one gzip layer, a config, a manifest, and the layout's
 * index naming each image by its full reference (`org.opencontainers.image.ref.name`), which skopeo
 * (`oci:DIR:REF`) and `ctr images import` both read. Every digest is computed here, nothing is fetched.
 *
 * The images a cluster needs from registry.k8s.io — the pause container (the pod sandbox) and CoreDNS — are
 * made from the programs built from source, laid out as their upstream images are: one static binary at `/`,
 * an unprivileged user, CoreDNS's binary with the file capability to bind port 53 (as upstream's image sets it).
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGzip } from 'node:zlib';
import { CorekubeError } from '../core/errors.ts';
import { linkOrCopy, sha256File } from './package.ts';

const run = promisify(execFile);

export const OCI = Object.freeze({
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  refName: 'org.opencontainers.image.ref.name',
});

export interface ImageFile {
  /** absolute path inside the image */
  readonly path: string;
  /** a file on this machine, or a symlink target */
  readonly source?: string;
  readonly symlink?: string;
  readonly mode?: number;
  /** file capabilities, as `setcap` takes them (`cap_net_bind_service=+ep`) */
  readonly capabilities?: string;
}

export interface ImageDef {
  /** full reference: `registry.k8s.io/pause:3.10.2` */
  readonly ref: string;
  readonly files: readonly ImageFile[];
  readonly entrypoint: readonly string[];
  readonly cmd?: readonly string[];
  /** `uid:gid` */
  readonly user: string;
  readonly exposedPorts?: readonly string[];
  readonly created: string;
  /** one line for the image's history */
  readonly createdBy: string;
}

export interface BuiltImage {
  readonly ref: string;
  /** digest of the manifest (what a registry reports for the image) */
  readonly digest: string;
  readonly manifestSize: number;
}

/**
 * Writes `images` into the OCI layout at `dir` (created if absent; images already in it with other refs are
 * kept, one with the same ref is replaced). Returns each image's manifest digest.
 */
export async function writeImageLayout(dir: string, images: readonly ImageDef[]): Promise<BuiltImage[]> {
  const blobs = path.join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  await writeFile(path.join(dir, 'oci-layout'), `${JSON.stringify({ imageLayoutVersion: '1.0.0' })}\n`);
  const indexFile = path.join(dir, 'index.json');
  const index = existsSync(indexFile)
    ? (JSON.parse(await readFile(indexFile, 'utf8')) as { manifests: { annotations?: Record<string, string> }[] })
    : { manifests: [] };
  const out: BuiltImage[] = [];
  for (const image of images) {
    const layer = await writeLayer(image, blobs);
    const config = jsonBlob({
      architecture: 'amd64',
      os: 'linux',
      created: image.created,
      config: {
        User: image.user,
        Entrypoint: [...image.entrypoint],
        ...(image.cmd ? { Cmd: [...image.cmd] } : {}),
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
        WorkingDir: '/',
        ...(image.exposedPorts ? { ExposedPorts: Object.fromEntries(image.exposedPorts.map((p) => [p, {}])) } : {}),
      },
      rootfs: { type: 'layers', diff_ids: [layer.diffId] },
      history: [{ created: image.created, created_by: image.createdBy }],
    });
    await writeFile(path.join(blobs, config.hex), config.bytes);
    const manifest = jsonBlob({
      schemaVersion: 2,
      mediaType: OCI.manifest,
      config: { mediaType: OCI.config, digest: `sha256:${config.hex}`, size: config.bytes.length },
      layers: [{ mediaType: OCI.layer, digest: `sha256:${layer.hex}`, size: layer.size }],
    });
    await writeFile(path.join(blobs, manifest.hex), manifest.bytes);
    index.manifests = index.manifests.filter((m) => m.annotations?.[OCI.refName] !== image.ref);
    index.manifests.push({
      mediaType: OCI.manifest,
      digest: `sha256:${manifest.hex}`,
      size: manifest.bytes.length,
      annotations: { [OCI.refName]: image.ref },
      platform: { architecture: 'amd64', os: 'linux' },
    } as { annotations: Record<string, string> });
    out.push({ ref: image.ref, digest: `sha256:${manifest.hex}`, manifestSize: manifest.bytes.length });
  }
  await writeFile(`${indexFile}.tmp`, `${JSON.stringify({ schemaVersion: 2, mediaType: OCI.index, manifests: index.manifests }, null, 2)}\n`);
  await rename(`${indexFile}.tmp`, indexFile);
  return out;
}

/** Copies the blobs and index entries of `refs` from one layout into another (hard links where possible). */
export async function copyImages(fromDir: string, toDir: string, refs: readonly string[]): Promise<void> {
  const index = JSON.parse(await readFile(path.join(fromDir, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const wanted = index.manifests.filter((m) => refs.includes(m.annotations?.[OCI.refName] ?? ''));
  const missing = refs.filter((r) => !wanted.some((m) => m.annotations?.[OCI.refName] === r));
  if (missing.length > 0) throw new CorekubeError('E_INTERNAL', `${fromDir} holds no image ${missing.join(', ')}`);
  await mkdir(path.join(toDir, 'blobs', 'sha256'), { recursive: true });
  const blob = (dir: string, digest: string) => path.join(dir, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
  for (const m of wanted) {
    const manifest = JSON.parse(await readFile(blob(fromDir, m.digest), 'utf8')) as { config: { digest: string }; layers: { digest: string }[] };
    for (const d of [m.digest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) await linkOrCopy(blob(fromDir, d), blob(toDir, d));
  }
  await writeFile(path.join(toDir, 'oci-layout'), `${JSON.stringify({ imageLayoutVersion: '1.0.0' })}\n`);
  const indexFile = path.join(toDir, 'index.json');
  const target = existsSync(indexFile) ? (JSON.parse(await readFile(indexFile, 'utf8')) as { manifests: typeof index.manifests }) : { manifests: [] };
  target.manifests = [...target.manifests.filter((m) => !refs.includes(m.annotations?.[OCI.refName] ?? '')), ...wanted];
  await writeFile(indexFile, `${JSON.stringify({ schemaVersion: 2, mediaType: OCI.index, manifests: target.manifests }, null, 2)}\n`);
}

/**
 * Pushes images of a layout to a registry with skopeo, each to the same repository path as its reference
 * (`registry.k8s.io/coredns/coredns:v1.15.0` → `<registry>/coredns/coredns:v1.15.0`): what a registry
 * mirror of registry.k8s.io serves. `registry` is `host:port`; `insecure` allows plain HTTP.
 */
export async function pushImages(layoutDir: string, refs: readonly string[], registry: string, options: { insecure: boolean }): Promise<void> {
  for (const ref of refs) {
    const dest = `docker://${registry}/${repositoryPath(ref)}`;
    await run('skopeo', ['copy', '--quiet', ...(options.insecure ? ['--dest-tls-verify=false'] : []), `oci:${layoutDir}:${ref}`, dest], { maxBuffer: 1 << 20 }).catch((err: { stderr?: string; message: string }) => {
      throw new CorekubeError('E_IO', `pushing ${ref} to ${registry} failed: ${(err.stderr || err.message).trim().split('\n').slice(-3).join(' ')}`, {
        hint: 'check that the registry runs and accepts pushes (skopeo is Debian\'s package skopeo)',
      });
    });
  }
}

/** `registry.k8s.io/coredns/coredns:v1.15.0` → `coredns/coredns:v1.15.0` (the path under any registry). */
export function repositoryPath(ref: string): string {
  const [first, ...rest] = ref.split('/');
  return rest.length > 0 && /[.:]/.test(first!) ? rest.join('/') : ref;
}

interface LayerBlob {
  readonly hex: string;
  readonly size: number;
  /** `sha256:<hex>` of the uncompressed tar */
  readonly diffId: string;
}

async function writeLayer(image: ImageDef, blobs: string): Promise<LayerBlob> {
  const stage = await mkdtemp(path.join(os.tmpdir(), 'corekube-image-'));
  const members: string[] = [];
  try {
    for (const f of image.files) {
      const rel = f.path.replace(/^\/+/, '');
      const target = path.join(stage, rel);
      await mkdir(path.dirname(target), { recursive: true });
      if (f.symlink !== undefined) {
        await run('ln', ['-s', f.symlink, target]);
      } else if (f.source !== undefined) {
        await copyFile(f.source, target);
        await chmod(target, f.mode ?? 0o755);
        if (f.capabilities) await run('setcap', [f.capabilities, target]);
      } else {
        await mkdir(target, { recursive: true });
        // set explicitly: mkdir's mode passes through the umask (a 1777 /tmp would come out 1755)
        await chmod(target, f.mode ?? 0o755);
      }
      members.push(rel);
    }
    const created = Math.floor(Date.parse(image.created) / 1000);
    const tar = spawn('tar', [
      '--create', '--file=-', '--format=posix', '--xattrs', '--xattrs-include=security.capability', '--sort=name',
      '--owner=0', '--group=0', '--numeric-owner', `--mtime=@${created}`, '--pax-option=delete=atime,delete=ctime',
      '-C', stage, ...members,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    tar.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const exited = new Promise<number>((resolve) => tar.on('close', (code) => resolve(code ?? 1)));
    const diff = createHash('sha256');
    const gz = createHash('sha256');
    let size = 0;
    const tmp = path.join(blobs, `.layer-${process.pid}-${Date.now()}`);
    const tap = (h: ReturnType<typeof createHash>, count: boolean) =>
      new Transform({
        transform(chunk: Buffer, _enc, done) {
          h.update(chunk);
          if (count) size += chunk.length;
          done(null, chunk);
        },
      });
    await pipeline(tar.stdout, tap(diff, false), createGzip({ level: 9 }), tap(gz, true), createWriteStream(tmp));
    const code = await exited;
    if (code !== 0) throw new CorekubeError('E_IO', `tar of the layer of ${image.ref} failed (exit ${code}): ${stderr.trim()}`);
    const hex = gz.digest('hex');
    await rename(tmp, path.join(blobs, hex));
    return { hex, size, diffId: `sha256:${diff.digest('hex')}` };
  } finally {
    await rm(stage, { recursive: true, force: true });
  }
}

function jsonBlob(value: unknown): { bytes: Buffer; hex: string } {
  const bytes = Buffer.from(JSON.stringify(value));
  return { bytes, hex: createHash('sha256').update(bytes).digest('hex') };
}

/** Re-hashes every blob of a layout: true when each file's sha256 is its name. */
export async function layoutIntact(dir: string): Promise<boolean> {
  const index = JSON.parse(await readFile(path.join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  for (const m of index.manifests) {
    const hex = m.digest.replace(/^sha256:/, '');
    if ((await sha256File(path.join(dir, 'blobs', 'sha256', hex))) !== hex) return false;
  }
  return true;
}
