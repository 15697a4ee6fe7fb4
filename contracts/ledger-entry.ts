import { CorekubeError } from '../core/errors.ts';
import { SCHEMA_VERSION } from './keys.ts';
import type { MachineRecord } from './machine-record.ts';
import { isRole, type Role } from './roles.ts';
import type { StepId } from './step.ts';

/**
 * The ledger: what the overlord has done to each machine, at `<prefix>/ledger/<id>` (JSON, one entry a
 * machine), written only by the leading overlord, each write a transaction comparing the mod revision it
 * read and the leader's fence key. It is the overlord's memory across a crash: a restarted overlord loads it
 * and resumes where it stopped.
 *
 * Contract of the states:
 * - machine `deploying`: the steps of `plan` run in order; at most one is `in-flight`. An `in-flight` step
 *   found by a restarted overlord may or may not have run: it is redone, and a `start` step first checks
 *   the unit's state (see executor.ts), so a unit already running is not started twice.
 * - machine `deployed`: every step `done` for this `bootId` and `unitsHash`.
 * - machine `failed`: a step failed after its retries (`error` says which and why). `retryable` failures —
 *   the machine's surroundings failed (SSH unreachable, etcd, the API server): core/retry.ts decides it, the
 *   requeue — are planned again after the requeue backoff; the others (a unit that keeps failing, a host key
 *   mismatch, templates that do not render) wait for a change: new units hash, a reboot (new bootId), or an
 *   operator deleting the entry.
 *
 * The transitions below are pure; `Ledger` (overlord/deploy/ledger.ts) is the thin edge that reads and writes them.
 */
export type StepState = 'pending' | 'in-flight' | 'done' | 'failed';
export type MachineState = 'deploying' | 'deployed' | 'failed';

export interface StepRecord {
  readonly state: StepState;
  /** attempts of the current cycle (reset when the step is planned again) */
  readonly attempts: number;
  readonly startedAt: string | null;
  readonly finishedAt: string | null;
  readonly lastError: string | null;
  /**
   * a restart's unit invocation before it, recorded just before the restart is asked for: an overlord stopped
   * while the restart was under way finds a newer invocation and does not restart the unit a second time
   */
  readonly from?: string;
}

export interface LedgerEntry {
  readonly schema: 1;
  readonly id: string;
  readonly role: Role;
  readonly ip: string;
  readonly hostname: string;
  /** the boot the steps ran in; a new boot re-checks the start steps */
  readonly bootId: string;
  /** hash of the rendered units the steps deployed; a new hash redeploys */
  readonly unitsHash: string;
  readonly state: MachineState;
  /** every step of the units, in order */
  readonly plan: readonly StepId[];
  readonly steps: Readonly<Record<string, StepRecord>>;
  /** why the machine failed: `<step>: <reason>` */
  readonly error: string | null;
  /** the failure requeues the machine (core/retry.ts `decide`): it is planned again after the requeue backoff */
  readonly retryable: boolean;
  readonly startedAt: string;
  readonly finishedAt: string | null;
  /**
   * when the machine was first deployed, kept through later redeploys, reboots and failures: a master with
   * it set has served the API (minions render against such masters, see reconciler.ts ClusterView)
   */
  readonly deployedAt: string | null;
  /**
   * the earliest expiry (ISO 8601) of the certificates the deployed units deliver (`corekube status`
   * certificatesExpire); null when they deliver none (absent in entries written before it was recorded)
   */
  readonly certificatesExpire: string | null;
  /**
   * per started unit, the inputs hash (Step `inputs`) it last ran on — recorded when its start step is done,
   * kept through redeploys: a unit whose inputs changed since is restarted (overlord/deploy/planner.ts)
   */
  readonly applied: Readonly<Record<string, string>>;
  readonly updatedAt: string;
}

const PENDING: StepRecord = Object.freeze({ state: 'pending', attempts: 0, startedAt: null, finishedAt: null, lastError: null });

/** Longest error text kept in the ledger (a journal excerpt can be long; etcd values should stay small). */
export const MAX_ERROR_CHARS = 4000;

function clip(text: string): string {
  return text.length <= MAX_ERROR_CHARS ? text : `${text.slice(0, MAX_ERROR_CHARS - 1)}…`;
}

function freeze(entry: LedgerEntry): LedgerEntry {
  for (const s of Object.values(entry.steps)) Object.freeze(s);
  Object.freeze(entry.steps);
  Object.freeze(entry.plan);
  Object.freeze(entry.applied);
  return Object.freeze(entry);
}

/**
 * Starts (or resumes) a deployment: `remaining` steps become pending, the first of them in flight.
 * Steps not in `remaining` keep their record (they are done); a new units hash starts from scratch.
 */
export function beginDeployment(
  prev: LedgerEntry | null,
  record: MachineRecord,
  units: { readonly hash: string; readonly stepIds: readonly StepId[]; readonly certificatesExpire?: string | null },
  remaining: readonly StepId[],
  now: string,
): LedgerEntry {
  const same = prev !== null && prev.unitsHash === units.hash;
  const steps: Record<string, StepRecord> = {};
  for (const id of units.stepIds) {
    const old = same ? prev.steps[id] : undefined;
    // a restart asked for before a stop keeps what it replaced (StepRecord `from`): it is not asked for twice
    const from = old?.from !== undefined && old.state !== 'done' ? { from: old.from } : {};
    steps[id] = remaining.includes(id) || old === undefined ? { ...PENDING, ...from } : old;
  }
  const first = units.stepIds.find((id) => steps[id]!.state !== 'done');
  if (first !== undefined) steps[first] = { state: 'in-flight', attempts: 1, startedAt: now, finishedAt: null, lastError: null, ...(steps[first]!.from ? { from: steps[first]!.from } : {}) };
  return freeze({
    ...identityOf(record),
    unitsHash: units.hash,
    state: first === undefined ? 'deployed' : 'deploying',
    plan: [...units.stepIds],
    steps,
    error: null,
    retryable: false,
    startedAt: now,
    finishedAt: first === undefined ? now : null,
    deployedAt: prev?.deployedAt ?? (first === undefined ? now : null),
    certificatesExpire: units.certificatesExpire ?? null,
    applied: prev?.applied ?? {},
    updatedAt: now,
  });
}

/** The machine's identity as the ledger keeps it, from its record. */
function identityOf(record: MachineRecord) {
  return { schema: SCHEMA_VERSION, id: record.id, role: record.role, ip: record.ip, hostname: record.hostname, bootId: record.bootId } as const;
}

/**
 * A step finished. With `startNext`, the next step that is not done is recorded in flight in the same
 * write (one write per step); the last step done makes the machine deployed. `applied`: a start step's unit
 * now runs on these inputs (recorded in `applied`).
 */
export function stepDone(entry: LedgerEntry, step: StepId, now: string, options: { startNext: boolean; applied?: { readonly unit: string; readonly inputs: string } }): LedgerEntry {
  const old = stepOf(entry, step);
  const applied = options.applied ? { ...entry.applied, [options.applied.unit]: options.applied.inputs } : entry.applied;
  let next = withStep({ ...entry, applied }, step, { ...old, state: 'done', finishedAt: now, lastError: null }, now);
  const following = next.plan.find((id) => next.steps[id]?.state !== 'done');
  if (following === undefined) {
    return freeze({ ...next, state: 'deployed', error: null, retryable: false, finishedAt: now, deployedAt: next.deployedAt ?? now });
  }
  if (options.startNext) {
    next = withStep(next, following, { state: 'in-flight', attempts: 1, startedAt: now, finishedAt: null, lastError: null }, now);
  }
  return next;
}

/** An attempt failed and the step will be tried again after a backoff: one more attempt, the reason kept. */
export function stepRetrying(entry: LedgerEntry, step: StepId, reason: string, now: string): LedgerEntry {
  const old = stepOf(entry, step);
  return withStep(entry, step, { state: 'in-flight', attempts: old.attempts + 1, startedAt: now, finishedAt: null, lastError: clip(reason), ...(old.from ? { from: old.from } : {}) }, now);
}

/** A restart step is about to ask for the restart: the unit's invocation before it (StepRecord `from`). */
export function stepRestarting(entry: LedgerEntry, step: StepId, from: string, now: string): LedgerEntry {
  return withStep(entry, step, { ...stepOf(entry, step), from }, now);
}

/** The step is out of attempts (or failed terminally): the machine is failed with the step's reason. */
export function stepFailed(entry: LedgerEntry, step: StepId, reason: string, retryable: boolean, now: string): LedgerEntry {
  const old = stepOf(entry, step);
  const next = withStep(entry, step, { ...old, state: 'failed', finishedAt: now, lastError: clip(reason) }, now);
  return freeze({ ...next, state: 'failed', error: clip(`${step}: ${reason}`), retryable, finishedAt: now });
}

/** The machine could not even be planned (its units do not render): failed, no steps run. */
export function machineFailed(prev: LedgerEntry | null, record: MachineRecord, unitsHash: string, reason: string, now: string): LedgerEntry {
  return freeze({
    ...identityOf(record),
    unitsHash,
    state: 'failed',
    plan: prev?.plan ?? [],
    steps: prev?.steps ?? {},
    error: clip(reason),
    retryable: false,
    startedAt: prev?.startedAt ?? now,
    finishedAt: now,
    deployedAt: prev?.deployedAt ?? null,
    certificatesExpire: prev?.certificatesExpire ?? null,
    applied: prev?.applied ?? {},
    updatedAt: now,
  });
}

/** The step a person wants to see: the one in flight, else the failed one, else null. */
export function currentStep(entry: LedgerEntry): StepId | null {
  return entry.plan.find((id) => entry.steps[id]?.state === 'in-flight') ?? entry.plan.find((id) => entry.steps[id]?.state === 'failed') ?? null;
}

function stepOf(entry: LedgerEntry, step: StepId): StepRecord {
  const s = entry.steps[step];
  if (!s) throw new CorekubeError('E_INTERNAL', `step ${step} is not in the ledger of ${entry.id}`, { hint: 'the planner and the ledger disagree: this is a bug' });
  return s;
}

function withStep(entry: LedgerEntry, step: StepId, record: StepRecord, now: string): LedgerEntry {
  return freeze({ ...entry, steps: { ...entry.steps, [step]: record }, updatedAt: now });
}

// ---------------------------------------------------------------------------------------------------------
// Parsing: a ledger entry comes back from etcd as JSON; a malformed one reads as absent (its machine is
// deployed again — every step is idempotent), never as a crash.

const STEP_STATES: readonly string[] = ['pending', 'in-flight', 'done', 'failed'];
const MACHINE_STATES: readonly string[] = ['deploying', 'deployed', 'failed'];

export function parseLedgerEntry(text: string): LedgerEntry | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(v) || v.schema !== SCHEMA_VERSION) return null;
  const str = (x: unknown) => typeof x === 'string';
  const strOrNull = (x: unknown) => x === null || typeof x === 'string';
  if (!str(v.id) || !str(v.ip) || !str(v.hostname) || !str(v.bootId) || !str(v.unitsHash) || !str(v.startedAt) || !str(v.updatedAt)) return null;
  if (!isRole(v.role)) return null;
  if (!MACHINE_STATES.includes(v.state as string) || !strOrNull(v.error) || !strOrNull(v.finishedAt) || !strOrNull(v.deployedAt) || typeof v.retryable !== 'boolean') return null;
  if (!Array.isArray(v.plan) || !v.plan.every(str) || !isObject(v.steps)) return null;
  for (const s of Object.values(v.steps)) {
    if (!isObject(s) || !STEP_STATES.includes(s.state as string) || typeof s.attempts !== 'number') return null;
    if (!strOrNull(s.startedAt) || !strOrNull(s.finishedAt) || !strOrNull(s.lastError) || (s.from !== undefined && !str(s.from))) return null;
  }
  if (!(v.plan as string[]).every((id) => isObject((v.steps as Record<string, unknown>)[id]))) return null;
  if (v.certificatesExpire !== undefined && !strOrNull(v.certificatesExpire)) return null;
  if (v.applied !== undefined && !(isObject(v.applied) && Object.values(v.applied).every(str))) return null;
  return freeze({
    ...(structuredClone(v) as unknown as LedgerEntry),
    certificatesExpire: (v.certificatesExpire as string | null | undefined) ?? null,
    applied: (v.applied as Record<string, string> | undefined) ?? {},
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}
