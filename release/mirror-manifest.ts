/**
 * `corekube-mirror.json`: what `corekube mirror build` put into a mirror — every artifact's path and sha256, how
 * it was obtained and checked, and the images of its OCI layout. Users pass it to the cluster spec
 * (`--release-digests DIR/corekube-mirror.json`): the digests then travel with the rendered units, and machines
 * check each download against them, never against a checksum fetched from the mirror itself.
 */
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';

export const MIRROR_MANIFEST = 'corekube-mirror.json';
export const MIRROR_IMAGES_DIR = 'images/oci';

export interface MirrorArtifact {
  readonly name: string;
  readonly project: string;
  readonly version: string;
  /** mirror path (relative), the key machines look a digest up by */
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
  /** the upstream URL it corresponds to (undefined: upstream publishes none, e.g. the pause program) */
  readonly upstream: string | undefined;
  /** how it was obtained and checked, for a person: `built from source (…)`, `upstream sha256 from …`, `unverified: …` */
  readonly provenance: string;
}

export interface MirrorImage {
  readonly ref: string;
  readonly digest: string;
}

export interface MirrorManifest {
  readonly schema: 1;
  readonly source: 'source' | 'upstream';
  readonly createdAt: string;
  readonly versions: ClusterSpec['versions'];
  readonly artifacts: readonly MirrorArtifact[];
  /** images in `images/oci` (an OCI image layout) */
  readonly images: readonly MirrorImage[];
  /** where the tree departs from upstream's releases, one sentence each */
  readonly notes: readonly string[];
}

export function serializeMirrorManifest(m: MirrorManifest): string {
  return `${JSON.stringify(m, null, 2)}\n`;
}
