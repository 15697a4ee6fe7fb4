import { CorekubeError } from '../core/errors.ts';
import type { Role } from '../contracts/roles.ts';
import { installedMembers } from '../release/catalog.ts';
import { resolveRelease, verificationField, type Verification } from '../release/sources.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { LAYOUT } from './layout.ts';

/**
 * The release artifacts a machine downloads, resolved from the spec by release/sources.ts (upstream homes or a
 * corekube mirror; release/catalog.ts has the layouts), with the path each program is installed to.
 */
export interface ArchiveMember {
  /** path inside the archive (as listed by `tar -tzf`, a leading `./` optional) */
  readonly member: string;
  /** absolute path the member is installed to */
  readonly installPath: string;
}

export interface ReleaseArtifact {
  /** short stable name, also the name of its install stamp: `kube-apiserver`, `etcd`, `cni-plugins` */
  readonly name: string;
  readonly version: string;
  readonly url: string;
  /** how the download is checked: a pinned digest, a checksum file upstream publishes, or nothing to check */
  readonly verify: Verification;
  /** a single binary: its install path; an archive: the directory its members go to */
  readonly installPath: string;
  /** present for a tarball: the members to install (everything else in it is ignored) */
  readonly archive?: readonly ArchiveMember[];
}

/** The artifacts a machine of one role downloads, in catalog order. Pure; throws for a mirror without digests. */
export function artifactsFor(spec: ClusterSpec, role: Role): ReleaseArtifact[] {
  return resolveRelease(spec, role).map(({ artifact: a, url, verify }) => {
    const dir = (m: { installDir: 'bin' | 'cni' }) => (m.installDir === 'cni' ? LAYOUT.cniBinDir : LAYOUT.binDir);
    const members = installedMembers(a);
    if (a.kind === 'file') {
      return Object.freeze({ name: a.name, version: a.version, url, verify, installPath: `${dir(members[0]!)}/${members[0]!.program}` });
    }
    return Object.freeze({
      name: a.name, version: a.version, url, verify, installPath: dir(members[0]!),
      archive: Object.freeze(members.map((m) => Object.freeze({ member: m.member, installPath: `${dir(m)}/${m.program}` }))),
    });
  });
}

/**
 * The manifest the download script reads: one artifact a line, tab-separated —
 *   file <name> <url> <check> <installPath>
 *   tar  <name> <url> <check> <member>=<installPath> …
 * where <check> is `sha256:<hex>` (a pinned digest), the URL of a checksum file (a bare digest or a `sha256sum`
 * list naming the file), or `none` (upstream publishes no checksum: installed with a warning). Values come from
 * the validated spec and fixed paths; member paths contain no `=`.
 */
export function releaseManifest(artifacts: readonly ReleaseArtifact[]): string {
  const lines = ['# corekube release manifest: kind, name, url, check (sha256:<hex> | checksum url | none), install paths (tab-separated)'];
  for (const a of artifacts) {
    const check = verificationField(a.verify);
    const fields = a.archive
      ? ['tar', a.name, a.url, check, ...a.archive.map((m) => `${m.member}=${m.installPath}`)]
      : ['file', a.name, a.url, check, a.installPath];
    const bad = fields.find((f) => /\s/.test(f));
    if (bad !== undefined) {
      throw new CorekubeError('E_TEMPLATE', `release manifest field ${JSON.stringify(bad)} of ${a.name} contains whitespace`, {
        hint: 'releaseBaseUrl and versions must not contain spaces',
      });
    }
    lines.push(fields.join('\t'));
  }
  return `${lines.join('\n')}\n`;
}
