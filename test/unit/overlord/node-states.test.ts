import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import type { NodeView } from '../../../overlord/kubernetes/api.ts';
import { nodeState, nodeStateKey, readNodeStates, recordNodeStates, sameNodeState, type NodeState } from '../../../overlord/kubernetes/node-states.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { captureLog } from '../../harness/log-capture.ts';
import { FakeKubernetesApi } from './fake-kubernetes.ts';
import { FakeClock, flush, makeRecord, MemoryStore } from './fakes.ts';

const T0 = '2026-01-01T00:00:00.000Z';
const T1 = '2026-01-01T00:05:00.000Z';

const view = (fields: Partial<NodeView> = {}): NodeView => ({
  name: 'minion-10',
  ready: true,
  readyReason: '',
  podCIDR: '10.244.7.0/24',
  labels: {},
  kubeletVersion: 'v1.36.5',
  internalIp: '10.240.0.42',
  unschedulable: false,
  ...fields,
});

describe('nodeState', () => {
  it('records name, readiness, podCIDR and kubelet version; a reason only while not Ready', () => {
    expect(nodeState(view(), undefined, T0)).toEqual({ name: 'minion-10', ready: true, reason: '', podCIDR: '10.244.7.0/24', kubeletVersion: 'v1.36.5', since: T0 });
    expect(nodeState(view({ ready: false, readyReason: 'KubeletNotReady: PLEG is not healthy', podCIDR: undefined }), undefined, T0)).toEqual({
      name: 'minion-10', ready: false, reason: 'KubeletNotReady: PLEG is not healthy', podCIDR: null, kubeletVersion: 'v1.36.5', since: T0,
    });
  });

  it("keeps `since` while Ready has not changed (even when the reason does), and moves it when Ready flips", () => {
    const notReady = nodeState(view({ ready: false, readyReason: 'a' }), undefined, T0);
    expect(nodeState(view({ ready: false, readyReason: 'b' }), notReady, T1)).toMatchObject({ reason: 'b', since: T0 });
    const ready = nodeState(view(), notReady, T1);
    expect(ready).toMatchObject({ ready: true, reason: '', since: T1 });
    expect(nodeState(view({ kubeletVersion: 'v1.36.6' }), ready, '2026-01-02T00:00:00.000Z')).toMatchObject({ kubeletVersion: 'v1.36.6', since: T1 });
  });

  it('compares states without their `since`', () => {
    const a = nodeState(view(), undefined, T0);
    expect(sameNodeState(a, { ...a, since: T1 })).toBe(true);
    expect(sameNodeState(undefined, a)).toBe(false);
    for (const change of [{ ready: false }, { reason: 'x' }, { podCIDR: null }, { kubeletVersion: 'v1.37.0' }, { name: 'other' }] as Partial<NodeState>[]) {
      expect(sameNodeState(a, { ...a, ...change }), JSON.stringify(change)).toBe(false);
    }
  });
});

describe('recording the Node states', () => {
  const keys = clusterKeys('t');
  const m1 = makeRecord(10, 'minion');
  const m2 = makeRecord(11, 'minion');

  function world() {
    const clock = new FakeClock();
    const store = new MemoryStore();
    const api = new FakeKubernetesApi();
    const capture = captureLog();
    let apiKnown = true;
    const stop = new AbortController();
    const loop = recordNodeStates(
      {
        api, store, keys, clock, log: capture.log,
        machinesByHostname: () => new Map([[m1.hostname, m1.id], [m2.hostname, m2.id]]),
        apiKnown: () => apiKnown,
      },
      stop.signal,
      10_000,
    );
    const stored = async () => readNodeStates(store, keys);
    const puts = () => store.requests.put;
    return { clock, store, api, capture, stop, loop, stored, puts, setApiKnown: (v: boolean) => (apiKnown = v) };
  }

  it('writes each machine’s Node state under its id, only when it changed, and ignores Nodes of no machine', async () => {
    const w = world();
    w.api.register(m1.hostname, { podCIDR: '10.244.7.0/24' });
    w.api.register('someone-elses-node', { ready: true });
    await flush();
    expect([...(await w.stored()).keys()]).toEqual([m1.id]);
    expect((await w.stored()).get(m1.id)).toMatchObject({ name: m1.hostname, ready: false, podCIDR: '10.244.7.0/24' });
    const after = w.puts();

    // unchanged for two rounds: nothing written
    await w.clock.advance(20_000);
    expect(w.puts()).toBe(after);

    // Ready, and a second machine's Node appears: both written once
    w.api.nodes.get(m1.hostname)!.ready = true;
    w.api.register(m2.hostname);
    await w.clock.advance(10_000);
    expect(w.puts()).toBe(after + 2);
    const states = await w.stored();
    expect(states.get(m1.id)).toMatchObject({ ready: true, reason: '', since: new Date(w.clock.now()).toISOString() });
    expect(states.get(m2.id)).toMatchObject({ ready: false });
    expect(w.store.data.get(nodeStateKey(keys, m1.id))).toBeDefined();
    expect(w.capture.events().filter((e) => e.event === 'node.state').map((e) => [e.node, e.ready])).toEqual([[m1.hostname, false], [m1.hostname, true], [m2.hostname, false]]);
    w.stop.abort();
    await w.loop;
  });

  it('asks nothing while no API server is known, and logs a failing round once, then recovers', async () => {
    const w = world();
    w.setApiKnown(false);
    w.stop.abort();
    await w.loop;
    expect(w.api.calls).toBe(0);

    const v = world();
    v.api.register(m1.hostname);
    for (let i = 0; i < 3; i++) v.api.failures.push(new CorekubeError('E_KUBERNETES', 'list nodes at https://10.240.0.33:6443 failed: socket hang up', { retryable: true }));
    await v.clock.advance(20_000);
    expect(v.capture.events().filter((e) => e.event === 'node.states-failed')).toHaveLength(1);
    expect(await v.stored()).toEqual(new Map());
    await v.clock.advance(10_000);
    expect((await v.stored()).get(m1.id)).toMatchObject({ name: m1.hostname });
    v.stop.abort();
    await v.loop;
  });

  it('starts from what an earlier overlord recorded: an unchanged Node is not written again', async () => {
    const store = new MemoryStore();
    const state: NodeState = { name: m1.hostname, ready: true, reason: '', podCIDR: '10.244.7.0/24', kubeletVersion: 'v1.36.5', since: T0 };
    await store.put(nodeStateKey(keys, m1.id), JSON.stringify(state));
    const api = new FakeKubernetesApi();
    api.register(m1.hostname, { ready: true, podCIDR: '10.244.7.0/24' });
    const stop = new AbortController();
    const clock = new FakeClock();
    const loop = recordNodeStates({ api, store, keys, clock, log: captureLog().log, machinesByHostname: () => new Map([[m1.hostname, m1.id]]), apiKnown: () => true }, stop.signal);
    await clock.advance(30_000);
    expect(store.requests.put).toBe(1);
    expect((await readNodeStates(store, keys)).get(m1.id)?.since).toBe(T0);
    stop.abort();
    await loop;
  });
});
