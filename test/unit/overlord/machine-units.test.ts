import { describe, expect, it } from 'vitest';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { beginDeployment, stepDone, type LedgerEntry } from '../../../contracts/ledger-entry.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import type { ClusterView, RenderedUnits } from '../../../contracts/step.ts';
import { unitsForSpec } from '../../../overlord/deploy/machine-units.ts';
import { clusterView, plan, stepsOf } from '../../../overlord/deploy/planner.ts';
import { makeRecord } from './fakes.ts';

const NOW = '2026-01-01T00:00:00.000Z';
const masters = [makeRecord(1, 'master'), makeRecord(2, 'master'), makeRecord(3, 'master')];
const minion = makeRecord(10, 'minion');
const specOf = (lb: string) => parseClusterSpec({ flags: { name: 't', masters: '3', minions: '1', 'api-load-balancer': lb } });

/** The ledger entry of a machine deployed with `units`. */
function deployed(r: MachineRecord, units: RenderedUnits): LedgerEntry {
  const steps = stepsOf(units);
  let e = beginDeployment(null, r, { hash: units.hash, stepIds: steps.map((s) => s.id) }, steps.map((s) => s.id), NOW);
  for (const s of steps) e = stepDone(e, s.id, NOW, { startNext: true });
  return e;
}

const proxyEndpoints = (units: RenderedUnits) =>
  /--endpoints=(\S+)/.exec(units.files.find((f) => f.path === '/etc/systemd/system/corekube-api-proxy.service')!.content)?.[1];

describe("a minion's units and the masters", () => {
  // every master deployed, the minion too; then the third master powers off: its record expires
  const render = (lb: string) => unitsForSpec(specOf(lb));
  const before = (lb: string): { view: ClusterView; ledger: Map<string, LedgerEntry> } => {
    const all = new Map<string, LedgerEntry>();
    const view0 = clusterView([...masters, minion], all);
    for (const m of masters) all.set(m.id, deployed(m, render(lb)(m, view0)));
    const view = clusterView([...masters, minion], all);
    all.set(minion.id, deployed(minion, render(lb)(minion, view)));
    return { view, ledger: all };
  };

  it("names every master in a node-local minion's proxy, and keeps a master that stopped announcing there: losing it changes no minion (nothing to drain)", () => {
    const { view, ledger } = before('node-local');
    expect(proxyEndpoints(render('node-local')(minion, view))).toBe(masters.map((m) => `${m.ip}:6443`).join(','));
    const lost = clusterView([masters[0]!, masters[1]!, minion], ledger);
    expect(lost.deployedMasters).toHaveLength(2);
    const after = render('node-local')(minion, lost);
    expect(proxyEndpoints(after)).toBe(masters.map((m) => `${m.ip}:6443`).join(','));
    expect(after.hash).toBe(ledger.get(minion.id)!.unitsHash);
    const plans = plan({ machines: [...[masters[0]!, masters[1]!].map((m) => ({ record: m, units: render('node-local')(m, lost) })), { record: minion, units: after }], expectedMasters: 3 }, { ledger });
    expect(plans.find((p) => p.id === minion.id)).toMatchObject({ action: 'none', state: 'deployed' });
  });

  it('with none, names the first deployed master; with octavia, no master at all (both as before)', () => {
    const none = before('none');
    expect(render('none')(minion, none.view).files.find((f) => f.path.endsWith('kubelet.kubeconfig'))!.content).toContain(`server: https://${masters[0]!.ip}:6443`);
    const octavia = before('octavia');
    const lost = clusterView([masters[1]!, masters[2]!, minion], octavia.ledger);
    expect(render('octavia')(minion, lost).hash).toBe(octavia.ledger.get(minion.id)!.unitsHash);
  });
});
