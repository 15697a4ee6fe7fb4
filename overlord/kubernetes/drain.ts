import type { Clock } from '../../core/clock.ts';
import { CorekubeError } from '../../core/errors.ts';
import type { KubernetesApi, PodView } from './api.ts';

/**
 * Cordon and drain a Node the way `kubectl drain --ignore-daemonsets` does: the Node marked unschedulable, then
 * every pod on it evicted through the Eviction API — so the API server enforces PodDisruptionBudgets — except
 * the ones a drain leaves (DaemonSet pods, which would come back at once, static pods' mirrors, finished pods).
 * A blocked eviction (429: a budget allows no disruption now) is asked again until `timeoutMs`, which ends in
 * E_DRAIN_TIMEOUT naming the pods still there — never an endless wait.
 *
 * `machineGone`: the machine is powered off or deleted (Heat removed its server). Its pods run nowhere, and
 * its kubelet will never confirm their termination: they are evicted once (budgets still asked) and the drain
 * ends without waiting; deleting the Node then lets the pod garbage collector remove them, and their
 * controllers start them elsewhere.
 */
export interface DrainOptions {
  readonly timeoutMs: number;
  readonly pollMs: number;
  readonly machineGone: boolean;
}

export const DEFAULT_DRAIN: Omit<DrainOptions, 'machineGone'> = { timeoutMs: 300_000, pollMs: 2000 };

export interface DrainResult {
  /** pods evicted (or gone by themselves) */
  readonly evicted: readonly string[];
  /** pods a drain leaves where they are (DaemonSet, mirror) */
  readonly left: readonly string[];
  /** machineGone only: pods whose eviction a budget refused, left to the pod garbage collector */
  readonly blocked: readonly string[];
}

/** PURE: the pods a drain evicts. */
export function podsToEvict(pods: readonly PodView[]): { readonly evict: readonly PodView[]; readonly left: readonly PodView[] } {
  const left = pods.filter((p) => p.mirror || p.controllers.includes('DaemonSet'));
  const evict = pods.filter((p) => !left.includes(p) && !p.finished);
  return { evict, left };
}

const podName = (p: PodView) => `${p.namespace}/${p.name}`;

export async function drainNode(api: KubernetesApi, clock: Clock, node: string, options: DrainOptions, signal?: AbortSignal): Promise<DrainResult> {
  const deadline = clock.now() + options.timeoutMs;
  const evicted = new Set<string>();
  let left: readonly PodView[] = [];
  for (;;) {
    signal?.throwIfAborted();
    const pods = podsToEvict(await api.podsOnNode(node));
    left = pods.left;
    const blocked: PodView[] = [];
    let waiting = 0;
    for (const pod of pods.evict) {
      if (pod.terminating) {
        waiting++;
        continue;
      }
      const answer = await api.evict(pod.namespace, pod.name);
      if (answer === 'blocked') blocked.push(pod);
      else {
        evicted.add(podName(pod));
        if (answer === 'evicted') waiting++;
      }
    }
    if (options.machineGone) return { evicted: [...evicted], left: left.map(podName), blocked: blocked.map(podName) };
    if (blocked.length === 0 && waiting === 0) return { evicted: [...evicted], left: left.map(podName), blocked: [] };
    if (clock.now() >= deadline) {
      const stuck = [...blocked.map((p) => `${podName(p)} (eviction refused: a PodDisruptionBudget allows no disruption)`), ...pods.evict.filter((p) => !blocked.includes(p)).map((p) => `${podName(p)} (still terminating)`)];
      throw new CorekubeError('E_DRAIN_TIMEOUT', `draining Node ${node} did not finish in ${Math.round(options.timeoutMs / 1000)} s: ${stuck.slice(0, 5).join(', ')}${stuck.length > 5 ? ` and ${stuck.length - 5} more` : ''}`, {
        hint: `see \`kubectl get pdb -A\` and \`kubectl get pods -A --field-selector spec.nodeName=${node}\`: scale the workload up or relax its budget; the removal is tried again`,
        retryable: true,
      });
    }
    await clock.sleep(options.pollMs, signal);
  }
}
