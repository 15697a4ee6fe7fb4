import type { Role } from '../contracts/roles.ts';

/**
 * Where each TLS file sits on a machine. The units only name these paths; the PKI room issues the
 * certificates and delivers each file (keys mode 0600) to the machines that need it, listed in
 * PKI_FILES_BY_ROLE. Four CAs: the cluster CA (Kubernetes API, kubelets), the etcd CA (masters' etcd and its
 * clients), the front-proxy CA (the API server's identity towards aggregated API servers, as kubeadm sets
 * it up) and discovery's CA (each machine's client certificate for the discovery etcd). No CA private key is
 * ever on a machine: kube-controller-manager runs without a cluster-signing key, so certificates are issued
 * only by the overlord.
 */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

export interface PkiPaths {
  readonly dir: string;
  /** cluster CA certificate: trusted by the API server for client certs, by kubelets, and by every kubeconfig */
  readonly ca: string;
  /** etcd CA certificate: trusted by etcd (clients and peers) and by its clients */
  readonly etcdCa: string;
  /** front-proxy CA certificate: the API server's --requestheader-client-ca-file */
  readonly frontProxyCa: string;
  /** API server → aggregated API servers (CN front-proxy-client; front-proxy CA) */
  readonly frontProxyClient: KeyPair;
  /**
   * the machine's client certificate for the discovery etcd (CN machine-<id>; discovery CA). Discovery
   * authenticates by etcd user and password (it cannot require client certificates), but flanneld only speaks
   * TLS to etcd when it has a certificate and key to present: without one it dials plain HTTP.
   */
  readonly discoveryClient: KeyPair;
  /** API server serving cert (SANs: kubernetes.default…, first service IP, master IPs, 127.0.0.1) */
  readonly apiServer: KeyPair;
  /** API server → kubelet client cert (CN kube-apiserver-kubelet-client, O system:masters) */
  readonly apiServerKubeletClient: KeyPair;
  /** API server → etcd client cert (etcd CA) */
  readonly apiServerEtcdClient: KeyPair;
  /** service-account token signing key pair (PEM public and private key) */
  readonly serviceAccount: { readonly publicKey: string; readonly privateKey: string };
  /** CN system:kube-controller-manager */
  readonly controllerManager: KeyPair;
  /** CN system:kube-scheduler */
  readonly scheduler: KeyPair;
  /**
   * one per node: CN system:node:<hostname>, O system:nodes; also the kubelet's serving cert, so it needs
   * both clientAuth and serverAuth and SANs for the node's hostname and IP
   */
  readonly kubelet: KeyPair;
  /** CN system:kube-proxy */
  readonly kubeProxy: KeyPair;
  /** etcd member serving cert (etcd CA; SANs: the master's IP, 127.0.0.1, localhost) */
  readonly etcdServer: KeyPair;
  /** etcd peer cert (etcd CA; SAN: the master's IP; clientAuth + serverAuth) */
  readonly etcdPeer: KeyPair;
}

export const PKI_DIR = '/etc/corekube/pki';

const pair = (name: string): KeyPair => Object.freeze({ cert: `${PKI_DIR}/${name}.crt`, key: `${PKI_DIR}/${name}.key` });

/** The fixed layout under /etc/corekube/pki. */
export const PKI_PATHS: PkiPaths = Object.freeze({
  dir: PKI_DIR,
  ca: `${PKI_DIR}/ca.crt`,
  etcdCa: `${PKI_DIR}/etcd-ca.crt`,
  frontProxyCa: `${PKI_DIR}/front-proxy-ca.crt`,
  frontProxyClient: pair('front-proxy-client'),
  discoveryClient: pair('discovery-client'),
  apiServer: pair('apiserver'),
  apiServerKubeletClient: pair('apiserver-kubelet-client'),
  apiServerEtcdClient: pair('apiserver-etcd-client'),
  serviceAccount: Object.freeze({ publicKey: `${PKI_DIR}/service-account.pub`, privateKey: `${PKI_DIR}/service-account.key` }),
  controllerManager: pair('kube-controller-manager'),
  scheduler: pair('kube-scheduler'),
  kubelet: pair('kubelet'),
  kubeProxy: pair('kube-proxy'),
  etcdServer: pair('etcd-server'),
  etcdPeer: pair('etcd-peer'),
});

/** Which PKI entries each role's units read: what the PKI room must deliver to a machine of that role. */
export const PKI_FILES_BY_ROLE: Readonly<Record<Role, readonly (keyof Omit<PkiPaths, 'dir'>)[]>> = Object.freeze({
  master: ['ca', 'etcdCa', 'frontProxyCa', 'apiServer', 'apiServerKubeletClient', 'apiServerEtcdClient', 'frontProxyClient', 'serviceAccount', 'controllerManager', 'scheduler', 'etcdServer', 'etcdPeer', 'discoveryClient'],
  minion: ['ca', 'kubelet', 'kubeProxy', 'discoveryClient'],
});

/**
 * The machine's access to the DISCOVERY etcd, on every master and minion (the overlord keeps flannel's
 * network config and subnet reservations there, under `<prefix>network/`: flanneld --etcd-prefix=<prefix>network):
 * - `ca`: the discovery CA certificate (the same file, same content, as cloud-config writes from user_data),
 *   for flanneld's --etcd-cafile;
 * - `credentials` (mode 0600): the machine's OWN discovery etcd user, `machine-<id>`, as an EnvironmentFile
 *   with FLANNELD_ETCD_USERNAME and FLANNELD_ETCD_PASSWORD=<hex> — flanneld reads them as
 *   --etcd-username/--etcd-password (so the password is in no command line), and the announce script reads
 *   the same two lines to write the machine's record (cloud-config CONFIG_FILES.discoveryCredentials is this
 *   path). The overlord delivers it when it admits the machine (overlord/discovery/admission.ts) and again in its
 *   write-units step. Its role may write only this machine's record and subnet lease (overlord/trust/discovery-auth.ts).
 */
export const DISCOVERY_CLIENT_PATHS = Object.freeze({
  ca: `${PKI_DIR}/discovery-ca.crt`,
  credentials: `${PKI_DIR}/discovery-credentials.env`,
});
