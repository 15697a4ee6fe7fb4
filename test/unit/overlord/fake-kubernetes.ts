/**
 * An in-memory KubernetesApi (overlord/kubernetes/api.ts) for UNIT tests of the overlord's Kubernetes side: Nodes
 * that a test registers and makes Ready, JSON merge patches of a Node's labels and podCIDR, failures a test
 * queues. The real API server is exercised by the local cloud's e2e test.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { CorekubeError } from '../../../core/errors.ts';
import type { DeploymentView, EvictionResult, KubernetesApi, NodeView, PodView } from '../../../overlord/kubernetes/api.ts';

export interface FakeNode {
  name: string;
  ready: boolean;
  readyReason: string;
  podCIDR: string | undefined;
  labels: Record<string, string>;
  kubeletVersion: string;
  unschedulable?: boolean;
}

/** A pod on a Node; `budget`: evictions refused (429) while it is true, as a PodDisruptionBudget would. */
export interface FakePod extends PodView {
  node: string;
  budget?: boolean;
}

export class FakeKubernetesApi implements KubernetesApi {
  readonly nodes = new Map<string, FakeNode>();
  readonly patches: { name: string; patch: object }[] = [];
  readonly applied: KubernetesObject[] = [];
  readonly deployments = new Map<string, DeploymentView>();
  readonly pods: FakePod[] = [];
  readonly evictions: string[] = [];
  /** evicted pods disappear at once (a live kubelet); false: they stay terminating (a dead machine) */
  podsTerminate = true;
  /** errors the next calls throw, in order (then the calls work again) */
  readonly failures: CorekubeError[] = [];
  calls = 0;
  readonly server = 'https://10.240.0.33:6443';
  /** called after each patch: a test's kubelet reacting (e.g. Ready once it has a podCIDR) */
  onPatch: (node: FakeNode) => void = () => undefined;

  register(name: string, fields: Partial<FakeNode> = {}): FakeNode {
    const node: FakeNode = { name, ready: false, readyReason: 'KubeletNotReady: container runtime network not ready', podCIDR: undefined, labels: { 'kubernetes.io/hostname': name }, kubeletVersion: 'v1.36.5', ...fields };
    this.nodes.set(name, node);
    return node;
  }

  private call(): void {
    this.calls++;
    const e = this.failures.shift();
    if (e) throw e;
  }

  async ready(): Promise<boolean> {
    this.call();
    return true;
  }

  async apply(objects: readonly KubernetesObject[]): Promise<void> {
    this.call();
    this.applied.push(...objects);
  }

  async node(name: string): Promise<NodeView | undefined> {
    this.call();
    const n = this.nodes.get(name);
    return n ? view(n) : undefined;
  }

  async listNodes(): Promise<NodeView[]> {
    this.call();
    return [...this.nodes.values()].map(view);
  }

  async patchNode(name: string, patch: object): Promise<NodeView> {
    this.call();
    const n = this.nodes.get(name);
    if (!n) throw new CorekubeError('E_KUBERNETES', `patch node ${name} at ${this.server} failed (404): nodes "${name}" not found`);
    this.patches.push({ name, patch });
    const p = patch as { metadata?: { labels?: Record<string, string> }; spec?: { podCIDR?: string } };
    Object.assign(n.labels, p.metadata?.labels ?? {});
    const unschedulable = (patch as { spec?: { unschedulable?: boolean } }).spec?.unschedulable;
    if (unschedulable !== undefined) n.unschedulable = unschedulable;
    if (p.spec?.podCIDR !== undefined) n.podCIDR = p.spec.podCIDR;
    this.onPatch(n);
    return view(n);
  }

  async podsOnNode(node: string): Promise<PodView[]> {
    this.call();
    return this.pods.filter((p) => p.node === node).map((p) => ({ ...p }));
  }

  async evict(namespace: string, name: string): Promise<EvictionResult> {
    this.call();
    const i = this.pods.findIndex((p) => p.namespace === namespace && p.name === name);
    if (i < 0) return 'gone';
    if (this.pods[i]!.budget) return 'blocked';
    this.evictions.push(`${namespace}/${name}`);
    if (this.podsTerminate) this.pods.splice(i, 1);
    else this.pods[i] = { ...this.pods[i]!, terminating: true };
    return 'evicted';
  }

  async deleteNode(name: string): Promise<boolean> {
    this.call();
    for (let i = this.pods.length - 1; i >= 0; i--) if (this.pods[i]!.node === name) this.pods.splice(i, 1);
    return this.nodes.delete(name);
  }

  async deployment(namespace: string, name: string): Promise<DeploymentView | undefined> {
    this.call();
    return this.deployments.get(`${namespace}/${name}`);
  }
}

function view(n: FakeNode): NodeView {
  return Object.freeze({
    name: n.name,
    ready: n.ready,
    readyReason: n.ready ? '' : n.readyReason,
    podCIDR: n.podCIDR,
    labels: Object.freeze({ ...n.labels }),
    kubeletVersion: n.kubeletVersion,
    internalIp: undefined,
    unschedulable: n.unschedulable === true,
  });
}

/** Runs `promise` to its end, firing the fake clock's timers while it waits. */
export async function drive<T>(promise: Promise<T>, clock: { next(): Promise<boolean> }): Promise<T> {
  let settled = false;
  const watched = promise.finally(() => {
    settled = true;
  });
  watched.catch(() => undefined);
  while (!settled) {
    if (!(await clock.next()) && !settled) await new Promise<void>((r) => setImmediate(r));
  }
  return watched;
}
