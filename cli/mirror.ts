import path from 'node:path';
import { CorekubeError } from '../core/errors.ts';
import type { MirrorEvent } from '../release/mirror.ts';
import { buildMirror } from '../release/mirror.ts';
import { MIRROR_MANIFEST } from '../release/mirror-manifest.ts';
import type { Command } from './command.ts';
import { parseSpecArgs, specUsage } from './spec-options.ts';

const usage = `Usage: corekube mirror build -o DIR [--from-source] [--push HOST:PORT [--insecure-registry]] [spec options]

Builds a release mirror for air-gapped clouds: every artifact the cluster's machines download, at the spec's
versions (--kubernetes-version, --etcd-version, … or -c cluster.yaml), laid out as corekube expects
(release/README.md), with a .sha256 next to each; the images the cluster pulls (pause, CoreDNS) as an OCI
image layout in DIR/images/oci; and DIR/${MIRROR_MANIFEST}, every artifact's digest and provenance.

Serve DIR with any web server, then give the cluster both:
  corekube heat generate --release-base-url https://mirror.example/corekube \\
    --release-digests DIR/${MIRROR_MANIFEST} --registry-mirror https://registry.example:5000 …
Machines check each download against the digest in ${MIRROR_MANIFEST} (it travels with their units).

  -o, --output DIR       where to write the mirror tree (required; created if absent)
  --from-source          build every program from its Go module at exactly the pinned version (needs Go 1.26,
                         gcc, libseccomp-dev and the Go module proxy; cached by version in $COREKUBE_CACHE,
                         default /var/cache/corekube). Without it, each artifact is downloaded from its upstream
                         home and checked against the checksum upstream publishes.
  --push HOST:PORT       also push the images to this registry, under their registry.k8s.io paths
  --insecure-registry    the registry of --push speaks plain HTTP

${specUsage()}`;

export const mirrorBuildCommand: Command = {
  path: ['mirror', 'build'],
  summary: 'build a release mirror (binaries, images, digests) for air-gapped clouds, from upstream or from source',
  usage,
  async run(argv) {
    const { spec, values } = parseSpecArgs(
      argv,
      {
        output: { type: 'string', short: 'o' },
        'from-source': { type: 'boolean' },
        push: { type: 'string' },
        'insecure-registry': { type: 'boolean' },
      },
      usage,
    );
    if (values.output === undefined) throw new CorekubeError('E_USAGE', '-o DIR is required', { hint: 'for example corekube mirror build --from-source -o ./mirror' });
    if (values.push !== undefined && !/^[a-z0-9.-]+(:\d{1,5})?$/i.test(values.push)) {
      throw new CorekubeError('E_USAGE', `--push ${JSON.stringify(values.push)} is not a registry HOST[:PORT]`, { hint: 'for example --push registry.example:5000' });
    }
    const started = Date.now();
    const say = (line: string) => process.stderr.write(`${line}\n`);
    const onEvent = progressPrinter(say);
    const result = await buildMirror({
      versions: spec.versions,
      outDir: path.resolve(values.output),
      fromSource: values['from-source'] === true,
      ...(values.push ? { push: { registry: values.push, insecure: values['insecure-registry'] === true } } : {}),
      onEvent,
    });
    const m = result.manifest;
    const lines = [
      `mirror ${result.dir} (${m.source === 'source' ? 'built from source' : 'upstream downloads'}) in ${((Date.now() - started) / 1000).toFixed(1)} s:`,
      ...m.artifacts.map((a) => `  ${a.path}  ${(a.size / 1e6).toFixed(1)} MB  sha256:${a.sha256.slice(0, 16)}…  ${a.provenance}`),
      ...m.images.map((i) => `  ${path.join('images/oci', '')}  ${i.ref}  ${i.digest}`),
      `  ${MIRROR_MANIFEST}: ${m.artifacts.length} artifacts, ${m.images.length} images, ${(result.bytes / 1e6).toFixed(0)} MB`,
    ];
    if (result.built.size > 0) {
      const builds = [...result.built.values()];
      lines.push(
        'builds (cache, $COREKUBE_CACHE/release/build):',
        ...builds.map((b) => `  ${b.project} ${b.version}: ${b.cached ? 'cached' : 'built'}, ${b.seconds} s when built, ${(b.bytes / 1e6).toFixed(0)} MB`),
        `  total: ${builds.reduce((n, b) => n + b.seconds, 0).toFixed(0)} s of builds, ${(builds.reduce((n, b) => n + b.bytes, 0) / 1e6).toFixed(0)} MB of programs`,
      );
    }
    if (m.notes.length > 0) lines.push('notes:', ...m.notes.map((n) => `  - ${n}`));
    process.stdout.write(`${lines.join('\n')}\n`);
    return 0;
  },
};

/** One line a person follows for each long step (stderr): builds with their place in the queue, artifacts, images. */
export function progressPrinter(say: (line: string) => void): (e: MirrorEvent) => void {
  return (e) => {
    switch (e.kind) {
      case 'start':
        say(`[${e.index}/${e.total}] building ${e.project} ${e.version} from source: ${e.programs.length > 6 ? `${e.programs.length} programs` : e.programs.join(', ')}`);
        break;
      case 'step':
        say(`      ${e.project}: ${e.message}`);
        break;
      case 'done':
        say(`      ${e.built.project} ${e.built.version}: ${e.built.cached ? 'already built (cache)' : `built in ${e.built.seconds} s`}`);
        break;
      case 'artifact':
        say(`      ${e.artifact.path}`);
        break;
      case 'image':
        say(`      image ${e.image.ref}${e.pushedTo ? ` pushed to ${e.pushedTo}` : ` ${e.image.digest}`}`);
        break;
      case 'note':
        say(`      note: ${e.message}`);
        break;
    }
  };
}
