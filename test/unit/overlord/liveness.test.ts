/**
 * Liveness from more than the lease (overlord/availability/liveness.ts): a record kept alive by someone else's keepalives does
 * not keep a dead machine in the cluster; the machine must answer over its pinned SSH connection. Fake clock,
 * etcd and machines.
 */
import { describe, expect, it } from 'vitest';
import { clusterKeys } from '../../../contracts/keys.ts';
import { runOverlord } from '../../../overlord/term.ts';
import { captureLog } from '../../harness/log-capture.ts';
import { FakeClock, FakeMachines, fakeUnits, flush, makeRecord, MemoryStore } from './fakes.ts';

const keys = clusterKeys('t');
const LIVENESS = { intervalMs: 10_000, deadAfterMs: 60_000 };

async function world() {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const hosts = new FakeMachines();
  const capture = captureLog();
  const master = makeRecord(1, 'master');
  const minion = makeRecord(2, 'minion');
  for (const r of [master, minion]) await store.put(keys.machine(r.id), JSON.stringify(r));
  const o = await runOverlord(
    { store, hosts, clock, log: capture.log },
    { cluster: 't', sshUser: 'corekube', unitsFor: fakeUnits(), expected: { masters: 1, minions: 1 }, concurrency: 4, retry: { retries: 0, initialMs: 1_000, factor: 2, maxMs: 1_000 }, liveness: LIVENESS },
  );
  await clock.runUntil(() => o.summary().deployed === 2);
  return { store, clock, hosts, capture, o, master, minion };
}

describe('liveness beyond the lease', () => {
  it('treats a machine that answers nothing over SSH for deadAfterMs as gone although its record lives, and takes it back when it answers', async () => {
    const w = await world();
    w.hosts.machine(w.master.id).reachable = false; // powered off; its lease kept alive by someone else
    await w.clock.advance(LIVENESS.deadAfterMs - LIVENESS.intervalMs);
    expect(w.o.discovery.snapshot().records.has(w.master.id)).toBe(true);
    await w.clock.advance(3 * LIVENESS.intervalMs);
    await flush(10);
    expect(w.o.discovery.snapshot().records.has(w.master.id)).toBe(false);
    expect(w.o.discovery.snapshot().invalid.get(w.master.id)).toMatchObject({ field: 'liveness' });
    expect(w.capture.event('machine.silent')).toMatchObject({ machine: w.master.id });
    expect(w.store.data.has(keys.machine(w.master.id))).toBe(true);

    w.hosts.machine(w.master.id).reachable = true;
    await w.clock.advance(2 * LIVENESS.intervalMs);
    await flush(10);
    expect(w.o.discovery.snapshot().records.has(w.master.id)).toBe(true);
    expect(w.capture.event('machine.answering')).toMatchObject({ machine: w.master.id });
    await w.o.stop();
  });

  it('keeps a machine that answers, however long it runs', async () => {
    const w = await world();
    await w.clock.advance(20 * LIVENESS.deadAfterMs);
    await flush(10);
    expect([...w.o.discovery.snapshot().records.keys()].sort()).toEqual([w.master.id, w.minion.id].sort());
    expect(w.capture.event('machine.silent')).toBeUndefined();
    await w.o.stop();
  });
});
