import { describe, expect, it } from 'vitest';
import { clusterKeys } from '../../../contracts/keys.ts';
import { memberIndex, parseStackMembers } from '../../../contracts/overlord-channel.ts';
import { parseRemovalRequest, REMOVAL_PHASES, type RemovalRequest } from '../../../contracts/removal.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { CorekubeError } from '../../../core/errors.ts';
import { Ledger } from '../../../overlord/deploy/ledger.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import { drainNode, podsToEvict } from '../../../overlord/kubernetes/drain.ts';
import { Removals, type RemovalsPorts } from '../../../overlord/lifecycle/removals.ts';
import { beyondCount, followStackMembers } from '../../../overlord/lifecycle/stack-members.ts';
import { createPodNetwork } from '../../../overlord/pod-network/registry.ts';
import { runOverlord } from '../../../overlord/term.ts';
import type { MachineCredentials } from '../../../overlord/trust/machine-credentials.ts';
import { credentialsFile } from '../../../overlord/trust/machine-credentials.ts';
import { drive, FakeKubernetesApi, type FakePod } from './fake-kubernetes.ts';
import { FakeClock, FakeMachines, fakeUnits, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const network = { kind: 'flannel' as const, config: { Network: '10.244.0.0/21', SubnetLen: 24, Backend: { Type: 'vxlan' as const, VNI: 1, Port: 8472 } } };
const retry = { retries: 2, initialMs: 1_000, factor: 2, maxMs: 10_000 };

/** Heat's names: t-master-0, t-minion-0, t-minion-1 … */
const master = makeRecord(1, 'master', { hostname: 't-master-0' });
const minions = [0, 1, 2].map((i) => makeRecord(10 + i, 'minion', { hostname: `t-minion-${i}` }));
const byHand = makeRecord(20, 'minion', { hostname: 'worker-by-hand' });

class FakeCredentials implements MachineCredentials {
  readonly users = new Set<string>();
  fileFor(id: string) {
    return credentialsFile(id, 'ab'.repeat(32));
  }
  async ensure(id: string) {
    this.users.add(id);
    return [];
  }
  async remove(id: string) {
    return this.users.delete(id);
  }
}

const pod = (node: string, name: string, extra: Partial<FakePod> = {}): FakePod => ({ node, namespace: 'default', name, controllers: ['ReplicaSet'], mirror: false, finished: false, terminating: false, ...extra });

async function announce(store: MemoryStore, r: MachineRecord) {
  await store.put(keys.machine(r.id), JSON.stringify(r));
}

describe('the stack\'s counts', () => {
  it('names a server\'s index from the name Heat gave it, with or without a DNS domain, and nothing else', () => {
    expect(memberIndex('t', 'minion', 't-minion-2')).toBe(2);
    expect(memberIndex('T', 'minion', 't-minion-12.novalocal')).toBe(12);
    expect(memberIndex('t', 'minion', 't-master-0')).toBeUndefined();
    expect(memberIndex('t', 'minion', 't-minion-02')).toBeUndefined();
    expect(memberIndex('t', 'minion', 'worker-by-hand')).toBeUndefined();
  });

  it('leaves out the minions at or beyond the count, never one booted by hand, and reports masters beyond theirs', () => {
    const out = beyondCount('t', { masterCount: 1, minionCount: 1 }, [master, ...minions, byHand, makeRecord(2, 'master', { hostname: 't-master-1' })]);
    expect(out.minions.map((m) => m.hostname)).toEqual(['t-minion-1', 't-minion-2']);
    expect(out.masters.map((m) => m.hostname)).toEqual(['t-master-1']);
  });

  it('refuses counts that do not parse, naming the field', () => {
    expect(parseStackMembers({ master_count: '3', minion_count: 2 }, 'm')).toEqual({ masterCount: 3, minionCount: 2 });
    expect(() => parseStackMembers({ master_count: 0, minion_count: 'x' }, 'm')).toThrow(/stack's member counts/);
    try {
      parseStackMembers({ master_count: 0, minion_count: 'x' }, 'm');
    } catch (e) {
      expect((e as { problems: { field: string }[] }).problems.map((p) => p.field)).toEqual(['m.master_count', 'm.minion_count']);
    }
  });
});

describe('drain', () => {
  it('evicts what kubectl drain --ignore-daemonsets evicts, and leaves DaemonSet pods, mirrors and finished pods', () => {
    const pods = [pod('n', 'web'), pod('n', 'proxy', { controllers: ['DaemonSet'] }), pod('n', 'static', { mirror: true, controllers: ['Node'] }), pod('n', 'job', { finished: true })];
    const { evict, left } = podsToEvict(pods);
    expect(evict.map((p) => p.name)).toEqual(['web']);
    expect(left.map((p) => p.name)).toEqual(['proxy', 'static']);
  });

  it('waits while a PodDisruptionBudget refuses, and ends in E_DRAIN_TIMEOUT naming the pod — never an endless wait', async () => {
    const api = new FakeKubernetesApi();
    const clock = new FakeClock();
    api.pods.push(pod('n', 'web-1'), pod('n', 'web-2', { budget: true }));
    const drained = drainNode(api, clock, 'n', { timeoutMs: 10_000, pollMs: 2_000, machineGone: false });
    drained.catch(() => undefined);
    await clock.runUntil(() => api.evictions.length === 1);
    for (let i = 0; i < 3; i++) await clock.next();
    api.pods.find((p) => p.name === 'web-2')!.budget = false; // the workload scaled up: the budget allows one
    expect(await drive(drained, clock)).toEqual({ evicted: ['default/web-1', 'default/web-2'], left: [], blocked: [] });

    api.pods.push(pod('n', 'db', { budget: true }));
    const stuck = drainNode(api, clock, 'n', { timeoutMs: 10_000, pollMs: 2_000, machineGone: false });
    stuck.catch(() => undefined);
    while (await clock.next());
    await expect(stuck).rejects.toMatchObject({ code: 'E_DRAIN_TIMEOUT', message: expect.stringContaining('default/db (eviction refused: a PodDisruptionBudget allows no disruption)') });
  });

  it('on a machine that is gone, evicts once and does not wait for a kubelet that will never confirm', async () => {
    const api = new FakeKubernetesApi();
    api.podsTerminate = false;
    api.pods.push(pod('n', 'web'), pod('n', 'db', { budget: true }));
    expect(await drainNode(api, new FakeClock(), 'n', { timeoutMs: 10_000, pollMs: 2_000, machineGone: true })).toEqual({ evicted: ['default/web'], left: [], blocked: ['default/db'] });
  });
});

describe('removals', () => {
  function world() {
    const store = new MemoryStore();
    const clock = new FakeClock();
    const hosts = new FakeMachines();
    const api = new FakeKubernetesApi();
    const credentials = new FakeCredentials();
    const ledger = new Ledger(store, keys);
    const podNetwork = createPodNetwork(network, { store, keys, log: silentLogger(), credentials });
    const up = new Set<string>();
    const ports: RemovalsPorts = {
      store, keys, hosts, clock, log: silentLogger(), ledger,
      api: () => api,
      podNetwork: () => podNetwork,
      credentials,
      announced: (id) => (up.has(id) ? { id, ip: minions.find((m) => m.id === id)!.ip } : undefined),
      onChange: () => undefined,
    };
    return { store, clock, hosts, api, credentials, ledger, podNetwork, up, ports, removals: () => new Removals(ports, { remote: { user: 'corekube' }, drain: { timeoutMs: 20_000, pollMs: 2_000 } }) };
  }
  const requestOf = (r: MachineRecord) => ({ id: r.id, hostname: r.hostname, ip: r.ip, role: r.role, reason: 'command' as const });

  it('removes a live minion in order — cordon, drain, stop its units, Node, subnet, discovery user, keys — and leaves a tombstone', async () => {
    const w = world();
    const m = minions[1]!;
    await w.podNetwork.reserve(m);
    w.credentials.users.add(m.id);
    w.api.register(m.hostname, { ready: true });
    w.api.pods.push(pod(m.hostname, 'web'), pod(m.hostname, 'proxy', { controllers: ['DaemonSet'] }));
    w.up.add(m.id);
    for (const key of [keys.admittedOf(m.id), keys.hostkeyOf(m.id), keys.machine(m.id)]) await w.store.put(key, '{}');
    const machine = w.hosts.machine(m.id);
    machine.enabled.add('corekube-announce.service');
    const removals = w.removals();
    await removals.load();
    expect(await removals.request(requestOf(m))).toBe(true);
    expect(removals.excluded(m.id)).toBe(true);
    await flush();
    expect(await drive(removals.pass(), w.clock)).toBe(false);

    expect(w.api.evictions).toEqual(['default/web']);
    expect(w.api.nodes.has(m.hostname)).toBe(false);
    expect(machine.log).toContain('systemctl disable --now --quiet corekube-announce.service');
    expect(machine.enabled.has('corekube-announce.service')).toBe(false);
    expect(await w.podNetwork.subnetOf(m.id)).toBeUndefined();
    expect([...w.store.data.keys()].filter((k) => k.startsWith(`${keys.network}subnets/`))).toEqual([]);
    expect(w.credentials.users.has(m.id)).toBe(false);
    for (const key of [keys.admittedOf(m.id), keys.hostkeyOf(m.id), keys.machine(m.id), keys.removalOf(m.id), keys.ledgerOf(m.id)]) expect(w.store.data.has(key), key).toBe(false);
    expect(JSON.parse(w.store.data.get(keys.removedOf(m.id))!.value)).toMatchObject({ id: m.id, hostname: 't-minion-1', reason: 'command' });
    expect(removals.excluded(m.id)).toBe(true);
    // asked again: nothing new
    expect(await removals.request(requestOf(m))).toBe(false);
  });

  it('resumes where it stopped: a failed phase is recorded and tried again, no phase done twice', async () => {
    const w = world();
    const m = minions[2]!;
    w.api.register(m.hostname, { ready: true });
    const first = w.removals();
    await first.load();
    await first.request(requestOf(m));
    await flush();
    // the API is away when the Node is to be deleted (after cordon and drain)
    const deleteNode = w.api.deleteNode.bind(w.api);
    w.api.deleteNode = async () => {
      throw new CorekubeError('E_KUBERNETES', 'delete node at https://10.240.0.20:6443 failed: ECONNREFUSED', { retryable: true });
    };
    expect(await first.pass()).toBe(true);
    const recorded = parseRemovalRequest(m.id, w.store.data.get(keys.removalOf(m.id))!.value) as RemovalRequest;
    expect(recorded.done).toEqual(['cordon', 'drain', 'member', 'stop']);
    expect(recorded.error).toMatch(/^node: delete node .* ECONNREFUSED/);

    // a new leader: goes on from `node`
    w.api.deleteNode = deleteNode;
    const patchesBefore = w.api.patches.length;
    const second = w.removals();
    await second.load();
    expect(second.excluded(m.id)).toBe(true);
    expect(await second.pass()).toBe(false);
    expect(w.api.patches.length).toBe(patchesBefore); // not cordoned again
    expect(w.store.data.has(keys.removedOf(m.id))).toBe(true);
    expect(REMOVAL_PHASES.at(-1)).toBe('records');
  });
});

describe('a term following the stack', () => {
  it('removes the minion a lowered count leaves out, never deploys it again, and leaves the others alone', async () => {
    const store = new MemoryStore();
    const clock = new FakeClock();
    const hosts = new FakeMachines();
    let counts = { master_count: 1, minion_count: 3 };
    for (const r of [master, ...minions, byHand]) await announce(store, r);
    const o = await runOverlord(
      { store, hosts, clock, log: silentLogger() },
      { cluster: 't', sshUser: 'corekube', unitsFor: fakeUnits(), expected: { masters: 1, minions: 3 }, concurrency: 4, retry, podNetwork: network, stack: { read: async () => ({ corekube_members: counts }), cluster: 't', pollMs: 15_000 } },
    );
    await clock.runUntil(() => o.summary().deployed === 5, 200).catch((e) => { throw new Error(`${e.message}: ${o.summary().text}`); });
    const before = new Map([master, minions[0]!, minions[1]!, byHand].map((r) => [r.id, store.data.get(keys.ledgerOf(r.id))!.modRevision]));

    counts = { master_count: 1, minion_count: 2 };
    hosts.machine(minions[2]!.id).reachable = false; // Heat deleted the server
    await store.delete(keys.machine(minions[2]!.id)); // its lease expired
    await clock.runUntil(() => store.data.has(keys.removedOf(minions[2]!.id)));
    await flush(20);
    expect(store.data.has(keys.ledgerOf(minions[2]!.id))).toBe(false);
    expect(store.data.has(keys.subnetOf(minions[2]!.id))).toBe(false);
    for (const [id, rev] of before) expect(store.data.get(keys.ledgerOf(id))!.modRevision, id).toBe(rev);

    // the machine comes back (a snapshot restored): its record is not deployed
    await announce(store, minions[2]!);
    await flush(20);
    await o.idle();
    expect(store.data.has(keys.ledgerOf(minions[2]!.id))).toBe(false);
    expect(o.discovery.snapshot().records.has(minions[2]!.id)).toBe(false);
    await o.stop();
  });
});
