/**
 * Every release artifact a corekube cluster runs, at the versions of its spec: where its upstream publishes it
 * (and the checksum it publishes, if any), where a corekube mirror keeps it, what it holds, and which machines
 * install it. Pure data; `sources.ts` turns it into the URL and digest each machine uses, `build.ts` builds it
 * from source, `download.ts` fetches it from upstream.
 *
 * Mirror layout (a path relative to the mirror's base URL; also the key of a digest in `releaseDigests`):
 *   release/<k8s>/bin/linux/amd64/<binary>               Kubernetes, as on dl.k8s.io
 *   etcd/<v>/etcd-<v>-linux-amd64.tar.gz                 etcd-io/etcd's release asset
 *   flannel/<v>/flannel-<v>-linux-amd64.tar.gz           flannel-io/flannel's
 *   containerd/<v>/containerd-<v without v>-linux-amd64.tar.gz
 *   runc/<v>/runc.amd64
 *   cni-plugins/<v>/cni-plugins-linux-amd64-<v>.tgz
 *   coredns/<v>/coredns_<v without v>_linux_amd64.tgz
 *   pause/<v>/pause-linux-amd64                          (no upstream binary: the pause image's program)
 * i.e. each upstream release asset under `<project>/<tag>/`, byte-for-byte the upstream file when downloaded.
 */
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';

/**
 * Who installs an artifact: a machine role; `api-proxy`, the node-local API proxy a minion runs when the spec
 * asks for one (spec.apiLoadBalancer `node-local`: etcd's gateway, sources.ts consumersOf); or the container
 * images the mirror builds.
 */
export type Consumer = 'discovery' | 'master' | 'minion' | 'api-proxy' | 'image';

/** How an upstream lets a download be checked. */
export type UpstreamChecksum =
  /** a file with this artifact's sha256: a bare digest, or a `sha256sum` line naming it */
  | { readonly kind: 'digest-file'; readonly url: string }
  /** a `sha256sum` list of several assets; the line naming this artifact's file holds its digest */
  | { readonly kind: 'sums-file'; readonly url: string }
  /** the project publishes no checksum for it */
  | { readonly kind: 'none'; readonly why: string };

/** One program an artifact holds, and where it goes on a machine (`bin`: binaries, `cni`: CNI plugins). */
export interface ArtifactMember {
  /** path inside the archive as upstream lays it out (`etcd-v3.6.17-linux-amd64/etcd`, `bin/ctr`, `./bridge`) */
  readonly member: string;
  /** the program's name on a machine */
  readonly program: string;
  readonly installDir: 'bin' | 'cni';
}

export type Project = 'kubernetes' | 'etcd' | 'flannel' | 'containerd' | 'runc' | 'cni-plugins' | 'coredns' | 'pause'
  /** not a release artifact: a tool corekube's checks build the same way (recipes.ts toolRecipes) */
  | 'ignition';

export interface Artifact {
  /** short stable name, also the name of its install stamp on a machine: `kube-apiserver`, `etcd`, `cni-plugins` */
  readonly name: string;
  readonly project: Project;
  readonly version: string;
  /** the upstream asset's file name (also the last element of mirrorPath) */
  readonly fileName: string;
  /** relative path in a corekube mirror, and the key of its digest */
  readonly mirrorPath: string;
  /** the upstream download, or undefined when upstream publishes no such file (pause: an image only) */
  readonly upstream: { readonly url: string; readonly checksum: UpstreamChecksum } | undefined;
  /** a single executable (`file`) or a gzip tarball (`tar`) of these members */
  readonly kind: 'file' | 'tar';
  readonly members: readonly ArtifactMember[];
  readonly consumers: readonly Consumer[];
}

export const DL_K8S_RELEASE = 'https://dl.k8s.io/release';
export const GITHUB = 'https://github.com';

/** The CNI plugins of an upstream release tarball (linux), each a directory of containernetworking/plugins. */
export const CNI_PLUGINS = Object.freeze({
  main: ['bridge', 'dummy', 'host-device', 'ipvlan', 'loopback', 'macvlan', 'ptp', 'tap', 'vlan'],
  ipam: ['dhcp', 'host-local', 'static'],
  meta: ['bandwidth', 'firewall', 'portmap', 'sbr', 'tuning', 'vrf'],
} as const);

/** The plugins a minion installs (its CNI config uses bridge, host-local, portmap and loopback). */
export const CNI_PLUGINS_INSTALLED = ['bridge', 'host-local', 'loopback', 'portmap'] as const;

const FLANNEL_NO_CHECKSUM = 'flannel-io/flannel publishes no checksums for its release assets';

/** Every artifact of a cluster at its spec's versions, in a stable order. Pure. */
export function releaseCatalog(versions: ClusterSpec['versions']): readonly Artifact[] {
  const v = versions;
  const out: Artifact[] = [];
  const gh = (repo: string, tag: string, file: string) => `${GITHUB}/${repo}/releases/download/${tag}/${file}`;
  const add = (a: Artifact) => out.push(deepFreeze(a));

  const k8s = (program: string, consumers: Consumer[]) => {
    const url = `${DL_K8S_RELEASE}/${v.kubernetes}/bin/linux/amd64/${program}`;
    add({
      name: program, project: 'kubernetes', version: v.kubernetes, fileName: program,
      mirrorPath: `release/${v.kubernetes}/bin/linux/amd64/${program}`,
      upstream: { url, checksum: { kind: 'digest-file', url: `${url}.sha256` } },
      kind: 'file', members: [{ member: program, program, installDir: 'bin' }], consumers,
    });
  };
  k8s('kube-apiserver', ['master']);
  k8s('kube-controller-manager', ['master']);
  k8s('kube-scheduler', ['master']);
  k8s('kubectl', ['master']);
  k8s('kubelet', ['minion']);
  k8s('kube-proxy', ['minion']);

  const etcdDir = `etcd-${v.etcd}-linux-amd64`;
  add({
    name: 'etcd', project: 'etcd', version: v.etcd, fileName: `${etcdDir}.tar.gz`,
    mirrorPath: `etcd/${v.etcd}/${etcdDir}.tar.gz`,
    upstream: { url: gh('etcd-io/etcd', v.etcd, `${etcdDir}.tar.gz`), checksum: { kind: 'sums-file', url: gh('etcd-io/etcd', v.etcd, 'SHA256SUMS') } },
    kind: 'tar',
    members: ['etcd', 'etcdctl', 'etcdutl'].map((p) => ({ member: `${etcdDir}/${p}`, program: p, installDir: 'bin' as const })),
    // etcd's gateway (`etcd gateway start`) is the minions' node-local API proxy
    consumers: ['discovery', 'master', 'api-proxy'],
  });

  const flannelFile = `flannel-${v.flannel}-linux-amd64.tar.gz`;
  add({
    name: 'flannel', project: 'flannel', version: v.flannel, fileName: flannelFile,
    mirrorPath: `flannel/${v.flannel}/${flannelFile}`,
    upstream: { url: gh('flannel-io/flannel', v.flannel, flannelFile), checksum: { kind: 'none', why: FLANNEL_NO_CHECKSUM } },
    kind: 'tar', members: [{ member: 'flanneld', program: 'flanneld', installDir: 'bin' }], consumers: ['master', 'minion'],
  });

  const containerdFile = `containerd-${v.containerd.slice(1)}-linux-amd64.tar.gz`;
  const containerdUrl = gh('containerd/containerd', v.containerd, containerdFile);
  add({
    name: 'containerd', project: 'containerd', version: v.containerd, fileName: containerdFile,
    mirrorPath: `containerd/${v.containerd}/${containerdFile}`,
    upstream: { url: containerdUrl, checksum: { kind: 'digest-file', url: `${containerdUrl}.sha256sum` } },
    kind: 'tar',
    members: ['containerd', 'containerd-shim-runc-v2', 'ctr'].map((p) => ({ member: `bin/${p}`, program: p, installDir: 'bin' as const })),
    consumers: ['minion'],
  });

  add({
    name: 'runc', project: 'runc', version: v.runc, fileName: 'runc.amd64',
    mirrorPath: `runc/${v.runc}/runc.amd64`,
    upstream: { url: gh('opencontainers/runc', v.runc, 'runc.amd64'), checksum: { kind: 'sums-file', url: gh('opencontainers/runc', v.runc, 'runc.sha256sum') } },
    kind: 'file', members: [{ member: 'runc.amd64', program: 'runc', installDir: 'bin' }], consumers: ['minion'],
  });

  const cniFile = `cni-plugins-linux-amd64-${v.cniPlugins}.tgz`;
  const cniUrl = gh('containernetworking/plugins', v.cniPlugins, cniFile);
  add({
    name: 'cni-plugins', project: 'cni-plugins', version: v.cniPlugins, fileName: cniFile,
    mirrorPath: `cni-plugins/${v.cniPlugins}/${cniFile}`,
    upstream: { url: cniUrl, checksum: { kind: 'digest-file', url: `${cniUrl}.sha256` } },
    kind: 'tar',
    members: [...CNI_PLUGINS.main, ...CNI_PLUGINS.ipam, ...CNI_PLUGINS.meta].sort().map((p) => ({ member: `./${p}`, program: p, installDir: 'cni' as const })),
    consumers: ['minion'],
  });

  const corednsFile = `coredns_${v.coredns.slice(1)}_linux_amd64.tgz`;
  const corednsUrl = gh('coredns/coredns', v.coredns, corednsFile);
  add({
    name: 'coredns', project: 'coredns', version: v.coredns, fileName: corednsFile,
    mirrorPath: `coredns/${v.coredns}/${corednsFile}`,
    upstream: { url: corednsUrl, checksum: { kind: 'digest-file', url: `${corednsUrl}.sha256` } },
    kind: 'tar', members: [{ member: 'coredns', program: 'coredns', installDir: 'bin' }], consumers: ['image'],
  });

  add({
    name: 'pause', project: 'pause', version: v.pause, fileName: 'pause-linux-amd64',
    mirrorPath: `pause/${v.pause}/pause-linux-amd64`,
    upstream: undefined,
    kind: 'file', members: [{ member: 'pause-linux-amd64', program: 'pause', installDir: 'bin' }], consumers: ['image'],
  });
  return Object.freeze(out);
}

/** The artifacts one consumer installs, in catalog order. */
export function artifactsOf(versions: ClusterSpec['versions'], consumer: Consumer): Artifact[] {
  return releaseCatalog(versions).filter((a) => a.consumers.includes(consumer));
}

/** The artifacts a minion installs from the CNI plugins tarball: only those its CNI config uses. */
export function installedMembers(a: Artifact): readonly ArtifactMember[] {
  if (a.project !== 'cni-plugins') return a.members;
  return a.members.filter((m) => (CNI_PLUGINS_INSTALLED as readonly string[]).includes(m.program));
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const x of Object.values(o)) deepFreeze(x);
  }
  return o;
}

/** The registry every image a corekube cluster runs comes from (a registry mirror serves its paths). */
export const UPSTREAM_REGISTRY = 'registry.k8s.io';

/** The images the cluster itself runs, by role: the pod sandbox and the cluster DNS add-on. */
export function clusterImages(versions: ClusterSpec['versions']): { readonly pause: string; readonly coredns: string } {
  return Object.freeze({
    pause: `${UPSTREAM_REGISTRY}/pause:${versions.pause}`,
    coredns: `${UPSTREAM_REGISTRY}/coredns/coredns:${versions.coredns}`,
  });
}

/**
 * The OpenStack cloud provider's releases (kubernetes/cloud-provider-openstack: the cloud controller manager and
 * the Cinder CSI plugin), one per Kubernetes minor — the release made for that minor, at its latest patch.
 */
export const CLOUD_PROVIDER_OPENSTACK: Readonly<Record<string, string>> = Object.freeze({ '1.34': 'v1.34.1', '1.35': 'v1.35.0', '1.36': 'v1.36.0' });

/** The CSI sidecars the Cinder CSI plugin runs with (as cloud-provider-openstack v1.36.0's manifests pin them). */
export const CSI_SIDECARS = Object.freeze({
  attacher: 'v4.10.0',
  provisioner: 'v5.3.0',
  resizer: 'v1.14.0',
  livenessProbe: 'v2.17.0',
  nodeDriverRegistrar: 'v2.15.0',
});

export interface CloudProviderImages {
  readonly controllerManager: string;
  readonly cinderCsi: string;
  readonly attacher: string;
  readonly provisioner: string;
  readonly resizer: string;
  readonly livenessProbe: string;
  readonly nodeDriverRegistrar: string;
}

/** The OpenStack cloud provider's images for the spec's Kubernetes minor (undefined: no release for that minor). */
export function cloudProviderImages(versions: ClusterSpec['versions']): CloudProviderImages | undefined {
  const minor = /^v(\d+\.\d+)\./.exec(versions.kubernetes)?.[1];
  const tag = minor === undefined ? undefined : CLOUD_PROVIDER_OPENSTACK[minor];
  if (tag === undefined) return undefined;
  const sig = (name: string, v: string) => `${UPSTREAM_REGISTRY}/sig-storage/${name}:${v}`;
  return Object.freeze({
    controllerManager: `${UPSTREAM_REGISTRY}/provider-os/openstack-cloud-controller-manager:${tag}`,
    cinderCsi: `${UPSTREAM_REGISTRY}/provider-os/cinder-csi-plugin:${tag}`,
    attacher: sig('csi-attacher', CSI_SIDECARS.attacher),
    provisioner: sig('csi-provisioner', CSI_SIDECARS.provisioner),
    resizer: sig('csi-resizer', CSI_SIDECARS.resizer),
    livenessProbe: sig('livenessprobe', CSI_SIDECARS.livenessProbe),
    nodeDriverRegistrar: sig('csi-node-driver-registrar', CSI_SIDECARS.nodeDriverRegistrar),
  });
}
