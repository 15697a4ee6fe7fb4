/**
 * The `node-ready` step of a machine that runs a kubelet: its Node must register, get its pod network and
 * become Ready — else the machine is not deployed, whatever its units say. The overlord gives the Node what
 * only the cluster knows: `spec.podCIDR`, the flannel subnet it reserved for that machine (the controller
 * manager allocates none: flannel's reservations are the pod network's one allocator), and its role label
 * (kubelets may not set `node-role.kubernetes.io/*` labels themselves: NodeRestriction). Idempotent: a Node
 * already Ready, labelled and with that CIDR costs one read.
 *
 * A Node that does not become Ready within the timeout fails the step with the Ready condition and the
 * kubelet's last journal lines (retryable: the reconciler tries again with backoff, and the machine shows
 * `failed` with that reason meanwhile). A Node whose podCIDR differs from its flannel subnet is a terminal
 * failure: the two allocations disagree and only an operator can say which is right.
 */
import { DEFAULT_DRAIN, drainNode } from './drain.ts';
import { CorekubeError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import type { HostRunner, HostTarget } from '../edges/host-runner.ts';
import * as remote from '../edges/remote-commands.ts';
import type { KubernetesApi, NodeView } from './api.ts';

export const ROLE_LABEL = 'node-role.kubernetes.io/minion';

export interface NodeReadinessPorts {
  readonly api: KubernetesApi;
  readonly hosts: HostRunner;
  readonly clock: Clock;
  /** the pod subnet (CIDR) reserved for a machine, or undefined */
  podCidrOf(machineId: string): Promise<string | undefined>;
}

export interface NodeReadinessOptions {
  readonly remote: remote.RemoteContext;
  /** how long the Node may take to register and become Ready */
  readonly timeoutMs: number;
  readonly pollMs: number;
  /** a drain's timeout and poll (default DEFAULT_DRAIN) */
  readonly drain?: { readonly timeoutMs: number; readonly pollMs: number };
}

export const DEFAULT_NODE_READINESS = Object.freeze({ timeoutMs: 180_000, pollMs: 1_000 });

export interface NodeReadiness {
  ensureReady(target: HostTarget, node: string, signal?: AbortSignal): Promise<{ changed: boolean }>;
  /** cordons the Node and drains it (kubernetes/drain.ts): a minion's change starts with it; no Node: nothing to do */
  drain(node: string, signal?: AbortSignal): Promise<{ changed: boolean }>;
  /** makes the Node schedulable again: a minion's change ends with it */
  uncordon(node: string): Promise<{ changed: boolean }>;
}

/** PURE: what a Node lacks of what the overlord gives it (a merge patch), or undefined when nothing. */
export function nodePatch(node: NodeView, podCidr: string): object | undefined {
  const patch: { metadata?: object; spec?: object } = {};
  if (node.podCIDR === undefined || node.podCIDR === '') patch.spec = { podCIDR: podCidr, podCIDRs: [podCidr] };
  if (node.labels[ROLE_LABEL] === undefined) patch.metadata = { labels: { [ROLE_LABEL]: '' } };
  return Object.keys(patch).length > 0 ? patch : undefined;
}

export function createNodeReadiness(ports: NodeReadinessPorts, options: NodeReadinessOptions): NodeReadiness {
  return {
    async drain(name, signal) {
      const node = await ports.api.node(name);
      if (!node) return { changed: false };
      if (!node.unschedulable) await ports.api.patchNode(name, { spec: { unschedulable: true } });
      const r = await drainNode(ports.api, ports.clock, name, { ...DEFAULT_DRAIN, ...options.drain, machineGone: false }, signal);
      return { changed: !node.unschedulable || r.evicted.length > 0 };
    },
    async uncordon(name) {
      const node = await ports.api.node(name);
      if (!node?.unschedulable) return { changed: false };
      await ports.api.patchNode(name, { spec: { unschedulable: false } });
      return { changed: true };
    },
    async ensureReady(target, name, signal) {
      const deadline = ports.clock.now() + options.timeoutMs;
      const podCidr = await ports.podCidrOf(target.id);
      if (podCidr === undefined) {
        throw new CorekubeError('E_INTERNAL', `machine ${target.id} holds no pod subnet, so its Node ${name} cannot get one`, { hint: 'the overlord reserves one before the machine\'s steps: it is retried', retryable: true });
      }
      let changed = false;
      let seen: NodeView | undefined;
      let lastError: CorekubeError | undefined;
      for (;;) {
        signal?.throwIfAborted();
        try {
          const node = await ports.api.node(name);
          seen = node;
          lastError = undefined;
          if (node) {
            if (node.podCIDR && node.podCIDR !== podCidr) {
              throw new CorekubeError('E_NODE_NOT_READY', `Node ${name} has podCIDR ${node.podCIDR}, but the flannel subnet of its machine is ${podCidr}`, {
                hint: `its pods would get addresses flannel does not route: delete the Node (kubectl delete node ${name}) and restart its kubelet`,
              });
            }
            const patch = nodePatch(node, podCidr);
            const current = patch ? await ports.api.patchNode(name, patch) : node;
            changed ||= patch !== undefined;
            seen = current;
            if (current.ready) return { changed };
          }
        } catch (err) {
          if (!(err instanceof CorekubeError) || !err.retryable) throw err;
          lastError = err;
        }
        if (ports.clock.now() >= deadline) break;
        await ports.clock.sleep(options.pollMs, signal);
      }
      const why = lastError
        ? `the API server did not answer: ${lastError.message}`
        : seen
          ? `it is not Ready (${seen.readyReason || 'no reason given'})`
          : 'the kubelet never registered it';
      const journal = await kubeletJournal(ports.hosts, target, options.remote);
      throw new CorekubeError('E_NODE_NOT_READY', `Node ${name} of ${target.ip} is not Ready after ${Math.round(options.timeoutMs / 1000)} s: ${why}${journal}`, {
        hint: `run 'journalctl -u kubelet' on ${target.ip} and 'kubectl describe node ${name}'`,
        retryable: true,
      });
    },
  };
}

async function kubeletJournal(hosts: HostRunner, target: HostTarget, ctx: remote.RemoteContext): Promise<string> {
  try {
    const res = await hosts.exec(target, remote.journalExcerpt(ctx, 'kubelet.service', 20), { timeoutMs: 20_000 });
    const text = res.stdout.trimEnd();
    return res.code === 0 && text !== '' ? `\nlast journal lines of kubelet.service:\n${text}` : '';
  } catch {
    return '';
  }
}
