import {
  additionProblem,
  bootstrapEnv,
  etcdMemberName,
  healthyMembers,
  initialClusterOf,
  memberByPeerUrl,
  parseEndpointHealth,
  parseMemberList,
  removalProblem,
  urlHost,
  type EndpointHealth,
  type EtcdMember,
} from '../../contracts/etcd-members.ts';
import type { EtcdMemberSpec } from '../../contracts/step.ts';
import { CorekubeError } from '../../core/errors.ts';
import { PORTS } from '../../units/layout.ts';
import type { HostRunner, HostTarget } from './host-runner.ts';
import type { Logger } from './log.ts';
import { etcdctl, isDirectory, writeFile, type EtcdctlCommand, type RemoteContext } from './remote-commands.ts';

/**
 * The masters' etcd membership, changed through a running master (`etcdctl` over SSH, on its own client port): the
 * edge of contracts/etcd-members.ts. What a master's `etcd-member` step does before its etcd first starts, and the
 * `member` phase of a master's removal (overlord/lifecycle/removals.ts).
 */
export interface EtcdMembersPorts {
  readonly hosts: HostRunner;
  readonly log: Logger;
  /** the masters whose etcd runs (deployed, still announcing), in the order to ask them */
  readonly running: () => readonly HostTarget[];
}

export interface EtcdMembersOptions {
  readonly remote: RemoteContext;
  /** one etcdctl command (its own --command-timeout is 15 s) */
  readonly commandTimeoutMs?: number;
}

export class EtcdMembers {
  constructor(
    private readonly ports: EtcdMembersPorts,
    private readonly options: EtcdMembersOptions,
  ) {}

  /**
   * The `etcd-member` step: nothing when the member's data directory exists (etcd reads only that); else, with no
   * other master running, the initial cluster written (state new); else the member added to the running cluster
   * unless it is a member already (an added member that never started, a master of the initial cluster that
   * was slower than the others) and the member list written (state existing). Refused, retryably, while adding
   * a voting member would cost etcd its quorum.
   */
  async ensureMember(target: HostTarget, member: EtcdMemberSpec, signal?: AbortSignal): Promise<{ changed: boolean }> {
    const { hosts, log } = this.ports;
    const exists = await hosts.exec(target, isDirectory(this.options.remote, `${member.dataDir}/member`), this.execOptions(signal));
    if (exists.code === 0) return { changed: false };
    const peers = this.ports.running().filter((p) => p.id !== target.id);
    if (peers.length === 0) {
      await this.writeBootstrap(target, member, 'new', member.initialCluster, signal);
      return { changed: true };
    }
    let { via, members } = await this.list(peers, signal);
    const stale = memberByPeerUrl(members, member.peerUrl);
    if (stale && stale.name !== '') {
      // a member at this address ran before, and this machine has no data for it: the server was rebuilt (a new
      // disk) without its member removed — joining as that member with an empty log is not something etcd supports
      throw new CorekubeError('E_ETCD', `etcd still has member ${stale.name} (${stale.id}) at ${member.peerUrl}, from the machine this one replaced`, {
        hint: `remove the machine it replaced first (corekube node remove ${urlHost(member.peerUrl) ?? member.peerUrl}): this one joins by itself after`,
        retryable: true,
      });
    }
    if (!stale) {
      const health = await this.health(via, signal);
      const problem = additionProblem(members, healthyMembers(members, health));
      if (problem) {
        throw new CorekubeError('E_ETCD_QUORUM', `${member.name} cannot be added to etcd now: ${problem}`, {
          hint: 'it is added by itself once etcd can take it; a lost master is removed with corekube node remove',
          retryable: true,
        });
      }
      await this.run(via, { op: 'member-add', name: member.name, peerUrl: member.peerUrl }, signal);
      log.info({ event: 'etcd.member-added', member: member.name, peerUrl: member.peerUrl, via: via.ip, members: members.length + 1 }, `etcd member ${member.name} added as a learner (asked on ${via.ip}): ${members.length + 1} members`);
      members = (await this.list([via], signal)).members;
      if (!memberByPeerUrl(members, member.peerUrl)) throw new CorekubeError('E_ETCD', `etcd on ${via.ip} does not list ${member.name} after adding it`, { retryable: true });
    }
    await this.writeBootstrap(target, member, 'existing', initialClusterOf(members), signal);
    return { changed: true };
  }

  /**
   * The `etcd-promote` step, once the member runs: a learner promoted to a voting member; nothing for a voter (a
   * master of the initial cluster, or one promoted before). etcd refuses a learner that has not caught up yet: a
   * retryable failure, the step is tried again.
   */
  async promote(target: HostTarget, member: EtcdMemberSpec, signal?: AbortSignal): Promise<{ changed: boolean }> {
    // the others first: a learner answers no member list (etcd serves learners only serializable reads)
    const peers = [...this.ports.running().filter((p) => p.id !== target.id), target];
    const { via, members } = await this.list(peers, signal);
    const mine = memberByPeerUrl(members, member.peerUrl);
    if (!mine) throw new CorekubeError('E_ETCD', `etcd on ${via.ip} does not list ${member.name}: it was removed while it started`, { hint: 'the next deploy adds it again', retryable: true });
    if (!mine.isLearner) return { changed: false };
    await this.run(via, { op: 'member-promote', id: mine.id }, signal);
    this.ports.log.info({ event: 'etcd.member-promoted', member: member.name, id: mine.id, via: via.ip }, `etcd member ${member.name} promoted to a voting member`);
    return { changed: true };
  }

  /**
   * Removes the member of the master at `ip`, asked on a running master other than it: nothing when it is no
   * member; refused (E_REMOVAL_REFUSED, not retryable by itself) when it is the last member or when the members
   * left would have no quorum of healthy voters. Resolves with a short detail for the log.
   */
  async remove(ip: string, signal?: AbortSignal): Promise<string> {
    const peerUrl = `https://${ip}:${PORTS.etcdPeer}`;
    const peers = this.ports.running().filter((p) => p.ip !== ip);
    if (peers.length === 0) {
      throw new CorekubeError('E_REMOVAL_REFUSED', `no other master runs etcd: ${etcdMemberName(ip)} would be its last member`, {
        hint: 'a cluster keeps at least one master: bring another master up first (or delete the request: corekube node remove is taken back by deleting its key)',
      });
    }
    const { via, members } = await this.list(peers, signal);
    const found = memberByPeerUrl(members, peerUrl);
    if (!found) return 'it was no etcd member';
    const health = await this.health(via, signal);
    const problem = removalProblem(members, healthyMembers(members, health), peerUrl);
    if (problem) {
      throw new CorekubeError('E_REMOVAL_REFUSED', `removing etcd member ${etcdMemberName(ip)} now would break etcd: ${problem}`, {
        hint: 'bring the stopped masters back first; the removal goes on by itself once it is safe',
        retryable: true,
      });
    }
    await this.run(via, { op: 'member-remove', id: found.id }, signal);
    this.ports.log.info({ event: 'etcd.member-removed', member: etcdMemberName(ip), id: found.id, via: via.ip, members: members.length - 1 }, `etcd member ${etcdMemberName(ip)} removed (asked on ${via.ip}): ${members.length - 1} members`);
    return `etcd member ${found.id} removed, ${members.length - 1} left`;
  }

  /** The member list, from the first of `peers` that answers. */
  private async list(peers: readonly HostTarget[], signal?: AbortSignal): Promise<{ via: HostTarget; members: EtcdMember[] }> {
    const failures: string[] = [];
    for (const via of peers) {
      try {
        const out = await this.run(via, { op: 'member-list' }, signal);
        const members = parseMemberList(out);
        if (!members) throw new CorekubeError('E_ETCD', `etcdctl member list on ${via.ip} printed no member list`, { retryable: true });
        return { via, members };
      } catch (err) {
        if (signal?.aborted) throw err;
        failures.push(`${via.ip}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    throw new CorekubeError('E_ETCD', `no running master answered for the etcd member list (${failures.join('; ')})`, {
      hint: 'the masters must run etcd with a quorum: see `journalctl -u corekube-etcd` on them',
      retryable: true,
    });
  }

  private async health(via: HostTarget, signal?: AbortSignal): Promise<EndpointHealth[]> {
    // exits non-zero when a member is unhealthy: its JSON still says which
    const r = await this.ports.hosts.exec(via, etcdctl(this.options.remote, { op: 'endpoint-health' }), this.execOptions(signal));
    const health = parseEndpointHealth(r.stdout);
    if (!health) throw new CorekubeError('E_ETCD', `etcdctl endpoint health on ${via.ip} exited ${r.code}: ${etcdctlError(r.stderr)}`, { retryable: true });
    return health;
  }

  private async run(via: HostTarget, command: EtcdctlCommand, signal?: AbortSignal): Promise<string> {
    const r = await this.ports.hosts.exec(via, etcdctl(this.options.remote, command), this.execOptions(signal));
    if (r.code !== 0) {
      throw new CorekubeError('E_ETCD', `etcdctl ${command.op} on ${via.ip} exited ${r.code}: ${etcdctlError(r.stderr)}`, {
        hint: `see \`journalctl -u corekube-etcd\` on ${via.ip}`,
        retryable: true,
      });
    }
    return r.stdout;
  }

  private async writeBootstrap(target: HostTarget, member: EtcdMemberSpec, state: 'new' | 'existing', initialCluster: string, signal?: AbortSignal): Promise<void> {
    const { argv, stdin } = writeFile(this.options.remote, { path: member.bootstrapEnv, content: bootstrapEnv(state, initialCluster), mode: '0644' });
    const r = await this.ports.hosts.exec(target, argv, { stdin, ...this.execOptions(signal) });
    if (r.code !== 0) throw new CorekubeError('E_COMMAND_FAILED', `writing ${member.bootstrapEnv} on ${target.ip} exited ${r.code}: ${etcdctlError(r.stderr)}`, { retryable: true });
    this.ports.log.info({ event: 'etcd.bootstrap', machine: target.id, member: member.name, state, members: initialCluster.split(',').length }, `etcd member ${member.name} starts with state ${state}, ${initialCluster.split(',').length} members`);
  }

  private execOptions(signal?: AbortSignal): { timeoutMs: number; signal?: AbortSignal } {
    return { timeoutMs: this.options.commandTimeoutMs ?? 30_000, ...(signal ? { signal } : {}) };
  }
}

/** etcdctl's own error line: its last line that is not one of the client's JSON log lines. */
function etcdctlError(text: string): string {
  const lines = text.trim().split('\n').filter((l) => !l.startsWith('{"level"'));
  return (lines.at(-1) ?? '').slice(0, 300);
}
