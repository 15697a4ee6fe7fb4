import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { createNodeReadiness, nodePatch, ROLE_LABEL } from '../../../overlord/kubernetes/node-ready.ts';
import type { NodeView } from '../../../overlord/kubernetes/api.ts';
import { DEFAULT_EXECUTOR_OPTIONS, runStep } from '../../../overlord/deploy/executor.ts';
import type { ClusterView } from '../../../contracts/step.ts';
import { unitsForSpec } from '../../../overlord/deploy/machine-units.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { drive, FakeKubernetesApi } from './fake-kubernetes.ts';
import { FakeClock, FakeMachines, makeRecord } from './fakes.ts';

const SUBNET = '10.244.7.0/24';
const TIMEOUT_MS = 60_000;

const view = (fields: Partial<NodeView> = {}): NodeView => ({
  name: 'minion-10',
  ready: false,
  readyReason: '',
  podCIDR: undefined,
  labels: {},
  kubeletVersion: 'v1.36.5',
  internalIp: undefined,
  unschedulable: false,
  ...fields,
});

describe('nodePatch', () => {
  it('gives a Node without a pod CIDR its flannel subnet and a Node without the role label the label', () => {
    expect(nodePatch(view(), SUBNET)).toEqual({ spec: { podCIDR: SUBNET, podCIDRs: [SUBNET] }, metadata: { labels: { [ROLE_LABEL]: '' } } });
    expect(nodePatch(view({ podCIDR: '' }), SUBNET)).toEqual({ spec: { podCIDR: SUBNET, podCIDRs: [SUBNET] }, metadata: { labels: { [ROLE_LABEL]: '' } } });
  });

  it('adds only what is missing, and nothing to a Node that has both', () => {
    expect(nodePatch(view({ podCIDR: SUBNET }), SUBNET)).toEqual({ metadata: { labels: { [ROLE_LABEL]: '' } } });
    expect(nodePatch(view({ labels: { [ROLE_LABEL]: '' } }), SUBNET)).toEqual({ spec: { podCIDR: SUBNET, podCIDRs: [SUBNET] } });
    expect(nodePatch(view({ podCIDR: SUBNET, labels: { [ROLE_LABEL]: '' } }), SUBNET)).toBeUndefined();
  });

  it('never rewrites a pod CIDR a Node already has (the API server refuses changing it; the step reports it instead)', () => {
    expect(nodePatch(view({ podCIDR: '10.244.99.0/24', labels: { [ROLE_LABEL]: '' } }), SUBNET)).toBeUndefined();
  });
});

describe('the node-ready step', () => {
  const minion = makeRecord(10, 'minion');
  const target = { id: minion.id, ip: minion.ip };

  function world(subnet: string | null = SUBNET) {
    const clock = new FakeClock();
    const api = new FakeKubernetesApi();
    const hosts = new FakeMachines();
    const readiness = createNodeReadiness(
      { api, hosts, clock, podCidrOf: async (id) => (id === minion.id && subnet !== null ? subnet : undefined) },
      { remote: { user: 'corekube' }, timeoutMs: TIMEOUT_MS, pollMs: 1_000 },
    );
    const ensure = () => drive(readiness.ensureReady(target, minion.hostname), clock);
    return { clock, api, hosts, ensure };
  }

  async function failure(p: Promise<unknown>): Promise<CorekubeError> {
    const err = await p.then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(CorekubeError);
    return err as CorekubeError;
  }

  it('patches an empty podCIDR with the flannel subnet and the role label, then waits for Ready', async () => {
    const w = world();
    w.api.register(minion.hostname);
    // the kubelet becomes Ready once its Node has a pod CIDR (the bridge CNI config needs none, but kubelet's runtime status does)
    w.api.onPatch = (n) => {
      if (n.podCIDR) void w.clock.sleep(3_000).then(() => Object.assign(n, { ready: true }));
    };
    const start = w.clock.now();
    expect(await w.ensure()).toEqual({ changed: true });
    const node = w.api.nodes.get(minion.hostname)!;
    expect(node).toMatchObject({ podCIDR: SUBNET, ready: true });
    expect(node.labels[ROLE_LABEL]).toBe('');
    expect(w.api.patches).toEqual([{ name: minion.hostname, patch: { spec: { podCIDR: SUBNET, podCIDRs: [SUBNET] }, metadata: { labels: { [ROLE_LABEL]: '' } } } }]);
    expect(w.clock.now() - start).toBeGreaterThanOrEqual(3_000);
    expect(w.clock.now() - start).toBeLessThanOrEqual(4_000);
  });

  it('waits for a kubelet that registers its Node late', async () => {
    const w = world();
    void w.clock.sleep(10_000).then(() => w.api.register(minion.hostname, { ready: true }));
    expect(await w.ensure()).toEqual({ changed: true });
    expect(w.api.nodes.get(minion.hostname)?.podCIDR).toBe(SUBNET);
  });

  it('costs one read and changes nothing for a Node already Ready, labelled and with its subnet', async () => {
    const w = world();
    w.api.register(minion.hostname, { ready: true, podCIDR: SUBNET, labels: { [ROLE_LABEL]: '' } });
    expect(await w.ensure()).toEqual({ changed: false });
    expect(w.api.calls).toBe(1);
    expect(w.api.patches).toEqual([]);
  });

  it('fails terminally, without patching, when the Node has another pod CIDR than its flannel subnet', async () => {
    const w = world();
    w.api.register(minion.hostname, { ready: true, podCIDR: '10.244.99.0/24' });
    const err = await failure(w.ensure());
    expect(err.code).toBe('E_NODE_NOT_READY');
    expect(err.retryable).toBe(false);
    expect(err.message).toBe(`Node ${minion.hostname} has podCIDR 10.244.99.0/24, but the flannel subnet of its machine is ${SUBNET}`);
    expect(err.hint).toContain(`kubectl delete node ${minion.hostname}`);
    expect(w.api.patches).toEqual([]);
  });

  it("fails with E_NODE_NOT_READY, the Ready condition and the kubelet's journal once the timeout has passed (retryable)", async () => {
    const w = world();
    w.api.register(minion.hostname, { readyReason: 'KubeletNotReady: container runtime network not ready: cni plugin not initialized' });
    const start = w.clock.now();
    const err = await failure(w.ensure());
    expect(w.clock.now() - start).toBeGreaterThanOrEqual(TIMEOUT_MS);
    expect(w.clock.now() - start).toBeLessThan(TIMEOUT_MS + 2_000);
    expect(err.code).toBe('E_NODE_NOT_READY');
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(new RegExp(`^Node ${minion.hostname} of ${minion.ip.replace(/\./g, '\\.')} is not Ready after 60 s: it is not Ready \\(KubeletNotReady: container runtime network not ready: cni plugin not initialized\\)`));
    // the kubelet's journal, read on the machine
    expect(err.message).toContain('\nlast journal lines of kubelet.service:\nkubelet.service starting\nkubelet.service: fatal: something went wrong');
    expect(w.hosts.machine(minion.id).log).toEqual(['journalctl -u kubelet.service -n 20 --no-pager -o cat']);
    expect(err.hint).toBe(`run 'journalctl -u kubelet' on ${minion.ip} and 'kubectl describe node ${minion.hostname}'`);
    // it still got what the overlord gives it
    expect(w.api.nodes.get(minion.hostname)?.podCIDR).toBe(SUBNET);
  });

  it('says the kubelet never registered its Node, and still answers without the journal when the machine does not', async () => {
    const w = world();
    w.hosts.machine(minion.id).reachable = false;
    const err = await failure(w.ensure());
    expect(err.code).toBe('E_NODE_NOT_READY');
    expect(err.message).toBe(`Node ${minion.hostname} of ${minion.ip} is not Ready after 60 s: the kubelet never registered it`);
  });

  it('keeps asking through retryable API errors, says so at the timeout, and stops at once on a terminal one', async () => {
    const w = world();
    for (let i = 0; i < 200; i++) w.api.failures.push(new CorekubeError('E_KUBERNETES', 'GET node minion-10 at https://10.240.0.32:6443 failed: connect ECONNREFUSED', { retryable: true }));
    const err = await failure(w.ensure());
    expect(err.message).toMatch(/is not Ready after 60 s: the API server did not answer: GET node minion-10 .* ECONNREFUSED/);
    expect(err.retryable).toBe(true);

    const v = world();
    v.api.register(minion.hostname);
    v.api.failures.push(new CorekubeError('E_KUBERNETES', 'GET node minion-10 at https://10.240.0.32:6443 failed (403): forbidden'));
    const start = v.clock.now();
    const forbidden = await failure(v.ensure());
    expect(forbidden.message).toContain('(403): forbidden');
    expect(v.clock.now()).toBe(start);
  });

  it('is retried when the machine holds no pod subnet yet', async () => {
    const err = await failure(world(null).ensure());
    expect(err).toMatchObject({ code: 'E_INTERNAL', retryable: true });
    expect(err.message).toContain('holds no pod subnet');
  });
});

describe('node-ready in the deploy', () => {
  const spec = parseClusterSpec({ flags: { name: 't', masters: '1', minions: '1' } });
  const master = makeRecord(1, 'master');
  const minion = makeRecord(10, 'minion');
  const view: ClusterView = { masters: [master], masterIps: [master.ip], deployedMasters: [master] };

  it("is planned only by an overlord that has the cluster's Kubernetes side (nodeReady), for machines that run a kubelet", () => {
    expect(unitsForSpec(spec)(minion, view).node).toBeUndefined();
    expect(unitsForSpec(spec, { nodeReady: true })(minion, view).node).toBe(minion.hostname);
    expect(unitsForSpec(spec, { nodeReady: true })(master, view).node).toBeUndefined();
  });

  it('fails the step, naming what is missing, in an overlord without a Kubernetes API', async () => {
    const err = await runStep({ hosts: new FakeMachines(), clock: new FakeClock() }, { id: minion.id, ip: minion.ip }, { kind: 'node-ready', id: 'node-ready', node: minion.hostname }, { ...DEFAULT_EXECUTOR_OPTIONS, remote: { user: 'corekube' } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'E_INTERNAL', hint: expect.stringContaining('kubernetes option') });
  });
});
