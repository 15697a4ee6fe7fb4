/**
 * Where each machine gets each artifact, and how it checks it — from the spec alone (pure):
 * - upstream (no `releaseBaseUrl`, the default): the project's own release URL, checked against the checksum
 *   the project publishes next to it, unless `releaseDigests` pins a digest for it (flannel publishes none);
 * - a corekube mirror (`releaseBaseUrl`): `<base>/<mirror path>`, checked against the digest of the mirror's
 *   manifest (`releaseDigests`), which travels with the rendered units and is never fetched from the mirror.
 *   A mirror without a digest for every artifact is refused, naming each one missing.
 */
import { InvalidInputError, type FieldProblem } from '../core/errors.ts';
import { usesUpstreamReleases, type ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { Role } from '../contracts/roles.ts';
import { releaseCatalog, type Artifact, type Consumer, type UpstreamChecksum } from './catalog.ts';

/** How a machine checks a download: a digest pinned in the spec, or what upstream publishes (catalog.ts). */
export type Verification = { readonly kind: 'pinned'; readonly sha256: string } | UpstreamChecksum;

export interface ResolvedArtifact {
  readonly artifact: Artifact;
  readonly url: string;
  readonly verify: Verification;
}

type SpecRelease = Pick<ClusterSpec, 'versions' | 'releaseBaseUrl' | 'releaseDigests' | 'apiLoadBalancer'>;

/** A kind of machine that downloads artifacts. */
export type Machine = 'discovery' | Role;

/**
 * What a machine installs for: its role, and on a minion the node-local API proxy when the spec asks for one
 * (apiLoadBalancer `node-local`). Pure.
 */
export function consumersOf(spec: Pick<ClusterSpec, 'apiLoadBalancer'>, machine: Machine): readonly Exclude<Consumer, 'image'>[] {
  return machine === 'minion' && spec.apiLoadBalancer === 'node-local' ? ['minion', 'api-proxy'] : [machine];
}

/**
 * The artifacts machines download (every consumer but `image`, or only what `machine` installs, consumersOf),
 * resolved, in catalog order. Throws InvalidInputError naming every artifact a mirror has no digest for.
 */
export function resolveRelease(spec: SpecRelease, machine?: Machine): ResolvedArtifact[] {
  const consumers: readonly Consumer[] = machine ? consumersOf(spec, machine) : ['discovery', 'master', 'minion', 'api-proxy'];
  const wanted = releaseCatalog(spec.versions).filter((a) => a.consumers.some((c) => consumers.includes(c)));
  const upstream = usesUpstreamReleases(spec);
  const problems: FieldProblem[] = [];
  const out: ResolvedArtifact[] = [];
  for (const a of wanted) {
    const pinned = spec.releaseDigests[a.mirrorPath];
    if (upstream) {
      if (!a.upstream) throw new Error(`${a.name} has no upstream download and no machine should install it`);
      const verify: Verification = pinned ? { kind: 'pinned', sha256: pinned } : a.upstream.checksum;
      out.push(Object.freeze({ artifact: a, url: a.upstream.url, verify }));
      continue;
    }
    if (!pinned) {
      problems.push({
        field: 'releaseDigests',
        value: a.mirrorPath,
        message: `has no digest for ${a.name} ${a.version}, which machines download from the mirror ${spec.releaseBaseUrl}`,
        fix: 'pass the corekube-mirror.json of a mirror built for these versions (corekube mirror build -o DIR, then --release-digests DIR/corekube-mirror.json)',
      });
      continue;
    }
    const resolved: ResolvedArtifact = { artifact: a, url: `${spec.releaseBaseUrl}/${a.mirrorPath}`, verify: { kind: 'pinned', sha256: pinned } };
    out.push(Object.freeze(resolved));
  }
  if (problems.length > 0) throw new InvalidInputError('the release mirror cannot be used', problems);
  return out;
}

/** How the machine's download script reads a verification: `sha256:<hex>`, a checksum URL, or `none`. */
export function verificationField(v: Verification): string {
  switch (v.kind) {
    case 'pinned':
      return `sha256:${v.sha256}`;
    case 'digest-file':
    case 'sums-file':
      return v.url;
    case 'none':
      return 'none';
  }
}
