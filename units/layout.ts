/**
 * Where corekube puts things on a machine. One table, so units, config files, the download script and
 * the PKI room agree. Everything lives under corekube-owned directories (writable on Flatcar, whose /usr is
 * read-only): binaries in /opt/corekube, configuration in /etc/corekube, state in /var/lib/corekube.
 */
export const LAYOUT = Object.freeze({
  /** systemd unit files */
  unitDir: '/etc/systemd/system',
  /** downloaded release binaries (Kubernetes, etcd, flanneld, containerd, runc) */
  binDir: '/opt/corekube/bin',
  /** downloaded CNI plugins (bridge, host-local, portmap, loopback, flannel) */
  cniBinDir: '/opt/corekube/cni/bin',
  /** corekube's own helper scripts, written by the overlord with the units */
  libexecDir: '/opt/corekube/libexec',
  configDir: '/etc/corekube',
  kubeconfigDir: '/etc/corekube/kubeconfigs',
  cniConfDir: '/etc/corekube/cni/net.d',
  /** what `corekube-download` installs from; one artifact a line */
  releaseManifest: '/etc/corekube/release.manifest',
  stateDir: '/var/lib/corekube',
  /** written by flanneld once it holds its subnet; kubelet and containerd wait for it */
  flannelSubnetFile: '/run/flannel/subnet.env',
  containerdSocket: '/run/corekube/containerd/containerd.sock',
});

export type Layout = typeof LAYOUT;

/** Ports the units listen on. */
export const PORTS = Object.freeze({
  apiServer: 6443,
  etcdClient: 2379,
  etcdPeer: 2380,
  flannelHealthz: 8285,
});

/** How long a unit may take to start before systemd fails it (and the overlord sees `failed`). */
export const TIMEOUTS = Object.freeze({
  /** downloading every release binary over a slow mirror */
  downloadSec: 900,
  serviceSec: 120,
  /** kubelet and containerd wait for flanneld's subnet file within their start timeout */
  flannelWaitSec: 180,
});

export const CLUSTER_DOMAIN = 'cluster.local';
