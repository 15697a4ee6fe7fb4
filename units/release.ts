import { CorekubeError } from '../core/errors.ts';
import type { Role } from '../overlord/machine-record.ts';
import type { ClusterSpec } from '../spec/cluster-spec.ts';
import { LAYOUT } from './layout.ts';

/**
 * The release artifacts a machine downloads, and where they sit under `spec.releaseBaseUrl`. Every artifact
 * has a `<file>.sha256` next to it (the hex digest, optionally followed by the file name as `sha256sum`
 * writes it); the download script refuses a file whose digest differs.
 *
 * Mirror layout (a mirror MUST provide exactly these paths; dl.k8s.io provides only the first):
 *   release/<k8s>/bin/linux/amd64/<binary>                                     kube-apiserver, kubelet, …
 *   etcd/<v>/etcd-<v>-linux-amd64.tar.gz                                       github.com/etcd-io/etcd releases
 *   flannel/<v>/flannel-<v>-linux-amd64.tar.gz                                 github.com/flannel-io/flannel releases
 *   flannel-cni-plugin/<v>/cni-plugin-flannel-linux-amd64-<v>.tgz              github.com/flannel-io/cni-plugin releases
 *   containerd/<v>/containerd-<v without "v">-linux-amd64.tar.gz               github.com/containerd/containerd releases
 *   runc/<v>/runc.amd64                                                        github.com/opencontainers/runc releases
 *   cni-plugins/<v>/cni-plugins-linux-amd64-<v>.tgz                            github.com/containernetworking/plugins releases
 * i.e. each upstream release asset under `<project>/<tag>/`, with its `.sha256`.
 */

/** Versions not in the ClusterSpec: pinned here, changed with the units that use them. */
export const PINNED = Object.freeze({
  runc: 'v1.3.3',
  flannelCniPlugin: 'v1.7.1-flannel1',
});

export interface ArchiveMember {
  /** path inside the archive (as listed by `tar -tzf`, a leading `./` optional) */
  readonly member: string;
  /** absolute path the member is installed to */
  readonly installPath: string;
}

export interface ReleaseArtifact {
  /** short stable name, also the name of its install stamp: `kube-apiserver`, `etcd`, `cni-plugins` */
  readonly name: string;
  readonly url: string;
  readonly sha256Url: string;
  /** path of the file relative to releaseBaseUrl (for building a mirror) */
  readonly mirrorPath: string;
  /** a single binary: its install path; an archive: the directory its members go to */
  readonly installPath: string;
  /** present for a tarball: the members to install (everything else in it is ignored) */
  readonly archive?: readonly ArchiveMember[];
  /** the roles whose machines download it */
  readonly roles: readonly Role[];
}

const BOTH: readonly Role[] = ['master', 'minion'];

/** Every artifact of a cluster (both roles), in a stable order. Pure. */
export function releaseArtifacts(spec: ClusterSpec): ReleaseArtifact[] {
  const base = spec.releaseBaseUrl;
  const v = spec.versions;
  const bin = LAYOUT.binDir;
  const cni = LAYOUT.cniBinDir;
  const out: ReleaseArtifact[] = [];

  const binary = (name: string, mirrorPath: string, roles: readonly Role[], installPath = `${bin}/${name}`) => {
    out.push(freeze({ name, url: `${base}/${mirrorPath}`, sha256Url: `${base}/${mirrorPath}.sha256`, mirrorPath, installPath, roles }));
  };
  const archive = (name: string, mirrorPath: string, roles: readonly Role[], installDir: string, members: [string, string][]) => {
    out.push(freeze({
      name,
      url: `${base}/${mirrorPath}`,
      sha256Url: `${base}/${mirrorPath}.sha256`,
      mirrorPath,
      installPath: installDir,
      archive: members.map(([member, file]) => Object.freeze({ member, installPath: `${installDir}/${file}` })),
      roles,
    }));
  };

  const k8s = (name: string, roles: readonly Role[]) => binary(name, `release/${v.kubernetes}/bin/linux/amd64/${name}`, roles);
  k8s('kube-apiserver', ['master']);
  k8s('kube-controller-manager', ['master']);
  k8s('kube-scheduler', ['master']);
  k8s('kubectl', ['master']);
  k8s('kubelet', ['minion']);
  k8s('kube-proxy', ['minion']);

  const etcdDir = `etcd-${v.etcd}-linux-amd64`;
  archive('etcd', `etcd/${v.etcd}/${etcdDir}.tar.gz`, ['master'], bin, [
    [`${etcdDir}/etcd`, 'etcd'],
    [`${etcdDir}/etcdctl`, 'etcdctl'],
    [`${etcdDir}/etcdutl`, 'etcdutl'],
  ]);
  archive('flannel', `flannel/${v.flannel}/flannel-${v.flannel}-linux-amd64.tar.gz`, BOTH, bin, [['flanneld', 'flanneld']]);
  archive('containerd', `containerd/${v.containerd}/containerd-${v.containerd.slice(1)}-linux-amd64.tar.gz`, ['minion'], bin, [
    ['bin/containerd', 'containerd'],
    ['bin/containerd-shim-runc-v2', 'containerd-shim-runc-v2'],
    ['bin/ctr', 'ctr'],
  ]);
  binary('runc', `runc/${PINNED.runc}/runc.amd64`, ['minion']);
  archive('cni-plugins', `cni-plugins/${v.cniPlugins}/cni-plugins-linux-amd64-${v.cniPlugins}.tgz`, ['minion'], cni, [
    ['bridge', 'bridge'],
    ['host-local', 'host-local'],
    ['portmap', 'portmap'],
    ['loopback', 'loopback'],
  ]);
  archive('flannel-cni-plugin', `flannel-cni-plugin/${PINNED.flannelCniPlugin}/cni-plugin-flannel-linux-amd64-${PINNED.flannelCniPlugin}.tgz`, ['minion'], cni, [
    ['flannel-amd64', 'flannel'],
  ]);
  return out;
}

/** The artifacts a machine of one role downloads. */
export function artifactsFor(spec: ClusterSpec, role: Role): ReleaseArtifact[] {
  return releaseArtifacts(spec).filter((a) => a.roles.includes(role));
}

/**
 * The manifest the download script reads: one artifact a line, tab-separated —
 *   file <name> <url> <sha256Url> <installPath>
 *   tar  <name> <url> <sha256Url> <member>=<installPath> …
 * Values come from the validated spec and fixed paths; member paths contain no `=`.
 */
export function releaseManifest(artifacts: readonly ReleaseArtifact[]): string {
  const lines = ['# corekube release manifest: kind, name, url, sha256 url, install paths (tab-separated)'];
  for (const a of artifacts) {
    const fields = a.archive
      ? ['tar', a.name, a.url, a.sha256Url, ...a.archive.map((m) => `${m.member}=${m.installPath}`)]
      : ['file', a.name, a.url, a.sha256Url, a.installPath];
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

function freeze(a: ReleaseArtifact): ReleaseArtifact {
  return Object.freeze({ ...a, roles: Object.freeze([...a.roles]) });
}
