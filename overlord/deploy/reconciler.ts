import { setMaxListeners } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import { machineFailed, type LedgerEntry } from '../../contracts/ledger-entry.ts';
import { ROLE_TRAITS } from '../../contracts/roles.ts';
import type { RenderedUnits } from '../../contracts/step.ts';
import type { Clock } from '../../core/clock.ts';
import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import { BACKOFF, Backoffs, type Backoff, type RetryPolicy } from '../../core/retry.ts';
import { Semaphore } from '../../core/semaphore.ts';
import type { DiscoverySnapshot } from '../discovery/discovery.ts';
import type { HostRunner } from '../edges/host-runner.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { Fence } from '../edges/store.ts';
import type { EtcdMembers } from '../edges/etcd-members.ts';
import type { NodeReadiness } from '../kubernetes/node-ready.ts';
import type { PodNetwork } from '../pod-network/pod-network.ts';
import type { ExecutorOptions } from './executor.ts';
import type { Ledger } from './ledger.ts';
import { MachineDeploy, type Outcome } from './machine-deploy.ts';
import { MachinePlans } from './machine-plans.ts';
import type { MachinePlan } from './planner.ts';
import type { ClusterView } from '../../contracts/step.ts';
import { deployedByRole, firstLine, formatMs, summarize, type Summary } from './summary.ts';

/**
 * The reconciler: the overlord's loop. On every trigger — a machine record changed, a machine finished, a
 * backoff expired — it reads the state (discovery's view + the ledger), plans (pure; each machine from the
 * one cache, machine-plans.ts), and starts a worker for each machine that has work and none running, at most
 * `concurrency` at once (FIFO, in plan order: masters first). Triggers that arrive during a pass coalesce into
 * one more pass. A worker takes its machine's plan again when it gets its slot (the machine may have changed
 * while it queued: unchanged, that is the plan its pass made) and deploys it (machine-deploy.ts).
 *
 * What is retried, how often and what is terminal is the retry policy's (core/retry.ts): a step's attempts
 * (`retry`), and a machine failed for its surroundings planned again after the per-machine `requeue` backoff; a
 * terminal failure waits for a change.
 *
 * Stopping (the signal aborts): no new worker, no new step; a step that is waiting is interrupted and
 * stays recorded in flight (the next overlord checks it before redoing it); then the hosts' connections close.
 */
export interface ReconcilerDeps {
  readonly hosts: HostRunner;
  /** the Kubernetes side of `node-ready` steps; absent = the overlord deploys no kubelet (tests of the deploy mechanics) */
  readonly nodes?: NodeReadiness;
  /** a master's etcd member before its first start (`etcd-member` steps); absent = none are run (tests of the deploy mechanics) */
  readonly etcd?: Pick<EtcdMembers, 'ensureMember' | 'promote'>;
  /** reserves each machine's pod subnet before its steps; absent = the pod network is left alone */
  readonly podNetwork?: PodNetwork;
  readonly fence?: () => Fence | undefined;
  readonly clock: Clock;
  readonly log: Logger;
  readonly discovery: { snapshot(): DiscoverySnapshot };
  readonly ledger: Ledger;
}

export interface ReconcilerOptions {
  readonly unitsFor: (record: MachineRecord, cluster: ClusterView) => RenderedUnits;
  /** a machine's files beyond its record and the view (OverlordOptions.machineFilesVersion) */
  readonly filesVersion?: (id: string) => number;
  readonly expected: { readonly masters: number; readonly minions: number };
  readonly concurrency: number;
  readonly executor: ExecutorOptions;
  /** a step's attempts (default BACKOFF.step) */
  readonly retry?: RetryPolicy;
  /** a machine failed for its surroundings, planned again (default BACKOFF.requeue) */
  readonly requeue?: Backoff;
  /** ledger writes and passes that failed while etcd is unreachable (default BACKOFF.peer) */
  readonly etcdBackoff?: Backoff;
  readonly onClusterReady?: () => void | Promise<void>;
  /** a fatal error (E_NOT_LEADER): the overlord must stop */
  readonly onFatal?: (err: CorekubeError) => void;
  /** minions drained for a change at once (planner rule 11; default 1) */
  readonly maxUnavailable?: number;
  /** how long after a master's change minions wait before one is drained (default CONTROL_PLANE_SETTLE_MS) */
  readonly controlPlaneSettleMs?: number;
}

/**
 * After a master's change (its API server restarted), minions wait this long before one is drained. Every client of
 * the API — every node's kube-proxy among them — retries a broken watch with client-go's backoff, at most 30 s apart:
 * a minion drained sooner moves pods while a kube-proxy may still route to the old ones, and requests time out
 * (found on the local cloud: one rollout in four with a single master lost every request for a second, its
 * Service's endpoints already elsewhere). With the API behind a load balancer its watches hardly break; the wait is
 * the same, and costs a rollout 30 s once.
 */
export const CONTROL_PLANE_SETTLE_MS = 30_000;

/**
 * PURE: until when minions must wait after the masters' last change (a master redeployed — its last deploy finished
 * after its first), and which master it was; undefined when none changed within `settleMs` of `now`.
 */
export function controlPlaneSettling(ledger: ReadonlyMap<string, LedgerEntry>, now: number, settleMs: number): { readonly until: number; readonly master: string } | undefined {
  let latest: { until: number; master: string } | undefined;
  for (const e of ledger.values()) {
    if (!ROLE_TRAITS[e.role].controlPlane || e.state !== 'deployed' || e.finishedAt === null || e.deployedAt === null || e.finishedAt === e.deployedAt) continue;
    const until = Date.parse(e.finishedAt) + settleMs;
    if (until > now && (!latest || until > latest.until)) latest = { until, master: e.hostname };
  }
  return latest;
}

/**
 * PURE: the minions out of service for a change — drained (or draining) and not yet uncordoned, by the ledger —
 * plus those whose change was started (`changing`: their ledger may not say so yet).
 */
export function outOfService(ledger: ReadonlyMap<string, LedgerEntry>, changing: Iterable<string>): Set<string> {
  const out = new Set<string>();
  for (const [id, e] of ledger) {
    if (!e.plan.includes('drain')) continue;
    const drain = e.steps.drain?.state;
    if ((drain === 'done' || drain === 'in-flight' || drain === 'failed') && e.steps.uncordon?.state !== 'done') out.add(id);
  }
  for (const id of changing) out.add(id);
  return out;
}

/** longest stretch of a pass without yielding to the event loop (the steps of running machines wait meanwhile) */
const PASS_SLICE_MS = 4;

export class Reconciler {
  private readonly semaphore: Semaphore;
  private readonly abort = new AbortController();
  private readonly running = new Map<string, Promise<void>>();
  /** minions whose change (with a drain) a worker runs now (rule 11) */
  private readonly changing = new Set<string>();
  private readonly requeued = new Map<string, { readonly failures: Backoffs; notBefore: number }>();
  private readonly cache: MachinePlans;
  private readonly machines: MachineDeploy;
  private readonly passFailures: Backoffs;
  private readonly waitingReported = new Map<string, string>();
  private passRunning = false;
  private passScheduled = false;
  private dirty = false;
  private idleWaiters: (() => void)[] = [];
  private lastSummary = '';
  private ready = false;
  private plans: readonly MachinePlan[] = [];
  /** passes run so far (tests, benchmark) */
  passes = 0;

  constructor(
    private readonly deps: ReconcilerDeps,
    private readonly options: ReconcilerOptions,
  ) {
    this.semaphore = new Semaphore(options.concurrency);
    // every queued machine and every wait listens to this one signal: thousands at once are expected
    setMaxListeners(0, this.abort.signal);
    this.cache = new MachinePlans(options.unitsFor, options.expected.masters, options.filesVersion);
    const etcdBackoff = options.etcdBackoff ?? BACKOFF.peer;
    this.passFailures = new Backoffs(etcdBackoff);
    this.machines = new MachineDeploy(
      { ...deps, current: (id) => deps.discovery.snapshot().records.get(id) },
      { executor: options.executor, retry: options.retry ?? BACKOFF.step, etcdBackoff },
    );
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
    const snapshot = this.deps.discovery.snapshot();
    return summarize({ plans: this.plans, running: this.running, records: snapshot.records, ledger: (id) => this.deps.ledger.get(id), invalid: snapshot.invalid.size + snapshot.overflow });
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
          this.passFailures.reset();
        } catch (err) {
          if (this.handleFatal(err)) return;
          // a pass only fails on an etcd write (recording a render failure): look again after a backoff
          this.deps.log.warn({ event: 'reconcile.failed', ...errorFields(err) }, 'reconcile pass failed; trying again');
          this.after(this.passFailures.next());
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
    const records = this.cache.inPlanOrder(snapshot);
    const entries = ledger.entries();
    const cluster = this.cache.cluster(snapshot.records.values(), entries);

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
      const p = this.cache.plan(record, cluster, entries);
      plans.push(p);
      if (p.action === 'fail') {
        await this.machines.write(machineFailed(ledger.get(p.id), record, '', p.reason, new Date(clock.now()).toISOString()), this.abort.signal);
        log.error({ event: 'machine.failed', machine: p.id, role: p.role, hostname: record.hostname, reason: p.reason }, `machine failed: its units do not render: ${firstLine(p.reason)}`);
      } else if (p.action === 'wait') {
        if (this.waitingReported.get(p.id) !== p.reason) {
          this.waitingReported.set(p.id, p.reason);
          log.info({ event: 'machine.waiting', machine: p.id, role: p.role, hostname: record.hostname, reason: p.reason }, p.reason);
        }
      } else if (p.action === 'deploy' && !this.running.has(p.id)) {
        // a machine requeued for its surroundings waits out its backoff, unless it changed since
        const backoff = this.requeued.get(p.id);
        if (backoff && backoff.notBefore > clock.now() && (p.reason === 'retry' || p.reason === 'resume')) continue;
        // rule 11: at most maxUnavailable minions drained at once (those out of service now hold their places), and
        // none newly drained while the API's clients may still be catching up with a master's change
        if (p.steps.some((s) => s.kind === 'drain')) {
          const out = outOfService(ledger.entries(), this.changing);
          const settling = out.has(p.id) ? undefined : controlPlaneSettling(ledger.entries(), clock.now(), this.options.controlPlaneSettleMs ?? CONTROL_PLANE_SETTLE_MS);
          if (settling) {
            const reason = `waiting until ${new Date(settling.until).toISOString()}: ${settling.master} changed, and every node's watches of the API come back first (client-go retries a broken watch at most 30 s apart)`;
            if (this.waitingReported.get(p.id) !== reason) {
              this.waitingReported.set(p.id, reason);
              log.info({ event: 'machine.waiting', machine: p.id, role: p.role, hostname: record.hostname, reason }, reason);
              this.after(settling.until - clock.now());
            }
            continue;
          }
          const max = this.options.maxUnavailable ?? 1;
          if (!out.has(p.id) && out.size >= max) {
            const reason = `waiting: ${out.size} of ${max} minion${max === 1 ? '' : 's'} allowed out of service at once ${out.size === 1 ? 'is' : 'are'} being changed (${[...out].map((id) => this.hostnameOf(id) ?? id).join(', ')})`;
            if (this.waitingReported.get(p.id) !== reason) {
              this.waitingReported.set(p.id, reason);
              log.info({ event: 'machine.waiting', machine: p.id, role: p.role, hostname: record.hostname, reason }, reason);
            }
            continue;
          }
        }
        this.waitingReported.delete(p.id);
        if (p.steps.some((s) => s.kind === 'drain')) this.changing.add(p.id);
        this.startWorker(p.id);
      }
    }
    this.plans = plans;
    this.report();
  }

  private startWorker(id: string): void {
    // the moment a machine is planned and queued for a slot (the benchmark's reaction latency reads it)
    this.deps.log.debug({ event: 'machine.queued', machine: id, queued: this.semaphore.waiting }, 'queued for deployment');
    const work = (async () => {
      let release: (() => void) | undefined;
      try {
        release = await this.semaphore.acquire(this.abort.signal);
        // the machine may have changed while it queued: its plan now (from the cache when it did not)
        const snapshot = this.deps.discovery.snapshot();
        const record = snapshot.records.get(id);
        if (!record) return;
        const entries = this.deps.ledger.entries();
        const p = this.cache.plan(record, this.cache.cluster(snapshot.records.values(), entries), entries);
        if (p.action === 'deploy') this.settled(id, await this.machines.deploy(p, record, this.abort.signal));
      } catch (err) {
        if (!this.abort.signal.aborted && !this.handleFatal(err)) {
          const e = asCorekubeError(err);
          if (e.code === 'E_ETCD_CONFLICT') {
            this.deps.log.warn({ event: 'ledger.conflict', machine: id, hostname: this.hostnameOf(id), reason: e.message }, 'the ledger entry changed under us: planning again');
          } else {
            this.deps.log.error({ event: 'worker.failed', machine: id, hostname: this.hostnameOf(id), ...errorFields(e) }, 'deploying the machine stopped');
            this.requeue(id);
          }
        }
      } finally {
        release?.();
        this.running.delete(id);
        this.changing.delete(id);
        this.trigger();
        this.notifyIdle();
      }
    })();
    this.running.set(id, work);
  }

  private settled(id: string, outcome: Outcome): void {
    if (outcome === 'requeue') this.requeue(id);
    else if (outcome === 'deployed') this.requeued.delete(id);
  }

  private requeue(id: string): void {
    let backoff = this.requeued.get(id);
    if (!backoff) {
      backoff = { failures: new Backoffs(this.options.requeue ?? BACKOFF.requeue), notBefore: 0 };
      this.requeued.set(id, backoff);
    }
    const delay = backoff.failures.next();
    backoff.notBefore = this.deps.clock.now() + delay;
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

  private report(): void {
    const s = this.summary();
    if (s.text !== this.lastSummary) {
      this.lastSummary = s.text;
      this.deps.log.info({ event: 'reconcile.summary', deployed: s.deployed, total: s.total, deploying: s.deploying, waiting: s.waiting, failed: s.failed.length, invalid: s.invalid }, s.text);
    }
    if (!this.ready) this.checkReady();
  }

  private checkReady(): void {
    const { masters, minions } = this.options.expected;
    const { controlPlane: m, others: n } = deployedByRole(this.plans, this.running);
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
