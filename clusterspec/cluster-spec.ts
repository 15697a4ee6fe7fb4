import { InvalidInputError, type FieldProblem } from '../core/errors.ts';
import { checkSpec, SpecValues } from './checks.ts';
import type { ApiLoadBalancer, CloudProvider, OsProfile } from './fields.ts';
import { gather, type SpecSources } from './sources.ts';

/**
 * The cluster spec: every choice a user makes about a cluster, parsed once from flags, env and a YAML
 * file into a frozen, validated value. Nothing else in corekube reads flags, env or the config file.
 */
export interface ClusterSpec {
  readonly name: string;
  readonly masters: 1 | 3 | 5;
  readonly minions: number;
  /** overlord servers: the bootstrap one plus `overlords - 1` standbys that take over when it is gone */
  readonly overlords: number;
  readonly os: OsProfile;
  /** the API endpoint (default: `octavia` with more than one master, `none` with one) */
  readonly apiLoadBalancer: ApiLoadBalancer;
  /** the OpenStack cloud controller manager and Cinder CSI as add-ons (`openstack`, the default), or `none` */
  readonly cloudProvider: CloudProvider;
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
  readonly certificates: {
    /** the overlord issues a machine's certificate again this many days before it expires, and rolls it out */
    readonly renewBeforeDays: number;
  };
  readonly rollout: {
    /** minions drained at once by a rolling change (an upgrade, renewed certificates): the rest keep serving */
    readonly maxUnavailable: number;
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

/**
 * `releaseBaseUrl` values that mean "each project's upstream home": dl.k8s.io is where corekube's earlier
 * default pointed (it hosts only Kubernetes; the other projects come from their GitHub releases).
 */
export const UPSTREAM_RELEASE_ALIASES = ['https://dl.k8s.io'] as const;

/** True when machines download from each project's upstream home rather than a corekube mirror. */
export function usesUpstreamReleases(spec: Pick<ClusterSpec, 'releaseBaseUrl'>): boolean {
  return spec.releaseBaseUrl === undefined || (UPSTREAM_RELEASE_ALIASES as readonly string[]).includes(spec.releaseBaseUrl);
}

/** Parses and validates; throws InvalidInputError listing every problem at once. */
export function parseClusterSpec(sources: SpecSources): ClusterSpec {
  const problems: FieldProblem[] = [];
  const v = new SpecValues(gather(sources, problems), problems);
  checkSpec(v);
  if (problems.length > 0) throw new InvalidInputError('the cluster spec is invalid', problems);
  const get = <T>(path: string) => v.get<T>(path);
  const spec: ClusterSpec = {
    name: get('name'),
    masters: get('masters'),
    minions: get('minions'),
    overlords: get('overlords'),
    os: get('os'),
    apiLoadBalancer: get<ApiLoadBalancer | undefined>('apiLoadBalancer') ?? (get<number>('masters') > 1 ? 'octavia' : 'none'),
    cloudProvider: get('cloudProvider'),
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
    certificates: { renewBeforeDays: get('certificates.renewBeforeDays') },
    rollout: { maxUnavailable: get('rollout.maxUnavailable') },
    releaseBaseUrl: get('releaseBaseUrl'),
    releaseDigests: { ...(get<Record<string, string> | undefined>('releaseDigests') ?? {}) },
    registryMirror: get('registryMirror'),
  };
  return deepFreeze(spec);
}


function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
