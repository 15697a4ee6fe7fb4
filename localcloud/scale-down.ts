/**
 * One minion fewer through a Heat stack update, and whether the cluster forgot it: minion_count lowered by one
 * (Heat's ResourceGroup deletes the highest index, the local Nova powers its machine off), then the overlord —
 * which follows the stack's counts through overlord_channel — removes the machine (overlord/lifecycle/removals.ts).
 * Checked from outside, with the real kubectl and discovery's etcd as root: the Node gone, the pod subnet's
 * reservation and index gone, the machine's discovery user gone, its tombstone there. What `corekube demo
 * --scale-down` and the e2e test run.
 */
import { memberIndex } from '../contracts/overlord-channel.ts';
import { clusterKeys } from '../contracts/keys.ts';
import { machineUser } from '../overlord/trust/machine-credentials.ts';
import type { LocalCloud } from './cloud.ts';
import { nodeRows, type Kubectl } from './cluster-checks.ts';

export interface ScaleDown {
  /** the removed minion's name (its Node's) */
  readonly removed: string;
  readonly nodeGone: boolean;
  readonly subnetReleased: boolean;
  readonly discoveryUserGone: boolean;
  /** ms from the update request to UPDATE_COMPLETE, and to the overlord's tombstone */
  readonly updateMs: number;
  readonly removedMs: number | undefined;
  /** the other Nodes stayed Ready */
  readonly othersReady: boolean;
}

export async function scaleDownOne(cloud: LocalCloud, kubectl: Kubectl, options: { timeoutMs?: number; signal?: AbortSignal; say?: (line: string) => void } = {}): Promise<ScaleDown> {
  const say = options.say ?? (() => undefined);
  const keys = clusterKeys(cloud.spec.name);
  const store = await cloud.store();
  const minions = [...(await cloud.ledger()).values()].filter((e) => e.role === 'minion');
  const indexed = minions.map((e) => ({ e, index: memberIndex(cloud.spec.name, 'minion', e.hostname) })).filter((m) => m.index !== undefined);
  if (indexed.length < 2) throw new Error(`scaling down needs at least two minions Heat named (found ${indexed.length})`);
  const victim = indexed.reduce((a, b) => (b.index! > a.index! ? b : a)).e;
  const subnet = (await store.get(keys.subnetOf(victim.id)))?.value;
  say(`[cloud]     scaling down: stack update (PATCH) minion_count ${indexed.length} -> ${indexed.length - 1}: Heat deletes ${victim.hostname} (${victim.ip}, the highest index), the overlord removes it from the cluster`);
  const t0 = Date.now();
  await cloud.scaleMinions(indexed.length - 1, options.signal ? { signal: options.signal } : {});
  const updateMs = Date.now() - t0;
  const deadline = t0 + (options.timeoutMs ?? 180_000);
  let removedMs: number | undefined;
  while (Date.now() < deadline) {
    options.signal?.throwIfAborted();
    const [tomb, request] = await Promise.all([store.get(keys.removedOf(victim.id)), store.get(keys.removalOf(victim.id))]);
    if (tomb && !request) {
      removedMs = Date.now() - t0;
      break;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  const nodes = await nodeRows(kubectl);
  const nodeGone = !nodes.some((n) => n.name === victim.hostname);
  const index = await store.get(keys.subnetOf(victim.id));
  const lease = subnet ? await store.get(`${keys.network}subnets/${subnet}`) : null;
  const subnetReleased = subnet !== undefined && index === null && lease === null;
  const discoveryUserGone = !(await cloud.discoveryUsers()).includes(machineUser(victim.id));
  const othersReady = nodes.length > 0 && nodes.every((n) => n.ready);
  say(removedMs === undefined
    ? `[cloud]     ${victim.hostname} was not removed within ${Math.round((deadline - t0) / 1000)} s of the update request`
    : `[cloud]     ${victim.hostname} removed ${(removedMs / 1000).toFixed(1)} s after the update request (UPDATE_COMPLETE after ${(updateMs / 1000).toFixed(1)} s): Node ${nodeGone ? 'gone' : 'STILL THERE'}, subnet ${subnet?.replace('-', '/') ?? '-'} ${subnetReleased ? 'released' : 'STILL HELD'}, discovery user ${discoveryUserGone ? 'gone' : 'STILL THERE'}`);
  return { removed: victim.hostname, nodeGone, subnetReleased, discoveryUserGone, updateMs, removedMs, othersReady };
}
