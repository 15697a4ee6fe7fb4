/**
 * The local cloud: corekube's generated Heat template created by a REAL OpenStack Heat (Keystone +
 * heat-all, localcloud/heat) on this machine, with Nova and Neutron played here: a bridge for the
 * cluster's private network, one systemd-nspawn machine per server (nova.ts), booted by a real cloud-init
 * from the user_data Heat resolved. Wait conditions are signalled for real by the machines and the overlord,
 * so CREATE_COMPLETE arrives only once the overlord has signalled cluster_ready. What `corekube demo` and
 * the e2e test run; localcloud/README.md says what is real and what stands in.
 *
 *   const cloud = await openLocalCloud({ masters: 1, minions: 2 });   // bridge, Heat, mirror, image
 *   try {
 *     await cloud.create();                 // stack create → CREATE_COMPLETE (every machine deployed)
 *     await cloud.scaleMinions(3);          // PATCH minion_count → UPDATE_COMPLETE; one more machine
 *   } finally {
 *     await cloud.teardown();               // no process, mount, netns, bridge, cgroup or container left
 *   }
 *
 * Network: 10.200.<net>.0/24 (default net 60) on bridge ckbr<net>: .1 the host (Heat's endpoints, the
 * release mirror), .10 discovery, .11 overlord, .12 the API load balancer's VIP (haproxy on the host, with
 * 3 or 5 masters), masters from .20, DHCP from .32 (the spec's address plan).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CorekubeError } from '../core/errors.ts';
import { renderUserData } from '../cloud-config/index.ts';
import { MACHINE_PATHS } from '../cloud-config/machine-paths.ts';
import { HeatClient, type Stack, type StackEvent, type StackRef } from '../cloud/heat-client.ts';
import { KeystoneSession } from '../cloud/keystone.ts';
import { clusterTemplate } from '../heat/cluster-template.ts';
import { ROOT_PASSWORD_NAME, ROOT_USER } from '../overlord/trust/discovery-auth.ts';
import { createEtcdStore } from '../overlord/edges/etcd-store.ts';
import { clusterKeys } from '../contracts/keys.ts';
import { parseLedgerEntry, type LedgerEntry } from '../contracts/ledger-entry.ts';
import { readStatus, type StatusReport } from '../overlord/status.ts';
import type { Store } from '../overlord/edges/store.ts';
import type { LocalHeat } from './heat/local-heat.ts';
import { failPendingServers } from './heat/servers.ts';
import { localCloudEnvironment, withoutCloudLookups } from './heat/providers/environment.ts';
import { addressPlan } from '../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { aptImageFiles } from './mirrors/apt-repo.ts';
import type { Fleet, Machine } from './machines/machines.ts';
import type { MirrorServer } from './mirrors/mirror.ts';
import { freePort } from './ports.ts';
import { HostLoadBalancer, stackOctavia, type LoadBalancerEvent } from './load-balancer.ts';
import { Nova, type NovaEvent } from './nova.ts';
import { OverlordHost, type OverlordMode, type OverlordRunner } from './overlord-runner.ts';
import { localCloudImageFiles } from './machines/image-files.ts';
import type { Registry } from './mirrors/registry.ts';
import type { LocalCloudRelease } from './mirrors/release-mirror.ts';
import type { MirrorEvent } from '../release/mirror.ts';
import { PORTS } from '../units/layout.ts';
import { CertificateAuthority } from '../overlord/trust/pki/authority.ts';
import { embeddedKubeconfig, renderKubeconfig } from '../overlord/trust/pki/kubeconfig.ts';
import { DirectoryPkiStore } from '../overlord/trust/pki/store.ts';
import { writeFileAtomic } from '../core/private-files.ts';

/**
 * The running local cloud (openLocalCloud in local-cloud.ts brings up what it runs on): its stack created and
 * scaled through the real Heat, its machines booted by Nova's stand-in, its overlords started on the host, what
 * the overlord wrote read back from discovery, and its teardown.
 */
export type LocalCloudEvent =
  | { readonly kind: 'phase'; readonly name: string; readonly ms: number; readonly detail?: string }
  | { readonly kind: 'heat'; readonly event: StackEvent }
  | { readonly kind: 'nova'; readonly event: NovaEvent }
  /** the Octavia load balancer (haproxy on the host) configured or failing */
  | { readonly kind: 'octavia'; readonly event: LoadBalancerEvent }
  | { readonly kind: 'overlord.started'; readonly mode: OverlordMode; readonly command: readonly string[]; readonly name?: string }
  /** building (or finding in the cache) the real programs and the mirror tree */
  | { readonly kind: 'release'; readonly event: MirrorEvent };

/** One machine of the cloud: when Heat asked for it, booted it, and when the overlord deployed it. */
export interface MachineTiming {
  readonly name: string;
  readonly role: string;
  readonly ip: string;
  /** true for a machine of the last stack update (its times count from the update request) */
  readonly fromUpdate: boolean;
  /** ms since the stack create (or, fromUpdate, the update) was requested: Heat asked for it */
  readonly requestedMs: number;
  readonly bootedMs: number | undefined;
  readonly readyMs: number | undefined;
  readonly deployedMs: number | undefined;
  /** the overlord's deployment of it, first step to last (ledger) */
  readonly deployMs: number | undefined;
}

export interface LocalCloud {
  readonly spec: ClusterSpec;
  readonly net: number;
  readonly fleet: Fleet;
  readonly heatService: LocalHeat;
  readonly mirror: MirrorServer;
  /** the release built from source: the mirror tree, its digests, the kubectl for this cluster */
  readonly release: LocalCloudRelease;
  /** the registry the cluster's containerd pulls through (the spec's registryMirror) */
  readonly registry: Registry;
  /** the test workload's image, in the registry */
  readonly workloadImage: string;
  readonly nova: Nova;
  /** Octavia's load balancer (haproxy on the host), once create() was called with spec.apiLoadBalancer octavia */
  readonly loadBalancer: HostLoadBalancer | undefined;
  /** the URL of the Kubernetes API the nodes use: the load balancer's VIP, or the first deployed master */
  apiUrl(): Promise<string>;
  /** the stack, once create() was called */
  readonly stack: StackRef | undefined;
  /** set once the overlord machine booted and its overlord started */
  readonly overlord: OverlordRunner | undefined;
  /** the standby servers' overlords, by container name, as they start */
  readonly standbys: ReadonlyMap<string, OverlordRunner>;
  /** resolves once every standby server booted and its overlord started (at once with one overlord) */
  standbysStarted(): Promise<void>;
  readonly overlordHost: OverlordHost;
  /** ms of each phase (heat, mirror, image, create, scale…) */
  readonly timings: Readonly<Record<string, number>>;
  /** a fresh admin Heat client (corekube's own Keystone + Heat client) */
  heat(): Promise<HeatClient>;
  /** creates the stack and waits for CREATE_COMPLETE; throws on CREATE_FAILED */
  create(options?: { signal?: AbortSignal }): Promise<Stack>;
  /** PATCHes minion_count and waits for UPDATE_COMPLETE and for every machine to be deployed */
  scaleMinions(count: number, options?: { signal?: AbortSignal }): Promise<Stack>;
  /** PATCHes the stack's parameters (`openstack stack update --existing --parameter …`) and waits for UPDATE_COMPLETE */
  updateStack(parameters: Readonly<Record<string, string | number>>, options?: { signal?: AbortSignal }): Promise<Stack>;
  /**
   * Starts the bootstrap overlord's container again after it was killed, as its server's systemd would
   * (overlord.service Restart=always, RestartSec=10): the container runs on the host's engine here.
   */
  restartOverlord(): Promise<void>;
  /** the status `corekube status` shows, read from discovery's etcd as the overlord's root user */
  status(): Promise<StatusReport>;
  /** the overlord's ledger, by machine id */
  ledger(): Promise<Map<string, LedgerEntry>>;
  /** waits until `count` machines are deployed (and none pending or deploying) */
  waitDeployed(count: number, options?: { signal?: AbortSignal; timeoutMs?: number }): Promise<StatusReport>;
  /** boots and deploy times per machine, from Nova's records and the ledger */
  machineTimings(): Promise<MachineTiming[]>;
  /** the discovery etcd store (root), for reading what the overlord wrote */
  store(): Promise<Store>;
  /** discovery's etcd users (as root): each admitted machine has its own */
  discoveryUsers(): Promise<string[]>;
  /**
   * Writes the admin kubeconfig corekube issues (the overlord's PKI; `corekube kubeconfig`) to `file` (mode
   * 0600; default: in the cloud's work dir), for the API endpoint (apiUrl()); returns its path.
   */
  kubeconfig(file?: string): Promise<string>;
  /** the kubectl built for the cluster's version */
  readonly kubectl: string;
  /** the cloud's own work directory (kubeconfig, Heat's state, the mirror) */
  readonly workDir: string;
  /** runs argv on the machine of a server (by its hostname) */
  exec(hostname: string, argv: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }>;
  /** stops the machine of a server by its address: SIGTERM a clean poweroff, SIGKILL a power cut (a lost server) */
  stopMachine(ip: string, how: 'SIGTERM' | 'SIGKILL'): Promise<{ readonly name: string; readonly role: string }>;
  /**
   * Nova's rebuild of the server at `ip` (`openstack server rebuild`): a fresh disk from the image — a new machine
   * id and host key — the same address, port and user_data; resolves once it runs again
   */
  rebuildMachine(ip: string): Promise<{ readonly name: string; readonly role: string }>;
  /** the memory each machine uses now */
  machineMemory(): Promise<{ readonly name: string; readonly role: string; readonly bytes: number }[]>;
  /** what cleanupLocalCloud needs to remove the cloud after its process was killed */
  readonly traces: LocalCloudTraces;
  /** stops and removes everything; idempotent; throws listing what it could not remove */
  teardown(): Promise<void>;
}

export interface LocalCloudTraces {
  readonly heatDir: string;
  readonly engineDir: string | undefined;
  readonly workDir: string;
}

export class Cloud implements LocalCloud {
  readonly nova: Nova;
  loadBalancer: HostLoadBalancer | undefined;
  stack: StackRef | undefined;
  overlord: OverlordRunner | undefined;
  readonly standbys = new Map<string, OverlordRunner>();
  #standbysStarting: Promise<void> = Promise.resolve();
  #standbysAbort = new AbortController();
  #store: Store | undefined;
  #torn = false;
  /** epoch ms of the stack create request, and of the last update request */
  #createdAt = 0;
  #updatedAt = Infinity;
  #heat: HeatClient | undefined;

  constructor(
    readonly spec: ClusterSpec,
    readonly net: number,
    readonly workDir: string,
    readonly fleet: Fleet,
    readonly heatService: LocalHeat,
    readonly mirror: MirrorServer,
    readonly release: LocalCloudRelease,
    readonly registry: Registry,
    readonly workloadImage: string,
    readonly overlordHost: OverlordHost,
    readonly timings: Record<string, number>,
    private readonly emit: (e: LocalCloudEvent) => void,
    private readonly onOverlordLine: ((line: string) => void) | undefined,
    private readonly onStandbyLine: ((name: string, line: string) => void) | undefined,
    private readonly closeInfra: () => Promise<void>,
  ) {
    this.nova = new Nova({
      fleet,
      imageFiles: [...aptImageFiles(mirror.urlOn(fleet.gateway)), ...localCloudImageFiles()],
      onEvent: (event) => emit({ kind: 'nova', event }),
    });
  }

  async exec(hostname: string, argv: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const machine = [...this.nova.boots.values()].find((b) => b.machine?.hostname === hostname)?.machine;
    if (!machine) throw new CorekubeError('E_USAGE', `no machine of this cloud is named ${hostname}`);
    return machine.exec(argv, { timeoutMs: 30_000 });
  }

  async stopMachine(ip: string, how: 'SIGTERM' | 'SIGKILL'): Promise<{ name: string; role: string }> {
    const boot = [...this.nova.boots.values()].find((b) => b.ip === ip && b.machine !== undefined);
    if (!boot) throw new CorekubeError('E_USAGE', `no machine of this cloud has the address ${ip}`);
    await boot.machine!.stop(how);
    return { name: boot.server.name, role: boot.role };
  }

  async rebuildMachine(ip: string): Promise<{ name: string; role: string }> {
    const boot = [...this.nova.boots.values()].find((b) => b.ip === ip && b.machine !== undefined && b.deletedAt === undefined);
    if (!boot) throw new CorekubeError('E_USAGE', `no server of this cloud has the address ${ip}`);
    await boot.machine!.rebuild();
    return { name: boot.server.name, role: boot.role };
  }

  async machineMemory(): Promise<{ name: string; role: string; bytes: number }[]> {
    return [...this.nova.boots.values()]
      .filter((b) => b.machine !== undefined)
      .map((b) => ({ name: b.server.name, role: b.role, bytes: b.machine!.memory() ?? 0 }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  get traces(): LocalCloudTraces {
    return { heatDir: this.heatService.stateDir, engineDir: this.overlordHost.engine?.stateDir, workDir: this.workDir };
  }

  get kubectl(): string {
    return this.release.kubectl;
  }

  async kubeconfig(file = path.join(this.workDir, 'admin.kubeconfig')): Promise<string> {
    const root = this.#overlordMachine()?.root;
    if (!root) throw new Error('the overlord server has not booted');
    const server = await this.apiUrl();
    const authority = new CertificateAuthority({ store: new DirectoryPkiStore(path.join(root, MACHINE_PATHS.overlordState, 'pki')), clock: { now: () => Date.now() }, cluster: this.spec.name, createCas: false });
    const admin = await authority.ensureAdmin();
    const text = renderKubeconfig(embeddedKubeconfig({ cluster: this.spec.name, server, user: 'admin', caCert: admin.ca, clientCert: admin.client.cert, clientKey: admin.client.key }));
    await writeFileAtomic(file, text);
    return file;
  }

  async apiUrl(): Promise<string> {
    if (this.spec.apiLoadBalancer === 'octavia') return `https://${addressPlan(this.spec).apiVip}:${PORTS.apiServer}`;
    const master = (await this.status()).machines.find((m) => m.role === 'master' && m.state === 'deployed' && m.ip);
    if (!master) throw new CorekubeError('E_KUBERNETES', 'no master is deployed yet', { hint: 'create the stack first' });
    return `https://${master.ip}:${PORTS.apiServer}`;
  }

  async heat(): Promise<HeatClient> {
    return new HeatClient(await KeystoneSession.open(this.heatService.authConfig));
  }

  async create(options: { signal?: AbortSignal } = {}): Promise<Stack> {
    if (this.stack) throw new Error('the stack exists already');
    const heat = (this.#heat = await this.heat());
    const input = {
      template: withoutCloudLookups(clusterTemplate(this.spec, renderUserData)),
      ...localCloudEnvironment({ bootTimeoutSeconds: 600 }),
      parameters: { key_name: 'localcloud', image: 'debian-bookworm-nspawn', external_network: 'public' },
    };
    const t0 = Date.now();
    this.#createdAt = t0;
    const ref = await heat.createStack({ name: this.spec.name, ...input, timeoutMins: 30, disableRollback: true });
    this.stack = ref;
    this.nova.start(heat, ref);
    if (this.spec.apiLoadBalancer === 'octavia') {
      this.loadBalancer = new HostLoadBalancer({ resources: stackOctavia(heat, ref), bridge: this.fleet.bridge, dir: path.join(this.workDir, 'octavia'), onEvent: (event) => this.emit({ kind: 'octavia', event }) });
      this.loadBalancer.start();
    }
    // the overlord server: once its machine runs and its overlord.service has prepared the files. Its
    // failure ends the wait for the stack; the end of the wait (either way) ends it.
    const failed = new AbortController();
    const done = new AbortController();
    const any = (...signals: (AbortSignal | undefined)[]) => AbortSignal.any(signals.filter((s): s is AbortSignal => s !== undefined));
    void this.#startOverlordWhenBooted(any(options.signal, done.signal)).catch((err: unknown) => failed.abort(err));
    // standby servers boot after discovery_ready and need not be up for the stack to complete: their overlords
    // start in the background (standbysStarted() waits for them)
    this.#standbysStarting = this.#startStandbysWhenBooted(any(options.signal, this.#standbysAbort.signal));
    this.#standbysStarting.catch(() => undefined);
    let stack: Stack;
    try {
      stack = await heat.waitForStack(ref, 'CREATE', { signal: any(options.signal, failed.signal), onEvent: (event) => this.emit({ kind: 'heat', event }) });
    } catch (err) {
      if (failed.signal.aborted) throw failed.signal.reason;
      throw err;
    } finally {
      done.abort();
    }
    this.timings.create = Date.now() - t0;
    this.emit({ kind: 'phase', name: 'create', ms: this.timings.create, detail: `stack ${ref.name} ${stack.status}` });
    if (stack.status !== 'CREATE_COMPLETE') throw new CorekubeError('E_HEAT', `stack ${ref.name} ended ${stack.status}: ${stack.statusReason}`, { hint: 'the Heat events above name the resource that failed; the overlord\'s log says why a machine was not deployed' });
    return stack;
  }

  scaleMinions(count: number, options: { signal?: AbortSignal } = {}): Promise<Stack> {
    return this.updateStack({ minion_count: count }, options);
  }

  async restartOverlord(): Promise<void> {
    const machine = this.#overlordMachine();
    if (!machine) throw new Error('the overlord server has not booted');
    this.overlord = await this.overlordHost.start(machine, this.onOverlordLine ? { onLine: this.onOverlordLine } : {});
    this.emit({ kind: 'overlord.started', mode: this.overlord.mode, command: this.overlord.command });
  }

  async updateStack(parameters: Readonly<Record<string, string | number>>, options: { signal?: AbortSignal } = {}): Promise<Stack> {
    const heat = this.#heat ?? (await this.heat());
    const ref = this.stack;
    if (!ref) throw new Error('create the stack first');
    const t0 = Date.now();
    this.#updatedAt = t0;
    const { sinceEventId } = await heat.updateStack(ref, { parameters: { ...parameters } });
    const stack = await heat.waitForStack(ref, 'UPDATE', { sinceEventId, ...(options.signal ? { signal: options.signal } : {}), onEvent: (event) => this.emit({ kind: 'heat', event }) });
    this.timings.update = Date.now() - t0;
    this.emit({ kind: 'phase', name: 'update', ms: this.timings.update, detail: `stack ${ref.name} ${stack.status}` });
    if (stack.status !== 'UPDATE_COMPLETE') throw new CorekubeError('E_HEAT', `stack ${ref.name} ended ${stack.status}: ${stack.statusReason}`, { hint: 'the Heat events above name the resource that failed' });
    return stack;
  }

  standbysStarted(): Promise<void> {
    return this.#standbysStarting;
  }

  async store(): Promise<Store> {
    if (this.#store) return this.#store;
    const root = this.#overlordMachine()?.root;
    if (!root) throw new Error('the overlord server has not booted');
    const pki = path.join(root, MACHINE_PATHS.overlordState, 'pki');
    const ca = await readFile(path.join(pki, 'ca/discovery.crt'));
    const password = (await readFile(path.join(pki, ROOT_PASSWORD_NAME), 'utf8')).trim();
    this.#store = createEtcdStore({ endpoints: [addressPlan(this.spec).discoveryEndpoint], tls: { ca }, auth: { username: ROOT_USER, password } });
    return this.#store;
  }

  async discoveryUsers(): Promise<string[]> {
    const root = this.#overlordMachine()?.root;
    if (!root) throw new Error('the overlord server has not booted');
    const pki = path.join(root, MACHINE_PATHS.overlordState, 'pki');
    const { Etcd3 } = await import('etcd3');
    const client = new Etcd3({
      hosts: addressPlan(this.spec).discoveryEndpoint,
      credentials: { rootCertificate: await readFile(path.join(pki, 'ca/discovery.crt')) },
      auth: { username: ROOT_USER, password: (await readFile(path.join(pki, ROOT_PASSWORD_NAME), 'utf8')).trim() },
    });
    try {
      return (await client.getUsers()).map((u) => u.name);
    } finally {
      client.close();
    }
  }

  async status(): Promise<StatusReport> {
    return readStatus(await this.store(), clusterKeys(this.spec.name));
  }

  async ledger(): Promise<Map<string, LedgerEntry>> {
    const keys = clusterKeys(this.spec.name);
    const kvs = await (await this.store()).list(keys.ledger);
    const out = new Map<string, LedgerEntry>();
    for (const kv of kvs.kvs) {
      const e = parseLedgerEntry(kv.value);
      if (e) out.set(kv.key.slice(keys.ledger.length), e);
    }
    return out;
  }

  async waitDeployed(count: number, options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<StatusReport> {
    const deadline = Date.now() + (options.timeoutMs ?? 600_000);
    for (;;) {
      options.signal?.throwIfAborted();
      const report = await this.status().catch(() => undefined);
      if (report && report.machines.filter((m) => m.state === 'deployed').length >= count && report.machines.every((m) => m.state === 'deployed')) return report;
      const failedBoot = [...this.nova.boots.values()].find((b) => b.error);
      if (failedBoot) throw new CorekubeError('E_IO', `${failedBoot.server.name} did not boot: ${failedBoot.error}`, { hint: 'its console and journal are in the error above' });
      if (Date.now() > deadline) {
        const left = (report?.machines ?? []).filter((m) => m.state !== 'deployed').map((m) => `${m.ip ?? m.id} ${m.state}${m.error ? `: ${m.error.split('\n')[0]}` : ''}`);
        throw new CorekubeError('E_STEP_TIMEOUT', `not every machine was deployed within ${Math.round((options.timeoutMs ?? 600_000) / 1000)} s${left.length > 0 ? `: ${left.join('; ')}` : ''}`, { hint: 'the overlord\'s log says what it is waiting for' });
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  async machineTimings(): Promise<MachineTiming[]> {
    const ledger = await this.ledger().catch(() => new Map<string, LedgerEntry>());
    const byIp = new Map([...ledger.values()].map((e) => [e.ip, e]));
    return [...this.nova.boots.values()].map((b) => {
      const t0 = b.seenAt >= this.#updatedAt ? this.#updatedAt : this.#createdAt;
      const e = byIp.get(b.ip);
      const ms = (t: number | undefined) => (t === undefined ? undefined : t - t0);
      const iso = (s: string | null | undefined) => (s ? Date.parse(s) : undefined);
      const started = iso(e?.startedAt);
      const finished = iso(e?.deployedAt ?? e?.finishedAt);
      return {
        name: b.server.name, role: b.role, ip: b.ip, fromUpdate: t0 === this.#updatedAt,
        requestedMs: b.seenAt - t0, bootedMs: ms(b.startedAt), readyMs: ms(b.readyAt),
        deployedMs: e?.state === 'deployed' ? ms(finished) : undefined,
        deployMs: e?.state === 'deployed' && started !== undefined && finished !== undefined ? finished - started : undefined,
      };
    });
  }

  async teardown(): Promise<void> {
    if (this.#torn) return;
    this.#torn = true;
    const problems: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    await step('Nova', () => this.nova.stop({ waitForBoots: false }));
    // Heat first learns the machines will not come, so nothing waits on them (Heat itself is thrown away)
    if (this.stack && this.#heat) await step('pending servers', () => failPendingServers(this.#heat!, this.stack!));
    this.#standbysAbort.abort(new Error('torn down'));
    await step('the standby overlords', async () => Promise.all([...this.standbys.values()].map((s) => s.stop())));
    await step('the overlord', async () => this.overlord?.stop());
    await step('the etcd client', async () => this.#store?.close());
    await step('the overlord\'s engine', () => this.overlordHost.close());
    await step('the load balancer', async () => this.loadBalancer?.stop());
    await step('the machines', () => this.fleet.teardown());
    await step('Heat, the mirror and the work dir', () => this.closeInfra());
    if (problems.length > 0) throw new Error(`teardown left something behind:\n  ${problems.join('\n  ')}`);
  }

  #overlordMachine(): Machine | undefined {
    return [...this.nova.boots.values()].find((b) => b.role === 'overlord')?.machine;
  }

  async #startOverlordWhenBooted(signal: AbortSignal): Promise<void> {
    const boot = await this.nova.boot((b) => b.role === 'overlord', signal);
    const machine = await boot.ready;
    await this.#overlordServiceRan(machine, signal);
    const t = Date.now();
    this.overlord = await this.overlordHost.start(machine, this.onOverlordLine ? { onLine: this.onOverlordLine } : {});
    this.timings['overlord start'] = Date.now() - t;
    this.emit({ kind: 'overlord.started', mode: this.overlord.mode, command: this.overlord.command });
  }

  /** Each standby server, as it boots: its overlord on the host's engine, as `overlord-standby-<n>`. */
  async #startStandbysWhenBooted(signal: AbortSignal): Promise<void> {
    const taken = new Set<string>();
    for (let n = 1; n < this.spec.overlords; n++) {
      const boot = await this.nova.boot((b) => b.role === 'overlord-standby' && !taken.has(b.server.name), signal);
      taken.add(boot.server.name);
      const machine = await boot.ready;
      await this.#overlordServiceRan(machine, signal);
      const name = `overlord-standby-${n}`;
      const onStandbyLine = this.onStandbyLine;
      const runner = await this.overlordHost.start(machine, onStandbyLine ? { onLine: (line) => onStandbyLine(name, line) } : {}, { name, healthPort: await freePort() });
      this.standbys.set(name, runner);
      this.emit({ kind: 'overlord.started', mode: runner.mode, command: runner.command, name });
    }
  }

  /** Waits until the machine's overlord.service has run (ExecStartPre: state dir and secrets for the image's user). */
  async #overlordServiceRan(machine: Machine, signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      signal.throwIfAborted();
      const r = await machine.exec(['systemctl', 'is-active', 'overlord.service']);
      if (r.stdout.trim() === 'active') break;
      if (Date.now() > deadline) {
        const journal = await machine.exec(['journalctl', '--no-pager', '-o', 'cat', '-n', '40', '-u', 'overlord.service', '-u', 'cloud-final.service']);
        throw new CorekubeError('E_UNIT_FAILED', `overlord.service did not become active on ${machine.hostname} (${r.stdout.trim()}):\n${journal.stdout}`, { hint: 'its journal above says why' });
      }
      await new Promise((res) => setTimeout(res, 250));
    }
  }
}
