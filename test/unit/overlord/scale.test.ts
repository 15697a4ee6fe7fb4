/**
 * What keeps the overlord's cost linear in the number of machines (issue 5, measured by `npm run bench`):
 * one machine getting its slot plans only itself and the masters; a pass re-plans only machines whose
 * inputs changed; discovery and the ledger hand out their views without copying them; subnets are
 * allocated from a book listed once, not from a listing per machine.
 */
import { describe, expect, it } from 'vitest';
import { clusterKeys } from '../../../contracts/keys.ts';
import { beginDeployment, stepDone, stepFailed, type LedgerEntry } from '../../../contracts/ledger-entry.ts';
import { Ledger } from '../../../overlord/deploy/ledger.ts';
import { Discovery } from '../../../overlord/discovery/discovery.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { plan, planGates, planMachine, planUnrendered, stepsOf, type DesiredMachine } from '../../../overlord/deploy/planner.ts';
import { MachinePlans } from '../../../overlord/deploy/machine-plans.ts';
import type { RenderedUnits } from '../../../contracts/step.ts';
import { runOverlord } from '../../../overlord/term.ts';
import { reserveSubnet, SubnetBook, type FlannelConfig } from '../../../overlord/pod-network/flannel.ts';
import { FakeClock, FakeMachines, fakeUnits, flush, makeRecord, MemoryStore } from './fakes.ts';

const NOW = '2026-01-01T00:00:00.000Z';
const units = fakeUnits('v1');
const keys = clusterKeys('s');

function entryOf(r: MachineRecord, done: number, failed = false): LedgerEntry {
  const steps = stepsOf(units(r));
  let e = beginDeployment(null, r, { hash: units(r).hash, stepIds: steps.map((s) => s.id) }, steps.map((s) => s.id), NOW);
  for (const s of steps.slice(0, done)) e = stepDone(e, s.id, NOW, { startNext: true });
  if (failed) e = stepFailed(e, steps[done]!.id, 'E_SSH: unreachable', true, NOW);
  return e;
}

describe('planning one machine', () => {
  const masters = [makeRecord(1, 'master'), makeRecord(2, 'master')];
  const minions = Array.from({ length: 6 }, (_, i) => makeRecord(10 + i, 'minion'));
  const desired = new Map<string, DesiredMachine>([...masters, ...minions].map((r) => [r.id, { record: r, units: units(r) }]));
  const all = [...desired.values()];
  const masterDesired = all.filter((d) => d.record.role === 'master');
  // masters in every state the gates distinguish, minions in every state a machine can be in
  const ledgers: [string, Map<string, LedgerEntry>][] = [
    ['nothing done', new Map()],
    ['a master deploying', new Map([[masters[0]!.id, entryOf(masters[0]!, 2)]])],
    ['masters deployed', new Map(masters.map((m) => [m.id, entryOf(m, 99)]))],
    [
      'masters deployed, minions in every state',
      new Map([
        ...masters.map((m): [string, LedgerEntry] => [m.id, entryOf(m, 99)]),
        [minions[0]!.id, entryOf(minions[0]!, 1)],
        [minions[1]!.id, entryOf(minions[1]!, 99)],
        [minions[2]!.id, entryOf(minions[2]!, 2, true)],
      ]),
    ],
  ];

  it.each(ledgers)('gives each machine the plan the whole-cluster plan gives it (%s)', (_, ledger) => {
    for (const expectedMasters of [1, 2, 3]) {
      const whole = plan({ machines: all, expectedMasters }, { ledger });
      for (const d of all) expect(planMachine(d, masterDesired, expectedMasters, { ledger })).toEqual(whole.find((p) => p.id === d.record.id));
    }
  });

  it.each(ledgers)('plans a machine with no ledger entry behind a closed gate without its units, as the whole-cluster plan does (%s)', (_, ledger) => {
    for (const expectedMasters of [1, 2, 3]) {
      const whole = plan({ machines: all, expectedMasters }, { ledger });
      const gates = planGates(masterDesired, expectedMasters, { ledger });
      for (const d of all) {
        const p = planUnrendered(d.record, gates, { ledger });
        if (p) expect(p).toEqual(whole.find((x) => x.id === d.record.id));
        else expect(ledger.has(d.record.id) || whole.find((x) => x.id === d.record.id)?.action !== 'wait').toBe(true);
      }
    }
  });

  it('plans a machine again only when its record, the cluster or its ledger entry changed (the reconciler\'s one cache)', () => {
    let renders = 0;
    const cache = new MachinePlans((r) => (renders++, units(r)), 2);
    const ledger = new Map(masters.map((m): [string, LedgerEntry] => [m.id, entryOf(m, 99)]));
    const snapshot = { records: new Map([...masters, ...minions].map((r) => [r.id, r])) };
    const planAll = () => {
      const cluster = cache.cluster(snapshot.records.values(), ledger);
      return cache.inPlanOrder(snapshot).map((r) => cache.plan(r, cluster, ledger));
    };
    const first = planAll();
    expect(renders).toBe(8);
    expect(first).toEqual(plan({ machines: all, expectedMasters: 2 }, { ledger }));
    const again = planAll();
    // the same objects: nothing was rendered or planned twice
    expect(renders).toBe(8);
    for (let i = 0; i < first.length; i++) expect(again[i]).toBe(first[i]);
    ledger.set(minions[0]!.id, entryOf(minions[0]!, 1));
    const changed = planAll();
    const i = changed.findIndex((p) => p.id === minions[0]!.id);
    expect(changed[i]).not.toBe(first[i]);
    expect(changed[i]).toMatchObject({ action: 'deploy', reason: 'resume' });
    expect(changed.filter((p, j) => j !== i).every((p, j) => p === first.filter((_, k) => k !== i)[j])).toBe(true);
    expect(renders).toBe(8);
  });
});

describe('views handed out without copies', () => {
  it('discovery hands out the same snapshot until a machine record changes, and never changes one it handed out', async () => {
    const store = new MemoryStore();
    const a = makeRecord(1, 'master');
    await store.put(keys.machine(a.id), JSON.stringify(a));
    let changes = 0;
    const discovery = new Discovery({ store, keys, log: silentLogger(), clock: new FakeClock(), onChange: () => void changes++ });
    await discovery.start();
    const first = discovery.snapshot();
    expect(discovery.snapshot()).toBe(first);
    const b = makeRecord(10, 'minion');
    await store.put(keys.machine(b.id), JSON.stringify(b));
    await flush();
    const second = discovery.snapshot();
    expect(second).not.toBe(first);
    expect([...first.records.keys()]).toEqual([a.id]);
    expect([...second.records.keys()].sort()).toEqual([a.id, b.id].sort());
    expect(discovery.snapshot()).toBe(second);
    await discovery.stop();
  });

  it('the ledger hands out its entries as a live view, current after every write and re-read', async () => {
    const store = new MemoryStore();
    const r = makeRecord(1, 'master');
    const ledger = new Ledger(store, keys);
    await ledger.load();
    const view = ledger.entries();
    expect(view.size).toBe(0);
    const e = entryOf(r, 0);
    await ledger.write(e);
    expect(ledger.entries()).toBe(view);
    expect(view.get(r.id)).toBe(e);
    await store.put(keys.ledgerOf(r.id), 'not json');
    await ledger.reread(r.id);
    expect(view.has(r.id)).toBe(false);
  });
});

describe('subnet book', () => {
  const config: FlannelConfig = { Network: '10.244.0.0/22', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } };
  const machine = (n: number) => ({ id: n.toString(16).padStart(32, '0'), ip: `10.240.0.${32 + n}` });

  it('lists the reservations once for any number of new machines, and reads no index of a machine it knows holds none', async () => {
    const store = new MemoryStore();
    const book = new SubnetBook();
    const got = await Promise.all([1, 2, 3].map((n) => reserveSubnet(store, keys, config, machine(n), undefined, book)));
    expect(new Set(got).size).toBe(3);
    // the reservations and the index listed once; one transaction a machine (a /22 holds 4: a collision
    // between two of the three costs one conflict and one listing more)
    expect(store.requests.list).toBeLessThanOrEqual(4);
    expect(store.requests.get).toBe(0);
    const { list, put } = store.requests;
    // a machine deployed again keeps its subnet: its index is read, nothing is written
    expect(await reserveSubnet(store, keys, config, machine(1), undefined, book)).toBe(got[0]);
    expect(store.requests).toMatchObject({ list, put });
  });

  it('takes the next subnet when another writer reserved the one it chose, and lists again once', async () => {
    const store = new MemoryStore();
    const book = new SubnetBook();
    await reserveSubnet(store, keys, config, machine(1), undefined, book);
    // someone else reserves every subnet but the last free one, behind the book's back
    const taken = new Set([...store.data.keys()].filter((k) => k.startsWith(`${keys.network}subnets/`)).map((k) => k.slice(`${keys.network}subnets/`.length)));
    const others = ['10.244.0.0-24', '10.244.1.0-24', '10.244.2.0-24', '10.244.3.0-24'].filter((n) => !taken.has(n)).slice(0, 2);
    for (const n of others) await store.put(`${keys.network}subnets/${n}`, '{"PublicIP":"10.9.9.9"}');
    const listsBefore = store.requests.list;
    const subnet = await reserveSubnet(store, keys, config, machine(2), undefined, book);
    expect([...taken, ...others].map((n) => n.replace('-', '/'))).not.toContain(subnet);
    expect(store.requests.list - listsBefore).toBeLessThanOrEqual(2);
    await expect(reserveSubnet(store, keys, config, machine(3), undefined, book)).rejects.toMatchObject({ code: 'E_SUBNET_EXHAUSTED' });
  });
});

describe('rendering', () => {
  it('renders no minion while it waits for a master, and each minion once when the master is deployed', async () => {
    const store = new MemoryStore();
    const clock = new FakeClock();
    const master = makeRecord(1, 'master');
    const minions = Array.from({ length: 40 }, (_, i) => makeRecord(100 + i, 'minion'));
    for (const r of [master, ...minions]) await store.put(keys.machine(r.id), JSON.stringify(r));
    const renders = new Map<string, number>();
    const unitsFor = (r: MachineRecord): RenderedUnits => {
      renders.set(r.id, (renders.get(r.id) ?? 0) + 1);
      return units(r);
    };
    const o = await runOverlord(
      { store, hosts: new FakeMachines({ clock, ms: 100 }), clock, log: silentLogger() },
      { cluster: 's', sshUser: 'corekube', unitsFor, expected: { masters: 1, minions: 40 }, concurrency: 10 },
    );
    // the master is half way through its steps: the minions have been planned (waiting), not rendered
    await clock.advance(500);
    expect(o.summary()).toMatchObject({ deployed: 0, waiting: 40 });
    expect([...renders.keys()]).toEqual([master.id]);
    await clock.runUntil(() => o.summary().deployed === 41);
    for (const m of minions) expect(renders.get(m.id), `renders of ${m.hostname}`).toBe(1);
    await o.stop();
  });
});
