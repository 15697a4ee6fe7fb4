/**
 * A lost master replaced, with the API asked through the load balancer every second throughout: the master at the
 * highest index is powered off (a power cut, as a lost server), removed from the cluster as `corekube node remove`
 * asks for it (its etcd member removed first, asked on another master), then its server rebuilt in place (Nova's
 * rebuild: a fresh disk, a new machine id, the same address and user_data) — the new machine announces, and the
 * overlord adds it to etcd as a learner, starts it with the member list, promotes it, and deploys the rest. Checked
 * from outside: etcd's member list on a surviving master (every member started, healthy, none a learner), the
 * surviving members' etcd never restarted, every request through the load balancer answered. What `corekube demo
 * --replace-master` runs.
 */
import { clusterKeys } from '../contracts/keys.ts';
import { healthyMembers, parseEndpointHealth, parseMemberList } from '../contracts/etcd-members.ts';
import { machineNamed, removalRequestFor } from '../overlord/lifecycle/removal-request.ts';
import { etcdctl } from '../overlord/edges/remote-commands.ts';
import type { LocalCloud } from './cloud.ts';
import type { Kubectl } from './cluster-checks.ts';

export interface MasterReplacement {
  readonly removed: { readonly name: string; readonly ip: string; readonly id: string };
  /** the rebuilt machine's new id, once deployed */
  readonly replacement: string | null;
  /** ms from the removal request to the tombstone; from the rebuild to the new master deployed */
  readonly removeMs: number | null;
  readonly replaceMs: number | null;
  /** etcd's members after, as a surviving master lists them */
  readonly etcdMembers: number;
  readonly etcdHealthy: number;
  readonly etcdLearners: number;
  /** a surviving master's etcd restarted during it (it must not: its unit does not change) */
  readonly survivorsRestarted: readonly string[];
  /** requests through the load balancer, one a second from the power cut to the end, and how many failed */
  readonly requests: number;
  readonly failedRequests: number;
  /** the longest run of failed requests (ms) */
  readonly apiUnavailableMs: number;
  readonly replaced: boolean;
}

export async function replaceMaster(cloud: LocalCloud, kubectl: Kubectl, options: { timeoutMs?: number; signal?: AbortSignal; say?: (line: string) => void } = {}): Promise<MasterReplacement> {
  const say = options.say ?? (() => undefined);
  const keys = clusterKeys(cloud.spec.name);
  const store = await cloud.store();
  const masters = [...(await cloud.ledger()).values()].filter((e) => e.role === 'master').sort((a, b) => a.hostname.localeCompare(b.hostname));
  if (masters.length < 3) throw new Error(`replacing a master needs at least three (found ${masters.length}): etcd keeps its quorum only then`);
  const lost = masters.at(-1)!;
  const survivors = masters.slice(0, -1);
  const etcdInvocation = async (hostname: string) => (await cloud.exec(hostname, ['systemctl', 'show', '-p', 'InvocationID', '--value', 'corekube-etcd.service'])).stdout.trim();
  const before = new Map(await Promise.all(survivors.map(async (m) => [m.hostname, await etcdInvocation(m.hostname)] as const)));

  // the API through the load balancer, every second, from the power cut to the end (a request in flight to the master
  // at the very moment it loses power dies with it — EOF — as it would on any cloud: counted are the ones after)
  let requests = 0;
  let failedRequests = 0;
  let apiUnavailableMs = 0;
  let failingSince: number | undefined;
  let probing = true;
  const probeLoop = async () => {
    while (probing) {
      const t = Date.now();
      const r = await kubectl.run(['get', '--raw', '/readyz', '--request-timeout=5s'], { timeoutMs: 8_000 }).catch(() => ({ code: 1, stdout: '', stderr: 'kubectl did not answer' }));
      requests++;
      if (r.code !== 0) {
        failedRequests++;
        failingSince ??= t;
        say(`[kubectl]   FAILED through the load balancer: ${r.stderr.trim().split('\n')[0]}`);
      } else if (failingSince !== undefined) {
        apiUnavailableMs = Math.max(apiUnavailableMs, Date.now() - failingSince);
        failingSince = undefined;
      }
      await new Promise((res) => setTimeout(res, Math.max(0, 1000 - (Date.now() - t))));
    }
  };
  let probe: Promise<void> = Promise.resolve();

  const deadline = Date.now() + (options.timeoutMs ?? 600_000);
  const until = async (what: string, done: () => Promise<boolean>): Promise<number | null> => {
    const t0 = Date.now();
    while (Date.now() < deadline) {
      options.signal?.throwIfAborted();
      if (await done()) return Date.now() - t0;
      await new Promise((r) => setTimeout(r, 1000));
    }
    say(`[cloud]     ${what}: not within the time given`);
    return null;
  };
  let removeMs: number | null = null;
  let replaceMs: number | null = null;
  let replacement: string | null = null;
  try {
    await cloud.stopMachine(lost.ip, 'SIGKILL');
    probe = probeLoop();
    say(`[cloud]     master loss: ${lost.hostname} (${lost.ip}) powered off (a power cut, as a lost server)`);
    const report = await cloud.status();
    const request = removalRequestFor(machineNamed(report, lost.ip), lost.hostname, new Date(), report);
    await store.put(keys.removalOf(lost.id), JSON.stringify(request), { expectModRevision: '0' });
    say(`[cloud]     corekube node remove ${lost.ip}: the overlord removes its etcd member (asked on another master), then its keys`);
    removeMs = await until('the removal', async () => (await store.get(keys.removedOf(lost.id))) !== null && (await store.get(keys.removalOf(lost.id))) === null);
    if (removeMs !== null) say(`[cloud]     ${lost.hostname} removed ${(removeMs / 1000).toFixed(1)} s after the request`);

    say(`[cloud]     rebuilding the server of ${lost.hostname} in place (Nova's rebuild: a fresh disk, a new machine id, the same address and user_data)`);
    const t0 = Date.now();
    await cloud.rebuildMachine(lost.ip);
    const deployed = await until('the replacement master', async () => {
      const now = await cloud.status();
      const m = now.machines.find((x) => x.ip === lost.ip && x.id !== lost.id && x.role === 'master' && x.state === 'deployed');
      replacement = m?.id ?? null;
      return m !== undefined;
    });
    replaceMs = deployed === null ? null : Date.now() - t0;
    if (replaceMs !== null) say(`[cloud]     the replacement master ${replacement!.slice(0, 12)} at ${lost.ip} deployed ${(replaceMs / 1000).toFixed(1)} s after the rebuild: added to etcd as a learner, started, promoted`);
    // a few more seconds of requests once the new member votes
    await new Promise((r) => setTimeout(r, 5_000));
  } finally {
    probing = false;
    await probe;
    if (failingSince !== undefined) apiUnavailableMs = Math.max(apiUnavailableMs, Date.now() - failingSince);
  }

  const asked = survivors[0]!.hostname;
  const list = parseMemberList((await cloud.exec(asked, [...etcdctl({ user: 'root' }, { op: 'member-list' })])).stdout) ?? [];
  const health = parseEndpointHealth((await cloud.exec(asked, [...etcdctl({ user: 'root' }, { op: 'endpoint-health' })])).stdout) ?? [];
  const healthy = healthyMembers(list, health).length;
  const learners = list.filter((m) => m.isLearner).length;
  const survivorsRestarted: string[] = [];
  for (const [hostname, id] of before) if ((await etcdInvocation(hostname)) !== id) survivorsRestarted.push(hostname);
  say(`[etcd]      ${list.length} members (${list.map((m) => `${m.name || '(unstarted)'}${m.isLearner ? ' learner' : ''}`).join(', ')}), ${healthy} healthy; the surviving members' etcd ${survivorsRestarted.length === 0 ? 'never restarted' : `restarted: ${survivorsRestarted.join(', ')}`}`);
  say(`[kubectl]   ${requests - failedRequests}/${requests} requests through the load balancer answered from the power cut to the end (longest outage ${(apiUnavailableMs / 1000).toFixed(1)} s)`);
  const replaced = replacement !== null && list.length === masters.length && healthy === masters.length && learners === 0 && survivorsRestarted.length === 0;
  return { removed: { name: lost.hostname, ip: lost.ip, id: lost.id }, replacement, removeMs, replaceMs, etcdMembers: list.length, etcdHealthy: healthy, etcdLearners: learners, survivorsRestarted, requests, failedRequests, apiUnavailableMs, replaced };
}
