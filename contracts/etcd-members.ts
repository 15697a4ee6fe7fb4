import { parseIpv4 } from '../clusterspec/cidr.ts';

/**
 * The masters' etcd cluster as its members say it is, and the rules corekube keeps when it changes: PURE.
 * The overlord asks a running master's etcd (overlord/edges/etcd-members.ts, `etcdctl` over SSH) and decides here.
 *
 * - A master that joins a running cluster is added as a learner first (`member add --learner`: it does not vote, so
 *   the quorum is what it was while it starts and catches up), starts with `--initial-cluster-state=existing` and
 *   an initial cluster that is exactly the member list (etcd refuses any other: "member count is unequal"), and is
 *   promoted to a voting member once it runs (`member promote`, which etcd refuses until it has caught up).
 *   Masters of the initial cluster start with `new` and every master's address.
 * - A master is removed from etcd before it stops (`member remove`), never when that leaves etcd without quorum,
 *   and never the last member.
 *
 * Member names follow the masters' addresses (`etcd-10-240-0-20`, units/context.ts etcdMemberName), so a name is
 * derived from a member's peer URL — also for a member added but not started yet, which etcd lists without one.
 */
export interface EtcdMember {
  /** the member id in hex, as `etcdctl member promote|remove` take it */
  readonly id: string;
  /** empty for a member added but not started yet */
  readonly name: string;
  readonly peerUrls: readonly string[];
  readonly clientUrls: readonly string[];
  readonly isLearner: boolean;
}

/** One member's health (`etcdctl endpoint health --cluster`), by client URL. */
export interface EndpointHealth {
  readonly endpoint: string;
  readonly health: boolean;
}

/** Where the bootstrap values of a master's etcd are (its unit reads them with EnvironmentFile=). */
export const ETCD_BOOTSTRAP_ENV = '/etc/corekube/etcd/bootstrap.env';

/** `etcd-10-240-0-20` for a master at 10.240.0.20 (its etcd member name). */
export function etcdMemberName(ip: string): string {
  return `etcd-${ip.replace(/\./g, '-')}`;
}

/** The IPv4 host of a peer or client URL (`https://10.240.0.20:2380`), or undefined. */
export function urlHost(url: string): string | undefined {
  const m = /^https?:\/\/([0-9.]+):\d+\/?$/.exec(url);
  return m && parseIpv4(m[1]!) !== undefined ? m[1] : undefined;
}

/**
 * Parses `etcdctl member list -w json`; undefined when it is not that. Member ids are 64-bit numbers, more than a
 * JavaScript number holds: they are quoted before parsing and kept in hex, as etcdctl's other commands take them.
 * (`--hex` would print them as text, but its member list leaves out `isLearner`.)
 */
export function parseMemberList(stdout: string): EtcdMember[] | undefined {
  let v: { members?: unknown };
  try {
    v = JSON.parse(stdout.replace(/"(ID|cluster_id|member_id)":(\d{1,20})([,}])/g, '"$1":"$2"$3')) as { members?: unknown };
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || !Array.isArray(v.members)) return undefined;
  const out: EtcdMember[] = [];
  for (const m of v.members as Record<string, unknown>[]) {
    if (m === null || typeof m !== 'object' || typeof m.ID !== 'string' || !/^\d{1,20}$/.test(m.ID)) return undefined;
    const id = BigInt(m.ID);
    if (id >= 1n << 64n) return undefined;
    const strings = (x: unknown) => (Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string') : []);
    out.push(Object.freeze({ id: id.toString(16), name: typeof m.name === 'string' ? m.name : '', peerUrls: Object.freeze(strings(m.peerURLs)), clientUrls: Object.freeze(strings(m.clientURLs)), isLearner: m.isLearner === true }));
  }
  return out;
}

/** Parses `etcdctl endpoint health --cluster -w json`; undefined when it is not that. */
export function parseEndpointHealth(stdout: string): EndpointHealth[] | undefined {
  try {
    const v = JSON.parse(stdout) as unknown;
    if (!Array.isArray(v)) return undefined;
    return v.filter((e): e is { endpoint: string; health: boolean } => e !== null && typeof e === 'object' && typeof (e as { endpoint?: unknown }).endpoint === 'string').map((e) => ({ endpoint: e.endpoint, health: e.health === true }));
  } catch {
    return undefined;
  }
}

/** The member whose peer URLs include `peerUrl`. */
export function memberByPeerUrl(members: readonly EtcdMember[], peerUrl: string): EtcdMember | undefined {
  return members.find((m) => m.peerUrls.includes(peerUrl));
}

/**
 * `name=peerUrl,…` over the members, names derived from their addresses: what a joining member starts with
 * (exactly the member list, or etcd refuses it).
 */
export function initialClusterOf(members: readonly EtcdMember[]): string {
  return members
    .filter((m) => m.peerUrls.length > 0)
    .map((m) => {
      const url = m.peerUrls[0]!;
      const host = urlHost(url);
      return `${host === undefined ? m.name : etcdMemberName(host)}=${url}`;
    })
    .sort()
    .join(',');
}

/** The healthy members: their client URL answered a health check. An unstarted member has none. */
export function healthyMembers(members: readonly EtcdMember[], health: readonly EndpointHealth[]): EtcdMember[] {
  const up = new Set(health.filter((h) => h.health).map((h) => h.endpoint));
  return members.filter((m) => m.clientUrls.some((u) => up.has(u)));
}

/** Votes a cluster of `voters` members needs to commit anything. */
export function quorumOf(voters: number): number {
  return Math.floor(voters / 2) + 1;
}

/**
 * PURE: why removing the member at `peerUrl` must not happen now, or undefined when it may: it is the last
 * member, or the members left would not have a quorum of healthy voters (etcd would stop answering — the
 * Kubernetes API with it).
 */
export function removalProblem(members: readonly EtcdMember[], healthy: readonly EtcdMember[], peerUrl: string): string | undefined {
  const left = members.filter((m) => !m.peerUrls.includes(peerUrl) && !m.isLearner);
  if (left.length === 0) return 'it is the last etcd member: the cluster would have no store';
  const up = healthy.filter((m) => !m.peerUrls.includes(peerUrl) && !m.isLearner).length;
  const need = quorumOf(left.length);
  if (up < need) return `${up} of the ${left.length} members left would be healthy and etcd needs ${need} for a quorum: it would stop answering`;
  return undefined;
}

/**
 * PURE: why adding a member must wait, or undefined when it may. Members join as learners (they do not vote, so
 * the quorum does not change until one is promoted, caught up): etcd must have its quorum now, and no other
 * learner may be on its way (etcd takes one at a time).
 */
export function additionProblem(members: readonly EtcdMember[], healthy: readonly EtcdMember[]): string | undefined {
  const learner = members.find((m) => m.isLearner);
  if (learner) return `member ${learner.name || learner.peerUrls[0]} is still joining (a learner): one at a time`;
  const voters = members.filter((m) => !m.isLearner).length;
  const up = healthy.filter((m) => !m.isLearner).length;
  if (up < quorumOf(voters)) return `${up} of ${voters} members are healthy and etcd needs ${quorumOf(voters)} for a quorum: it cannot change its members`;
  return undefined;
}

/** The bootstrap values a master's etcd reads at its first start (ETCD_BOOTSTRAP_ENV; etcd reads ETCD_* variables). */
export function bootstrapEnv(state: 'new' | 'existing', initialCluster: string): string {
  if (!/^[A-Za-z0-9.:/=,-]+$/.test(initialCluster)) throw new Error(`initial cluster ${JSON.stringify(initialCluster)} holds characters an environment file cannot`);
  return [
    '# Written by the corekube overlord before this member first started; etcd reads it only then (once its data',
    '# directory exists, the member list in it is what counts).',
    `ETCD_INITIAL_CLUSTER_STATE=${state}`,
    `ETCD_INITIAL_CLUSTER=${initialCluster}`,
    '',
  ].join('\n');
}
