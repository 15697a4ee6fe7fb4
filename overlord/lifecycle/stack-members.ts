import { memberIndex, MEMBERS_METADATA_KEY, OVERLORD_CHANNEL, parseStackMembers, parseStackVersions, VERSIONS_METADATA_KEY, type StackMembers, type StackVersions } from '../../contracts/overlord-channel.ts';
import type { Role } from '../../contracts/roles.ts';
import type { Clock } from '../../core/clock.ts';
import { asCorekubeError } from '../../core/errors.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { Removals } from './removals.ts';

/**
 * The stack's counts, followed (contracts/overlord-channel.ts): the leader reads overlord_channel's metadata every
 * `pollMs` and, when `minion_count` drops — `openstack stack update --existing --parameter minion_count=N` —
 * asks for the removal of every minion Heat named with an index the count no longer reaches (Heat's
 * ResourceGroup removes the highest indexes: `<cluster>-minion-<index>`, heat/servers.ts). Whether Heat has
 * deleted the server yet or not, the removal does the rest (lifecycle/removals.ts): drained while it is still up,
 * cleaned up once it is gone. A machine booted by hand (any other name) is never removed by a count, and a machine
 * that merely stopped announcing is never removed at all: only a count, or `corekube node remove`, does it.
 *
 * Masters are not removed by a count (etcd membership: refused with a warning), and a raised count needs nothing
 * here: the new servers boot and join.
 */
export interface StackMembersPorts {
  readonly read: () => Promise<Readonly<Record<string, unknown>>>;
  readonly clock: Clock;
  readonly log: Logger;
  /** the cluster's name: the prefix of the names Heat gives its servers */
  readonly cluster: string;
  /** every machine the overlord knows (the ledger's and the announced ones) */
  readonly machines: () => Iterable<{ readonly id: string; readonly role: Role; readonly hostname: string; readonly ip: string }>;
  readonly removals: Pick<Removals, 'request' | 'excluded' | 'refresh'>;
  /** the versions the stack asks for (lifecycle/desired-spec.ts offer); absent = versions are not followed */
  readonly offerVersions?: (versions: StackVersions) => Promise<boolean>;
}

/** PURE: the machines a count leaves out — minions Heat named with an index at or beyond `minionCount`. */
export function beyondCount<M extends { readonly role: Role; readonly hostname: string }>(cluster: string, members: StackMembers, machines: Iterable<M>): { readonly minions: M[]; readonly masters: M[] } {
  const minions: M[] = [];
  const masters: M[] = [];
  for (const m of machines) {
    const index = memberIndex(cluster, m.role, m.hostname);
    if (index === undefined) continue;
    if (m.role === 'minion' && index >= members.minionCount) minions.push(m);
    if (m.role === 'master' && index >= members.masterCount) masters.push(m);
  }
  return { minions, masters };
}

export const STACK_POLL_MS = 15_000;

/** Until the signal: the counts read every pollMs; removals asked for what they leave out. */
export async function followStackMembers(ports: StackMembersPorts, signal: AbortSignal, pollMs = STACK_POLL_MS): Promise<void> {
  const { log, clock } = ports;
  let last = '';
  let failure = '';
  let warnedMasters = '';
  while (!signal.aborted) {
    try {
      const metadata = await ports.read();
      const members = parseStackMembers(metadata[MEMBERS_METADATA_KEY], `the ${OVERLORD_CHANNEL} metadata`);
      failure = '';
      const metadataVersions = ports.offerVersions ? metadata[VERSIONS_METADATA_KEY] : undefined;
      if (ports.offerVersions && metadataVersions !== undefined) await ports.offerVersions(parseStackVersions(metadataVersions, `the ${OVERLORD_CHANNEL} metadata`));
      const seen = JSON.stringify(members);
      if (seen !== last) log.info({ event: 'stack.members', masterCount: members.masterCount, minionCount: members.minionCount }, `the stack counts ${members.masterCount} masters and ${members.minionCount} minions`);
      last = seen;
      // requests from `corekube node remove` are read here too (Removals.refresh: no watch of their own)
      await ports.removals.refresh();
      const out = beyondCount(ports.cluster, members, ports.machines());
      for (const m of out.minions) if (!ports.removals.excluded(m.id)) await ports.removals.request({ id: m.id, hostname: m.hostname, ip: m.ip, role: m.role, reason: 'stack' });
      const masters = out.masters.map((m) => m.hostname).sort().join(', ');
      if (masters && masters !== warnedMasters) log.warn({ event: 'stack.masters-not-removed', masters }, `the stack counts ${members.masterCount} masters but ${masters} ${out.masters.length === 1 ? 'is' : 'are'} deployed beyond it: masters are not removed by a count (Heat deletes them together, which can cost etcd its quorum); raise master_count back, and remove a master with corekube node remove, one at a time`);
      warnedMasters = masters;
    } catch (err) {
      if (signal.aborted) return;
      const e = asCorekubeError(err, 'E_HEAT');
      if (e.code === 'E_NOT_LEADER') throw e;
      if (e.message !== failure) log.warn({ event: 'stack.members-unread', ...errorFields(e) }, `reading the stack's counts failed: ${e.message}; tried again in ${Math.round(pollMs / 1000)} s`);
      failure = e.message;
    }
    try {
      await clock.sleep(pollMs, signal);
    } catch {
      return;
    }
  }
}
