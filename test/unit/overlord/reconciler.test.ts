import { describe, expect, it } from 'vitest';
import { clusterKeys } from '../../../contracts/keys.ts';
import { parseLedgerEntry, type LedgerEntry } from '../../../contracts/ledger-entry.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { runOverlord, type Overlord, type OverlordOptions } from '../../../overlord/term.ts';
import { readStatus } from '../../../overlord/status.ts';
import { FakeClock, FakeMachines, fakeUnits, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const retry = { retries: 2, initialMs: 1_000, factor: 2, maxMs: 10_000 };

async function announce(store: MemoryStore, r: MachineRecord) {
  await store.put(keys.machine(r.id), JSON.stringify(r));
}

function ledgerOf(store: MemoryStore, id: string): LedgerEntry | null {
  const kv = store.data.get(keys.ledgerOf(id));
  return kv ? parseLedgerEntry(kv.value) : null;
}

interface World {
  store: MemoryStore;
  hosts: FakeMachines;
  clock: FakeClock;
  start(extra?: Partial<OverlordOptions>): Promise<Overlord>;
}

function world(latencyMs = 0): World {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const hosts = new FakeMachines(latencyMs ? { clock, ms: latencyMs } : undefined);
  return {
    store,
    hosts,
    clock,
    start: (extra = {}) =>
      runOverlord(
        { store, hosts, clock, log: silentLogger() },
        { cluster: 't', sshUser: 'corekube', unitsFor: fakeUnits(), expected: { masters: 1, minions: 2 }, concurrency: 4, retry, ...extra },
      ),
  };
}

/** Runs the fake clock until every announced machine is deployed or failed and nothing is running. */
async function settle(w: World, o: Overlord) {
  await w.clock.runUntil(() => {
    const s = o.summary();
    return s.total > 0 && s.deployed + s.failed.length === s.total && s.deploying === 0 && s.waiting === 0;
  });
  await o.idle();
}

const master = makeRecord(1, 'master');
const minions = [makeRecord(10, 'minion'), makeRecord(11, 'minion'), makeRecord(12, 'minion')];

describe('reconciler', () => {
  it('deploys a master, then the minions, and says when the cluster is ready', async () => {
    const w = world(10);
    for (const r of [master, ...minions.slice(0, 2)]) await announce(w.store, r);
    let ready = 0;
    const o = await w.start({ onClusterReady: () => void ready++ });
    await settle(w, o);
    for (const r of [master, ...minions.slice(0, 2)]) expect(ledgerOf(w.store, r.id)?.state).toBe('deployed');
    // minions started only after the master was deployed
    const masterDone = Date.parse(ledgerOf(w.store, master.id)!.finishedAt!);
    for (const m of minions.slice(0, 2)) expect(Date.parse(ledgerOf(w.store, m.id)!.startedAt)).toBeGreaterThanOrEqual(masterDone);
    expect(o.summary().text).toBe('3/3 machines deployed');
    expect(ready).toBe(1);
    await o.clusterReady;
    await o.stop();
    await o.done;
    expect(w.hosts.closed).toBe(1);
  });

  it('deploys machines in parallel, never more than the concurrency limit at once', async () => {
    const w = world(50);
    const many = Array.from({ length: 12 }, (_, i) => makeRecord(100 + i, 'minion'));
    await announce(w.store, master);
    for (const r of many) await announce(w.store, r);
    const o = await w.start({ concurrency: 3, expected: { masters: 1, minions: 12 } });
    await settle(w, o);
    expect(o.summary().deployed).toBe(13);
    expect(w.hosts.peak).toBe(3);
    await o.stop();
  });

  it('fails one machine whose unit fails after its retries, with the journal excerpt, and the others carry on', async () => {
    const w = world(10);
    for (const r of [master, ...minions]) await announce(w.store, r);
    w.hosts.machine(minions[1]!.id).behaviour.set('kubelet.service', { outcome: 'fail' });
    const o = await w.start({ expected: { masters: 1, minions: 3 } });
    await settle(w, o);
    const failed = ledgerOf(w.store, minions[1]!.id)!;
    expect(failed.state).toBe('failed');
    expect(failed.retryable).toBe(false);
    expect(failed.error).toContain('start:kubelet.service: E_UNIT_FAILED: kubelet.service failed on 10.240.0.43');
    expect(failed.error).toContain('fatal: something went wrong');
    expect(failed.steps['start:kubelet.service']).toMatchObject({ state: 'failed', attempts: 3 });
    expect(w.hosts.machine(minions[1]!.id).starts('kubelet.service')).toBe(3); // first attempt + 2 retries
    for (const r of [master, minions[0]!, minions[2]!]) expect(ledgerOf(w.store, r.id)?.state).toBe('deployed');
    expect(o.summary().text).toMatch(/^3\/4 machines deployed, 1 failed: minion-11 \(start:kubelet.service: E_UNIT_FAILED/);
    const status = await readStatus(w.store, keys);
    expect(status.machines.find((m) => m.id === minions[1]!.id)).toMatchObject({ state: 'failed', step: 'start:kubelet.service' });
    await o.stop();
  });

  it('deploys machines that announce after it started (a watch, no polling), and is silent while idle', async () => {
    const w = world(10);
    await announce(w.store, master);
    const o = await w.start({ expected: { masters: 1, minions: 1 } });
    await settle(w, o);
    const machinesListed = () => w.store.listed.filter((p) => p === keys.machines).length;
    const before = machinesListed();
    expect(w.clock.pending).toBe(0); // no timer: nothing polls
    await announce(w.store, minions[0]!);
    await settle(w, o);
    expect(ledgerOf(w.store, minions[0]!.id)?.state).toBe('deployed');
    expect(machinesListed()).toBe(before); // the new machine came through the watch, not a listing of the records
    await o.stop();
  });

  it('resumes after a stop mid-deploy: every machine ends deployed and no unit is started twice', async () => {
    let interrupted = 0;
    for (const stopAfterTimers of [3, 9, 17, 30]) {
      const w = world(10);
      for (const r of [master, ...minions]) await announce(w.store, r);
      const first = await w.start({ expected: { masters: 1, minions: 3 } });
      for (let i = 0; i < stopAfterTimers; i++) await w.clock.next();
      await first.stop();
      const inFlight = [master, ...minions].map((r) => ledgerOf(w.store, r.id)).filter((e) => e?.state === 'deploying');
      const second = await w.start({ expected: { masters: 1, minions: 3 } });
      await settle(w, second);
      for (const r of [master, ...minions]) {
        expect(ledgerOf(w.store, r.id)?.state).toBe('deployed');
        for (const [unit, u] of w.hosts.machine(r.id).units) expect(u.starts, `${unit} on ${r.hostname} after stop #${stopAfterTimers}`).toBe(1);
      }
      interrupted += inFlight.length;
      await second.stop();
    }
    expect(interrupted).toBeGreaterThanOrEqual(4); // the stops did land mid-deploy
  });

  it('does not touch a deployed machine again unless its units change, then redeploys it', async () => {
    const w = world(10);
    await announce(w.store, master);
    const first = await w.start({ expected: { masters: 1, minions: 0 } });
    await settle(w, first);
    await first.stop();
    const m = w.hosts.machine(master.id);
    const commands = m.log.length;

    const same = await w.start({ expected: { masters: 1, minions: 0 } });
    await settle(w, same);
    await same.stop();
    expect(m.log.length).toBe(commands);

    const changed = await w.start({ expected: { masters: 1, minions: 0 }, unitsFor: fakeUnits('v2') });
    await settle(w, changed);
    expect(m.files.get('/etc/systemd/system/etcd.service')!.content).toContain('v2');
    expect(ledgerOf(w.store, master.id)).toMatchObject({ state: 'deployed', unitsHash: `v2-master-${master.ip}` });
    expect(m.reloads).toBe(2);
    // every unit file changed: each unit restarted on it (a second invocation), the ledger records what each runs on
    for (const u of ['corekube-download.service', 'etcd.service', 'kube-apiserver.service']) expect(m.unit(u).starts, u).toBe(2);
    expect(Object.keys(ledgerOf(w.store, master.id)!.applied).sort()).toEqual(['corekube-download.service', 'etcd.service', 'kube-apiserver.service']);
    await changed.stop();
  });

  it('enables every unit it starts, so a rebooted machine brings them back itself; after the reboot (new boot id) it starts only what did not come back, without rewriting files', async () => {
    const w = world(10);
    await announce(w.store, master);
    const o = await w.start({ expected: { masters: 1, minions: 0 } });
    await settle(w, o);
    const m = w.hosts.machine(master.id);
    const units = [...m.units.keys()];
    expect([...m.enabled].sort()).toEqual(units.sort());
    // one unit was disabled by hand: it does not come back at boot, the others do (one start each, by systemd)
    const disabled = units.find((u) => u !== 'kube-apiserver.service')!;
    m.enabled.delete(disabled);
    m.reboot();
    expect(m.unit('kube-apiserver.service').activeState).toBe('active');
    expect(m.unit(disabled).activeState).toBe('inactive');
    await announce(w.store, { ...master, bootId: 'feedfacefeedfacefeedfacefeedface' });
    await w.clock.runUntil(() => ledgerOf(w.store, master.id)?.bootId === 'feedfacefeedfacefeedfacefeedface' && ledgerOf(w.store, master.id)?.state === 'deployed');
    await o.idle();
    for (const u of units) expect(m.unit(u).activeState, u).toBe('active');
    expect(m.starts('kube-apiserver.service')).toBe(2); // the deploy, then systemd at boot: not the overlord
    expect(m.starts(disabled)).toBe(2); // the deploy, then the overlord after the reboot
    expect(m.enabled.has(disabled)).toBe(true); // enabled again
    expect(m.reloads).toBe(1);
    await o.stop();
  });

  it('marks an unreachable machine failed, then tries it again after a backoff and deploys it', async () => {
    const w = world(10);
    await announce(w.store, master);
    await announce(w.store, minions[0]!);
    w.hosts.machine(minions[0]!.id).reachable = false;
    const o = await w.start({ expected: { masters: 1, minions: 1 }, requeue: { initialMs: 60_000, factor: 2, maxMs: 60_000 } });
    await w.clock.runUntil(() => ledgerOf(w.store, minions[0]!.id)?.state === 'failed');
    expect(ledgerOf(w.store, minions[0]!.id)).toMatchObject({ retryable: true });
    expect(ledgerOf(w.store, minions[0]!.id)!.error).toContain('E_SSH');
    w.hosts.machine(minions[0]!.id).reachable = true;
    await w.clock.runUntil(() => ledgerOf(w.store, minions[0]!.id)?.state === 'deployed');
    await o.stop();
  });

  it('skips and reports a malformed record or an unknown role, and keeps deploying the others', async () => {
    const w = world(10);
    await announce(w.store, master);
    const bad = makeRecord(20, 'minion');
    await w.store.put(keys.machine(bad.id), JSON.stringify({ ...bad, role: 'etcd' }));
    await w.store.put(keys.machine('f'.repeat(32)), '{not json');
    const o = await w.start({ expected: { masters: 1, minions: 0 } });
    await settle(w, o);
    expect(ledgerOf(w.store, master.id)?.state).toBe('deployed');
    expect(ledgerOf(w.store, bad.id)).toBeNull();
    expect(o.summary().text).toBe('1/1 machines deployed; 2 invalid records skipped');
    const status = await readStatus(w.store, keys);
    expect(status.machines.find((m) => m.id === bad.id)).toMatchObject({ role: 'etcd', state: 'failed', error: expect.stringContaining('role is not one of master, minion (got "etcd")') });
    await o.stop();
  });

  it('lists the machines again when its watch is lost (compaction), and carries on', async () => {
    const w = world(10);
    await announce(w.store, master);
    const o = await w.start({ expected: { masters: 1, minions: 1 } });
    await settle(w, o);
    w.store.compactAndLoseWatches();
    await flush();
    await announce(w.store, minions[0]!);
    await settle(w, o);
    expect(o.discovery.lists).toBe(2);
    expect(ledgerOf(w.store, minions[0]!.id)?.state).toBe('deployed');
    await o.stop();
  });

  it('a machine whose units do not render is failed with the reason and never run', async () => {
    const w = world(10);
    await announce(w.store, master);
    const o = await w.start({
      expected: { masters: 1, minions: 0 },
      unitsFor: () => {
        throw new Error('missing value for {{etcd.name}}');
      },
    });
    await settle(w, o);
    expect(ledgerOf(w.store, master.id)).toMatchObject({ state: 'failed', error: expect.stringContaining('missing value') });
    expect(w.hosts.machine(master.id).log).toEqual([]);
    await o.stop();
  });

  it('on stop, interrupts a waiting step and leaves it recorded in flight', async () => {
    const w = world(10);
    await announce(w.store, master);
    w.hosts.machine(master.id).behaviour.set('etcd.service', { outcome: 'hang' });
    const o = await w.start({ expected: { masters: 1, minions: 0 } });
    await w.clock.runUntil(() => ledgerOf(w.store, master.id)?.steps['start:etcd.service']?.state === 'in-flight');
    await w.clock.advance(1_000);
    const abort = new AbortController();
    abort.abort();
    await o.stop();
    await o.done;
    expect(ledgerOf(w.store, master.id)).toMatchObject({ state: 'deploying' });
    expect(ledgerOf(w.store, master.id)!.steps['start:etcd.service']!.state).toBe('in-flight');
    expect(w.hosts.closed).toBe(1);
  });

  it('waits while etcd is unreachable at startup, then starts', async () => {
    const w = world(10);
    await announce(w.store, master);
    w.store.down = true;
    let started: Overlord | undefined;
    const starting = w.start({ expected: { masters: 1, minions: 0 } }).then((o) => (started = o));
    await w.clock.next();
    await w.clock.next();
    expect(started).toBeUndefined();
    w.store.down = false;
    await w.clock.runUntil(() => started !== undefined);
    await starting;
    await settle(w, started!);
    expect(ledgerOf(w.store, master.id)?.state).toBe('deployed');
    await started!.stop();
  });
});

describe('pod subnets', () => {
  const network = { kind: 'flannel' as const, config: { Network: '10.244.0.0/23', SubnetLen: 24, Backend: { Type: 'vxlan' as const, VNI: 1, Port: 8472 } } };

  it('reserves a subnet for every machine before deploying it and shows it in status', async () => {
    const w = world(10);
    for (const r of [master, minions[0]!]) await announce(w.store, r);
    const o = await w.start({ podNetwork: network, expected: { masters: 1, minions: 1 } });
    await settle(w, o);
    const status = await readStatus(w.store, keys);
    expect(status.machines.map((m) => m.state)).toEqual(['deployed', 'deployed']);
    expect(new Set(status.machines.map((m) => m.subnet))).toEqual(new Set(['10.244.0.0/24', '10.244.1.0/24']));
    expect(JSON.parse(w.store.data.get(`${keys.network}config`)!.value)).toEqual(network.config);
    await o.stop();
  });

  it('fails a machine for which no subnet is left, naming the network, and deploys the others', async () => {
    const w = world(10);
    for (const r of [master, ...minions]) await announce(w.store, r);
    const o = await w.start({ podNetwork: network, expected: { masters: 1, minions: 3 } });
    await settle(w, o);
    const status = await readStatus(w.store, keys);
    expect(status.machines.filter((m) => m.state === 'deployed')).toHaveLength(2);
    const failed = status.machines.filter((m) => m.state === 'failed');
    expect(failed).toHaveLength(2);
    for (const f of failed) expect(f.error).toContain('E_SUBNET_EXHAUSTED: the pod network 10.244.0.0/23 has no free /24 subnet: all 2 are reserved');
    await o.stop();
  });

  it('refuses to start when the cluster already has a different pod network', async () => {
    const w = world();
    await w.store.put(`${keys.network}config`, JSON.stringify({ ...network.config, Network: '10.32.0.0/16' }));
    await expect(w.start({ podNetwork: network })).rejects.toMatchObject({ code: 'E_NETWORK_CONFIG_CHANGED' });
  });
});
