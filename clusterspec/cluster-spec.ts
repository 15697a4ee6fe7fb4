import { InvalidInputError, type FieldProblem } from '../core/errors.ts';
import { cidrSize, cidrsOverlap, isCidr, parseCidr, type Cidr } from './cidr.ts';

/**
 * The cluster spec: every choice a user makes about a cluster, parsed once from flags, env and a YAML
 * file into a frozen, validated value. Nothing else in corekube reads flags, env or the config file.
 */
export type OsProfile = 'flatcar' | 'ubuntu';
export const OS_PROFILES: readonly OsProfile[] = ['flatcar', 'ubuntu'];
export const MASTER_COUNTS = [1, 3, 5] as const;
export const MAX_MINIONS = 500;
/** Overlords: one bootstrap overlord plus up to four standbys (leader election, overlord/availability/leader.ts). */
export const MIN_OVERLORDS = 1;
export const MAX_OVERLORDS = 5;
/**
 * How nodes reach the Kubernetes API: `octavia` = an OpenStack load balancer (listener 6443, a pool of the
 * masters, a health monitor) whose fixed VIP every kubeconfig names; `none` = the first master's address.
 */
export type ApiLoadBalancer = 'octavia' | 'none';
export const API_LOAD_BALANCERS: readonly ApiLoadBalancer[] = ['octavia', 'none'];
/** Kubernetes minors corekube's units are written and tested for. */
export const KUBERNETES_MINORS = ['1.34', '1.35', '1.36'] as const;

export interface ClusterSpec {
  readonly name: string;
  readonly masters: 1 | 3 | 5;
  readonly minions: number;
  /** overlord servers: the bootstrap one plus `overlords - 1` standbys that take over when it is gone */
  readonly overlords: number;
  readonly os: OsProfile;
  /** the API endpoint (default: `octavia` with more than one master, `none` with one) */
  readonly apiLoadBalancer: ApiLoadBalancer;
  /** Release tags of every upstream component (release/catalog.ts lists the artifacts of each). */
  readonly versions: {
    readonly kubernetes: string;
    readonly etcd: string;
    readonly flannel: string;
    readonly containerd: string;
    readonly runc: string;
    readonly cniPlugins: string;
    readonly coredns: string;
    /** the pause image's tag (`3.10.2`: registry.k8s.io tags it without a `v`) */
    readonly pause: string;
  };
  readonly network: {
    readonly privateCidr: string;
    readonly podCidr: string;
    readonly serviceCidr: string;
    /** Who may SSH to the overlord and reach the Kubernetes API. Never 0.0.0.0/0 unless the user says so. */
    readonly adminCidr: string;
    /** Who may reach NodePorts on minions; undefined = NodePorts closed from outside the cluster. */
    readonly nodePortCidr: string | undefined;
    readonly externalNetwork: string | undefined;
    readonly dnsNameservers: readonly string[];
    /** flannel: the per-machine subnet's prefix length and the VXLAN id. */
    readonly podSubnetLength: number;
    readonly vxlanId: number;
  };
  readonly openstack: {
    readonly image: string | undefined;
    readonly keyName: string | undefined;
    readonly flavors: {
      readonly discovery: string;
      readonly overlord: string;
      readonly master: string;
      readonly minion: string;
    };
  };
  readonly overlord: {
    /** The overlord container image the overlord server runs. */
    readonly image: string;
  };
  /**
   * Where machines download release artifacts from: undefined = each project's upstream home (dl.k8s.io,
   * GitHub releases); a URL = a corekube mirror (release/catalog.ts's layout, `corekube mirror build`).
   */
  readonly releaseBaseUrl: string | undefined;
  /**
   * sha256 digests by mirror path (`etcd/v3.6.17/etcd-v3.6.17-linux-amd64.tar.gz` → hex): what machines check
   * their downloads against instead of a checksum fetched next to the file. Required for every artifact with a
   * mirror; optional upstream (it pins what upstream publishes no checksum for). Empty = none.
   */
  readonly releaseDigests: Readonly<Record<string, string>>;
  /**
   * A registry containerd pulls the cluster's images through (`https://registry.example:5000`): a mirror of
   * registry.k8s.io (pause, CoreDNS), and itself reachable by its own name. undefined = pull from upstream.
   */
  readonly registryMirror: string | undefined;
}

export interface SpecSources {
  /**
   * `--flag value` pairs, keys without dashes (`masters`, `pod-cidr`): strings, except a `digests` field's
   * value, which the CLI has already read from the file the flag names (cli/spec-options.ts).
   */
  flags?: Readonly<Record<string, unknown>>;
  /** The parsed YAML config file, if one was given. */
  file?: unknown;
  /** Where the file came from, for error messages. */
  fileName?: string;
  env?: Readonly<Record<string, string | undefined>>;
}

type Kind = 'string' | 'int' | 'list' | 'digests';

interface Field {
  /** dotted path in the YAML file and in ClusterSpec */
  path: string;
  flag: string;
  kind: Kind;
  default: string | number | readonly string[] | Readonly<Record<string, string>> | undefined;
}

export const SPEC_FIELDS: readonly Field[] = [
  { path: 'name', flag: 'name', kind: 'string', default: 'corekube' },
  { path: 'masters', flag: 'masters', kind: 'int', default: 1 },
  { path: 'minions', flag: 'minions', kind: 'int', default: 3 },
  { path: 'overlords', flag: 'overlords', kind: 'int', default: 1 },
  { path: 'os', flag: 'os', kind: 'string', default: 'flatcar' },
  { path: 'apiLoadBalancer', flag: 'api-load-balancer', kind: 'string', default: undefined },
  { path: 'versions.kubernetes', flag: 'kubernetes-version', kind: 'string', default: 'v1.36.5' },
  { path: 'versions.etcd', flag: 'etcd-version', kind: 'string', default: 'v3.6.17' },
  { path: 'versions.flannel', flag: 'flannel-version', kind: 'string', default: 'v0.28.10' },
  { path: 'versions.containerd', flag: 'containerd-version', kind: 'string', default: 'v2.3.7' },
  { path: 'versions.runc', flag: 'runc-version', kind: 'string', default: 'v1.4.4' },
  { path: 'versions.cniPlugins', flag: 'cni-plugins-version', kind: 'string', default: 'v1.10.0' },
  { path: 'versions.coredns', flag: 'coredns-version', kind: 'string', default: 'v1.15.0' },
  { path: 'versions.pause', flag: 'pause-version', kind: 'string', default: '3.10.2' },
  { path: 'network.privateCidr', flag: 'private-cidr', kind: 'string', default: '10.240.0.0/16' },
  { path: 'network.podCidr', flag: 'pod-cidr', kind: 'string', default: '10.244.0.0/14' },
  { path: 'network.serviceCidr', flag: 'service-cidr', kind: 'string', default: '10.96.0.0/12' },
  { path: 'network.adminCidr', flag: 'admin-cidr', kind: 'string', default: undefined },
  { path: 'network.nodePortCidr', flag: 'node-port-cidr', kind: 'string', default: undefined },
  { path: 'network.externalNetwork', flag: 'external-network', kind: 'string', default: undefined },
  { path: 'network.dnsNameservers', flag: 'dns-nameservers', kind: 'list', default: [] },
  { path: 'network.podSubnetLength', flag: 'pod-subnet-length', kind: 'int', default: 24 },
  { path: 'network.vxlanId', flag: 'vxlan-id', kind: 'int', default: 1 },
  { path: 'openstack.image', flag: 'image', kind: 'string', default: undefined },
  { path: 'openstack.keyName', flag: 'key-name', kind: 'string', default: undefined },
  { path: 'openstack.flavors.discovery', flag: 'discovery-flavor', kind: 'string', default: 'm1.small' },
  { path: 'openstack.flavors.overlord', flag: 'overlord-flavor', kind: 'string', default: 'm1.small' },
  { path: 'openstack.flavors.master', flag: 'master-flavor', kind: 'string', default: 'm1.medium' },
  { path: 'openstack.flavors.minion', flag: 'minion-flavor', kind: 'string', default: 'm1.medium' },
  { path: 'overlord.image', flag: 'overlord-image', kind: 'string', default: 'corekube/overlord:0.1.0' },
  { path: 'releaseBaseUrl', flag: 'release-base-url', kind: 'string', default: undefined },
  { path: 'releaseDigests', flag: 'release-digests', kind: 'digests', default: {} },
  { path: 'registryMirror', flag: 'registry-mirror', kind: 'string', default: undefined },
];

/**
 * `releaseBaseUrl` values that mean "each project's upstream home": dl.k8s.io is where corekube's earlier
 * default pointed (it hosts only Kubernetes; the other projects come from their GitHub releases).
 */
export const UPSTREAM_RELEASE_ALIASES = ['https://dl.k8s.io'] as const;

/** True when machines download from each project's upstream home rather than a corekube mirror. */
export function usesUpstreamReleases(spec: Pick<ClusterSpec, 'releaseBaseUrl'>): boolean {
  return spec.releaseBaseUrl === undefined || (UPSTREAM_RELEASE_ALIASES as readonly string[]).includes(spec.releaseBaseUrl);
}

/** `pod-cidr` → `COREKUBE_POD_CIDR` */
export function envNameOf(flag: string): string {
  return `COREKUBE_${flag.toUpperCase().replace(/-/g, '_')}`;
}

const DNS_LABEL = /^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$/;
const VERSION = /^v(\d+)\.(\d+)\.(\d+)$/;
const PAUSE_TAG = /^\d+\.\d+(\.\d+)?$/;
const SHA256 = /^[0-9a-f]{64}$/;
const FLAVOR_OR_NAME = /^[^\s'"]{1,255}$/;
const IMAGE_REF = /^[a-z0-9]+([._/:@-][a-zA-Z0-9_.-]+)*$/;

/** Parses and validates; throws InvalidInputError listing every problem at once. */
export function parseClusterSpec(sources: SpecSources): ClusterSpec {
  const problems: FieldProblem[] = [];
  const flags = sources.flags ?? {};
  const env = sources.env ?? {};
  const fileValues = flattenFile(sources.file, sources.fileName ?? 'config file', problems);

  const raw = new Map<string, unknown>();
  const where = new Map<string, string>();
  for (const f of SPEC_FIELDS) {
    const envName = envNameOf(f.flag);
    if (flags[f.flag] !== undefined) {
      raw.set(f.path, flags[f.flag]);
      where.set(f.path, `--${f.flag}`);
    } else if (env[envName] !== undefined && env[envName] !== '') {
      raw.set(f.path, env[envName]);
      where.set(f.path, envName);
    } else if (fileValues.has(f.path)) {
      raw.set(f.path, fileValues.get(f.path));
      where.set(f.path, f.path);
    } else {
      raw.set(f.path, f.default);
      where.set(f.path, f.path);
    }
  }
  for (const key of Object.keys(flags)) {
    if (flags[key] !== undefined && !SPEC_FIELDS.some((f) => f.flag === key)) {
      problems.push({ field: `--${key}`, value: flags[key], message: 'is not a cluster spec option', fix: 'run with --help to list the options' });
    }
  }

  const values = new Map<string, unknown>();
  for (const f of SPEC_FIELDS) {
    const v = coerce(f, raw.get(f.path), where.get(f.path)!, problems);
    values.set(f.path, v);
  }
  const get = <T>(path: string) => values.get(path) as T;
  const at = (path: string) => where.get(path)!;
  const bad = (path: string, message: string, fix: string) => problems.push({ field: at(path), value: raw.get(path), message, fix });

  const name = get<string | undefined>('name');
  if (name !== undefined && !DNS_LABEL.test(name)) {
    bad('name', 'must be a DNS label: lowercase letters, digits and dashes, starting with a letter, at most 32 characters', 'for example --name prod-k8s');
  }
  const masters = get<number | undefined>('masters');
  if (masters !== undefined && !(MASTER_COUNTS as readonly number[]).includes(masters)) {
    bad('masters', 'must be 1, 3 or 5 (etcd needs an odd number of members to keep a quorum)', `use --masters ${masters > 5 ? 5 : masters % 2 === 0 ? masters + 1 : 1}`);
  }
  const minions = get<number | undefined>('minions');
  if (minions !== undefined && (minions < 0 || minions > MAX_MINIONS)) {
    bad('minions', `must be between 0 and ${MAX_MINIONS}`, `use a count from 0 to ${MAX_MINIONS}; scale further with more clusters`);
  }
  const overlords = get<number | undefined>('overlords');
  if (overlords !== undefined && (overlords < MIN_OVERLORDS || overlords > MAX_OVERLORDS)) {
    bad('overlords', `must be between ${MIN_OVERLORDS} and ${MAX_OVERLORDS} (one bootstrap overlord plus standbys)`, `use --overlords ${overlords < MIN_OVERLORDS ? MIN_OVERLORDS : MAX_OVERLORDS}; 3 survives the loss of any one overlord server`);
  }
  const os = get<string | undefined>('os');
  if (os !== undefined && !(OS_PROFILES as readonly string[]).includes(os)) {
    bad('os', `must be one of ${OS_PROFILES.join(', ')}`, 'use --os flatcar (Flatcar Container Linux) or --os ubuntu');
  }
  const lb = get<string | undefined>('apiLoadBalancer');
  if (lb !== undefined && !(API_LOAD_BALANCERS as readonly string[]).includes(lb)) {
    bad('apiLoadBalancer', `must be one of ${API_LOAD_BALANCERS.join(', ')}`, 'use octavia (an OpenStack load balancer in front of the masters) or none (nodes use the first master)');
  }

  for (const [path, label] of [
    ['versions.kubernetes', 'Kubernetes'],
    ['versions.etcd', 'etcd'],
    ['versions.flannel', 'flannel'],
    ['versions.containerd', 'containerd'],
    ['versions.runc', 'runc'],
    ['versions.cniPlugins', 'CNI plugins'],
    ['versions.coredns', 'CoreDNS'],
  ] as const) {
    const v = get<string | undefined>(path);
    if (v === undefined) continue;
    const m = VERSION.exec(v);
    if (!m) {
      bad(path, `must be a release tag vMAJOR.MINOR.PATCH`, `for example ${SPEC_FIELDS.find((f) => f.path === path)!.default}`);
      continue;
    }
    if (path === 'versions.kubernetes' && !(KUBERNETES_MINORS as readonly string[]).includes(`${m[1]}.${m[2]}`)) {
      bad(path, `${label} ${m[1]}.${m[2]} is not supported; supported minors are ${KUBERNETES_MINORS.join(', ')}`, `use a v${KUBERNETES_MINORS.at(-1)}.x release`);
    }
    if (path === 'versions.etcd' && m[1] !== '3') bad(path, 'etcd must be a v3 release', 'use for example v3.6.17');
    if (path === 'versions.containerd' && m[1] !== '2') bad(path, 'containerd must be a v2 release (its config is version 3)', 'use for example v2.3.7');
  }
  const pause = get<string | undefined>('versions.pause');
  if (pause !== undefined && !PAUSE_TAG.test(pause)) bad('versions.pause', 'must be the pause image tag MAJOR.MINOR[.PATCH], without a v', 'for example 3.10.2');

  const cidrs = new Map<string, Cidr>();
  for (const path of ['network.privateCidr', 'network.podCidr', 'network.serviceCidr', 'network.adminCidr', 'network.nodePortCidr']) {
    const v = get<string | undefined>(path);
    if (v === undefined) continue;
    const c = parseCidr(v);
    if (isCidr(c)) cidrs.set(path, c);
    else bad(path, c.error, 'give an IPv4 network such as 10.240.0.0/16');
  }
  const internal = ['network.privateCidr', 'network.podCidr', 'network.serviceCidr'] as const;
  for (let i = 0; i < internal.length; i++) {
    for (let j = i + 1; j < internal.length; j++) {
      const a = cidrs.get(internal[i]!);
      const b = cidrs.get(internal[j]!);
      if (a && b && cidrsOverlap(a, b)) {
        bad(internal[j]!, `overlaps ${internal[i]} ${a.text}; machine, pod and service networks must be disjoint`, `pick a block outside ${a.text}`);
      }
    }
  }
  const priv = cidrs.get('network.privateCidr');
  const machines = (masters ?? 1) + (minions ?? 0);
  if (priv) {
    // Addresses .1–.31 are reserved (gateway, discovery, overlord); machines and standby overlords get the rest from DHCP.
    const room = cidrSize(priv) - RESERVED_HOSTS - 1;
    const standbys = Math.max((overlords ?? 1) - 1, 0);
    if (priv.prefix > 26) {
      bad('network.privateCidr', 'is too small for a cluster', 'use a /24 or larger');
    } else if (room < machines + standbys + 2) {
      bad('network.privateCidr', `holds ${Math.max(room, 0)} machine addresses, fewer than the ${machines} machines plus ${standbys > 0 ? `${standbys} standby overlords, ` : ''}overlord and discovery`, 'use a larger block, e.g. a /22 for 500 machines');
    }
  }
  const pod = cidrs.get('network.podCidr');
  const subnetLength = get<number | undefined>('network.podSubnetLength');
  if (subnetLength !== undefined && (subnetLength < 16 || subnetLength > 28)) {
    bad('network.podSubnetLength', 'must be between 16 and 28', 'use 24 (254 pods a machine)');
  } else if (pod && subnetLength !== undefined) {
    if (subnetLength <= pod.prefix) {
      bad('network.podCidr', `must be larger than one machine's /${subnetLength} pod subnet`, 'use a /16 or larger');
    } else {
      const subnets = 2 ** (subnetLength - pod.prefix);
      if (subnets < machines) {
        bad('network.podCidr', `holds ${subnets} /${subnetLength} pod subnets, fewer than the ${machines} machines`, `use a /${Math.max(8, subnetLength - Math.ceil(Math.log2(machines)))} or larger`);
      }
    }
  }
  const svc = cidrs.get('network.serviceCidr');
  if (svc && (svc.prefix < 12 || svc.prefix > 24)) {
    bad('network.serviceCidr', 'must be between a /12 and a /24 (kube-apiserver refuses more than 2^20 service IPs)', 'use 10.96.0.0/12');
  }
  const admin = cidrs.get('network.adminCidr');
  if (admin && admin.prefix === 0) {
    bad('network.adminCidr', 'opens SSH and the Kubernetes API to the whole Internet', 'give the network you administer from, e.g. 203.0.113.0/24');
  }
  const vxlan = get<number | undefined>('network.vxlanId');
  if (vxlan !== undefined && (vxlan < 1 || vxlan > 16777215)) bad('network.vxlanId', 'must be between 1 and 16777215', 'use 1');
  for (const ns of get<string[] | undefined>('network.dnsNameservers') ?? []) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(ns) || !isCidr(parseCidr(`${ns}/32`))) {
      bad('network.dnsNameservers', `${JSON.stringify(ns)} is not an IPv4 address`, 'give a comma-separated list such as 1.1.1.1,9.9.9.9');
    }
  }
  for (const path of ['network.externalNetwork', 'openstack.image', 'openstack.keyName', 'openstack.flavors.discovery', 'openstack.flavors.overlord', 'openstack.flavors.master', 'openstack.flavors.minion']) {
    const v = get<string | undefined>(path);
    if (v !== undefined && !FLAVOR_OR_NAME.test(v)) bad(path, 'must be a name or ID without spaces or quotes', 'use the name or ID shown by the openstack CLI');
  }
  const image = get<string | undefined>('overlord.image');
  if (image !== undefined && !IMAGE_REF.test(image)) bad('overlord.image', 'is not a container image reference', 'use for example corekube/overlord:0.1.0');
  const base = get<string | undefined>('releaseBaseUrl');
  if (base !== undefined && !isHttpUrl(base, { path: true })) {
    bad('releaseBaseUrl', 'must be an http(s) URL without a trailing slash', 'give your mirror\'s base URL (corekube mirror build), or leave it out for the upstream releases');
  }
  const digests = get<Record<string, string> | undefined>('releaseDigests');
  for (const [key, digest] of Object.entries(digests ?? {})) {
    if (!SHA256.test(digest)) bad('releaseDigests', `${JSON.stringify(key)} has ${JSON.stringify(digest)}, not a sha256 hex digest`, 'pass the corekube-mirror.json that corekube mirror build wrote, unchanged');
    else if (key.startsWith('/') || key.split('/').includes('..') || /\s/.test(key)) bad('releaseDigests', `${JSON.stringify(key)} is not a relative mirror path`, 'pass the corekube-mirror.json that corekube mirror build wrote, unchanged');
  }
  const registry = get<string | undefined>('registryMirror');
  if (registry !== undefined && !isHttpUrl(registry, { path: false })) {
    bad('registryMirror', 'must be an http(s) URL of a registry host, without a path', 'for example https://registry.example.com:5000');
  }

  if (problems.length > 0) throw new InvalidInputError('the cluster spec is invalid', problems);

  const spec: ClusterSpec = {
    name: get('name'),
    masters: get('masters'),
    minions: get('minions'),
    overlords: get('overlords'),
    os: get('os'),
    apiLoadBalancer: get<ApiLoadBalancer | undefined>('apiLoadBalancer') ?? (get<number>('masters') > 1 ? 'octavia' : 'none'),
    versions: {
      kubernetes: get('versions.kubernetes'),
      etcd: get('versions.etcd'),
      flannel: get('versions.flannel'),
      containerd: get('versions.containerd'),
      runc: get('versions.runc'),
      cniPlugins: get('versions.cniPlugins'),
      coredns: get('versions.coredns'),
      pause: get('versions.pause'),
    },
    network: {
      privateCidr: get('network.privateCidr'),
      podCidr: get('network.podCidr'),
      serviceCidr: get('network.serviceCidr'),
      adminCidr: get<string | undefined>('network.adminCidr') ?? get('network.privateCidr'),
      nodePortCidr: get('network.nodePortCidr'),
      externalNetwork: get('network.externalNetwork'),
      dnsNameservers: get('network.dnsNameservers'),
      podSubnetLength: get('network.podSubnetLength'),
      vxlanId: get('network.vxlanId'),
    },
    openstack: {
      image: get('openstack.image'),
      keyName: get('openstack.keyName'),
      flavors: {
        discovery: get('openstack.flavors.discovery'),
        overlord: get('openstack.flavors.overlord'),
        master: get('openstack.flavors.master'),
        minion: get('openstack.flavors.minion'),
      },
    },
    overlord: { image: get('overlord.image') },
    releaseBaseUrl: get('releaseBaseUrl'),
    releaseDigests: { ...(get<Record<string, string> | undefined>('releaseDigests') ?? {}) },
    registryMirror: get('registryMirror'),
  };
  return deepFreeze(spec);
}

/** Addresses .0–.31 of the private network are kept out of DHCP: .1 gateway, see `addressPlan`. */
export const RESERVED_HOSTS = 32;

function coerce(f: Field, v: unknown, where: string, problems: FieldProblem[]): unknown {
  if (v === undefined || v === null) return undefined;
  switch (f.kind) {
    case 'string':
      if (typeof v === 'string' && v.trim() !== '') return v.trim();
      if (typeof v === 'number') return String(v);
      problems.push({ field: where, value: v, message: 'must be a non-empty string', fix: `set ${f.path} to a value like ${JSON.stringify(f.default ?? 'name')}` });
      return undefined;
    case 'int': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : NaN;
      if (Number.isInteger(n)) return n;
      problems.push({ field: where, value: v, message: 'must be a whole number', fix: `for example ${f.default}` });
      return undefined;
    }
    case 'list':
      if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
      if (typeof v === 'string') return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
      problems.push({ field: where, value: v, message: 'must be a list of strings', fix: 'give a YAML list or a comma-separated string' });
      return undefined;
    case 'digests': {
      const d = digestMap(v);
      if (d) return d;
      problems.push({ field: where, value: typeof v === 'string' ? v : '(not a digest map)', message: 'must be a map of mirror paths to sha256 digests, or the corekube-mirror.json of corekube mirror build', fix: 'pass the file corekube mirror build wrote (--release-digests DIR/corekube-mirror.json)' });
      return undefined;
    }
  }
}

/**
 * A digest map from either form a user has: `{ "<mirror path>": "<hex>" }` (cluster.yaml, overlord.yaml) or
 * a mirror manifest (`{ artifacts: [{ path, sha256 }] }`, release/mirror-manifest.ts). undefined if neither.
 */
function digestMap(v: unknown): Record<string, string> | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if (Array.isArray(o.artifacts)) {
    const out: Record<string, string> = {};
    for (const a of o.artifacts as unknown[]) {
      const e = a as Record<string, unknown> | null;
      if (!e || typeof e.path !== 'string' || typeof e.sha256 !== 'string') return undefined;
      out[e.path] = e.sha256;
    }
    return out;
  }
  if (Object.values(o).every((x) => typeof x === 'string')) return { ...(o as Record<string, string>) };
  return undefined;
}

function isHttpUrl(text: string, options: { path: boolean }): boolean {
  try {
    const u = new URL(text);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return false;
    if (text.endsWith('/') || u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') return false;
    return options.path || u.pathname === '/';
  } catch {
    return false;
  }
}

/** Flattens the YAML file into dotted paths, reporting unknown and misplaced keys. */
function flattenFile(file: unknown, fileName: string, problems: FieldProblem[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  if (file === undefined || file === null) return out;
  const known = new Set(SPEC_FIELDS.map((f) => f.path));
  const prefixes = new Set(SPEC_FIELDS.flatMap((f) => f.path.split('.').slice(0, -1).map((_, i, a) => a.slice(0, i + 1).join('.'))));
  const walk = (node: unknown, path: string) => {
    if (node !== null && typeof node === 'object' && !Array.isArray(node) && (path === '' || prefixes.has(path))) {
      for (const [k, v] of Object.entries(node)) walk(v, path === '' ? k : `${path}.${k}`);
      return;
    }
    if (known.has(path)) {
      out.set(path, node);
      return;
    }
    const near = [...known].find((k) => k.toLowerCase().replace(/[^a-z]/g, '') === path.toLowerCase().replace(/[^a-z]/g, ''));
    problems.push({
      field: `${fileName}: ${path || '(top level)'}`,
      value: node,
      message: path === '' ? 'must be a mapping of cluster settings' : 'is not a cluster spec field',
      fix: near ? `did you mean ${near}?` : `known fields: ${[...known].join(', ')}`,
    });
  };
  walk(file, '');
  return out;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
