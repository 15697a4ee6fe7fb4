/**
 * What the reconciler's one cache (overlord/deploy/machine-plans.ts) saves: one pass over N machines whose masters
 * are deployed (every minion's units rendered) without it and with it, and the planning alone. Run:
 * npx tsx bench/plan-cache.ts [N]   (default 1000)
 */
import { performance } from 'node:perf_hooks';
import { beginDeployment, stepDone, type LedgerEntry } from '../contracts/ledger-entry.ts';
import { unitsForSpec } from '../overlord/deploy/machine-units.ts';
import { MachinePlans } from '../overlord/deploy/machine-plans.ts';
import { clusterView, planOne, stepsOf } from '../overlord/deploy/planner.ts';
import { benchCluster } from './cluster.ts';

const machines = Number(process.argv[2] ?? 1000);
const { spec, records } = benchCluster('plan-cache', machines, 1);
const unitsFor = unitsForSpec(spec);
const snapshot = { records: new Map(records.map((r) => [r.id, r])) };
const view = clusterView(records, new Map());
const ledger = new Map<string, LedgerEntry>();
for (const master of view.masters) {
  const ids = stepsOf(unitsFor(master, view)).map((s) => s.id);
  let entry = beginDeployment(null, master, { hash: unitsFor(master, view).hash, stepIds: ids }, ids, '2026-01-01T00:00:00Z');
  for (const id of ids) entry = stepDone(entry, id, '2026-01-01T00:00:00Z', { startNext: true });
  ledger.set(master.id, entry);
}

const pass = (cache: MachinePlans) => {
  const cluster = cache.cluster(snapshot.records.values(), ledger);
  for (const record of cache.inPlanOrder(snapshot)) cache.plan(record, cluster, ledger);
};
const timed = (runs: number, fn: () => void) => {
  const times = Array.from({ length: runs }, () => {
    const t = performance.now();
    fn();
    return performance.now() - t;
  });
  return Math.round(times.sort((a, b) => a - b)[Math.floor(runs / 2)]! * 10) / 10;
};

const cache = new MachinePlans(unitsFor, 1);
pass(cache);
const deployed = { ...view, deployedMasters: view.masters };
const desired = records.map((record) => ({ record, units: unitsFor(record, deployed) }));
console.log(
  JSON.stringify({
    machines,
    passWithoutCacheMs: timed(5, () => pass(new MachinePlans(unitsFor, 1))),
    passWithCacheMs: timed(20, () => pass(cache)),
    planningAloneMs: timed(20, () => desired.forEach((d) => planOne(d, ledger.get(d.record.id) ?? null))),
  }),
);
