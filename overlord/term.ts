import { asCorekubeError, CorekubeError } from '../core/errors.ts';
import type { Backoff } from '../core/retry.ts';
import type { Clock } from '../core/clock.ts';
import { Admission } from './discovery/admission.ts';
import { AdmittedDiscovery } from './discovery/admitted-discovery.ts';
import { Discovery } from './discovery/discovery.ts';
import { DEFAULT_EXECUTOR_OPTIONS, type ExecutorOptions } from './deploy/executor.ts';
import type { HostRunner } from './edges/host-runner.ts';
import { IdentityBook, type MachineAddresses } from './discovery/identity.ts';
import { clusterKeys } from '../contracts/keys.ts';
import { Ledger } from './deploy/ledger.ts';
import { Liveness } from './availability/liveness.ts';
import { PreparedDiscovery } from './deploy/prepared-discovery.ts';
import { errorFields, type Logger } from './edges/log.ts';
import type { MachineCredentials } from './trust/machine-credentials.ts';
import type { MachineRecord } from '../contracts/machine-record.ts';
import type { ClusterView } from './deploy/planner.ts';
import type { RenderedUnits } from '../contracts/step.ts';
import { Reconciler, type RetryPolicy, type Summary } from './deploy/reconciler.ts';
import type { Fence, Store } from './edges/store.ts';
import { ensureNetworkConfig, reserveSubnet, SubnetBook, subnetCidr, subnetLeaseName, type FlannelConfig } from './pod-network/flannel.ts';
import { clusterView } from './deploy/planner.ts';
import type { KubernetesApi } from './kubernetes/api.ts';
import type { Addon } from './kubernetes/addons.ts';
import { AddonApplier } from './kubernetes/addon-applier.ts';
import { createNodeReadiness, DEFAULT_NODE_READINESS, type NodeReadiness } from './kubernetes/node-ready.ts';
import { recordNodeStates } from './kubernetes/node-states.ts';
import { PORTS } from '../units/layout.ts';

/**
 * The overlord, as a library: `runOverlord(ports, options)` is the one programmatic entry (the CLI
 * `corekube overlord`, the e2e tests and the benchmark all call it). With leader election, the CLI and the
 * benchmark call it through overlord/availability/leader.ts `runLeader`: one runOverlord a term won, with the term's
 * signal and fence.
 *
 *   const overlord = await runOverlord(
 *     { store, hosts, clock: systemClock, log },          // Ports: etcd (Store), SSH (HostRunner), time, pino
 *     {
 *       cluster: 'demo',                                   // key prefix /corekube/demo/
 *       sshUser: 'corekube',                               // 'root' = no `sudo -n`
 *       unitsFor: unitsForSpec(spec),                      // overlord/deploy/machine-units.ts: units/ for this spec
 *       expected: { masters: spec.masters, minions: spec.minions },  // masters gate + cluster-ready
 *       concurrency: 10,
 *       signal,                                            // abort = stop (like SIGTERM)
 *       onClusterReady: () => signalHeat(),                // once, when every expected machine is deployed
 *       // optional: executor (timeouts, poll), retry (per step), requeue (per machine), fence (issue 5)
 *     },
 *   );
 *   await overlord.clusterReady;      // or: await overlord.idle() — nothing running or queued
 *   overlord.summary().text;          // "3/4 machines deployed, 1 failed: …"
 *   await overlord.stop();            // = abort the signal; resolves once workers stopped and SSH closed
 *   await overlord.done;              // resolves on stop; rejects with E_NOT_LEADER if the lead was lost
 *
 * runOverlord resolves once the ledger is loaded and discovery lists and watches (both retried with
 * backoff while etcd is unreachable — startup never crash-loops). The caller owns the ports: it closes
 * the store after `done`; the overlord closes the hosts' connections when it stops.
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
  /** renders one machine's units (units/index.ts); a throw fails that machine with the reason */
  readonly unitsFor: (record: MachineRecord, cluster: ClusterView) => RenderedUnits;
  readonly expected: { readonly masters: number; readonly minions: number };
  /** machines deployed at once; default 10 */
  readonly concurrency?: number;
  readonly executor?: Partial<Omit<ExecutorOptions, 'remote'>>;
  readonly retry?: RetryPolicy;
  readonly requeue?: RetryPolicy;
  readonly signal?: AbortSignal;
  readonly fence?: () => Fence | undefined;
  readonly onClusterReady?: () => void | Promise<void>;
  /**
   * flannel's network (overlord/pod-network/flannel.ts flannelConfig(spec)): written at start if absent (a different
   * one already there stops the overlord: E_NETWORK_CONFIG_CHANGED), and a subnet reserved for every
   * machine before its steps run. Absent = the overlord leaves flannel's keys alone.
   */
  readonly podNetwork?: FlannelConfig;
  /**
   * Makes what each machine's units need and cannot be made while rendering them (its certificates:
   * overlord/trust/machine-pki.ts), for every announced machine, each time the machines change — before the
   * reconciler sees the change (overlord/deploy/prepared-discovery.ts). Absent = the reconciler sees discovery as is.
   */
  readonly prepareMachines?: (records: readonly MachineRecord[], fence?: Fence) => Promise<void>;
  /**
   * Admission of join requests (overlord/discovery/admission.ts): each node that asks to join with the shared join
   * token gets its own discovery etcd user over SSH; with `podNetwork`, its role is also granted its subnet
   * lease once reserved. Absent = join requests are left alone (records are written by other means).
   */
  readonly admission?: {
    readonly credentials: MachineCredentials;
    readonly concurrency?: number;
    readonly backoff?: Backoff;
    /** join requests tracked at once, and attempts a second (overlord/discovery/admission.ts) */
    readonly maxPending?: number;
    readonly rate?: { readonly perSecond: number; readonly burst: number };
  };
  /**
   * The addresses machines can have (overlord/discovery/identity.ts machineAddresses(spec)): a record or join request naming
   * another is refused. Absent = any IPv4 address (an overlord run by hand on a test etcd).
   */
  readonly addresses?: MachineAddresses;
  /**
   * Liveness beyond the lease (overlord/availability/liveness.ts): every deployable machine is asked over SSH every
   * `intervalMs`; one silent for `deadAfterMs` is treated as gone. Absent = the lease alone decides.
   */
  readonly liveness?: { readonly intervalMs?: number; readonly deadAfterMs?: number };
  /** backoff of the startup reads while etcd is unreachable */
  readonly startupBackoffMs?: { readonly initial: number; readonly max: number };
  /**
   * The cluster's Kubernetes side (overlord/kubernetes/): the API of the deployed masters (`api` makes it from
   * their https URLs), the add-ons applied once it is ready, every kubelet's Node brought to Ready with its pod
   * subnet (the `node-ready` step), each Node's state recorded for `corekube status` — and the cluster-ready
   * hook held until the add-ons are available. Absent = the overlord deploys units only (tests of mechanics).
   */
  readonly kubernetes?: KubernetesOptions;
}

export interface KubernetesOptions {
  readonly api: (servers: () => readonly string[]) => KubernetesApi;
  readonly addons: readonly Addon[];
  /** node-ready: how long a Node may take to be Ready (default 180 s) */
  readonly nodeTimeoutMs?: number;
  /** the cluster-ready gate: how long the add-ons may take to be available (default 600 s) */
  readonly addonsTimeoutMs?: number;
  /** how often Node states are read (default 10 s) */
  readonly nodeStatesIntervalMs?: number;
  readonly pollMs?: number;
}

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

export async function runOverlord(ports: Ports, options: OverlordOptions): Promise<Overlord> {
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new CorekubeError('E_USAGE', `concurrency must be a positive whole number, got ${concurrency}`, { hint: 'use --concurrency 10' });
  }
  const keys = clusterKeys(options.cluster);
  const log = ports.log;
  const ledger = new Ledger(ports.store, keys, options.fence);

  let reconciler: Reconciler | undefined;
  let resolveReady!: () => void;
  const clusterReady = new Promise<void>((r) => (resolveReady = r));
  let resolveDone!: () => void;
  let rejectDone!: (err: unknown) => void;
  const done = new Promise<void>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  done.catch(() => undefined);
  let fatal: CorekubeError | undefined;

  const startup = new AbortController();
  const onAbort = () => startup.abort(options.signal?.reason);
  options.signal?.addEventListener('abort', onAbort, { once: true });

  // discovery's records → the identity rules and liveness (machines) → prepared (certificates) → the reconciler
  let prepared: PreparedDiscovery | undefined;
  let admission: Admission | undefined;
  const book = new IdentityBook();
  const discovery = new Discovery({ store: ports.store, keys, log, clock: ports.clock, onChange: () => machines.invalidate() });
  const liveness = options.liveness ? new Liveness({ hosts: ports.hosts, clock: ports.clock, log, onChange: () => machines.invalidate(), ...options.liveness }) : undefined;
  const machines = new AdmittedDiscovery({
    source: discovery,
    rules: { book, requireAdmission: options.admission !== undefined, ...(options.addresses ? { addresses: options.addresses } : {}) },
    ...(liveness ? { liveness } : {}),
    log,
    onChange: () => {
      if (prepared) void prepared.refresh();
      else reconciler?.trigger();
      admission?.pass();
    },
  });
  if (options.prepareMachines) {
    const prepareMachines = options.prepareMachines;
    prepared = new PreparedDiscovery({ source: machines, prepare: (records) => prepareMachines(records, options.fence?.()), onChange: () => reconciler?.trigger(), clock: ports.clock, log });
  }

  if (options.admission) {
    const a = options.admission;
    admission = new Admission(
      { store: ports.store, hosts: ports.hosts, credentials: a.credentials, keys, log, clock: ports.clock, book, machines },
      {
        remote: { user: options.sshUser },
        ...(options.fence ? { fence: options.fence } : {}),
        ...(options.addresses ? { addresses: options.addresses } : {}),
        ...(a.concurrency ? { concurrency: a.concurrency } : {}),
        ...(a.backoff ? { backoff: a.backoff } : {}),
        ...(a.maxPending ? { maxPending: a.maxPending } : {}),
        ...(a.rate ? { rate: a.rate } : {}),
      },
    );
  }

  log.info({ event: 'overlord.start', cluster: options.cluster, concurrency, expected: options.expected }, `overlord starting for cluster ${options.cluster}`);
  try {
    await untilItWorks('loading the ledger', () => ledger.load(), ports, startup.signal, options.startupBackoffMs);
    const podNetwork = options.podNetwork;
    if (podNetwork) {
      await untilItWorks('writing flannel network config', () => ensureNetworkConfig(ports.store, keys, podNetwork, options.fence?.()).then(() => undefined), ports, startup.signal, options.startupBackoffMs);
    }
    await untilItWorks('reading admitted identities', () => book.start({ store: ports.store, keys, log, clock: ports.clock }), ports, startup.signal, options.startupBackoffMs);
    await untilItWorks('listing machine records', () => discovery.start(), ports, startup.signal, options.startupBackoffMs);
    await prepared?.refresh();
    if (admission) await untilItWorks('listing join requests', () => admission.start(), ports, startup.signal, options.startupBackoffMs);
  } catch (err) {
    prepared?.stop();
    machines.close();
    await admission?.stop();
    await discovery.stop();
    await book.stop();
    options.signal?.removeEventListener('abort', onAbort);
    throw err;
  }

  const records = () => (prepared ?? machines).snapshot().records.values();
  const tasks = new AbortController();
  const kube = options.kubernetes ? kubernetesSide(options.kubernetes, ports, keys, options, { records, ledger }, tasks.signal) : undefined;

  reconciler = new Reconciler(
    { hosts: ports.hosts, clock: ports.clock, log, discovery: prepared ?? machines, ledger, ...(kube ? { nodes: kube.nodes } : {}) },
    {
      unitsFor: options.unitsFor,
      expected: options.expected,
      concurrency,
      executor: { ...DEFAULT_EXECUTOR_OPTIONS, ...options.executor, remote: { user: options.sshUser } },
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.requeue ? { requeue: options.requeue } : {}),
      ...(options.podNetwork ? { prepare: reservePodSubnet(ports, keys, options.podNetwork, options.fence, options.admission?.credentials) } : {}),
      onClusterReady: async () => {
        if (kube) await kube.gate();
        resolveReady();
        await options.onClusterReady?.();
      },
      onFatal: (err) => {
        fatal = err;
        void stop();
      },
    },
  );

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      log.info({ event: 'overlord.stopping' }, 'overlord stopping: no new work; steps in flight stay recorded');
      options.signal?.removeEventListener('abort', stopOnAbort);
      // the reconciler first, synchronously: no new step may start while the watch is being cancelled
      // (cancelling it waits for etcd, which may be unreachable — that is often why we stop)
      const reconcilerStopped = reconciler!.stop();
      tasks.abort(new CorekubeError('E_INTERNAL', 'the overlord is stopping'));
      prepared?.stop();
      machines.close();
      const admissionStopped = admission?.stop();
      const livenessStopped = liveness?.stop();
      await discovery.stop();
      await book.stop();
      await admissionStopped;
      await livenessStopped;
      await reconcilerStopped;
      log.info({ event: 'overlord.stopped', summary: reconciler!.summary().text }, 'overlord stopped');
      if (fatal) rejectDone(fatal);
      else resolveDone();
    })();
    return stopping;
  };
  const stopOnAbort = () => void stop();
  options.signal?.removeEventListener('abort', onAbort);
  if (options.signal?.aborted) void stop();
  else options.signal?.addEventListener('abort', stopOnAbort, { once: true });

  liveness?.start();
  reconciler.trigger();
  admission?.pass();
  kube?.start();
  const r = reconciler;
  return {
    done,
    clusterReady,
    stop,
    idle: () => r.idle(),
    summary: () => r.summary(),
    discovery: { get lists() { return discovery.lists; }, snapshot: () => machines.snapshot() },
    reconciler: r,
  };
}

/**
 * The Kubernetes side of one term: node readiness for the reconciler's node-ready steps, the add-ons (applied
 * in the background once a master is deployed), the Node states for `corekube status`, and the cluster-ready
 * gate: the API ready, the add-ons applied and (with minions, where CoreDNS runs) available.
 */
function kubernetesSide(
  k: KubernetesOptions,
  ports: Ports,
  keys: ReturnType<typeof clusterKeys>,
  options: OverlordOptions,
  observed: { readonly records: () => Iterable<MachineRecord>; readonly ledger: Ledger },
  signal: AbortSignal,
) {
  const servers = () => clusterView(observed.records(), observed.ledger.entries()).deployedMasters.map((m) => `https://${m.ip}:${PORTS.apiServer}`);
  const api = k.api(servers);
  const fence = options.fence ? { fence: options.fence } : {};
  const nodes: NodeReadiness = createNodeReadiness(
    {
      api,
      hosts: ports.hosts,
      clock: ports.clock,
      podCidrOf: async (id) => {
        const kv = await ports.store.get(keys.subnetOf(id));
        return kv ? subnetCidr(kv.value) : undefined;
      },
    },
    { remote: { user: options.sshUser }, timeoutMs: k.nodeTimeoutMs ?? DEFAULT_NODE_READINESS.timeoutMs, pollMs: k.pollMs ?? DEFAULT_NODE_READINESS.pollMs },
  );
  const applier = new AddonApplier({ api, store: ports.store, keys, clock: ports.clock, log: ports.log, ...fence }, k.addons, k.pollMs ? { pollMs: k.pollMs } : {});
  const untilApiKnown = async () => {
    while (servers().length === 0) await ports.clock.sleep(1_000, signal);
  };
  const background = (what: string, task: () => Promise<void>) =>
    void task().catch((err: unknown) => {
      if (!signal.aborted) ports.log.error({ event: 'kubernetes.task-failed', task: what, ...errorFields(err) }, `${what} stopped on an error`);
    });
  return {
    nodes,
    start() {
      background('applying the add-ons', async () => {
        await untilApiKnown();
        await applier.applied(signal);
      });
      background('recording Node states', () =>
        recordNodeStates(
          {
            api, store: ports.store, keys, clock: ports.clock, log: ports.log, ...fence,
            machinesByHostname: () => new Map([...observed.records()].map((r) => [r.hostname, r.id])),
            apiKnown: () => servers().length > 0,
          },
          signal,
          k.nodeStatesIntervalMs,
        ),
      );
    },
    /** holds the cluster-ready signal until the cluster is usable */
    async gate() {
      await untilApiKnown();
      await applier.applied(signal);
      if (options.expected.minions === 0) {
        ports.log.info({ event: 'cluster.gate', addons: 'applied' }, 'add-ons applied; CoreDNS runs once a minion joins (this cluster has none yet)');
        return;
      }
      const missing = await applier.available(signal, k.addonsTimeoutMs ?? 600_000);
      if (missing.length > 0) {
        throw new CorekubeError('E_KUBERNETES', `the add-ons are not available after ${Math.round((k.addonsTimeoutMs ?? 600_000) / 1000)} s: ${missing.join('; ')}`, {
          hint: 'kubectl -n kube-system get pods,events says why (an image that cannot be pulled, no Ready node)',
        });
      }
      ports.log.info({ event: 'cluster.gate', addons: 'available' }, 'the API is ready, every Node is Ready and the add-ons are available');
    },
  };
}

function reservePodSubnet(ports: Ports, keys: ReturnType<typeof clusterKeys>, config: FlannelConfig, fence: OverlordOptions['fence'], credentials?: MachineCredentials) {
  // one book of the reservations for this overlord's life: one listing, not one a machine (issue 5)
  const book = new SubnetBook();
  return async (record: MachineRecord) => {
    const subnet = await reserveSubnet(ports.store, keys, config, record, fence?.(), book);
    ports.log.debug({ event: 'subnet.reserved', machine: record.id, hostname: record.hostname, subnet }, `pod subnet ${subnet}`);
    // flanneld on the machine writes its own lease as the machine's etcd user: grant it that one key
    const changes = await credentials?.ensure(record.id, subnetLeaseName(subnet));
    if (changes?.length) ports.log.debug({ event: 'credentials.granted', machine: record.id, changes }, 'the machine may write its subnet lease');
  };
}

async function untilItWorks(what: string, fn: () => Promise<void>, ports: Ports, signal: AbortSignal, backoff = { initial: 500, max: 15_000 }): Promise<void> {
  let delay = backoff.initial;
  for (;;) {
    try {
      await fn();
      return;
    } catch (err) {
      const e = asCorekubeError(err, 'E_ETCD');
      if (!e.retryable || signal.aborted) throw e;
      ports.log.warn({ event: 'overlord.startup-retry', what, nextRetryMs: delay, ...errorFields(e) }, `${what} failed; retrying`);
      await ports.clock.sleep(delay, signal);
      delay = Math.min(backoff.max, delay * 2);
    }
  }
}
