import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import pRetry from 'p-retry';
import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import type { Discovery } from '../discovery/discovery.ts';
import type { Clock } from '../../core/clock.ts';
import { runStep, type ExecutorOptions } from './executor.ts';
import type { NodeReadiness } from '../kubernetes/node-ready.ts';
import type { HostRunner, HostTarget } from '../edges/host-runner.ts';
import { beginDeployment, machineFailed, stepDone, stepFailed, stepRetrying, type LedgerEntry } from '../../contracts/ledger-entry.ts';
import type { Ledger } from './ledger.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import { clusterView, planGated, planGates, planMachine, planUnrendered, type ClusterView, type DesiredMachine, type MachinePlan } from './planner.ts';
import type { RenderedUnits } from '../../contracts/step.ts';
import { Semaphore } from '../../core/semaphore.ts';

/**
 * The reconciler: the overlord's loop, and the one place its policy lives (what is retried, how often,
 * what is terminal). On every trigger — a machine record changed, a machine finished, a backoff expired —
 * it reads the state (discovery's view + the ledger), plans (pure), and starts a worker for each machine
 * that has work and none running, at most `concurrency` at once (FIFO, in plan order: masters first).
 * Triggers that arrive during a pass coalesce into one more pass.
 *
 * A worker runs its machine's steps in order, writing the ledger once a step (a step done and the next
 * one in flight in the same write). A failed attempt is retried with backoff (p-retry; the waits go
 * through the clock so tests use a fake one) up to `retry.retries`, then the machine is failed with the
 * reason and the others carry on. A machine failed for a retryable reason (SSH unreachable, etcd) is
 * planned again after a per-machine backoff (`requeue`); a terminal failure waits for a change.
 *
 * Stopping (the signal aborts): no new worker, no new step; a step that is waiting is interrupted and
 * stays recorded in flight (the next overlord checks it before redoing it); then the hosts' connections close.
 */
export interface RetryPolicy {
  /** retries of one step after its first attempt */
  readonly retries: number;
  readonly minMs: number;
  readonly factor: number;
  readonly maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = Object.freeze({ retries: 4, minMs: 2_000, factor: 2, maxMs: 30_000 });
/** backoff before a machine failed for a retryable reason is planned again */
export const DEFAULT_REQUEUE: RetryPolicy = Object.freeze({ retries: Infinity, minMs: 30_000, factor: 2, maxMs: 5 * 60_000 });

/** longest stretch of a pass without yielding to the event loop (the steps of running machines wait meanwhile) */
const PASS_SLICE_MS = 4;

/**
 * Failures of the machine's surroundings (unreachable over SSH, etcd or the API server away) and a Node not
 * Ready yet (it may become Ready: the reason is shown meanwhile): once its step retries are spent the machine
 * is failed, and planned again after the requeue backoff. Any other failure (a unit that fails, a host key
 * mismatch, a timeout) is terminal until the machine changes.
 */
export const REQUEUED_CODES: readonly string[] = ['E_SSH', 'E_ETCD', 'E_KUBERNETES', 'E_NODE_NOT_READY'];

export interface ReconcilerDeps {
  readonly hosts: HostRunner;
  /** the Kubernetes side of `node-ready` steps; absent = the overlord deploys no kubelet (tests of the deploy mechanics) */
  readonly nodes?: NodeReadiness;
  readonly clock: Clock;
  readonly log: Logger;
  readonly discovery: Pick<Discovery, 'snapshot'>;
  readonly ledger: Ledger;
}

export interface ReconcilerOptions {
  readonly unitsFor: (record: MachineRecord, cluster: ClusterView) => RenderedUnits;
  readonly expected: { readonly masters: number; readonly minions: number };
  readonly concurrency: number;
  readonly executor: ExecutorOptions;
  readonly retry?: RetryPolicy;
  readonly requeue?: RetryPolicy;
  readonly onClusterReady?: () => void | Promise<void>;
  /**
   * Runs before a machine's steps each time it is deployed (reserving its pod subnet); idempotent. A
   * retryable failure requeues the machine; any other fails it with the reason.
   */
  readonly prepare?: (record: MachineRecord, signal: AbortSignal) => Promise<void>;
  /** a fatal error (E_NOT_LEADER): the overlord must stop */
  readonly onFatal?: (err: CorekubeError) => void;
}

export interface Summary {
  readonly total: number;
  readonly deployed: number;
  readonly deploying: number;
  readonly waiting: number;
  readonly failed: readonly { readonly id: string; readonly hostname: string; readonly reason: string }[];
  readonly invalid: number;
  /** "3/4 machines deployed, 1 failed: …" */
  readonly text: string;
}

export class Reconciler {
  private readonly semaphore: Semaphore;
  private readonly abort = new AbortController();
  private readonly running = new Map<string, Promise<void>>();
  private readonly requeue = new Map<string, { failures: number; notBefore: number }>();
  private readonly rendered = new Map<string, { recordKey: string; viewKey: string; desired: DesiredMachine }>();
  /** the records of a discovery snapshot in plan order (masters first, by id), sorted once per snapshot */
  private readonly sortedRecords = new WeakMap<object, readonly MachineRecord[]>();
  private readonly waitingReported = new Map<string, string>();
  private passRunning = false;
  private passScheduled = false;
  /** records are frozen and replaced when they change: their render key is computed once */
  private readonly recordKeys = new WeakMap<MachineRecord, string>();
  private dirty = false;
  private idleWaiters: (() => void)[] = [];
  private lastSummary = '';
  private ready = false;
  private plans: readonly MachinePlan[] = [];
  private readonly retry: RetryPolicy;
  private readonly requeuePolicy: RetryPolicy;
  /** passes run so far (tests, benchmark) */
  passes = 0;

  constructor(
    private readonly deps: ReconcilerDeps,
    private readonly options: ReconcilerOptions,
  ) {
    this.semaphore = new Semaphore(options.concurrency);
    // every queued machine and every wait listens to this one signal: thousands at once are expected
    setMaxListeners(0, this.abort.signal);
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.requeuePolicy = options.requeue ?? DEFAULT_REQUEUE;
  }

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Something changed: look again. Cheap and synchronous; passes never overlap. */
  trigger(): void {
    if (this.abort.signal.aborted) return;
    this.dirty = true;
    if (this.passRunning || this.passScheduled) return;
    // one pass for every trigger of this turn of the event loop (a burst of watch responses, many
    // workers finishing): the pass reads everything anyway
    this.passScheduled = true;
    setImmediate(() => {
      this.passScheduled = false;
      if (!this.passRunning) void this.runPasses();
    });
  }

  /** Resolves once no pass is running or pending and no machine is being worked on. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The last plan of every machine (what `corekube demo` shows besides the ledger). */
  lastPlans(): readonly MachinePlan[] {
    return this.plans;
  }

  summary(): Summary {
    return this.computeSummary();
  }

  /** Stops taking work, interrupts waits (their steps stay in flight), waits for workers, closes connections. */
  async stop(): Promise<void> {
    if (!this.abort.signal.aborted) this.abort.abort(new CorekubeError('E_INTERNAL', 'the overlord is stopping'));
    await Promise.allSettled([...this.running.values()]);
    await this.deps.hosts.close().catch((err) => this.deps.log.warn({ event: 'ssh.close-failed', ...errorFields(err) }, 'closing SSH connections failed'));
    this.notifyIdle();
  }

  private isIdle(): boolean {
    return !this.passRunning && !this.passScheduled && !this.dirty && this.running.size === 0;
  }

  private notifyIdle(): void {
    if (!this.isIdle() && !this.abort.signal.aborted) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async runPasses(): Promise<void> {
    this.passRunning = true;
    try {
      while (this.dirty && !this.abort.signal.aborted) {
        this.dirty = false;
        this.passes++;
        try {
          await this.pass();
        } catch (err) {
          if (this.handleFatal(err)) return;
          // a pass only fails on an etcd write (recording a render failure): look again after a backoff
          this.deps.log.warn({ event: 'reconcile.failed', ...errorFields(err) }, 'reconcile pass failed; trying again');
          this.after(this.retry.minMs);
        }
      }
    } finally {
      this.passRunning = false;
      this.notifyIdle();
    }
  }

  private async pass(): Promise<void> {
    const { discovery, ledger, log, clock } = this.deps;
    const snapshot = discovery.snapshot();
    const view = clusterView(snapshot.records.values(), ledger.entries());
    const records = this.inPlanOrder(snapshot);
    for (const id of this.rendered.keys()) if (!snapshot.records.has(id)) this.rendered.delete(id);
    const observed = { ledger: ledger.entries() };
    const gates = planGates(
      view.masters.map((r) => this.desired(r, view)),
      this.options.expected.masters,
      observed,
    );

    // Machines are planned and acted on in plan order, yielding to the event loop every PASS_SLICE_MS: when
    // a gate opens for a thousand machines (their units rendered afresh, most of a millisecond each), the
    // first ones start while the others are still being planned, and the steps under way are not held up.
    const plans: MachinePlan[] = [];
    let slice = performance.now();
    for (const record of records) {
      if (this.abort.signal.aborted) return;
      if (performance.now() - slice >= PASS_SLICE_MS) {
        await new Promise<void>((r) => setImmediate(r));
        slice = performance.now();
      }
      const p = planUnrendered(record, gates, observed) ?? planGated(this.desired(record, view), gates, observed);
      plans.push(p);
      const now = clock.now();
      if (p.action === 'fail') {
        const unitsHash = '';
        await this.writeLedger(machineFailed(ledger.get(p.id), record, unitsHash, p.reason, new Date(now).toISOString()));
        log.error({ event: 'machine.failed', machine: p.id, role: p.role, hostname: record.hostname, reason: p.reason }, `machine failed: its units do not render: ${firstLine(p.reason)}`);
      } else if (p.action === 'wait') {
        if (this.waitingReported.get(p.id) !== p.reason) {
          this.waitingReported.set(p.id, p.reason);
          log.info({ event: 'machine.waiting', machine: p.id, role: p.role, hostname: record.hostname, reason: p.reason }, p.reason);
        }
      } else if (p.action === 'deploy' && !this.running.has(p.id)) {
        // a machine that failed for a reason outside it waits out its backoff, unless it changed since
        const backoff = this.requeue.get(p.id);
        if (backoff && backoff.notBefore > now && (p.reason === 'retry' || p.reason === 'resume')) continue;
        this.waitingReported.delete(p.id);
        this.startWorker(p.id);
      }
    }
    this.plans = plans;
    this.report();
  }

  private inPlanOrder(snapshot: { readonly records: ReadonlyMap<string, MachineRecord> }): readonly MachineRecord[] {
    let sorted = this.sortedRecords.get(snapshot);
    if (!sorted) {
      sorted = [...snapshot.records.values()].sort((a, b) => (a.role === b.role ? (a.id < b.id ? -1 : a.id > b.id ? 1 : 0) : a.role === 'master' ? -1 : 1));
      this.sortedRecords.set(snapshot, sorted);
    }
    return sorted;
  }

  private desired(record: MachineRecord, view: ClusterView): DesiredMachine {
    let recordKey = this.recordKeys.get(record);
    if (recordKey === undefined) {
      recordKey = JSON.stringify(record);
      this.recordKeys.set(record, recordKey);
    }
    // compared in two parts, not as one concatenated string: a pass over a thousand machines builds none
    const vk = viewKey(view);
    const hit = this.rendered.get(record.id);
    if (hit && hit.recordKey === recordKey && hit.viewKey === vk) return hit.desired;
    let desired: DesiredMachine;
    try {
      desired = { record, units: this.options.unitsFor(record, view) };
    } catch (err) {
      desired = { record, renderError: asCorekubeError(err, 'E_TEMPLATE').describe() };
    }
    this.rendered.set(record.id, { recordKey, viewKey: vk, desired });
    return desired;
  }

  private startWorker(id: string): void {
    // the moment a machine is planned and queued for a slot (the benchmark's reaction latency reads it)
    this.deps.log.debug({ event: 'machine.queued', machine: id, queued: this.semaphore.waiting }, 'queued for deployment');
    const work = (async () => {
      let release: (() => void) | undefined;
      try {
        release = await this.semaphore.acquire(this.abort.signal);
        // plan again now that a slot is free: the machine may have changed while it queued
        const p = this.planOf(id);
        if (p?.action === 'deploy') await this.deploy(p);
      } catch (err) {
        if (!this.abort.signal.aborted && !this.handleFatal(err)) {
          const e = asCorekubeError(err);
          if (e.code === 'E_ETCD_CONFLICT') {
            this.deps.log.warn({ event: 'ledger.conflict', machine: id, hostname: this.hostnameOf(id), reason: e.message }, 'the ledger entry changed under us: planning again');
          } else {
            this.deps.log.error({ event: 'worker.failed', machine: id, hostname: this.hostnameOf(id), ...errorFields(e) }, 'deploying the machine stopped');
            this.scheduleRequeue(id);
          }
        }
      } finally {
        release?.();
        this.running.delete(id);
        this.trigger();
        this.notifyIdle();
      }
    })();
    this.running.set(id, work);
  }

  private planOf(id: string): MachinePlan | undefined {
    const snapshot = this.deps.discovery.snapshot();
    const record = snapshot.records.get(id);
    if (!record) return undefined;
    const view = clusterView(snapshot.records.values(), this.deps.ledger.entries());
    // this machine and the masters (the gates) only: every machine that gets a slot re-plans, and planning
    // the whole cluster each time would make a deployment of n machines cost n² plans
    const masters = view.masters.map((r) => this.desired(r, view));
    return planMachine(this.desired(record, view), masters, this.options.expected.masters, { ledger: this.deps.ledger.entries() });
  }

  private async deploy(p: Extract<MachinePlan, { action: 'deploy' }>): Promise<void> {
    const { clock, ledger, hosts } = this.deps;
    const signal = this.abort.signal;
    const record = this.deps.discovery.snapshot().records.get(p.id);
    if (!record) return;
    const desired = this.rendered.get(p.id)?.desired;
    if (!desired || !('units' in desired)) return;
    const log = this.deps.log.child({ machine: p.id, role: p.role, hostname: record.hostname });
    const iso = () => new Date(clock.now()).toISOString();
    const target: HostTarget = { id: record.id, ip: record.ip, ...(record.sshHostKey ? { hostKey: record.sshHostKey } : {}) };

    let entry: LedgerEntry = beginDeployment(ledger.get(p.id), record, { hash: p.unitsHash, stepIds: p.stepIds }, p.steps.map((s) => s.id), iso());
    // the ledger's start and `prepare` touch different keys and both precede the first step: one round trip
    // to etcd instead of two before every machine
    const [begun, prepared] = await Promise.allSettled([this.writeLedger(entry), this.options.prepare?.(record, signal)]);
    if (begun.status === 'rejected') throw begun.reason;
    log.info({ event: 'machine.deploying', reason: p.reason, steps: p.steps.map((s) => s.id) }, `deploying (${p.reason}): ${p.steps.length} steps`);
    const t0 = clock.now();

    if (prepared.status === 'rejected') {
      const e = asCorekubeError(prepared.reason);
      if (signal.aborted || e.retryable || e.code === 'E_NOT_LEADER') throw e;
      entry = machineFailed(entry, record, p.unitsHash, e.describe(), iso());
      await this.writeLedger(entry);
      log.error({ event: 'machine.failed', ...errorFields(e), willRetry: false }, `machine failed before its first step: ${e.message}`);
      return;
    }

    for (const step of p.steps) {
      if (signal.aborted) return;
      const current = this.deps.discovery.snapshot().records.get(p.id);
      if (!current || current.bootId !== record.bootId) {
        log.info({ event: 'machine.changed', reason: current ? 'new boot' : 'record gone' }, 'machine changed while deploying: planning again');
        return;
      }
      const slog = log.child({ step: step.id });
      slog.info({ event: 'step.start' }, 'step started');
      const ts = clock.now();
      let result;
      try {
        result = await pRetry(
          async (attempt) => {
            if (attempt > 1) await clock.sleep(this.delay(this.retry, attempt - 1), signal);
            return runStep({ hosts, clock, ...(this.deps.nodes ? { nodes: this.deps.nodes } : {}) }, target, step, this.options.executor, signal);
          },
          {
            retries: this.retry.retries,
            minTimeout: 0,
            maxTimeout: 0,
            shouldRetry: ({ error }) => !signal.aborted && asCorekubeError(error).retryable,
            onFailedAttempt: async ({ error, attemptNumber, retriesLeft }) => {
              const e = asCorekubeError(error);
              if (signal.aborted || !e.retryable || retriesLeft === 0) return;
              const nextRetryMs = this.delay(this.retry, attemptNumber);
              slog.warn({ event: 'step.retry', attempt: attemptNumber, retriesLeft, nextRetryMs, ...errorFields(e) }, `step failed, retrying in ${formatMs(nextRetryMs)}: ${firstLine(e.message)}`);
              entry = stepRetrying(entry, step.id, e.describe(), iso());
              await this.writeLedger(entry);
            },
          },
        );
      } catch (err) {
        if (signal.aborted) return; // the step stays recorded in flight
        const e = asCorekubeError(err);
        if (e.code === 'E_ETCD_CONFLICT' || e.code === 'E_NOT_LEADER') throw e;
        const requeue = REQUEUED_CODES.includes(e.code);
        entry = stepFailed(entry, step.id, e.describe(), requeue, iso());
        await this.writeLedger(entry);
        slog.error({ event: 'machine.failed', ...errorFields(e), willRetry: requeue }, `machine failed at ${step.id}: ${e.message}`);
        if (requeue) this.scheduleRequeue(p.id);
        return;
      }
      slog.info({ event: 'step.done', durationMs: clock.now() - ts, changed: result.changed }, result.changed ? 'step done' : 'step done (already so on the machine)');
      entry = stepDone(entry, step.id, iso(), { startNext: !signal.aborted });
      await this.writeLedger(entry);
    }
    if (entry.state === 'deployed') {
      this.requeue.delete(p.id);
      log.info({ event: 'machine.deployed', durationMs: clock.now() - t0 }, 'machine deployed');
    }
  }

  /**
   * A ledger write, retried while etcd is unreachable (the step it records has happened: losing the
   * record would redo it). A conflict whose re-read shows exactly our entry means our earlier write did
   * land (its answer was lost): that is success.
   */
  private async writeLedger(entry: LedgerEntry): Promise<void> {
    let failures = 0;
    for (;;) {
      try {
        await this.deps.ledger.write(entry);
        return;
      } catch (err) {
        const e = asCorekubeError(err, 'E_ETCD');
        if (e.code === 'E_ETCD_CONFLICT') {
          const now = this.deps.ledger.get(entry.id);
          if (now && JSON.stringify(now) === JSON.stringify(entry)) return;
          throw e;
        }
        if (!e.retryable || this.abort.signal.aborted) throw e;
        failures++;
        const delay = this.delay(this.retry, failures);
        this.deps.log.warn({ event: 'ledger.write-failed', machine: entry.id, hostname: entry.hostname, nextRetryMs: delay, ...errorFields(e) }, 'writing the ledger failed; retrying');
        await this.deps.clock.sleep(delay, this.abort.signal);
      }
    }
  }

  private scheduleRequeue(id: string): void {
    const prev = this.requeue.get(id);
    const failures = (prev?.failures ?? 0) + 1;
    const delay = this.delay(this.requeuePolicy, failures);
    this.requeue.set(id, { failures, notBefore: this.deps.clock.now() + delay });
    this.deps.log.info({ event: 'machine.requeued', machine: id, hostname: this.hostnameOf(id), nextRetryMs: delay }, `machine will be tried again in ${formatMs(delay)}`);
    this.after(delay);
  }

  private hostnameOf(id: string): string | undefined {
    return this.deps.discovery.snapshot().records.get(id)?.hostname;
  }

  private after(ms: number): void {
    this.deps.clock.sleep(ms, this.abort.signal).then(
      () => this.trigger(),
      () => undefined,
    );
  }

  private delay(policy: RetryPolicy, failures: number): number {
    return Math.min(policy.maxMs, Math.round(policy.minMs * policy.factor ** (failures - 1)));
  }

  /** E_NOT_LEADER: this overlord must stop writing at once. */
  private handleFatal(err: unknown): boolean {
    if (err instanceof CorekubeError && err.code === 'E_NOT_LEADER') {
      this.deps.log.error({ event: 'overlord.not-leader', ...errorFields(err) }, 'lost the lead: stopping');
      if (!this.abort.signal.aborted) this.abort.abort(err);
      this.options.onFatal?.(err);
      return true;
    }
    return false;
  }

  private computeSummary(): Summary {
    const ledger = this.deps.ledger;
    const snapshot = this.deps.discovery.snapshot();
    let deployed = 0;
    let deploying = 0;
    let waiting = 0;
    const failed: { id: string; hostname: string; reason: string }[] = [];
    for (const p of this.plans) {
      if (this.running.has(p.id)) deploying++;
      else if (p.action === 'none' && p.state === 'deployed') deployed++;
      else if ((p.action === 'none' && p.state === 'failed') || p.action === 'fail' || (p.action === 'deploy' && p.reason === 'retry')) {
        failed.push({ id: p.id, hostname: snapshot.records.get(p.id)?.hostname ?? p.id, reason: ledger.get(p.id)?.error ?? (p.action === 'fail' ? p.reason : 'failed') });
      } else if (p.action === 'wait') waiting++;
      else deploying++;
    }
    const total = this.plans.length;
    const parts = [`${deployed}/${total} machines deployed`];
    if (deploying > 0) parts.push(`${deploying} deploying`);
    if (waiting > 0) parts.push(`${waiting} waiting`);
    let text = parts.join(', ');
    if (failed.length > 0) text += `, ${failed.length} failed: ${failed.map((f) => `${f.hostname} (${firstLine(f.reason)})`).join('; ')}`;
    const invalid = snapshot.invalid.size + snapshot.overflow;
    if (invalid > 0) text += `; ${invalid} invalid record${invalid === 1 ? '' : 's'} skipped`;
    return { total, deployed, deploying, waiting, failed, invalid, text };
  }

  private report(): void {
    const s = this.computeSummary();
    if (s.text !== this.lastSummary) {
      this.lastSummary = s.text;
      this.deps.log.info({ event: 'reconcile.summary', deployed: s.deployed, total: s.total, deploying: s.deploying, waiting: s.waiting, failed: s.failed.length, invalid: s.invalid }, s.text);
    }
    if (!this.ready) this.checkReady();
  }

  private checkReady(): void {
    const { masters, minions } = this.options.expected;
    let m = 0;
    let n = 0;
    for (const p of this.plans) {
      if (p.action === 'none' && p.state === 'deployed' && !this.running.has(p.id)) {
        if (p.role === 'master') m++;
        else n++;
      }
    }
    if (m < masters || n < minions || m === 0) return;
    this.ready = true;
    this.deps.log.info({ event: 'cluster.ready', masters: m, minions: n }, `cluster ready: ${m} masters and ${n} minions deployed`);
    const hook = this.options.onClusterReady;
    if (hook) {
      Promise.resolve()
        .then(hook)
        .catch((err) => this.deps.log.error({ event: 'cluster.ready-hook-failed', ...errorFields(err) }, 'the cluster-ready hook failed'));
    }
  }
}

const viewKeys = new WeakMap<ClusterView, string>();
function viewKey(view: ClusterView): string {
  let key = viewKeys.get(view);
  if (key === undefined) {
    key = `${view.masters.map((m) => m.ip).join(',')}|${view.deployedMasters.map((m) => m.ip).join(',')}`;
    viewKeys.set(view, key);
  }
  return key;
}

function formatMs(ms: number): string {
  return ms < 1_000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;
}

function firstLine(text: string): string {
  return text.split('\n')[0] ?? text;
}
