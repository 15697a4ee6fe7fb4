/**
 * Each machine's Node as the API server sees it, kept in etcd for `corekube status` (which reads etcd only and
 * needs no credentials for the API): `<prefix>nodes/<machine id>` = NodeState. The leading overlord lists the
 * Nodes every `intervalMs` (from the API server's watch cache: resourceVersion 0) and writes a machine's state
 * only when it changed (Ready, its reason, podCIDR, kubelet version), fenced like the ledger. A Node is matched
 * to its machine by name: the kubelet registers as the machine's hostname.
 */
import { asCorekubeError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { Fence, Store } from '../edges/store.ts';
import type { KubernetesApi, NodeView } from './api.ts';

export interface NodeState {
  readonly name: string;
  readonly ready: boolean;
  /** why it is not Ready (empty when Ready) */
  readonly reason: string;
  readonly podCIDR: string | null;
  readonly kubeletVersion: string;
  /** when `ready` last changed (ISO 8601) */
  readonly since: string;
}

export const nodeStateKey = (keys: ClusterKeys, machineId: string) => `${keys.prefix}nodes/${machineId}`;

/** PURE: the state to record for a Node, keeping `since` while Ready has not changed. */
export function nodeState(node: NodeView, previous: NodeState | undefined, now: string): NodeState {
  const ready = node.ready;
  return Object.freeze({
    name: node.name,
    ready,
    reason: ready ? '' : node.readyReason,
    podCIDR: node.podCIDR ?? null,
    kubeletVersion: node.kubeletVersion,
    since: previous && previous.ready === ready ? previous.since : now,
  });
}

export function sameNodeState(a: NodeState | undefined, b: NodeState): boolean {
  return a !== undefined && a.name === b.name && a.ready === b.ready && a.reason === b.reason && a.podCIDR === b.podCIDR && a.kubeletVersion === b.kubeletVersion;
}

export interface NodeStatesPorts {
  readonly api: KubernetesApi;
  readonly store: Store;
  readonly keys: ClusterKeys;
  readonly clock: Clock;
  readonly log: Logger;
  readonly fence?: () => Fence | undefined;
  /** machine id by hostname, of the announced machines */
  machinesByHostname(): ReadonlyMap<string, string>;
  /** false while no API server can answer (no master deployed yet): the loop waits */
  apiKnown(): boolean;
}

/** Runs until `signal` aborts; never throws (a failed round is logged once and tried again). */
export async function recordNodeStates(ports: NodeStatesPorts, signal: AbortSignal, intervalMs = 10_000): Promise<void> {
  const known = new Map<string, NodeState>(await readNodeStates(ports.store, ports.keys).catch(() => new Map<string, NodeState>()));
  let failing = false;
  while (!signal.aborted) {
    if (ports.apiKnown()) {
      try {
        const nodes = await ports.api.listNodes();
        const byHost = ports.machinesByHostname();
        const now = new Date(ports.clock.now()).toISOString();
        for (const node of nodes) {
          const id = byHost.get(node.name);
          if (id === undefined) continue;
          const state = nodeState(node, known.get(id), now);
          if (sameNodeState(known.get(id), state)) continue;
          const fence = ports.fence?.();
          await ports.store.put(nodeStateKey(ports.keys, id), JSON.stringify(state), fence ? { fence } : {});
          if (known.get(id)?.ready !== state.ready) {
            ports.log.info({ event: 'node.state', machine: id, node: node.name, ready: state.ready, ...(state.reason ? { reason: state.reason } : {}) }, `Node ${node.name} ${state.ready ? 'Ready' : 'not Ready'}`);
          }
          known.set(id, state);
        }
        failing = false;
      } catch (err) {
        const e = asCorekubeError(err, 'E_KUBERNETES');
        if (e.code === 'E_NOT_LEADER') return;
        if (!failing) ports.log.warn({ event: 'node.states-failed', ...errorFields(e) }, 'reading the Nodes failed; trying again');
        failing = true;
      }
    }
    await ports.clock.sleep(intervalMs, signal).catch(() => undefined);
  }
}

/** The recorded Node states, by machine id. */
export async function readNodeStates(store: Store, keys: ClusterKeys): Promise<Map<string, NodeState>> {
  const prefix = `${keys.prefix}nodes/`;
  const out = new Map<string, NodeState>();
  for (const kv of (await store.list(prefix)).kvs) {
    try {
      const v = JSON.parse(kv.value) as NodeState;
      if (typeof v.name === 'string' && typeof v.ready === 'boolean') out.set(kv.key.slice(prefix.length), v);
    } catch {
      /* not a state: ignored */
    }
  }
  return out;
}
