/**
 * `corekube mirror build`: a directory any web server can serve as a corekube release mirror (catalog.ts's
 * layout), with every artifact at the spec's versions, a `.sha256` next to each, the images the cluster pulls
 * (an OCI image layout under images/oci, optionally pushed to a registry) and `corekube-mirror.json`
 * (mirror-manifest.ts). Artifacts come from their upstream downloads, checked against upstream's checksums, or
 * (`fromSource`) are built from their Go modules at exactly those versions (build.ts), cached by version.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { CorekubeError } from '../core/errors.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { cacheRoot, ensureBuilt, type BuildEvent, type BuiltProject } from './build.ts';
import { clusterImages, releaseCatalog, type Artifact, type Project } from './catalog.ts';
import { downloadArtifact } from './download.ts';
import { copyImages, pushImages, repositoryPath, writeImageLayout, type ImageDef } from './images.ts';
import { MIRROR_IMAGES_DIR, MIRROR_MANIFEST, serializeMirrorManifest, type MirrorArtifact, type MirrorImage, type MirrorManifest } from './mirror-manifest.ts';
import { fileSize, linkOrCopy, packedArtifact, sha256File } from './package.ts';
import { builtFrom, recipes } from './recipes.ts';

const run = promisify(execFile);

export type MirrorEvent =
  | BuildEvent
  | { readonly kind: 'artifact'; readonly artifact: MirrorArtifact }
  | { readonly kind: 'image'; readonly image: MirrorImage; readonly pushedTo?: string }
  | { readonly kind: 'note'; readonly message: string };

export interface MirrorBuildOptions {
  readonly versions: ClusterSpec['versions'];
  readonly outDir: string;
  readonly fromSource: boolean;
  /** push the images to this registry (`host:port`), plain HTTP allowed when `insecure` */
  readonly push?: { readonly registry: string; readonly insecure: boolean };
  readonly onEvent?: (event: MirrorEvent) => void;
  /** download mode: maps each upstream URL before fetching (tests, proxies) */
  readonly rewrite?: (url: string) => string;
  /** download mode: where the images are copied from (default registry.k8s.io itself; tests give their own) */
  readonly imagesFrom?: { readonly registry: string; readonly insecure: boolean };
  readonly env?: NodeJS.ProcessEnv;
}

export interface MirrorResult {
  readonly dir: string;
  readonly manifest: MirrorManifest;
  /** the projects built from source (fromSource only) */
  readonly built: ReadonlyMap<Project, BuiltProject>;
  readonly bytes: number;
}

/**
 * Builds the whole tree under `outDir`: in a sibling directory first, which replaces `outDir` only once complete,
 * so a failure (a refused download, a failed build) leaves `outDir` as it was and nothing half written.
 */
export async function buildMirror(options: MirrorBuildOptions): Promise<MirrorResult> {
  const finalDir = path.resolve(options.outDir);
  const dir = `${finalDir}.building-${process.pid}`;
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  try {
    const result = await buildMirrorIn(dir, options);
    await rm(finalDir, { recursive: true, force: true });
    await rename(dir, finalDir);
    return { ...result, dir: finalDir };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

async function buildMirrorIn(dir: string, options: MirrorBuildOptions): Promise<MirrorResult> {
  const emit = options.onEvent ?? (() => undefined);
  const catalog = releaseCatalog(options.versions);
  const artifacts: MirrorArtifact[] = [];
  const images: MirrorImage[] = [];
  const notes: string[] = [];
  const note = (message: string) => {
    notes.push(message);
    emit({ kind: 'note', message });
  };
  let built = new Map<Project, BuiltProject>();
  const refs = clusterImages(options.versions);
  const layout = path.join(dir, MIRROR_IMAGES_DIR);

  if (options.fromSource) {
    built = await ensureBuilt(options.versions, { onEvent: emit, ...(options.env ? { env: options.env } : {}) });
    for (const r of recipes(options.versions, '')) {
      for (const n of r.notes) note(n);
      if (r.kind === 'go') for (const a of r.assembled) note(a.why);
    }
    const modules = sourceModules(options.versions);
    for (const a of catalog) {
      const b = built.get(a.project)!;
      const packed = await packedArtifact(a, b, new Date(0));
      const entry = await place(a, packed, dir, `built from source (${builtFrom(modules.get(a.project)!, a.version)}) by corekube`, await cachedDigest(packed));
      artifacts.push(entry);
      emit({ kind: 'artifact', artifact: entry });
    }
    const cached = await cachedClusterImages(options.versions, built, options.env);
    await rm(layout, { recursive: true, force: true });
    await copyImages(cached.dir, layout, [refs.pause, refs.coredns]);
    images.push(...cached.images);
  } else {
    for (const a of catalog) {
      if (!a.upstream) {
        note(`${a.name} ${a.version}: upstream publishes no such file (its image comes from ${refs.pause}); only --from-source builds it`);
        continue;
      }
      const target = path.join(dir, a.mirrorPath);
      const got = await downloadArtifact(a, target, { ...(options.rewrite ? { rewrite: options.rewrite } : {}) });
      if (!got.verified) note(`${a.name} ${a.version}: ${got.provenance}`);
      const entry = await place(a, target, dir, got.provenance, got.sha256);
      artifacts.push(entry);
      emit({ kind: 'artifact', artifact: entry });
    }
    await rm(layout, { recursive: true, force: true });
    await mkdir(layout, { recursive: true });
    for (const ref of [refs.pause, refs.coredns]) {
      const from = options.imagesFrom ? `${options.imagesFrom.registry}/${repositoryPath(ref)}` : ref;
      const tls = options.imagesFrom?.insecure ? ['--src-tls-verify=false'] : [];
      await run('skopeo', ['copy', '--quiet', ...tls, `docker://${from}`, `oci:${layout}:${ref}`], { maxBuffer: 1 << 20 }).catch((err: { stderr?: string; message: string }) => {
        throw new CorekubeError('E_IO', `copying ${ref} from its registry failed: ${(err.stderr || err.message).trim().split('\n').slice(-2).join(' ')}`, {
          hint: 'this machine must reach registry.k8s.io (and have Debian\'s skopeo); without it, use --from-source',
        });
      });
    }
    const index = JSON.parse(await readFile(path.join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    for (const m of index.manifests) images.push({ ref: m.annotations?.['org.opencontainers.image.ref.name'] ?? '', digest: m.digest });
  }
  for (const image of images) emit({ kind: 'image', image });

  if (options.push) {
    await pushImages(layout, images.map((i) => i.ref), options.push.registry, { insecure: options.push.insecure });
    for (const image of images) emit({ kind: 'image', image, pushedTo: options.push.registry });
  }

  const manifest: MirrorManifest = {
    schema: 1,
    source: options.fromSource ? 'source' : 'upstream',
    createdAt: new Date().toISOString(),
    versions: options.versions,
    artifacts,
    images,
    notes,
  };
  await writeFile(path.join(dir, `${MIRROR_MANIFEST}.tmp`), serializeMirrorManifest(manifest));
  await rename(path.join(dir, `${MIRROR_MANIFEST}.tmp`), path.join(dir, MIRROR_MANIFEST));
  return { dir, manifest, built, bytes: artifacts.reduce((n, a) => n + a.size, 0) };
}

/** Links (or copies) a file into the tree at its mirror path, with its `.sha256`, and describes it. */
async function place(a: Artifact, file: string, dir: string, provenance: string, sha256: string): Promise<MirrorArtifact> {
  const target = path.join(dir, a.mirrorPath);
  await mkdir(path.dirname(target), { recursive: true });
  if (path.resolve(file) !== path.resolve(target)) await linkOrCopy(file, target);
  await writeFile(`${target}.sha256`, `${sha256}  ${a.fileName}\n`);
  return Object.freeze({ name: a.name, project: a.project, version: a.version, path: a.mirrorPath, sha256, size: await fileSize(target), upstream: a.upstream?.url, provenance });
}

/** A cached build's file's sha256, remembered beside it (`<file>.sha256-cache`): cache files never change. */
async function cachedDigest(file: string): Promise<string> {
  const memo = `${file}.sha256-cache`;
  const size = await fileSize(file);
  const known = await readFile(memo, 'utf8').catch(() => '');
  const [hex, bytes] = known.trim().split(' ');
  if (hex && /^[0-9a-f]{64}$/.test(hex) && Number(bytes) === size) return hex;
  const digest = await sha256File(file);
  await writeFile(memo, `${digest} ${size}\n`).catch(() => undefined);
  return digest;
}

/** The module (and, for C, the directory of the source) each project is built from, by project. */
function sourceModules(versions: ClusterSpec['versions']): Map<Project, string> {
  return new Map(recipes(versions, '').map((r) => [r.project, r.kind === 'go' ? r.module : `${r.module}/${path.dirname(r.source)}`]));
}

/**
 * The cluster's images (pause, CoreDNS) made from the built programs, kept in the cache by the builds they come
 * from: `$COREKUBE_CACHE/release/images/<key>/` (an OCI layout).
 */
export async function cachedClusterImages(versions: ClusterSpec['versions'], built: ReadonlyMap<Project, BuiltProject>, env?: NodeJS.ProcessEnv): Promise<{ dir: string; images: MirrorImage[] }> {
  const pause = built.get('pause');
  const coredns = built.get('coredns');
  if (!pause || !coredns) throw new CorekubeError('E_INTERNAL', 'the pause and CoreDNS programs must be built before their images');
  const refs = clusterImages(versions);
  const key = createHash('sha256').update(JSON.stringify({ refs, pause: pause.dir, coredns: coredns.dir, revision: 1 })).digest('hex').slice(0, 12);
  const dir = path.join(cacheRoot(env), 'release', 'images', key);
  const done = path.join(dir, 'images.json');
  if (existsSync(done)) return { dir, images: JSON.parse(await readFile(done, 'utf8')) as MirrorImage[] };
  await rm(dir, { recursive: true, force: true });
  const created = '1970-01-01T00:00:00Z';
  const defs: ImageDef[] = [
    {
      ref: refs.pause,
      files: [{ path: '/pause', source: pause.programs.get('pause')!, mode: 0o755 }],
      entrypoint: ['/pause'],
      user: '65535:65535',
      created,
      createdBy: `corekube: the pause program of ${builtFrom('k8s.io/kubernetes', versions.kubernetes)}`,
    },
    {
      ref: refs.coredns,
      files: [{ path: '/coredns', source: coredns.programs.get('coredns')!, mode: 0o755, capabilities: 'cap_net_bind_service=+ep' }],
      entrypoint: ['/coredns'],
      user: '65532:65532',
      exposedPorts: ['53/tcp', '53/udp'],
      created,
      createdBy: `corekube: coredns built from ${builtFrom('github.com/coredns/coredns', versions.coredns)}`,
    },
  ];
  const made = await writeImageLayout(dir, defs);
  const images = made.map((m) => ({ ref: m.ref, digest: m.digest }));
  await writeFile(done, `${JSON.stringify(images, null, 2)}\n`);
  return { dir, images };
}
