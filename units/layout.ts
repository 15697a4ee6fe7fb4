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
  /** written by corekube-cni-config from flanneld's subnet file when containerd starts */
  cniConflist: '/etc/corekube/cni/net.d/10-corekube.conflist',
  /** containerd config drop-ins (`*.toml`, imported over config.toml): a site's own settings, never written by the overlord */
  containerdDropInDir: '/etc/corekube/containerd/conf.d',
  /** containerd's per-registry hosts.toml files (a registry mirror) */
  containerdCertsDir: '/etc/corekube/containerd/certs.d',
  /**
   * KubeletConfiguration drop-ins (`*.conf`, applied over config.yaml in name order): the overlord writes none;
   * a site's own settings (or the local cloud's deviations) live here and survive every redeploy
   */
  kubeletDropInDir: '/etc/corekube/kubelet/config.d',
  /** the resolv.conf pods with dnsPolicy Default get (corekube-resolv-conf: the upstream servers, no stub) */
  kubeletResolvConf: '/run/corekube/resolv.conf',
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
  kubeProxyHealthz: 10256,
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

/** The CN of the API server's front-proxy client certificate, which --requestheader-allowed-names accepts. */
export const FRONT_PROXY_CLIENT_NAME = 'front-proxy-client';
