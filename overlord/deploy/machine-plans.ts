import type { LedgerEntry } from '../../contracts/ledger-entry.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import { byRoleThenId } from '../../contracts/roles.ts';
import type { RenderedUnits } from '../../contracts/step.ts';
import { asCorekubeError } from '../../core/errors.ts';
import { clusterView, gated, gatesOf, planOne, planUnrendered, type DesiredMachine, type Gates, type MachinePlan } from './planner.ts';
import type { ClusterView } from '../../contracts/step.ts';

/**
 * The reconciler's one cache: per machine, its units rendered for its record and the cluster view, and its
 * plan for its ledger entry. Records are frozen and replaced when they change, ledger entries likewise, so
 * "unchanged" is "the same objects": a pass over a thousand machines of which two changed renders and plans
 * two, and a machine that gets its slot reuses the plan its pass made (planned once, not again at the slot).
 *
 * Why it pays (`npx tsx bench/plan-cache.ts`, a thousand machines, 2 cores): a pass renders and plans them in
 * ~450 ms without it and ~0.4 ms with it — rendering is most of a millisecond a machine, planning alone ~3 µs —
 * and there is a pass per burst of watch events and per machine that finishes (a thousand deploys: a thousand
 * passes, so the plans kept save seconds of CPU too). The planner itself stays pure and keeps nothing.
 */
export class MachinePlans {
  private readonly machines = new Map<string, Cached>();
  /** the records of a discovery snapshot in plan order, sorted once per snapshot */
  private readonly sorted = new WeakMap<object, readonly MachineRecord[]>();
  /** records are frozen: their render key is computed once */
  private readonly recordKeys = new WeakMap<MachineRecord, string>();
  private readonly viewKeys = new WeakMap<ClusterView, string>();

  constructor(
    private readonly unitsFor: (record: MachineRecord, cluster: ClusterView) => RenderedUnits,
    private readonly expectedMasters: number,
    /** a machine's files beyond its record and the view (its certificates): a new version renders it again */
    private readonly filesVersion: (id: string) => number = () => 0,
  ) {}

  /** The records of `snapshot` in plan order (control plane first, then by id); forgets machines no longer in it. */
  inPlanOrder(snapshot: { readonly records: ReadonlyMap<string, MachineRecord> }): readonly MachineRecord[] {
    let sorted = this.sorted.get(snapshot);
    if (!sorted) {
      sorted = [...snapshot.records.values()].sort(byRoleThenId);
      this.sorted.set(snapshot, sorted);
      for (const id of this.machines.keys()) if (!snapshot.records.has(id)) this.machines.delete(id);
    }
    return sorted;
  }

  /** The view every machine's units are rendered against, and the gates of rules 8 and 9 (masters planned from the cache). */
  cluster(records: Iterable<MachineRecord>, ledger: ReadonlyMap<string, LedgerEntry>): { readonly view: ClusterView; readonly gates: Gates } {
    const view = clusterView(records, ledger);
    const observed = { ledger };
    return { view, gates: gatesOf(view.masters.map((m) => this.ungated(m, view, ledger)), this.expectedMasters, observed, view.masterIps.length) };
  }

  /** One machine's plan under the gates: its units rendered only when its role's gate lets it have work. */
  plan(record: MachineRecord, cluster: { readonly view: ClusterView; readonly gates: Gates }, ledger: ReadonlyMap<string, LedgerEntry>): MachinePlan {
    return planUnrendered(record, cluster.gates, { ledger }) ?? gated(this.ungated(record, cluster.view, ledger), cluster.gates);
  }

  /** The machine's units as last rendered for its record (undefined when they did not render). */
  unitsOf(id: string): RenderedUnits | undefined {
    const desired = this.machines.get(id)?.desired;
    return desired && 'units' in desired ? desired.units : undefined;
  }

  private ungated(record: MachineRecord, view: ClusterView, ledger: ReadonlyMap<string, LedgerEntry>): MachinePlan {
    const desired = this.desired(record, view);
    const entry = ledger.get(record.id) ?? null;
    const cached = this.machines.get(record.id)!;
    if (cached.plan && cached.plan.entry === entry) return cached.plan.plan;
    const plan = Object.freeze(planOne(desired, entry));
    cached.plan = { entry, plan };
    return plan;
  }

  private desired(record: MachineRecord, view: ClusterView): DesiredMachine {
    let recordKey = this.recordKeys.get(record);
    if (recordKey === undefined) {
      recordKey = JSON.stringify(record);
      this.recordKeys.set(record, recordKey);
    }
    // compared in two parts, not as one concatenated string: a pass over a thousand machines builds none
    const viewKey = this.viewKey(view);
    const version = this.filesVersion(record.id);
    const hit = this.machines.get(record.id);
    if (hit && hit.recordKey === recordKey && hit.viewKey === viewKey && hit.version === version) return hit.desired;
    let desired: DesiredMachine;
    try {
      desired = { record, units: this.unitsFor(record, view) };
    } catch (err) {
      desired = { record, renderError: asCorekubeError(err, 'E_TEMPLATE').describe() };
    }
    this.machines.set(record.id, { recordKey, viewKey, version, desired, plan: undefined });
    return desired;
  }

  private viewKey(view: ClusterView): string {
    let key = this.viewKeys.get(view);
    if (key === undefined) {
      key = `${view.masterIps.join(',')}|${view.deployedMasters.map((m) => m.ip).join(',')}`;
      this.viewKeys.set(view, key);
    }
    return key;
  }
}

interface Cached {
  readonly recordKey: string;
  readonly viewKey: string;
  readonly version: number;
  readonly desired: DesiredMachine;
  /** the plan for a ledger entry (frozen objects: compared by identity) */
  plan: { readonly entry: LedgerEntry | null; readonly plan: MachinePlan } | undefined;
}
