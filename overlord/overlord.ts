import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { clusterKeys } from '../contracts/keys.ts';
import { asCorekubeError } from '../core/errors.ts';
import { BACKOFF, Backoffs } from '../core/retry.ts';
import type { Clock } from '../core/clock.ts';
import { startLeaderService, type LeaderConfig, type LeaderService } from './availability/leader-service.ts';
import { EtcdHealth, observedStore } from './availability/health.ts';
import { DEFAULT_LIVENESS } from './availability/liveness.ts';
import { unitsForSpec } from './deploy/machine-units.ts';
import { machineAddresses } from './discovery/identity.ts';
import { etcdHostKeys } from './discovery/hostkeys.ts';
import { createEtcdStore, type EtcdStoreOptions } from './edges/etcd-store.ts';
import type { HostRunner } from './edges/host-runner.ts';
import { errorFields, type Logger } from './edges/log.ts';
import type { Store } from './edges/store.ts';
import { createKubernetesApi } from './kubernetes/api.ts';
import { clusterAddons, type Addon } from './kubernetes/addons.ts';
import { cloudProviderAddons } from './kubernetes/cloud-provider.ts';
import type { KubernetesOptions } from './kubernetes/cluster-side.ts';
import { podNetworkGrants, podNetworkOf } from './pod-network/registry.ts';
import { overlordTerms, type Overlord, type OverlordOptions } from './term.ts';
import { bootOverlord, handleDeps, type Booted } from './trust/bootstrap.ts';
import { cloudCredentials } from './trust/cloud-credentials.ts';
import { readChannelAgent, StackChannel } from './edges/stack-channel.ts';
import { DesiredSpec } from './lifecycle/desired-spec.ts';
import { signalClusterReady } from './trust/heat-handles.ts';
import { DiscoveryMachineCredentials } from './trust/machine-credentials.ts';
import { MachinePkiFiles, SharedMachinePki } from './trust/machine-pki.ts';
import { followSharedState, StateRepublisher, type Follower } from './trust/shared-state.ts';
import { CaRotations } from './trust/ca-rotation.ts';

/**
 * The composition root: the one place the overlord is wired, read top-down. `corekube overlord` parses its flags
 * into an OverlordConfig and calls `serveOverlord`; nothing below reaches back up.
 *
 *   1. trust      booted: SSH key, PKI, discovery's TLS and auth, Heat's overlord_ready (trust/bootstrap.ts) —
 *                 or, run by hand, the etcd and SSH key the flags give
 *   2. edges      discovery's etcd as root, observed by the health; SSH to the machines, host keys pinned in etcd
 *   3. a term     what the elected overlord runs (term.ts): the units of the spec, each machine's certificates
 *                 (booted), the pod network, admission with the machines' own users (booted), the Kubernetes
 *                 side and cluster_ready (booted), the stack's counts through its overlord_channel (booted by Heat),
 *                 removals
 *   4. leadership the election, one term a lead won, /healthz (availability/leader-service.ts); a booted
 *                 overlord that does not lead follows the state the leader publishes
 *
 * It resolves once the overlord stopped (the signal) and everything it opened is closed; it rejects with a
 * terminal error (etcd refused the credentials).
 */
export interface OverlordConfig {
  readonly spec: ClusterSpec;
  /** etcd key prefix /corekube/<cluster>/ */
  readonly cluster: string;
  readonly sshUser: string;
  readonly sshPort: number;
  /** machines deployed at once */
  readonly concurrency: number;
  readonly leader: LeaderConfig;
  /** boot the cluster's trust first (an overlord server: `corekube overlord -c overlord.yaml`) … */
  readonly boot?: { readonly stateDir: string; readonly configDir: string; readonly standby: boolean };
  /** … or run on the etcd and SSH key given (`--etcd-endpoints`, `--ssh-key`) */
  readonly given?: { readonly etcd: EtcdStoreOptions; readonly privateKey: string };
}

export interface OverlordDeps {
  readonly log: Logger;
  readonly clock: Clock;
  /** abort = stop (SIGTERM): a leader resigns */
  readonly signal: AbortSignal;
}

export async function serveOverlord(config: OverlordConfig, deps: OverlordDeps): Promise<void> {
  const keys = clusterKeys(config.cluster);
  // 1. trust (stopped while booting: nothing to run)
  const booted = config.boot ? await boot(config, deps).catch((err: unknown) => (deps.signal.aborted ? undefined : Promise.reject(err))) : undefined;
  if (deps.signal.aborted) return;
  const etcd = booted?.etcd ?? config.given!.etcd;
  const privateKey = booted?.identity.privateKey ?? config.given!.privateKey;

  // 2. edges: every etcd answer and failure feeds the health (/healthz, the etcd.unreachable error)
  const health = new EtcdHealth(deps.clock, deps.log, config.leader.etcdBudgetMs);
  const store = observedStore(createEtcdStore(etcd), health);
  let service: LeaderService<Overlord> | undefined;
  const hosts = await sshRunner(config, privateKey, etcdHostKeys(store, keys, () => service?.leadership.fence()));
  const credentials = booted ? machineCredentials(booted, config.spec) : undefined;

  let follower: Follower | undefined;
  try {
    // 3. what a term runs; 4. leadership
    const desired = new DesiredSpec(config.spec, { store, keys, log: deps.log });
    const overlord = await termOptions(config, booted, credentials, desired, deps);
    const ports = { store, hosts, clock: deps.clock, log: deps.log };
    service = await startLeaderService({ config: config.leader, etcd, keys, health, ports, term: overlordTerms(ports, overlord), signal: deps.signal });
    const leadership = service.leadership;
    // a standby keeps the certificates the leader issues, so that it takes over without re-issuing them
    follower = booted ? follow(booted, store, () => leadership.role() !== 'leader', deps) : undefined;
    await leadership.done;
  } finally {
    await follower?.stop();
    await service?.close();
    await hosts.close().catch(() => undefined);
    credentials?.close();
    await store.close();
  }
}

/** 1. The boot sequence of an overlord server (trust/bootstrap.ts). */
function boot(config: OverlordConfig, deps: OverlordDeps): Promise<Booted> {
  const { stateDir, configDir, standby } = config.boot!;
  return bootOverlord({ spec: config.spec, cluster: config.cluster, stateDir, configDir, sshUser: config.sshUser, sshPort: config.sshPort, standby }, deps);
}

/** 2. SSH to the machines; loaded here, not at the top: `corekube --help` and other commands need not load ssh2. */
async function sshRunner(config: OverlordConfig, privateKey: string, hostKeys: ReturnType<typeof etcdHostKeys>): Promise<HostRunner> {
  const { createSshRunner } = await import('./edges/ssh-runner.ts');
  return createSshRunner({ user: config.sshUser, privateKey, port: config.sshPort, connectTimeoutMs: 20_000, hostKeys });
}

/** 2. The machines' own discovery etcd users (admission, subnet grants): discovery as root, one client for the overlord's life. */
function machineCredentials(booted: Booted, spec: ClusterSpec): DiscoveryMachineCredentials {
  const { conn, rootPassword, secret } = booted.machineUsers;
  return new DiscoveryMachineCredentials(conn, rootPassword, booted.keys, secret, podNetworkGrants(podNetworkOf(spec)));
}

/** 3. What each term runs. Booted, the machines' certificates, admission, the Kubernetes side and cluster_ready too. */
async function termOptions(
  config: OverlordConfig,
  booted: Booted | undefined,
  credentials: DiscoveryMachineCredentials | undefined,
  desired: DesiredSpec,
  deps: OverlordDeps,
): Promise<Omit<OverlordOptions, 'signal' | 'fence'>> {
  const { spec } = config;
  const common = {
    cluster: config.cluster,
    sshUser: config.sshUser,
    expected: { masters: spec.masters, minions: spec.minions },
    concurrency: config.concurrency,
    podNetwork: podNetworkOf(spec),
    // machines are deployed only while they answer over SSH
    liveness: DEFAULT_LIVENESS,
    maxUnavailable: spec.rollout.maxUnavailable,
  };
  if (!booted || !credentials) return { ...common, unitsFor: unitsForSpec(spec) };
  const current = () => desired.current();
  const files = new MachinePkiFiles({ authority: booted.authority, spec, discoveryCa: booted.discovery.ca, credentials, log: deps.log, clock: deps.clock });
  const secret = booted.overlordSecret;
  // the stack's channel (edges/stack-channel.ts): its stack user was kept with the state at boot, a standby's came sealed
  const agent = await readChannelAgent(booted.stateDir);
  const channel = agent ? new StackChannel(agent) : undefined;
  const republisher = secret === undefined ? undefined : new StateRepublisher({ etcd: booted.etcd, keys: booted.keys, stateDir: booted.stateDir, secret, log: deps.log });
  return {
    ...common,
    unitsFor: unitsForSpec(current, { machineFiles: (record, view) => files.filesFor(record, view), certificatesExpire: (record) => files.expiresOf(record.id), nodeReady: true }),
    machinePki: new SharedMachinePki(files, booted.pkiWrites, republisher),
    // `corekube pki rotate-ca`: the leader moves its CA rotation on, published for standbys, rolled out
    caRotation: new CaRotations({ authority: booted.authority, ...(republisher ? { publish: (fence) => republisher.publish(fence) } : {}) }),
    // booted, only at addresses of the private network (by hand, records name whatever addresses the operator's machines have)
    addresses: machineAddresses(spec),
    admission: { credentials },
    kubernetes: await kubernetes(spec, booted, deps),
    ...(channel ? { stack: { read: () => channel.metadata(), cluster: spec.name }, desired } : {}),
    onClusterReady: () => signalClusterReady(`${spec.masters} masters and ${spec.minions} minions deployed, every Node Ready, the add-ons available`, booted.standby, handleDeps(booted, deps)),
  };
}

/**
 * The cluster's Kubernetes side, as its admin (the client certificate the overlord's PKI issues): its add-ons,
 * with the OpenStack cloud provider's when the spec has it (their credentials read from Heat, or kept).
 */
async function kubernetes(spec: ClusterSpec, booted: Booted, deps: OverlordDeps): Promise<KubernetesOptions> {
  const first = await booted.authority.ensureAdmin();
  // read at each call: a CA rotation changes the CA the API servers are trusted by and, in phase sign, the admin's certificate
  const credentials = () => {
    const admin = booted.authority.currentAdmin() ?? first;
    return { ca: admin.ca, cert: admin.client.cert, key: admin.client.key };
  };
  return {
    api: (servers) => createKubernetesApi(servers, credentials),
    addons: clusterAddons(spec),
    ...(spec.cloudProvider === 'openstack' ? { laterAddons: (signal: AbortSignal) => cloudAddons(spec, booted, deps, signal) } : {}),
  };
}

/**
 * The OpenStack cloud provider's add-ons, once its credentials are read (trust/cloud-credentials.ts). Without them
 * (booted by hand without Heat, or Heat away at a first boot with no kept copy) the machines are still deployed:
 * the error says what is missing, and the credentials are tried again every few minutes until they come — the
 * cluster is not ready before (its Nodes keep the uninitialised taint).
 */
async function cloudAddons(spec: ClusterSpec, booted: Booted, deps: OverlordDeps, signal: AbortSignal): Promise<Addon[]> {
  const waits = new Backoffs(BACKOFF.heat);
  let reported = '';
  for (;;) {
    try {
      return cloudProviderAddons(spec, await cloudCredentials({ configDir: booted.configDir, stateDir: booted.stateDir, clock: deps.clock, log: deps.log, signal }));
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const e = asCorekubeError(err, 'E_HEAT');
      const delay = waits.next();
      if (e.message !== reported) deps.log.error({ event: 'cloud.credentials-missing', nextRetryMs: delay, ...errorFields(e) }, `the OpenStack cloud provider's add-ons wait for their credentials: ${e.message}`);
      reported = e.message;
      await deps.clock.sleep(delay, signal);
    }
  }
}

/** 4. A booted overlord that does not lead follows the state the leader publishes (none without an overlord secret). */
function follow(booted: Booted, store: Store, applies: () => boolean, deps: OverlordDeps): Follower | undefined {
  const secret = booted.overlordSecret;
  if (secret === undefined) return undefined;
  return followSharedState({ store, keys: booted.keys, stateDir: booted.stateDir, secret, log: deps.log, clock: deps.clock, applies });
}
