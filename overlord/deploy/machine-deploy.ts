import { beginDeployment, machineFailed, stepDone, stepFailed, stepRestarting, stepRetrying, type LedgerEntry } from '../../contracts/ledger-entry.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import type { Step } from '../../contracts/step.ts';
import type { Clock } from '../../core/clock.ts';
import { asCorekubeError, type CorekubeError } from '../../core/errors.ts';
import { decide, retry, type Backoff, type RetryPolicy } from '../../core/retry.ts';
import type { HostRunner, HostTarget } from '../edges/host-runner.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { Fence } from '../edges/store.ts';
import type { EtcdMembers } from '../edges/etcd-members.ts';
import type { NodeReadiness } from '../kubernetes/node-ready.ts';
import type { PodNetwork } from '../pod-network/pod-network.ts';
import { runStep, type ExecutorOptions, type StepResult } from './executor.ts';
import type { Ledger } from './ledger.ts';
import type { MachinePlan } from './planner.ts';
import { firstLine, formatMs } from './summary.ts';

/**
 * One machine's deployment, as a worker of the reconciler runs it: the ledger's start and the machine's pod
 * subnet (both before the first step, in one round trip to etcd), then each step in order — every attempt
 * through the executor, every failure put to the retry policy's one decision (core/retry.ts `decide`): tried
 * again after the step backoff while retryable and within the budget (the ledger counts the attempt), else
 * the machine is failed with the step's reason, requeued when the failure is of its surroundings. The ledger
 * is written once a step (a step done and the next one in flight in the same write).
 *
 * Stopping (the signal aborts): no new step; a step that is waiting is interrupted and stays recorded in flight.
 */
export interface MachineDeployDeps {
  readonly hosts: HostRunner;
  readonly clock: Clock;
  readonly log: Logger;
  readonly ledger: Ledger;
  /** the Kubernetes side of `node-ready` steps; absent = the overlord deploys no kubelet (tests of the deploy mechanics) */
  readonly nodes?: NodeReadiness;
  /** a master's etcd member before its first start (`etcd-member` steps); absent = none are run (tests of the deploy mechanics) */
  readonly etcd?: Pick<EtcdMembers, 'ensureMember' | 'promote'>;
  /** reserves each machine's pod subnet before its steps; absent = the overlord leaves the pod network alone */
  readonly podNetwork?: PodNetwork;
  readonly fence?: () => Fence | undefined;
  /** the machine's record as discovery has it now (undefined once gone): a new boot stops the deploy */
  readonly current: (id: string) => MachineRecord | undefined;
}

export interface MachineDeployOptions {
  readonly executor: ExecutorOptions;
  /** a step's attempts */
  readonly retry: RetryPolicy;
  /** ledger writes while etcd is unreachable */
  readonly etcdBackoff: Backoff;
}

/** How a deployment ended (a fatal error, a ledger conflict or a failure to write the ledger is thrown instead). */
export type Outcome = 'deployed' | 'failed' | 'requeue' | 'changed' | 'stopped';

type DeployPlan = Extract<MachinePlan, { action: 'deploy' }>;

export class MachineDeploy {
  constructor(
    private readonly deps: MachineDeployDeps,
    private readonly options: MachineDeployOptions,
  ) {}

  deploy(p: DeployPlan, record: MachineRecord, signal: AbortSignal): Promise<Outcome> {
    return new Deployment(this, this.deps, this.options, p, record, signal).run();
  }

  /**
   * A ledger write, retried while etcd is unreachable (the step it records has happened: losing the record
   * would redo it). A conflict whose re-read shows exactly our entry means our earlier write did land (its
   * answer was lost): that is success.
   */
  write(entry: LedgerEntry, signal: AbortSignal): Promise<void> {
    const { ledger, log, clock } = this.deps;
    return retry(
      async () => {
        try {
          await ledger.write(entry);
        } catch (err) {
          const e = asCorekubeError(err, 'E_ETCD');
          const now = e.code === 'E_ETCD_CONFLICT' ? ledger.get(entry.id) : null;
          if (now && JSON.stringify(now) === JSON.stringify(entry)) return;
          throw e;
        }
      },
      {
        policy: this.options.etcdBackoff,
        clock,
        signal,
        code: 'E_ETCD',
        onRetry: (e, _failures, delay) =>
          log.warn({ event: 'ledger.write-failed', machine: entry.id, hostname: entry.hostname, nextRetryMs: delay, ...errorFields(e) }, 'writing the ledger failed; retrying'),
      },
    );
  }
}

/** One run of one machine's plan: its ledger entry as it goes. */
class Deployment {
  private entry: LedgerEntry;
  private readonly log: Logger;

  constructor(
    private readonly ledger: Pick<MachineDeploy, 'write'>,
    private readonly deps: MachineDeployDeps,
    private readonly options: MachineDeployOptions,
    private readonly p: DeployPlan,
    private readonly record: MachineRecord,
    private readonly signal: AbortSignal,
  ) {
    this.log = deps.log.child({ machine: p.id, role: p.role, hostname: record.hostname });
    this.entry = beginDeployment(deps.ledger.get(p.id), record, { hash: p.unitsHash, stepIds: p.stepIds, certificatesExpire: p.certificatesExpire }, p.steps.map((s) => s.id), this.now());
  }

  async run(): Promise<Outcome> {
    const { p, record, signal, log } = this;
    const [begun, prepared] = await Promise.allSettled([this.write(this.entry), this.deps.podNetwork?.reserve(record, this.deps.fence?.())]);
    if (begun.status === 'rejected') throw begun.reason;
    log.info({ event: 'machine.deploying', reason: p.reason, steps: p.steps.map((s) => s.id) }, `deploying (${p.reason}): ${p.steps.length} steps`);
    const t0 = this.deps.clock.now();
    if (prepared.status === 'rejected') {
      // not tried again here: a retryable failure (etcd away) requeues the machine, any other fails it
      const e = asCorekubeError(prepared.reason);
      if (signal.aborted || e.retryable || e.code === 'E_NOT_LEADER') throw e;
      await this.write(machineFailed(this.entry, record, p.unitsHash, e.describe(), this.now()));
      log.error({ event: 'machine.failed', ...errorFields(e), willRetry: false }, `machine failed before its first step: ${e.message}`);
      return 'failed';
    }
    for (const step of p.steps) {
      const outcome = await this.step(step);
      if (outcome !== undefined) return outcome;
    }
    if (this.entry.state !== 'deployed') return 'stopped';
    log.info({ event: 'machine.deployed', durationMs: this.deps.clock.now() - t0 }, 'machine deployed');
    return 'deployed';
  }

  /** One step, recorded; undefined when it is done and the next may run. */
  private async step(step: Step): Promise<Outcome | undefined> {
    if (this.signal.aborted) return 'stopped';
    const current = this.deps.current(this.p.id);
    if (!current || current.bootId !== this.record.bootId) {
      this.log.info({ event: 'machine.changed', reason: current ? 'new boot' : 'record gone' }, 'machine changed while deploying: planning again');
      return 'changed';
    }
    const slog = this.log.child({ step: step.id });
    const restart = step.kind === 'start' && step.restart === true;
    slog.info({ event: 'step.start', ...(restart ? { restart: true } : {}) }, restart ? 'step started: a restart (the unit runs on files that changed since)' : 'step started');
    const ts = this.deps.clock.now();
    const run = await this.attempts(step, slog);
    if (run === 'stopped') return 'stopped'; // the step stays recorded in flight
    if ('failed' in run) {
      this.entry = stepFailed(this.entry, step.id, run.failed.describe(), run.requeue, this.now());
      await this.write(this.entry);
      slog.error({ event: 'machine.failed', ...errorFields(run.failed), willRetry: run.requeue }, `machine failed at ${step.id}: ${run.failed.message}`);
      return run.requeue ? 'requeue' : 'failed';
    }
    slog.info({ event: 'step.done', durationMs: this.deps.clock.now() - ts, changed: run.changed }, run.changed ? 'step done' : 'step done (already so on the machine)');
    this.entry = stepDone(this.entry, step.id, this.now(), { startNext: !this.signal.aborted, ...(step.kind === 'start' ? { applied: { unit: step.unit, inputs: step.inputs } } : {}) });
    await this.write(this.entry);
    return undefined;
  }

  /** A step's attempts under the retry policy: its result, `stopped`, or the failure and whether it requeues. */
  private async attempts(step: Step, slog: Logger): Promise<StepResult | 'stopped' | { readonly failed: CorekubeError; readonly requeue: boolean }> {
    const { hosts, clock, nodes, etcd } = this.deps;
    const target: HostTarget = { id: this.record.id, ip: this.record.ip, ...(this.record.sshHostKey ? { hostKey: this.record.sshHostKey } : {}) };
    for (let failures = 1; ; failures++) {
      try {
        const from = this.entry.steps[step.id]?.from;
        const restarting = step.kind === 'start' && step.restart === true;
        const beforeRestart = async (invocation: string) => {
          this.entry = stepRestarting(this.entry, step.id, invocation, this.now());
          await this.write(this.entry);
        };
        return await runStep({ hosts, clock, ...(nodes ? { nodes } : {}), ...(etcd ? { etcd } : {}), ...(restarting ? { beforeRestart } : {}) }, target, restarting && from ? { ...step, replaces: from } : step, this.options.executor, this.signal);
      } catch (err) {
        if (this.signal.aborted) return 'stopped';
        const e = asCorekubeError(err);
        const decision = decide(e, failures, this.options.retry);
        if (decision.kind === 'stop' || e.code === 'E_ETCD_CONFLICT') throw e;
        if (decision.kind !== 'retry') return { failed: e, requeue: decision.kind === 'requeue' };
        const retriesLeft = this.options.retry.retries - failures + 1;
        slog.warn({ event: 'step.retry', attempt: failures, retriesLeft, nextRetryMs: decision.delayMs, ...errorFields(e) }, `step failed, retrying in ${formatMs(decision.delayMs)}: ${firstLine(e.message)}`);
        this.entry = stepRetrying(this.entry, step.id, e.describe(), this.now());
        await this.write(this.entry);
        const slept = await clock.sleep(decision.delayMs, this.signal).then(() => true, () => false);
        if (!slept) return 'stopped';
      }
    }
  }

  private write(entry: LedgerEntry): Promise<void> {
    return this.ledger.write(entry, this.signal);
  }

  private now(): string {
    return new Date(this.deps.clock.now()).toISOString();
  }
}
