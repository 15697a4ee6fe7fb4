import { sortIps } from '../../clusterspec/cidr.ts';
import type { LedgerEntry } from '../../contracts/ledger-entry.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import { byRoleThenId, ROLE_TRAITS, type Role } from '../../contracts/roles.ts';
import { unitInputs } from './unit-inputs.ts';
import type { ClusterView, RenderedUnits, Step, StepId } from '../../contracts/step.ts';

/**
 * The planner: PURE. `plan(desired, observed)` says, for every announced machine, what is left to do —
 * deterministic, and safe to apply twice (every step is idempotent; a start step checks the unit first).
 *
 * Rules, in order of precedence (each is a test in test/unit/overlord/planner.test.ts):
 * 1. Steps of a machine: write-units → daemon-reload → start each unit in the order units/ gives
 *    (the download oneshot first, `until: exited`, then services `until: active`; a master's etcd member made
 *    first — `etcd-member`: added to the running cluster as a learner, or the initial cluster written — and
 *    promoted once it runs, `etcd-promote`) → node-ready, when the
 *    machine runs a kubelet (its Node registered, with its pod subnet, Ready).
 * 2. Units that do not render: the machine fails (terminal) with the reason; nothing runs.
 * 3. No ledger entry, or a different units hash (templates changed): every step, from the start.
 * 4. A new boot (bootId differs from the ledger's): the steps not done plus every start step again —
 *    files and unit definitions survive a reboot, but only enabled units come back by themselves, and each
 *    start step checks the unit before starting it, so units that did come back are not touched.
 * 5. Failed, same boot, same hash: retryable failures (SSH, etcd) are planned again (the reconciler adds
 *    the backoff); terminal ones stay failed until rule 3 or 4 applies or an operator deletes the entry.
 * 6. Deploying, same boot, same hash (an overlord stopped mid-deploy): the steps not done, in order; the
 *    step that was in flight is redone (start steps check first).
 * 7. Deployed, same boot, same hash: nothing.
 * Gates (a machine with work to do — or units that do not render yet — waits instead):
 * 8. Masters wait until `expectedMasters` master records have announced (their etcd members form one
 *    initial cluster, rendered from every master's address).
 * 9. Minions wait until at least one master has been deployed (its API is up) and no master is being
 *    deployed (new, rebooted or changed): a minion renders against the deployed masters, so starting it
 *    while the second of three masters deploys would redeploy it when that master is done.
 * 10. A deployed master whose units change (or whose change was left half done) waits while another
 *    deployed master changes: one master at a time, so etcd keeps its quorum and the API its servers. New
 *    masters (the initial cluster) start together.
 * 11. A machine that runs a kubelet and was deployed once is drained before its units change (its Node cordoned,
 *    its pods evicted with PodDisruptionBudgets respected) and uncordoned once Ready again: steps `drain` first and
 *    `uncordon` last. At most `maxUnavailable` minions are drained at once (the reconciler holds the others), none
 *    is newly drained within 30 s of a master's change (the reconciler's CONTROL_PLANE_SETTLE_MS: every node's
 *    watches of the API back first), and minions change only while no master does (rule 9): kubelets are never
 *    newer than the API servers.
 * 12. A running master that failed its change for good stops the rollout: no other master and no minion that ran
 *    before changes (a new machine still joins), until it is fixed (a new units hash, a reboot, or its ledger entry deleted).
 * Order: masters first, then minions, each by id.
 */
export type DesiredMachine =
  | { readonly record: MachineRecord; readonly units: RenderedUnits }
  | { readonly record: MachineRecord; readonly renderError: string };

/** PURE: the view every machine's units are rendered against. */
export function clusterView(records: Iterable<MachineRecord>, ledger: ReadonlyMap<string, LedgerEntry>): ClusterView {
  const masters = [...records].filter((r) => ROLE_TRAITS[r.role].controlPlane).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const present = new Set(masters.map((m) => m.id));
  const gone: string[] = [];
  for (const e of ledger.values()) if (ROLE_TRAITS[e.role].controlPlane && e.deployedAt !== null && !present.has(e.id)) gone.push(e.ip);
  return { masters, masterIps: sortIps([...masters.map((m) => m.ip), ...gone]), deployedMasters: masters.filter((m) => (ledger.get(m.id)?.deployedAt ?? null) !== null) };
}

export interface Desired {
  readonly machines: readonly DesiredMachine[];
  /** masters of the initial cluster: masters deploy once this many have announced */
  readonly expectedMasters: number;
}

export interface Observed {
  readonly ledger: ReadonlyMap<string, LedgerEntry>;
}

export type DeployReason = 'new' | 'units-changed' | 'reboot' | 'retry' | 'resume';

interface PlanBase {
  readonly id: string;
  readonly role: Role;
}

export type MachinePlan =
  | (PlanBase & {
      readonly action: 'deploy';
      readonly reason: DeployReason;
      /** what is left, in order */
      readonly steps: readonly Step[];
      /** every step of the machine's units, in order (the ledger's `plan`) */
      readonly stepIds: readonly StepId[];
      readonly unitsHash: string;
      /** the earliest expiry of the certificates the units deliver (RenderedUnits.certificatesExpire), or null */
      readonly certificatesExpire: string | null;
    })
  | (PlanBase & { readonly action: 'wait'; readonly reason: string })
  | (PlanBase & { readonly action: 'fail'; readonly reason: string })
  | (PlanBase & { readonly action: 'none'; readonly state: 'deployed' | 'failed' });

/** The steps of one machine's units, in order; `drain`: a change of a machine that runs a kubelet (rule 11). */
export function stepsOf(units: RenderedUnits, options: { readonly drain?: boolean } = {}): Step[] {
  const inputs = unitInputs(units);
  const node = units.node;
  const drain = options.drain === true && node !== undefined;
  return [
    ...(drain ? [{ kind: 'drain', id: 'drain', node } as const] : []),
    { kind: 'write-units', id: 'write-units', files: units.files, hash: units.hash },
    { kind: 'daemon-reload', id: 'daemon-reload' },
    ...units.start.flatMap((s): Step[] => [
      ...(units.etcdMember?.unit === s.unit ? [{ kind: 'etcd-member', id: 'etcd-member', member: units.etcdMember } as const] : []),
      { kind: 'start', id: `start:${s.unit}`, unit: s.unit, until: s.until, inputs: inputs.get(s.unit)! },
      ...(units.etcdMember?.unit === s.unit ? [{ kind: 'etcd-promote', id: 'etcd-promote', member: units.etcdMember } as const] : []),
    ]),
    ...(node === undefined ? [] : [{ kind: 'node-ready', id: 'node-ready', node } as const]),
    ...(drain ? [{ kind: 'uncordon', id: 'uncordon', node } as const] : []),
  ];
}

/**
 * PURE: rule 11 — a machine that runs a kubelet and ran before (deployed once) is drained before a change and
 * uncordoned after it; a change under way keeps its drain (the ledger's plan has it) until it is done.
 */
export function drainsFor(units: RenderedUnits, entry: LedgerEntry | null): boolean {
  if (units.node === undefined || entry === null || entry.deployedAt === null) return false;
  return entry.unitsHash !== units.hash || entry.plan.includes('drain');
}

export function plan(desired: Desired, observed: Observed): MachinePlan[] {
  const machines = [...desired.machines].sort((a, b) => byRoleThenId(a.record, b.record));
  const gates = planGates(
    machines.filter((m) => ROLE_TRAITS[m.record.role].controlPlane),
    desired.expectedMasters,
    observed,
  );
  return machines.map((m) => planGated(m, gates, observed));
}

/**
 * PURE: one machine's plan, equal to `plan(desired, observed).find(p => p.id === machine.record.id)` but at
 * the cost of planning it and the masters (`masters`: every announced master, the machine itself included
 * when it is one) — what the reconciler needs when a queued machine gets its slot, without planning a
 * thousand others again.
 */
export function planMachine(machine: DesiredMachine, masters: readonly DesiredMachine[], expectedMasters: number, observed: Observed): MachinePlan {
  return planGated(machine, planGates(masters, expectedMasters, observed), observed);
}

/** What the gates (rules 8 and 9) need to know of the masters: `plan` = planGates once, then planGated each. */
export interface Gates {
  readonly expectedMasters: number;
  readonly announcedMasters: number;
  readonly masterDeployed: boolean;
  readonly mastersBusy: boolean;
  /**
   * the one master whose running control plane may change now (rule 10): the first deployed master, in plan
   * order, with a change to apply; undefined when none has one
   */
  readonly changingMaster: string | undefined;
  /**
   * a running master whose last change failed for good (its ledger `failed`, not retried): the rollout stops — no
   * other master changes and no minion is drained — until it is fixed, so a second master is never taken down
   * beside a broken one
   */
  readonly failedMaster: string | undefined;
  /** the masters deployed once (ledger `deployedAt`): their control plane runs */
  readonly runningMasters: ReadonlySet<string>;
}

/** PURE: the gates, from every announced master. */
export function planGates(masters: readonly DesiredMachine[], expectedMasters: number, observed: Observed): Gates {
  return gatesOf(
    masters.map((m) => planOne(m, observed.ledger.get(m.record.id) ?? null)),
    expectedMasters,
    observed,
    clusterView(masters.map((m) => m.record), observed.ledger).masterIps.length,
  );
}

/**
 * PURE: the gates, from the (ungated) plans of every announced master. `members`: how many masters the cluster
 * has (ClusterView.masterIps: a deployed master that stopped announcing still counts), the announced ones by default.
 */
export function gatesOf(masterPlans: readonly MachinePlan[], expectedMasters: number, observed: Observed, members = masterPlans.length): Gates {
  return {
    expectedMasters,
    announcedMasters: Math.max(members, masterPlans.length),
    masterDeployed: masterPlans.some((p) => (observed.ledger.get(p.id)?.deployedAt ?? null) !== null),
    mastersBusy: masterPlans.some((p) => p.action === 'deploy' && p.reason !== 'retry'),
    ...runningChange(masterPlans, observed),
  };
}

/** PURE: one machine's plan under the gates. */
export function planGated(machine: DesiredMachine, gates: Gates, observed: Observed): MachinePlan {
  return gated(planOne(machine, observed.ledger.get(machine.record.id) ?? null), gates);
}

/** PURE: a plan under the gates: a machine with work to do waits while its role's gate is closed. */
export function gated(p: MachinePlan, g: Gates): MachinePlan {
  if (p.action !== 'deploy' && p.action !== 'fail') return p;
  const reason = gateReason(p.role, g) ?? oneMasterAtATime(p, g) ?? rolloutStopped(p, g);
  return reason === undefined ? p : { id: p.id, role: p.role, action: 'wait', reason };
}

/** Deploy reasons that change a running control plane (a deployed master's units, or a change left half done). */
const CHANGES: readonly DeployReason[] = ['units-changed', 'resume', 'retry'];

function runningChange(masterPlans: readonly MachinePlan[], observed: Observed): Pick<Gates, 'changingMaster' | 'runningMasters' | 'failedMaster'> {
  const runningMasters = new Set(masterPlans.filter((p) => (observed.ledger.get(p.id)?.deployedAt ?? null) !== null).map((p) => p.id));
  const changing = masterPlans.find((p) => p.action === 'deploy' && CHANGES.includes(p.reason) && runningMasters.has(p.id));
  const failed = masterPlans.find((p) => p.action === 'none' && p.state === 'failed' && runningMasters.has(p.id));
  return { changingMaster: changing?.id, runningMasters, failedMaster: failed?.id };
}

/** Rule 10: a running master changes only while no other master does (etcd keeps its quorum, the API its servers). */
function oneMasterAtATime(p: MachinePlan & { action: 'deploy' | 'fail' }, g: Gates): string | undefined {
  if (p.action !== 'deploy' || !g.runningMasters.has(p.id) || !CHANGES.includes(p.reason)) return undefined;
  if (g.failedMaster !== undefined && g.failedMaster !== p.id) return `waiting: master ${g.failedMaster} failed its change — fix it (corekube status shows why) before another master changes`;
  return g.changingMaster === undefined || g.changingMaster === p.id ? undefined : `waiting for master ${g.changingMaster} to finish its change (masters change one at a time)`;
}

/** PURE: why a machine of this role with work to do must wait (rules 8 and 9), or undefined when it need not. */
export function gateReason(role: Role, g: Gates): string | undefined {
  if (ROLE_TRAITS[role].controlPlane) {
    return g.announcedMasters < g.expectedMasters ? `waiting for ${g.expectedMasters} masters to announce (${g.announcedMasters} so far)` : undefined;
  }
  if (!g.masterDeployed) return 'waiting for a master to be deployed';
  if (g.mastersBusy) return 'waiting for the masters being deployed';
  return undefined;
}

/** Rule 12: a running master that failed its change stops the change of the minions (a new minion still joins). */
function rolloutStopped(p: MachinePlan & { action: 'deploy' | 'fail' }, g: Gates): string | undefined {
  if (g.failedMaster === undefined || p.action !== 'deploy' || ROLE_TRAITS[p.role].controlPlane || !CHANGES.includes(p.reason)) return undefined;
  return `waiting: master ${g.failedMaster} failed its change — the rollout stops until it is fixed (corekube status shows why)`;
}

/**
 * PURE: the plan of a machine that has no ledger entry yet, when its role's gate is closed: it waits, and
 * its units need not be rendered to know it (a thousand minions announcing before any master is deployed
 * cost no render). Undefined when the machine must be planned with its units (planGated).
 */
export function planUnrendered(record: MachineRecord, gates: Gates, observed: Observed): MachinePlan | undefined {
  if (observed.ledger.has(record.id)) return undefined;
  const reason = gateReason(record.role, gates);
  return reason === undefined ? undefined : { id: record.id, role: record.role, action: 'wait', reason };
}

/** PURE: one machine's plan before the gates, from its desired state and its ledger entry (rules 1 to 7). */
export function planOne(m: DesiredMachine, entry: LedgerEntry | null): MachinePlan {
  const base = { id: m.record.id, role: m.record.role };
  if ('renderError' in m) {
    const recorded = entry?.state === 'failed' && entry.error === m.renderError && entry.bootId === m.record.bootId;
    return recorded ? { ...base, action: 'none', state: 'failed' } : { ...base, action: 'fail', reason: m.renderError };
  }
  const steps = withRestarts(stepsOf(m.units, { drain: drainsFor(m.units, entry) }), entry);
  const stepIds = steps.map((s) => s.id);
  const deploy = (reason: DeployReason, remaining: readonly Step[]): MachinePlan => ({ ...base, action: 'deploy', reason, steps: remaining, stepIds, unitsHash: m.units.hash, certificatesExpire: m.units.certificatesExpire ?? null });
  if (entry === null) return deploy('new', steps);
  if (entry.unitsHash !== m.units.hash) return deploy('units-changed', steps);
  const notDone = (s: Step) => entry.steps[s.id]?.state !== 'done';
  // a new boot started every enabled unit on the files it found: check them, restart none
  if (entry.bootId !== m.record.bootId) return deploy('reboot', steps.filter((s) => notDone(s) || s.kind === 'start' || s.kind === 'node-ready').map(withoutRestart));
  if (entry.state === 'failed') return entry.retryable ? deploy('retry', steps.filter(notDone)) : { ...base, action: 'none', state: 'failed' };
  if (entry.state === 'deployed') return { ...base, action: 'none', state: 'deployed' };
  return deploy('resume', steps.filter(notDone));
}

/**
 * PURE: the start steps of units that run on older inputs than these units give them (the ledger's `applied`
 * differs from the step's `inputs`) marked `restart`; once the download restarts (new release binaries), every
 * unit started after it restarts too. A unit the ledger never recorded (new, or a ledger from before `applied`)
 * is only started: it starts on the new files, or it already runs on them.
 */
export function withRestarts(steps: readonly Step[], entry: LedgerEntry | null): Step[] {
  let cascade = false;
  return steps.map((s) => {
    if (s.kind !== 'start') return s;
    const applied = entry?.applied[s.unit];
    const restart = cascade || (applied !== undefined && applied !== s.inputs);
    if (restart && s.until === 'exited') cascade = true;
    return restart ? { ...s, restart: true } : s;
  });
}

function withoutRestart(s: Step): Step {
  if (s.kind !== 'start' || !s.restart) return s;
  const { restart: _restart, ...rest } = s;
  return rest;
}
