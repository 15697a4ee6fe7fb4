import type { ClusterKeys } from '../../contracts/keys.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import type { Clock } from '../../core/clock.ts';
import { CorekubeError } from '../../core/errors.ts';
import { PORTS } from '../../units/layout.ts';
import type { HostRunner } from '../edges/host-runner.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { Fence, Store } from '../edges/store.ts';
import type { PodNetwork } from '../pod-network/pod-network.ts';
import { AddonApplier } from './addon-applier.ts';
import type { Addon } from './addons.ts';
import type { KubernetesApi } from './api.ts';
import { createNodeReadiness, DEFAULT_NODE_READINESS, type NodeReadiness } from './node-ready.ts';
import { recordNodeStates } from './node-states.ts';

/** What the overlord needs to reach the cluster's API and what it runs there. */
export interface KubernetesOptions {
  /** the API of the deployed masters, made from their https URLs (createKubernetesApi with the admin's credentials) */
  readonly api: (servers: () => readonly string[]) => KubernetesApi;
  readonly addons: readonly Addon[];
  /**
   * add-ons whose objects are known only later (the OpenStack cloud provider's, made from credentials read from
   * Heat): applied once this resolves, after the others; the cluster is not ready before
   */
  readonly laterAddons?: (signal: AbortSignal) => Promise<readonly Addon[]>;
  /** node-ready: how long a Node may take to be Ready (default 180 s) */
  readonly nodeTimeoutMs?: number;
  /** the cluster-ready gate: how long the add-ons may take to be available (default 600 s) */
  readonly addonsTimeoutMs?: number;
  /** how often Node states are read (default 10 s) */
  readonly nodeStatesIntervalMs?: number;
  readonly pollMs?: number;
}

export interface KubernetesSidePorts {
  readonly store: Store;
  readonly hosts: HostRunner;
  readonly clock: Clock;
  readonly log: Logger;
  readonly keys: ClusterKeys;
  readonly fence?: () => Fence | undefined;
  /** where each machine's pod subnet is kept (its Node's podCIDR) */
  readonly podNetwork?: PodNetwork;
  /** the machines the reconciler sees now */
  readonly records: () => Iterable<MachineRecord>;
  /** the deployed masters' addresses (the API servers) */
  readonly deployedMasters: () => readonly MachineRecord[];
}

/**
 * The Kubernetes side of one term: node readiness for the reconciler's node-ready steps, the add-ons (applied
 * in the background once a master is deployed), the Node states for `corekube status`, and the cluster-ready
 * gate: the API ready, the add-ons applied and (with minions, where CoreDNS runs) available.
 */
export class KubernetesSide {
  readonly nodes: NodeReadiness;
  private readonly applier: AddonApplier;
  readonly api: KubernetesApi;

  constructor(
    private readonly options: KubernetesOptions,
    private readonly ports: KubernetesSidePorts,
    remote: { readonly user: string },
    private readonly signal: AbortSignal,
  ) {
    this.api = options.api(() => this.servers());
    const fence = ports.fence ? { fence: ports.fence } : {};
    this.nodes = createNodeReadiness(
      { api: this.api, hosts: ports.hosts, clock: ports.clock, podCidrOf: async (id) => ports.podNetwork?.subnetOf(id) },
      { remote, timeoutMs: options.nodeTimeoutMs ?? DEFAULT_NODE_READINESS.timeoutMs, pollMs: options.pollMs ?? DEFAULT_NODE_READINESS.pollMs },
    );
    this.applier = new AddonApplier({ api: this.api, store: ports.store, keys: ports.keys, clock: ports.clock, log: ports.log, ...fence }, options.addons, options.pollMs ? { pollMs: options.pollMs } : {}, options.laterAddons);
  }

  /** Starts applying the add-ons (once the API is known) and recording Node states, in the background. */
  start(): void {
    const { ports } = this;
    this.background('applying the add-ons', async () => {
      await this.untilApiKnown();
      await this.applier.applied(this.signal);
    });
    this.background('recording Node states', () =>
      recordNodeStates(
        {
          api: this.api,
          store: ports.store,
          keys: ports.keys,
          clock: ports.clock,
          log: ports.log,
          ...(ports.fence ? { fence: ports.fence } : {}),
          machinesByHostname: () => new Map([...ports.records()].map((r) => [r.hostname, r.id])),
          apiKnown: () => this.servers().length > 0,
        },
        this.signal,
        this.options.nodeStatesIntervalMs,
      ),
    );
  }

  /** Holds the cluster-ready signal until the cluster is usable (`minions`: how many the initial cluster has). */
  async gate(minions: number): Promise<void> {
    const { log } = this.ports;
    await this.untilApiKnown();
    await this.applier.applied(this.signal);
    if (minions === 0) {
      log.info({ event: 'cluster.gate', addons: 'applied' }, 'add-ons applied; CoreDNS runs once a minion joins (this cluster has none yet)');
      return;
    }
    const timeoutMs = this.options.addonsTimeoutMs ?? 600_000;
    const missing = await this.applier.available(this.signal, timeoutMs);
    if (missing.length > 0) {
      throw new CorekubeError('E_KUBERNETES', `the add-ons are not available after ${Math.round(timeoutMs / 1000)} s: ${missing.join('; ')}`, {
        hint: 'kubectl -n kube-system get pods,events says why (an image that cannot be pulled, no Ready node)',
      });
    }
    log.info({ event: 'cluster.gate', addons: 'available' }, 'the API is ready, every Node is Ready and the add-ons are available');
  }

  private servers(): readonly string[] {
    return this.ports.deployedMasters().map((m) => `https://${m.ip}:${PORTS.apiServer}`);
  }

  private async untilApiKnown(): Promise<void> {
    while (this.servers().length === 0) await this.ports.clock.sleep(1_000, this.signal);
  }

  private background(what: string, task: () => Promise<void>): void {
    void task().catch((err: unknown) => {
      if (!this.signal.aborted) this.ports.log.error({ event: 'kubernetes.task-failed', task: what, ...errorFields(err) }, `${what} stopped on an error`);
    });
  }
}
