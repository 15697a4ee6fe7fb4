import { describe, expect, it } from 'vitest';
import { beginDeployment, stepDone, stepFailed, type LedgerEntry } from '../../../contracts/ledger-entry.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { clusterView, plan, planOne, stepsOf, type DesiredMachine, type MachinePlan } from '../../../overlord/deploy/planner.ts';
import type { RenderedUnits } from '../../../contracts/step.ts';
import { fakeUnits, makeRecord } from './fakes.ts';

const NOW = '2026-01-01T00:00:00.000Z';
const units = fakeUnits('v1');
const desired = (r: MachineRecord, render = units): DesiredMachine => ({ record: r, units: render(r) });
const ids = (p: MachinePlan | undefined) => (p?.action === 'deploy' ? p.steps.map((s) => s.id) : []);
const find = (plans: MachinePlan[], r: MachineRecord) => plans.find((p) => p.id === r.id);

/** The ledger entry of a machine whose first `n` steps are done (all of them when n is omitted). */
function ledgerOf(r: MachineRecord, n?: number, render = units): LedgerEntry {
  const steps = stepsOf(render(r));
  let e = beginDeployment(null, r, { hash: render(r).hash, stepIds: steps.map((s) => s.id) }, steps.map((s) => s.id), NOW);
  for (const s of steps.slice(0, n ?? steps.length)) e = stepDone(e, s.id, NOW, { startNext: true });
  return e;
}

const master = makeRecord(1, 'master');
const master2 = makeRecord(2, 'master');
const minion = makeRecord(10, 'minion');
const minion2 = makeRecord(11, 'minion');

describe('plan: the steps of a machine', () => {
  it('writes units, reloads systemd, then starts the download until exited and each service until active, in the units order', () => {
    const plans = plan({ machines: [desired(master)], expectedMasters: 1 }, { ledger: new Map() });
    const p = find(plans, master)!;
    expect(p.action).toBe('deploy');
    if (p.action !== 'deploy') return;
    expect(p.reason).toBe('new');
    expect(p.steps.map((s) => (s.kind === 'start' ? `${s.id}/${s.until}` : s.id))).toEqual([
      'write-units',
      'daemon-reload',
      'start:corekube-download.service/exited',
      'start:etcd.service/active',
      'start:kube-apiserver.service/active',
    ]);
  });

  it("makes a master's etcd member right before its etcd first starts and promotes it right after, outside the units hash", () => {
    const units = fakeUnits()(master);
    const member = { unit: 'etcd.service', name: 'etcd-10-240-0-33', peerUrl: 'https://10.240.0.33:2380', initialCluster: 'etcd-10-240-0-33=https://10.240.0.33:2380', bootstrapEnv: '/etc/corekube/etcd/bootstrap.env', dataDir: '/var/lib/corekube/etcd' };
    const steps = stepsOf({ ...units, etcdMember: member });
    expect(steps.map((s) => s.id)).toEqual(['write-units', 'daemon-reload', 'start:corekube-download.service', 'etcd-member', 'start:etcd.service', 'etcd-promote', 'start:kube-apiserver.service']);
    // another master's address in the initial cluster changes no step a deployed master would run again
    const more = stepsOf({ ...units, etcdMember: { ...member, initialCluster: `${member.initialCluster},etcd-10-240-0-34=https://10.240.0.34:2380` } });
    expect(more.find((s) => s.kind === 'write-units')).toEqual(steps.find((s) => s.kind === 'write-units'));
  });

  it('plans nothing for a machine deployed in this boot with these units', () => {
    const plans = plan({ machines: [desired(master)], expectedMasters: 1 }, { ledger: new Map([[master.id, ledgerOf(master)]]) });
    expect(find(plans, master)).toMatchObject({ action: 'none', state: 'deployed' });
  });

  it('is deterministic: masters first, then minions, each by id, whatever the input order', () => {
    const machines = [desired(minion2), desired(master2), desired(minion), desired(master)];
    const ledger = new Map([[master.id, ledgerOf(master)]]);
    const a = plan({ machines, expectedMasters: 2 }, { ledger });
    const b = plan({ machines: [...machines].reverse(), expectedMasters: 2 }, { ledger });
    expect(a).toEqual(b);
    expect(a.map((p) => p.id)).toEqual([master.id, master2.id, minion.id, minion2.id]);
  });
});

describe('plan: resuming after an interruption', () => {
  const all = stepsOf(units(master)).map((s) => s.id);

  it.each([1, 2, 3, 4])('after %i steps were done, plans exactly the rest, the interrupted step first', (n) => {
    const plans = plan({ machines: [desired(master)], expectedMasters: 1 }, { ledger: new Map([[master.id, ledgerOf(master, n)]]) });
    const p = find(plans, master)!;
    expect(p).toMatchObject({ action: 'deploy', reason: 'resume' });
    expect(ids(p)).toEqual(all.slice(n));
  });

  it('redoes the step that was in flight when the overlord stopped (the executor checks a start step first)', () => {
    const entry = ledgerOf(master, 2); // write-units, daemon-reload done; the download recorded in flight
    expect(entry.steps['start:corekube-download.service']!.state).toBe('in-flight');
    const p = find(plan({ machines: [desired(master)], expectedMasters: 1 }, { ledger: new Map([[master.id, entry]]) }), master);
    expect(ids(p)[0]).toBe('start:corekube-download.service');
  });

  it('after a new boot, checks every start step again but does not rewrite files', () => {
    const rebooted = makeRecord(1, 'master', { bootId: 'feedfacefeedfacefeedfacefeedface' });
    const p = find(plan({ machines: [desired(rebooted)], expectedMasters: 1 }, { ledger: new Map([[master.id, ledgerOf(master)]]) }), rebooted);
    expect(p).toMatchObject({ action: 'deploy', reason: 'reboot' });
    expect(ids(p)).toEqual(all.filter((id) => id.startsWith('start:')));
  });

  it('after a new boot mid-deploy, plans the steps not done plus the start steps done before the reboot', () => {
    const rebooted = makeRecord(1, 'master', { bootId: 'feedfacefeedfacefeedfacefeedface' });
    const p = find(plan({ machines: [desired(rebooted)], expectedMasters: 1 }, { ledger: new Map([[master.id, ledgerOf(master, 1)]]) }), rebooted);
    expect(ids(p)).toEqual(all.slice(1));
  });
});

describe('plan: a machine that runs a kubelet', () => {
  const withNode = (r: MachineRecord) => ({ ...units(r), node: r.hostname });

  it("ends with node-ready, after every start step: deployed means its Node is Ready", () => {
    const p = find(plan({ machines: [desired(master), desired(minion, withNode)], expectedMasters: 1 }, { ledger: new Map([[master.id, ledgerOf(master)]]) }), minion);
    expect(ids(p)).toEqual(['write-units', 'daemon-reload', 'start:corekube-download.service', 'start:kubelet.service', 'node-ready']);
    expect(p?.action === 'deploy' && p.steps.at(-1)).toEqual({ kind: 'node-ready', id: 'node-ready', node: minion.hostname });
    expect(stepsOf(units(minion)).map((s) => s.id)).not.toContain('node-ready');
  });

  it('checks the Node again after a new boot, with the start steps', () => {
    const ledger = new Map([[master.id, ledgerOf(master)], [minion.id, ledgerOf(minion, undefined, withNode)]]);
    const rebooted = makeRecord(10, 'minion', { bootId: 'feedfacefeedfacefeedfacefeedface' });
    const p = find(plan({ machines: [desired(master), desired(rebooted, withNode)], expectedMasters: 1 }, { ledger }), rebooted);
    expect(p).toMatchObject({ action: 'deploy', reason: 'reboot' });
    expect(ids(p)).toEqual(['start:corekube-download.service', 'start:kubelet.service', 'node-ready']);
  });
});

describe('plan: changed templates', () => {
  it('redeploys a deployed machine from the first step when the units hash changes', () => {
    const v2 = fakeUnits('v2');
    const p = find(plan({ machines: [desired(master, v2)], expectedMasters: 1 }, { ledger: new Map([[master.id, ledgerOf(master)]]) }), master);
    expect(p).toMatchObject({ action: 'deploy', reason: 'units-changed' });
    expect(ids(p)).toEqual(stepsOf(v2(master)).map((s) => s.id));
  });

  it('redeploys a failed machine when the units change', () => {
    const failed = stepFailed(ledgerOf(master, 2), 'start:corekube-download.service', 'E_UNIT_FAILED: boom', false, NOW);
    const p = find(plan({ machines: [desired(master, fakeUnits('v2'))], expectedMasters: 1 }, { ledger: new Map([[master.id, failed]]) }), master);
    expect(p).toMatchObject({ action: 'deploy', reason: 'units-changed' });
  });
});

describe('plan: failures', () => {
  it('leaves a terminally failed machine alone in the same boot with the same units', () => {
    const failed = stepFailed(ledgerOf(master, 2), 'start:corekube-download.service', 'E_UNIT_FAILED: boom', false, NOW);
    expect(find(plan({ machines: [desired(master)], expectedMasters: 1 }, { ledger: new Map([[master.id, failed]]) }), master)).toMatchObject({ action: 'none', state: 'failed' });
  });

  it('plans a machine that failed for a retryable reason again, from the failed step', () => {
    const failed = stepFailed(ledgerOf(master, 2), 'start:corekube-download.service', 'E_SSH: unreachable', true, NOW);
    const p = find(plan({ machines: [desired(master)], expectedMasters: 1 }, { ledger: new Map([[master.id, failed]]) }), master);
    expect(p).toMatchObject({ action: 'deploy', reason: 'retry' });
    expect(ids(p)[0]).toBe('start:corekube-download.service');
  });

  it('retries a terminally failed machine after it rebooted', () => {
    const failed = stepFailed(ledgerOf(master, 2), 'start:corekube-download.service', 'E_UNIT_FAILED: boom', false, NOW);
    const rebooted = makeRecord(1, 'master', { bootId: 'feedfacefeedfacefeedfacefeedface' });
    expect(find(plan({ machines: [desired(rebooted)], expectedMasters: 1 }, { ledger: new Map([[master.id, failed]]) }), rebooted)).toMatchObject({ action: 'deploy', reason: 'reboot' });
  });

  it('fails a machine whose units do not render, once', () => {
    const broken: DesiredMachine = { record: master, renderError: 'E_TEMPLATE: rendering failed' };
    expect(find(plan({ machines: [broken], expectedMasters: 1 }, { ledger: new Map() }), master)).toMatchObject({ action: 'fail', reason: 'E_TEMPLATE: rendering failed' });
  });
});

describe('plan: gates', () => {
  it('keeps masters waiting until the expected number of masters announced', () => {
    const plans = plan({ machines: [desired(master), desired(master2)], expectedMasters: 3 }, { ledger: new Map() });
    expect(plans.every((p) => p.action === 'wait')).toBe(true);
    expect(find(plans, master)).toMatchObject({ reason: 'waiting for 3 masters to announce (2 so far)' });
  });

  it('keeps minions waiting until a master is deployed', () => {
    const plans = plan({ machines: [desired(master), desired(minion)], expectedMasters: 1 }, { ledger: new Map() });
    expect(find(plans, master)).toMatchObject({ action: 'deploy' });
    expect(find(plans, minion)).toMatchObject({ action: 'wait', reason: 'waiting for a master to be deployed' });
  });

  it('keeps minions waiting while another master is still deploying, then lets them go', () => {
    const ledger = new Map([[master.id, ledgerOf(master)]]);
    const busy = plan({ machines: [desired(master), desired(master2), desired(minion)], expectedMasters: 2 }, { ledger });
    expect(find(busy, minion)).toMatchObject({ action: 'wait', reason: 'waiting for the masters being deployed' });
    ledger.set(master2.id, ledgerOf(master2));
    const free = plan({ machines: [desired(master), desired(master2), desired(minion)], expectedMasters: 2 }, { ledger });
    expect(find(free, minion)).toMatchObject({ action: 'deploy', reason: 'new' });
  });

  it('lets minions go when the only other master failed terminally', () => {
    const ledger = new Map([
      [master.id, ledgerOf(master)],
      [master2.id, stepFailed(ledgerOf(master2, 2), 'start:corekube-download.service', 'boom', false, NOW)],
    ]);
    expect(find(plan({ machines: [desired(master), desired(master2), desired(minion)], expectedMasters: 2 }, { ledger }), minion)).toMatchObject({ action: 'deploy' });
  });

  it('holds a minion whose units cannot render yet (no deployed master) as waiting, not failed', () => {
    const broken: DesiredMachine = { record: minion, renderError: 'no deployed master' };
    expect(find(plan({ machines: [desired(master), broken], expectedMasters: 1 }, { ledger: new Map() }), minion)).toMatchObject({ action: 'wait' });
  });

  it('changes deployed masters one at a time; the next goes once the first is done (new masters start together)', () => {
    const master3 = makeRecord(3, 'master');
    const all = [master, master2, master3];
    const v2 = fakeUnits('v2');
    const ledger = new Map(all.map((m) => [m.id, ledgerOf(m)]));
    const plans = plan({ machines: all.map((m) => desired(m, v2)), expectedMasters: 3 }, { ledger });
    expect(plans.map((p) => [p.action, p.action === 'wait' ? p.reason : ''])).toEqual([
      ['deploy', ''],
      ['wait', `waiting for master ${master.id} to finish its change (masters change one at a time)`],
      ['wait', `waiting for master ${master.id} to finish its change (masters change one at a time)`],
    ]);
    ledger.set(master.id, ledgerOf(master, undefined, v2));
    expect(plan({ machines: all.map((m) => desired(m, v2)), expectedMasters: 3 }, { ledger }).map((p) => p.action)).toEqual(['none', 'deploy', 'wait']);
    expect(plan({ machines: all.map((m) => desired(m)), expectedMasters: 3 }, { ledger: new Map() }).map((p) => p.action)).toEqual(['deploy', 'deploy', 'deploy']);
  });

  it('stops the rollout when a running master failed its change: no other master changes, no minion that ran before is drained', () => {
    const master3 = makeRecord(3, 'master');
    const all = [master, master2, master3];
    const v2 = fakeUnits('v2');
    // master 1 took the change and failed for good (not retried) at its download; the others still run v1
    const failed = stepFailed(beginDeployment(ledgerOf(master), master, { hash: v2(master).hash, stepIds: stepsOf(v2(master)).map((s) => s.id) }, stepsOf(v2(master)).map((s) => s.id), NOW), 'write-units', 'boom', false, NOW);
    const ledger = new Map<string, LedgerEntry>([[master.id, failed], [master2.id, ledgerOf(master2)], [master3.id, ledgerOf(master3)], [minion.id, ledgerOf(minion)]]);
    const plans = plan({ machines: [...all, minion].map((m) => desired(m, v2)), expectedMasters: 3 }, { ledger });
    expect(plans.map((p) => [p.id, p.action, p.action === 'wait' ? p.reason : ''])).toEqual([
      [master.id, 'none', ''],
      [master2.id, 'wait', `waiting: master ${master.id} failed its change — fix it (corekube status shows why) before another master changes`],
      [master3.id, 'wait', `waiting: master ${master.id} failed its change — fix it (corekube status shows why) before another master changes`],
      [minion.id, 'wait', 'waiting for the masters being deployed'],
    ]);
    // the other masters changed before master 1 failed: the minions still wait, not drained beside a broken master
    ledger.set(master2.id, ledgerOf(master2, undefined, v2));
    ledger.set(master3.id, ledgerOf(master3, undefined, v2));
    expect(find(plan({ machines: [...all, minion].map((m) => desired(m, v2)), expectedMasters: 3 }, { ledger }), minion)).toEqual({
      id: minion.id, role: 'minion', action: 'wait', reason: `waiting: master ${master.id} failed its change — the rollout stops until it is fixed (corekube status shows why)`,
    });
  });

  it('gives units the announced masters, and the deployed ones apart', () => {
    const view = clusterView([minion, master2, master], new Map([[master2.id, ledgerOf(master2)]]));
    expect(view.masters.map((m) => m.id)).toEqual([master.id, master2.id]);
    expect(view.masterIps).toEqual([master.ip, master2.ip]);
    expect(view.deployedMasters.map((m) => m.id)).toEqual([master2.id]);
  });

  it('keeps a deployed master that stopped announcing among the masters\' addresses (an etcd member until removed), not one never deployed', () => {
    const gone = makeRecord(3, 'master');
    const neverDeployed = makeRecord(4, 'master');
    const ledger = new Map([
      [master.id, ledgerOf(master)],
      [gone.id, ledgerOf(gone)],
      [neverDeployed.id, ledgerOf(neverDeployed, 1)],
    ]);
    const view = clusterView([master, minion], ledger);
    expect(view.masters.map((m) => m.id)).toEqual([master.id]);
    expect(view.masterIps).toEqual([master.ip, gone.ip]);
    expect(view.deployedMasters.map((m) => m.id)).toEqual([master.id]);
  });

  it('lets a master with changed units deploy while a deployed master is away: the away one still counts toward the expected masters', () => {
    const gone = makeRecord(3, 'master');
    const ledger = new Map([
      [master.id, ledgerOf(master, undefined, fakeUnits('v0'))],
      [gone.id, ledgerOf(gone)],
    ]);
    expect(find(plan({ machines: [desired(master), desired(minion)], expectedMasters: 2 }, { ledger }), master)).toMatchObject({ action: 'deploy', reason: 'units-changed' });
  });
});

describe('plan: applying twice does no harm', () => {
  it('a plan recomputed from the same state is the same plan', () => {
    const ledger = new Map([[master.id, ledgerOf(master, 3)]]);
    const input = { machines: [desired(master), desired(minion)], expectedMasters: 1 };
    expect(plan(input, { ledger })).toEqual(plan(input, { ledger }));
  });
});

describe('plan: applying what changed', () => {
  /** units whose files name each unit's own config file: a change to one config is that unit's alone */
  const configured = (configs: Record<string, string>) => (r: MachineRecord): RenderedUnits => {
    const units = ['corekube-download.service', 'flanneld.service', 'kubelet.service'];
    const files = units.flatMap((u) => [
      { path: `/etc/systemd/system/${u}`, content: `[Service]\nExecStart=/opt/corekube/bin/${u} --config=/etc/corekube/${u}/config\n`, mode: '0644' },
      { path: `/etc/corekube/${u}/config`, content: `${configs[u] ?? 'v1'} ${r.hostname}\n`, mode: '0644' },
    ]);
    return { files, start: units.map((u) => ({ unit: u, until: u.includes('download') ? ('exited' as const) : ('active' as const) })), hash: JSON.stringify(configs) };
  };
  const restarts = (p: MachinePlan) => (p.action === 'deploy' ? p.steps.filter((s) => s.kind === 'start' && s.restart).map((s) => s.id) : []);
  const deployedWith = (render: (r: MachineRecord) => RenderedUnits) => {
    const steps = stepsOf(render(minion));
    let e = beginDeployment(null, minion, { hash: render(minion).hash, stepIds: steps.map((s) => s.id) }, steps.map((s) => s.id), NOW);
    for (const s of steps) e = stepDone(e, s.id, NOW, { startNext: true, ...(s.kind === 'start' ? { applied: { unit: s.unit, inputs: s.inputs } } : {}) });
    return e;
  };

  it('restarts only the unit whose files changed, and records per unit what it runs on', () => {
    const entry = deployedWith(configured({}));
    expect(Object.keys(entry.applied).sort()).toEqual(['corekube-download.service', 'flanneld.service', 'kubelet.service']);
    const p = planOne({ record: minion, units: configured({ 'kubelet.service': 'v2' })(minion) }, entry);
    expect(p).toMatchObject({ action: 'deploy', reason: 'units-changed' });
    expect(restarts(p)).toEqual(['start:kubelet.service']);
  });

  it('restarts every unit after the download when the download\'s files changed (a new release: new binaries)', () => {
    const entry = deployedWith(configured({}));
    expect(restarts(planOne({ record: minion, units: configured({ 'corekube-download.service': 'v2' })(minion) }, entry))).toEqual([
      'start:corekube-download.service', 'start:flanneld.service', 'start:kubelet.service',
    ]);
  });

  it('restarts nothing after a reboot that followed the new files (the boot started every unit on them), nor a unit the ledger never recorded', () => {
    const entry = deployedWith(configured({}));
    const changed = configured({ 'kubelet.service': 'v2' })(minion);
    const steps = stepsOf(changed);
    // the new files written, the machine rebooted before the restart
    const written = stepDone(stepDone(beginDeployment(entry, minion, { hash: changed.hash, stepIds: steps.map((s) => s.id) }, steps.map((s) => s.id), NOW), 'write-units', NOW, { startNext: true }), 'daemon-reload', NOW, { startNext: true });
    const rebooted = { ...minion, bootId: 'b'.repeat(32) };
    const after = planOne({ record: rebooted, units: configured({ 'kubelet.service': 'v2' })(rebooted) }, written);
    expect(after).toMatchObject({ action: 'deploy', reason: 'reboot' });
    expect(restarts(after)).toEqual([]);
    const older = { ...entry, applied: {} };
    expect(restarts(planOne({ record: minion, units: configured({ 'kubelet.service': 'v2' })(minion) }, older))).toEqual([]);
  });

  it('restarts again after an overlord stopped mid-restart (the unit\'s new inputs were not recorded)', () => {
    const entry = deployedWith(configured({}));
    const changed = configured({ 'kubelet.service': 'v2' })(minion);
    const steps = stepsOf(changed);
    let e = beginDeployment(entry, minion, { hash: changed.hash, stepIds: steps.map((s) => s.id) }, steps.map((s) => s.id), NOW);
    for (const s of steps.slice(0, 3)) e = stepDone(e, s.id, NOW, { startNext: true, ...(s.kind === 'start' ? { applied: { unit: s.unit, inputs: s.inputs } } : {}) });
    const resumed = planOne({ record: minion, units: changed }, e);
    expect(resumed).toMatchObject({ action: 'deploy', reason: 'resume' });
    expect(restarts(resumed)).toEqual(['start:kubelet.service']);
  });
});
