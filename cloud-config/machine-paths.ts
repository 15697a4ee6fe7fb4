/**
 * Where cloud-config puts things on a machine: the contract with the overlord (which reads the overlord's
 * files, and pushes discovery's TLS files over SSH), with the Heat template (placeholders land in these
 * files) and with the scripts below (which take every path from here). Config under /etc/corekube, helper
 * scripts under /opt/corekube/bin (/usr is read-only on Flatcar), state under /var/lib.
 */
export const CONFIG_DIR = '/etc/corekube';

/** Files under CONFIG_DIR, relative to it (scripts accept COREKUBE_CONFIG_DIR to move the whole tree). */
export const CONFIG_FILES = Object.freeze({
  /** the join token (password of discovery's `joiner` etcd user), one line, mode 0600 */
  joinToken: 'secrets/join-token',
  /** overlords only: the overlord secret (seals the state standbys fetch, overlord/trust/shared-state.ts), one line, mode 0600 */
  overlordSecret: 'secrets/overlord-secret',
  /** the discovery etcd CA PEM (decoded from the discoveryCa placeholder) */
  discoveryCa: 'pki/discovery-ca.crt',
  /**
   * the machine's own discovery etcd user (FLANNELD_ETCD_USERNAME=machine-<id>, FLANNELD_ETCD_PASSWORD=<hex>),
   * mode 0600: delivered by the overlord when it admits the machine; absent until then (units/pki-paths.ts
   * DISCOVERY_CLIENT_PATHS.credentials is the same file)
   */
  discoveryCredentials: 'pki/discovery-credentials.env',
  /** the overlord's SSH public key line (decoded from the overlordSshKey placeholder) */
  overlordSshKey: 'ssh/overlord.pub',
  /** discovery only: the directory the overlord installs ca.crt, server.crt and server.key into */
  discoveryPkiDir: 'pki/discovery',
  /** Heat wait-condition signal of this machine: endpoint URL (one line, '' = none) and `X-Auth-Token: …` (0600) */
  readyUrl: 'heat/ready.url',
  readyHeader: 'heat/ready.header',
  /** overlord only: cluster_ready signal, same format */
  clusterReadyUrl: 'heat/cluster-ready.url',
  clusterReadyHeader: 'heat/cluster-ready.header',
  /**
   * bootstrap overlord only, with the OpenStack cloud provider: the stack user that reads the cloud credentials
   * from Heat (heat/cloud-provider.ts); one value per file, the password 0600
   */
  cloudAuthUrl: 'heat/cloud/auth-url',
  cloudUserId: 'heat/cloud/user-id',
  cloudPassword: 'heat/cloud/password',
  cloudProjectId: 'heat/cloud/project-id',
  cloudStackId: 'heat/cloud/stack-id',
  cloudRegion: 'heat/cloud/region',
  /** overlord only: the overlord's configuration (cloud-config/overlord-config.ts) */
  overlordConfig: 'overlord.yaml',
});

export type ConfigFile = keyof typeof CONFIG_FILES;

/** Absolute path of a file under CONFIG_DIR. */
export const configPath = (file: ConfigFile): string => `${CONFIG_DIR}/${CONFIG_FILES[file]}`;

/** The three files the overlord pushes to discovery before its etcd may start. */
export const DISCOVERY_TLS_FILES = Object.freeze({ ca: 'ca.crt', cert: 'server.crt', key: 'server.key' });

export const MACHINE_PATHS = Object.freeze({
  /** helper scripts cloud-config writes, and the etcd binary discovery downloads */
  binDir: '/opt/corekube/bin',
  unitDir: '/etc/systemd/system',
  sudoers: '/etc/sudoers.d/corekube',
  /** the overlord container's state (SSH key pair, CA keys): mounted read-write into the container */
  overlordState: '/var/lib/corekube',
  /** discovery etcd's data directory */
  discoveryEtcdData: '/var/lib/etcd',
  /** corekube-announce's runtime directory (root, 0700, emptied at every boot): its failure count and join nonce */
  announceRunDir: '/run/corekube/announce',
});

/**
 * The announce script's per-boot nonce, 64 hex, root-only in MACHINE_PATHS.announceRunDir: a join request carries
 * its SHA-256 (`nonceDigest`), and the overlord reads the nonce over SSH to prove the request came from the machine
 * it reached (overlord/discovery/admission.ts).
 */
export const JOIN_NONCE_NAME = 'join-nonce';
export const JOIN_NONCE_FILE = `${MACHINE_PATHS.announceRunDir}/${JOIN_NONCE_NAME}`;

/**
 * The overlord image's contract with its server (overlord/Dockerfile): the container runs as this uid:gid,
 * so its state directory and the 0600 files it reads must belong to it; its /healthz listens on this port.
 */
export const OVERLORD_IMAGE_USER = Object.freeze({ uid: 10001, gid: 10001 });
export const OVERLORD_HEALTH_PORT = 8740;

/** The user the overlord logs in as on every machine (passwordless sudo, the overlord's key authorized). */
export const COREKUBE_USER = 'corekube';
/** discovery's etcd user that nodes authenticate as with the join token (created by the overlord) */
export const JOINER_USER = 'joiner';
