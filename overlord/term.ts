import { clusterKeys, type ClusterKeys } from '../contracts/keys.ts';
import type { MachineRecord } from '../contracts/machine-record.ts';
import type { RenderedUnits } from '../contracts/step.ts';
import type { Clock } from '../core/clock.ts';
import { CorekubeError } from '../core/errors.ts';
import { BACKOFF, retry, type Backoff, type RetryPolicy } from '../core/retry.ts';
import { Liveness } from './availability/liveness.ts';
import { DEFAULT_EXECUTOR_OPTIONS, type ExecutorOptions } from './deploy/executor.ts';
import { Ledger } from './deploy/ledger.ts';
import { clusterView } from './deploy/planner.ts';
import type { ClusterView } from '../contracts/step.ts';
import { PreparedDiscovery } from './deploy/prepared-discovery.ts';
import { Reconciler } from './deploy/reconciler.ts';
import type { Summary } from './deploy/summary.ts';
import { Admission } from './discovery/admission.ts';
import { AdmittedDiscovery } from './discovery/admitted-discovery.ts';
import { Discovery } from './discovery/discovery.ts';
import { IdentityBook, type MachineAddresses } from './discovery/identity.ts';
import type { HostRunner } from './edges/host-runner.ts';
import { errorFields, type Logger } from './edges/log.ts';
import type { Fence, Store } from './edges/store.ts';
import { KubernetesSide, type KubernetesOptions } from './kubernetes/cluster-side.ts';
import type { PodNetwork } from './pod-network/pod-network.ts';
import { createPodNetwork, type PodNetworkSpec } from './pod-network/registry.ts';
import type { MachineCredentials } from './trust/machine-credentials.ts';
import { Removals } from './lifecycle/removals.ts';
import { EtcdMembers } from './edges/etcd-members.ts';
import { followStackMembers, STACK_POLL_MS } from './lifecycle/stack-members.ts';
import type { DesiredSpec } from './lifecycle/desired-spec.ts';
import type { StackVersions } from '../contracts/overlord-channel.ts';
import type { DrainOptions } from './kubernetes/drain.ts';
import type { HostTarget } from './edges/host-runner.ts';

/**
 * One term of the overlord: what runs while it leads — `runOverlord(ports, options)`. The composition root
 * (overlord.ts) runs one a term won, through availability/leader.ts `runLeader`, with the term's signal and
 * fence; tests and the benchmark call it directly:
 *
 *   const overlord = await runOverlord(
 *     { store, hosts, clock: systemClock, log },          // Ports: etcd (Store), SSH (HostRunner), time, pino
 *     {
 *       cluster: 'demo',                                   // key prefix /corekube/demo/
 *       sshUser: 'corekube',                               // 'root' = no `sudo -n`
 *       unitsFor: unitsForSpec(spec),                      // deploy/machine-units.ts: units/ for this spec
 *       expected: { masters: spec.masters, minions: spec.minions },  // masters gate + cluster-ready
 *       concurrency: 10,
 *       signal,                                            // abort = stop (like SIGTERM)
 *       onClusterReady: () => signalHeat(),                // once, when every expected machine is deployed
 *       // optional: executor (timeouts, poll), retry (per step), requeue (per machine), fence (leader election)
 *     },
 *   );
 *   await overlord.clusterReady;      // or: await overlord.idle() — nothing running or queued
 *   overlord.summary().text;          // "3/4 machines deployed, 1 failed: …"
 *   await overlord.stop();            // = abort the signal; resolves once workers stopped and SSH closed
 *   await overlord.done;              // resolves on stop; rejects with E_NOT_LEADER if the lead was lost
 *
 * The machines flow: discovery's records (discovery/discovery.ts) → the identity rules and liveness
 * (discovery/admitted-discovery.ts) → prepared: their certificates issued (deploy/prepared-discovery.ts) → the
 * reconciler (deploy/reconciler.ts), which plans and deploys. Beside it: admission of join requests, the pod
 * network, the Kubernetes side. runOverlord resolves once the ledger is loaded and discovery lists and watches
 * (retried with backoff while etcd is unreachable — startup never crash-loops). The caller owns the ports: it
 * closes the store after `done`; the overlord closes the hosts' connections when it stops.
 */
export interface Ports {
  readonly store: Store;
  readonly hosts: HostRunner;
  readonly clock: Clock;
  readonly log: Logger;
}

export interface OverlordOptions {
  readonly cluster: string;
  readonly sshUser: string;
  /** renders one machine's units (deploy/machine-units.ts); a throw fails that machine with the reason */
  readonly unitsFor: (record: MachineRecord, cluster: ClusterView) => RenderedUnits;
  readonly expected: { readonly masters: number; readonly minions: number };
  /** machines deployed at once; default 10 */
  readonly concurrency?: number;
  readonly executor?: Partial<Omit<ExecutorOptions, 'remote'>>;
  /** a step's attempts (default BACKOFF.step) */
  readonly retry?: RetryPolicy;
  /** a machine failed for its surroundings, planned again (default BACKOFF.requeue) */
  readonly requeue?: Backoff;
  /** while etcd is unreachable: the startup reads, ledger writes, failed passes (default BACKOFF.peer) */
  readonly etcdBackoff?: Backoff;
  readonly signal?: AbortSignal;
  readonly fence?: () => Fence | undefined;
  readonly onClusterReady?: () => void | Promise<void>;
  /**
   * The cluster's pod network (pod-network/registry.ts podNetworkOf(spec)): its config written at start if absent
   * (a different one already there stops the overlord: E_NETWORK_CONFIG_CHANGED), and a subnet reserved for every
   * machine before its steps run. Absent = the overlord leaves the pod network alone.
   */
  readonly podNetwork?: PodNetworkSpec;
  /**
   * Makes what each machine's units need and cannot be made while rendering them (its certificates:
   * trust/machine-pki.ts), for every announced machine, each time the machines change — before the
   * reconciler sees the change (deploy/prepared-discovery.ts). Absent = the reconciler sees discovery as is.
   */
  readonly machinePki?: {
    prepare(records: readonly MachineRecord[], fence?: Fence): Promise<void>;
    /** bumped when a machine's certificates are issued anew (a renewal): its units are rendered again */
    versionOf?(id: string): number;
  };
  /**
   * Admission of join requests (discovery/admission.ts): each node that asks to join with the shared join
   * token gets its own discovery etcd user over SSH; with `podNetwork`, it is also granted its subnet once
   * reserved. Absent = join requests are left alone (records are written by other means).
   */
  readonly admission?: {
    readonly credentials: MachineCredentials;
    readonly concurrency?: number;
    readonly backoff?: Backoff;
    /** join requests tracked at once, and attempts a second (discovery/admission.ts) */
    readonly maxPending?: number;
    readonly rate?: { readonly perSecond: number; readonly burst: number };
  };
  /**
   * The addresses machines can have (discovery/identity.ts machineAddresses(spec)): a record or join request naming
   * another is refused. Absent = any IPv4 address (an overlord run by hand on a test etcd).
   */
  readonly addresses?: MachineAddresses;
  /**
   * Liveness beyond the lease (availability/liveness.ts): every deployable machine is asked over SSH every
   * `intervalMs`; one silent for `deadAfterMs` is treated as gone. Absent = the lease alone decides.
   */
  readonly liveness?: { readonly intervalMs?: number; readonly deadAfterMs?: number };
  /**
   * How often the machines are prepared again although nothing changed, so certificates due for renewal are
   * issued anew and rolled out (trust/machine-pki.ts; default hourly). Only with `machinePki`.
   */
  readonly renewalCheckMs?: number;
  /**
   * The cluster's Kubernetes side (kubernetes/cluster-side.ts): node readiness, the add-ons, Node states, and
   * the cluster-ready hook held until the add-ons are available. Absent = the overlord deploys units only.
   */
  readonly kubernetes?: KubernetesOptions;
  /**
   * The stack's counts (lifecycle/stack-members.ts): read every `pollMs` (default 15 s) through the stack's
   * overlord_channel; a dropped minion_count removes the minions beyond it. Absent = no stack (booted by hand).
   */
  readonly stack?: { readonly read: () => Promise<Readonly<Record<string, unknown>>>; readonly cluster: string; readonly pollMs?: number };
  /**
   * The spec as the stack asks for it (lifecycle/desired-spec.ts): the Kubernetes version the stack's channel
   * says, accepted under the skew policy; `unitsFor` must render from its current(). Absent = the spec is fixed.
   */
  readonly desired?: DesiredSpec;
  /** minions drained for a change at once (planner rule 11; default 1) */
  readonly maxUnavailable?: number;
  /** how removals run (lifecycle/removals.ts): between looks at the requests, the drain's timeout and poll */
  readonly removals?: { readonly backoff?: Backoff; readonly drain?: Omit<DrainOptions, 'machineGone'> };
}

/** How often a term prepares the machines again for certificate renewals (OverlordOptions.renewalCheckMs). */
export const RENEWAL_CHECK_MS = 3600_000;

export interface Overlord {
  readonly done: Promise<void>;
  readonly clusterReady: Promise<void>;
  stop(): Promise<void>;
  idle(): Promise<void>;
  summary(): Summary;
  /** discovery re-lists so far (1 after start) */
  readonly discovery: Pick<Discovery, 'lists' | 'snapshot'>;
  readonly reconciler: Pick<Reconciler, 'passes' | 'lastPlans' | 'trigger'>;
}

export const DEFAULT_CONCURRENCY = 10;

/** What each leader term runs (availability/leader.ts `term`): an overlord with these options and the term's signal and fence. */
export function overlordTerms(ports: Ports, options: Omit<OverlordOptions, 'signal' | 'fence'>): (term: { readonly signal: AbortSignal; readonly fence: () => Fence }) => Promise<Overlord> {
  return (term) => runOverlord(ports, { ...options, ...term });
}

export async function runOverlord(ports: Ports, options: OverlordOptions): Promise<Overlord> {
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new CorekubeError('E_USAGE', `concurrency must be a positive whole number, got ${concurrency}`, { hint: 'use --concurrency 10' });
  }
  const term = new Term(ports, options, concurrency);
  await term.start();
  return term.overlord();
}

/** The parts of one term, wired in the order the machines flow through them. */
class Term {
  private readonly keys: ClusterKeys;
  private readonly ledger: Ledger;
  private readonly book = new IdentityBook();
  private readonly discovery: Discovery;
  private readonly liveness: Liveness | undefined;
  private readonly machines: AdmittedDiscovery;
  private readonly prepared: PreparedDiscovery | undefined;
  private readonly admission: Admission | undefined;
  private readonly podNetwork: PodNetwork | undefined;
  private readonly kube: KubernetesSide | undefined;
  private readonly removals: Removals;
  private readonly etcd: EtcdMembers;
  private readonly reconciler: Reconciler;
  /** the startup reads: aborted with the term */
  private readonly startup = new AbortController();
  /** the term's background tasks (the Kubernetes side) */
  private readonly tasks = new AbortController();
  private readonly ready = promised<void>();
  private readonly finished = promised<void>();
  private fatal: CorekubeError | undefined;
  private stopping: Promise<void> | undefined;

  constructor(
    private readonly ports: Ports,
    private readonly options: OverlordOptions,
    private readonly concurrency: number,
  ) {
    const { store, hosts, clock, log } = ports;
    const keys = (this.keys = clusterKeys(options.cluster));
    this.ledger = new Ledger(store, keys, options.fence);
    // discovery's records → the identity rules and liveness (machines) → prepared (certificates) → the reconciler
    this.discovery = new Discovery({ store, keys, log, clock, onChange: () => this.machines.invalidate() });
    // the masters' etcd, changed through a running master: the ones deployed that still announce (removed ones left out)
    this.etcd = new EtcdMembers(
      { hosts, log, running: () => this.runningMasters() },
      { remote: { user: options.sshUser } },
    );
    this.removals = new Removals(
      {
        store, keys, hosts, clock, log, ledger: this.ledger,
        ...(options.fence ? { fence: options.fence } : {}),
        api: () => this.kube?.api,
        podNetwork: () => this.podNetwork,
        etcd: this.etcd,
        ...(options.admission ? { credentials: options.admission.credentials } : {}),
        announced: (id) => this.announced(id),
        onChange: () => this.machines.invalidate(),
      },
      { remote: { user: options.sshUser }, ...options.removals },
    );
    this.liveness = options.liveness ? new Liveness({ hosts, clock, log, onChange: () => this.machines.invalidate(), ...options.liveness }) : undefined;
    this.machines = new AdmittedDiscovery({
      source: this.discovery,
      rules: { book: this.book, requireAdmission: options.admission !== undefined, ...(options.addresses ? { addresses: options.addresses } : {}) },
      removals: this.removals,
      ...(this.liveness ? { liveness: this.liveness } : {}),
      log,
      onChange: () => this.machinesChanged(),
    });
    const pki = options.machinePki;
    this.prepared = pki ? new PreparedDiscovery({ source: this.machines, prepare: (records) => pki.prepare(records, options.fence?.()), onChange: () => this.reconciler.trigger(), clock, log }) : undefined;
    this.admission = options.admission ? this.makeAdmission(options.admission) : undefined;
    this.podNetwork = options.podNetwork ? createPodNetwork(options.podNetwork, { store, keys, log, ...(options.admission ? { credentials: options.admission.credentials } : {}) }) : undefined;
    const view = this.prepared ?? this.machines;
    this.kube = options.kubernetes
      ? new KubernetesSide(
          options.kubernetes,
          {
            store, hosts, clock, log, keys,
            ...(options.fence ? { fence: options.fence } : {}),
            ...(this.podNetwork ? { podNetwork: this.podNetwork } : {}),
            records: () => view.snapshot().records.values(),
            deployedMasters: () => clusterView(view.snapshot().records.values(), this.ledger.entries()).deployedMasters,
          },
          { user: options.sshUser },
          this.tasks.signal,
        )
      : undefined;
    this.reconciler = new Reconciler(
      {
        hosts, clock, log, discovery: view, ledger: this.ledger, etcd: this.etcd,
        ...(this.kube ? { nodes: this.kube.nodes } : {}),
        ...(this.podNetwork ? { podNetwork: this.podNetwork } : {}),
        ...(options.fence ? { fence: options.fence } : {}),
      },
      {
        unitsFor: options.unitsFor,
        // a machine is rendered again when its certificates are re-issued or the desired spec changes (one number: both small)
        filesVersion: (id: string) => (options.machinePki?.versionOf?.(id) ?? 0) * 1_000_003 + (options.desired?.generation ?? 0),
        ...(options.maxUnavailable ? { maxUnavailable: options.maxUnavailable } : {}),
        expected: options.expected,
        concurrency,
        executor: { ...DEFAULT_EXECUTOR_OPTIONS, ...options.executor, remote: { user: options.sshUser } },
        ...(options.retry ? { retry: options.retry } : {}),
        ...(options.requeue ? { requeue: options.requeue } : {}),
        ...(options.etcdBackoff ? { etcdBackoff: options.etcdBackoff } : {}),
        onClusterReady: () => this.clusterReady(),
        onFatal: (err) => {
          this.fatal = err;
          void this.stop();
        },
      },
    );
  }

  /** Reads what the term starts from (each read retried while etcd is unreachable), then starts working. */
  async start(): Promise<void> {
    const { options, ports } = this;
    const onAbort = () => this.startup.abort(options.signal?.reason);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    ports.log.info({ event: 'overlord.start', cluster: options.cluster, concurrency: this.concurrency, expected: options.expected }, `overlord starting for cluster ${options.cluster}`);
    try {
      await this.untilItWorks('loading the ledger', () => this.ledger.load());
      const podNetwork = this.podNetwork;
      if (podNetwork) await this.untilItWorks(`writing the ${podNetwork.name} network config`, () => podNetwork.ensureConfig(options.fence?.()));
      await this.untilItWorks('reading the removals', () => this.removals.load());
      const desired = options.desired;
      if (desired) {
        await this.untilItWorks('reading the desired versions', () => desired.load());
        desired.onChange = () => this.reconciler.trigger();
      }
      await this.untilItWorks('reading admitted identities', () => this.book.start({ store: ports.store, keys: this.keys, log: ports.log, clock: ports.clock }));
      await this.untilItWorks('listing machine records', () => this.discovery.start());
      await this.prepared?.refresh();
      const admission = this.admission;
      if (admission) await this.untilItWorks('listing join requests', () => admission.start());
    } catch (err) {
      this.prepared?.stop();
      this.machines.close();
      await this.admission?.stop();
      await this.discovery.stop();
      await this.book.stop();
      throw err;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
    const stopOnAbort = () => void this.stop();
    if (options.signal?.aborted) void this.stop();
    else options.signal?.addEventListener('abort', stopOnAbort, { once: true });
    this.finished.promise.finally(() => options.signal?.removeEventListener('abort', stopOnAbort)).catch(() => undefined);
    this.liveness?.start();
    this.reconciler.trigger();
    this.admission?.pass();
    this.kube?.start();
    void this.checkRenewals();
    void this.removals.run(this.tasks.signal);
    void this.followStack();
  }

  /** Until the term stops: the stack's counts followed (lifecycle/stack-members.ts), when the overlord has a stack. */
  private async followStack(): Promise<void> {
    const stack = this.options.stack;
    if (!stack) return;
    const ledger = this.ledger;
    const view = () => this.discovery.snapshot().records;
    const machines = function* () {
      const seen = new Set<string>();
      for (const [id, e] of ledger.entries()) {
        seen.add(id);
        yield { id, role: e.role, hostname: e.hostname, ip: e.ip };
      }
      for (const r of view().values()) if (!seen.has(r.id)) yield r;
    };
    const desired = this.options.desired;
    const fence = this.options.fence;
    const offerVersions = desired ? (v: StackVersions) => desired.offer(v, fence?.()) : undefined;
    await followStackMembers({ read: stack.read, clock: this.ports.clock, log: this.ports.log, cluster: stack.cluster, machines, removals: this.removals, ...(offerVersions ? { offerVersions } : {}) }, this.tasks.signal, stack.pollMs ?? STACK_POLL_MS).catch((err: unknown) => {
      if (err instanceof CorekubeError && err.code === 'E_NOT_LEADER') {
        this.fatal = err;
        void this.stop();
      }
    });
  }

  /** The masters whose etcd runs: deployed, still announcing, not being removed — where etcdctl is asked. */
  private runningMasters(): HostTarget[] {
    const view = this.prepared ?? this.machines;
    const masters = clusterView(view.snapshot().records.values(), this.ledger.entries()).deployedMasters;
    return masters.map((m) => this.announced(m.id)).filter((t): t is HostTarget => t !== undefined);
  }

  /** Where a machine that still announces itself is reached: its admitted address and key. */
  private announced(id: string): HostTarget | undefined {
    const record = this.discovery.snapshot().records.get(id);
    if (!record) return undefined;
    const identity = this.book.get(id);
    const hostKey = identity?.hostKey ?? this.book.keyOf(id);
    return { id, ip: identity?.ip ?? record.ip, ...(hostKey ? { hostKey } : {}) };
  }

  /** Until the term stops: prepare the machines again every renewalCheckMs (certificates due for renewal). */
  private async checkRenewals(): Promise<void> {
    const prepared = this.prepared;
    if (!prepared) return;
    const every = this.options.renewalCheckMs ?? RENEWAL_CHECK_MS;
    while (!this.tasks.signal.aborted) {
      try {
        await this.ports.clock.sleep(every, this.tasks.signal);
      } catch {
        return;
      }
      await prepared.refresh();
    }
  }

  overlord(): Overlord {
    const { reconciler, discovery, machines } = this;
    return {
      done: this.finished.promise,
      clusterReady: this.ready.promise,
      stop: () => this.stop(),
      idle: () => reconciler.idle(),
      summary: () => reconciler.summary(),
      discovery: { get lists() { return discovery.lists; }, snapshot: () => machines.snapshot() },
      reconciler,
    };
  }

  private stop(): Promise<void> {
    this.stopping ??= (async () => {
      const { log } = this.ports;
      log.info({ event: 'overlord.stopping' }, 'overlord stopping: no new work; steps in flight stay recorded');
      // the reconciler first, synchronously: no new step may start while the watch is being cancelled
      // (cancelling it waits for etcd, which may be unreachable — that is often why we stop)
      const reconcilerStopped = this.reconciler.stop();
      this.tasks.abort(new CorekubeError('E_INTERNAL', 'the overlord is stopping'));
      this.prepared?.stop();
      this.machines.close();
      const admissionStopped = this.admission?.stop();
      const livenessStopped = this.liveness?.stop();
      await this.discovery.stop();
      await this.book.stop();
      await admissionStopped;
      await livenessStopped;
      await reconcilerStopped;
      log.info({ event: 'overlord.stopped', summary: this.reconciler.summary().text }, 'overlord stopped');
      if (this.fatal) this.finished.reject(this.fatal);
      else this.finished.resolve();
    })();
    return this.stopping;
  }

  /** The admitted machines changed: prepare them (then the reconciler looks), and look at the join requests and removals. */
  private machinesChanged(): void {
    void this.removals.refresh().catch((err: unknown) => this.ports.log.warn({ event: 'removal.pass-failed', ...errorFields(err) }, 'reading the removal requests failed; next time the machines or the stack change'));
    if (this.prepared) void this.prepared.refresh();
    else this.reconciler?.trigger();
    this.admission?.pass();
  }

  /** Every expected machine is deployed: once the Kubernetes side says the cluster is usable, it is ready. */
  private async clusterReady(): Promise<void> {
    await this.kube?.gate(this.options.expected.minions);
    this.ready.resolve();
    await this.options.onClusterReady?.();
  }

  private makeAdmission(a: NonNullable<OverlordOptions['admission']>): Admission {
    const { store, hosts, log, clock } = this.ports;
    const o = this.options;
    return new Admission(
      { store, hosts, credentials: a.credentials, keys: this.keys, log, clock, book: this.book, machines: this.machines },
      {
        remote: { user: o.sshUser },
        ...(o.fence ? { fence: o.fence } : {}),
        ...(o.addresses ? { addresses: o.addresses } : {}),
        removed: (id) => this.removals.excluded(id),
        ...(a.concurrency ? { concurrency: a.concurrency } : {}),
        ...(a.backoff ? { backoff: a.backoff } : {}),
        ...(a.maxPending ? { maxPending: a.maxPending } : {}),
        ...(a.rate ? { rate: a.rate } : {}),
      },
    );
  }

  private untilItWorks(what: string, fn: () => Promise<void>): Promise<void> {
    const { log, clock } = this.ports;
    return retry(fn, {
      policy: this.options.etcdBackoff ?? BACKOFF.peer,
      clock,
      signal: this.startup.signal,
      code: 'E_ETCD',
      onRetry: (e, _failures, delay) => log.warn({ event: 'overlord.startup-retry', what, nextRetryMs: delay, ...errorFields(e) }, `${what} failed; retrying`),
    });
  }
}

function promised<T>(): { readonly promise: Promise<T>; resolve(value: T): void; reject(err: unknown): void } {
  let resolve!: (value: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}
