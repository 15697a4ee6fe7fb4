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
 * release mirror), .10 discovery, .11 overlord, DHCP from .32 (the spec's address plan).
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CorekubeError } from '../core/errors.ts';
import { killLocalHeatNow, missingPrerequisites, startLocalHeat, type LocalHeat } from './heat/local-heat.ts';
import { parseClusterSpec, type ClusterSpec } from '../clusterspec/cluster-spec.ts';
import type { ApiLoadBalancer } from '../clusterspec/fields.ts';
import { onExit } from './cleanup.ts';
import { overlordImageTag } from './docker.ts';
import { bootMachines, cleanupNet, machinesMissing, netsInUse, type Fleet } from './machines/machines.ts';
import { stopDockerEngineDir } from './docker.ts';
import { startMirror, type MirrorServer } from './mirrors/mirror.ts';
import { defaultOverlordMode, OverlordHost, type OverlordMode } from './overlord-runner.ts';
import { startMetadataStandIn, type MetadataStandIn } from './metadata.ts';
import { startRegistry, registryMissing, type Registry } from './mirrors/registry.ts';
import { buildLocalCloudRelease, pushLocalCloudImages, releaseMirrorMissing, type LocalCloudRelease } from './mirrors/release-mirror.ts';
import { LAYOUT } from '../units/layout.ts';
import { Cloud, type LocalCloud, type LocalCloudEvent, type LocalCloudTraces } from './cloud.ts';
import { haproxyMissing, killHaproxyNow } from './load-balancer.ts';

export const DEFAULT_NET = 60;

export interface LocalCloudOptions {
  readonly masters: number;
  readonly minions: number;
  /** overlord servers: the bootstrap one and overlords - 1 standbys (default 1) */
  readonly overlords?: number;
  /** how the minions reach the API (spec.apiLoadBalancer; default: the spec's, octavia with 3 or 5 masters) */
  readonly apiLoadBalancer?: ApiLoadBalancer;
  /** net index k: 10.200.k.0/24 on bridge ckbr<k> (default 60) */
  readonly net?: number;
  /** cluster and stack name (default `demo`) */
  readonly name?: string;
  /** where the overlord container runs (default: docker when Debian's docker.io is installed) */
  readonly overlord?: OverlordMode;
  /** progress, for a person or a test (no secrets) */
  readonly onEvent?: (event: LocalCloudEvent) => void;
  /** each line the overlord logs (its JSON lines: what `docker logs overlord` shows) */
  readonly onOverlordLine?: (line: string) => void;
  /** each line a standby overlord logs, with its container name */
  readonly onStandbyLine?: (name: string, line: string) => void;
  /**
   * the Kubernetes release the cluster is created at (default: the pinned one); the mirror serves the pinned one
   * too, so the stack can be upgraded to it (`corekube demo --upgrade`)
   */
  readonly kubernetesVersion?: string;
}

/** Why the local cloud cannot run here, or undefined (the Docker engine is checked by its own mode). */
export function localCloudMissing(): string | undefined {
  const heat = missingPrerequisites();
  if (heat.length > 0) return `the local Heat needs ${heat.join(', ')} (scripts/setup installs keystone heat-api heat-engine)`;
  return machinesMissing() ?? releaseMirrorMissing() ?? registryMissing() ?? haproxyMissing();
}

/** The cluster spec of the local cloud: ubuntu profile, its private net, the mirror, the real etcd's version. */
export function localCloudSpec(options: { name: string; masters: number; minions: number; overlords?: number; apiLoadBalancer?: ApiLoadBalancer; net: number; releaseBaseUrl: string; releaseDigests: Readonly<Record<string, string>>; registryMirror: string; kubernetesVersion?: string }): ClusterSpec {
  return parseClusterSpec({
    flags: {
      name: options.name,
      os: 'ubuntu',
      // no Nova, Neutron or Cinder API for a cloud controller manager or Cinder CSI to call
      'cloud-provider': 'none',
      masters: String(options.masters),
      minions: String(options.minions),
      overlords: String(options.overlords ?? 1),
      ...(options.apiLoadBalancer ? { 'api-load-balancer': options.apiLoadBalancer } : {}),
      'private-cidr': `10.200.${options.net}.0/24`,
      'release-base-url': options.releaseBaseUrl,
      'release-digests': options.releaseDigests,
      'registry-mirror': options.registryMirror,
      'overlord-image': overlordImageTag(),
      ...(options.kubernetesVersion ? { 'kubernetes-version': options.kubernetesVersion } : {}),
    },
  });
}

/**
 * Where the local cloud departs from a real cloud, one line each: what `corekube demo` prints and
 * localcloud/README.md explains. Nothing here reaches what a real cloud's machines get.
 */
export const LOCAL_CLOUD_DEVIATIONS: readonly string[] = [
  'Nova, Neutron and Octavia\'s APIs are played by provider templates: servers are systemd-nspawn machines on a bridge, security groups are not enforced',
  'the Octavia load balancer (3 or 5 masters) is a real haproxy on this host, configured from the stack\'s Octavia resources: its VIP an address on the bridge, no amphora VM',
  'machines are containers on this host, set up as kind sets up its nodes: every capability, no seccomp filter, /dev/kmsg, cgroup controllers remounted writable, containerd\'s store on the host\'s disk',
  'the host has cgroup v1: the kubelet gets failCgroupV1: false from a drop-in of the machine image (real clouds\' images are cgroup v2)',
  'the kernel settings the kubelet and kube-proxy set on a real node (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops, nf_conntrack_max) are the host\'s: the local cloud sets them while it runs and puts them back',
  'machines cannot lower a process\'s OOM score (this host lacks CAP_SYS_RESOURCE): containerd gets restrict_oom_score_adj from a drop-in of the machine image',
  'Docker on the overlord server is a stand-in package: the overlord container runs on the host\'s Docker engine, on that server\'s directories (after a kill, the demo starts it again as overlord.service\'s Restart=always would)',
  'no OpenStack cloud provider (cloud controller manager, Cinder CSI): the local cloud has no Nova, Neutron or Cinder API for them to call, so its clusters run with cloudProvider none; the add-ons pass the real API server\'s server-side dry run in the e2e test',
  'the metadata service at 169.254.169.254 is a stand-in on the bridge (it serves no user_data: machines boot from a NoCloud seed)',
  'release artifacts and images are built from their Go modules (upstream downloads are unreachable here) and served by a local mirror and registry',
];

/**
 * Removes what a local cloud on net `net` left behind when its process was killed: machines, mounts, network
 * namespaces, cgroups and the bridge (cleanupNet), Heat's processes, the Docker engine and its containers, the
 * work directory. Returns what it found to remove.
 */
export async function cleanupLocalCloud(net: number, traces?: Partial<LocalCloudTraces>): Promise<string[]> {
  const left: string[] = [];
  if (netsInUse().includes(net)) {
    cleanupNet(net);
    left.push(`machines and bridge ckbr${net}`);
  }
  if (traces?.heatDir && existsSync(traces.heatDir)) {
    killLocalHeatNow(traces.heatDir);
    left.push('Keystone and Heat');
  }
  if (traces?.engineDir && existsSync(traces.engineDir)) {
    await stopDockerEngineDir(traces.engineDir);
    left.push('the Docker engine');
  }
  if (traces?.workDir && existsSync(traces.workDir)) {
    if (killHaproxyNow(path.join(traces.workDir, 'octavia'))) left.push('the load balancer (haproxy)');
    rmSync(traces.workDir, { recursive: true, force: true });
    left.push(traces.workDir);
  }
  return left;
}

/** The Kubernetes release corekube pins (what `corekube demo --upgrade` upgrades to). */
export function pinnedKubernetes(): string {
  return defaultVersions().kubernetes;
}

/** The versions the local cloud runs: the spec's defaults, the pins corekube is tested with. */
function defaultVersions(): ClusterSpec['versions'] {
  return parseClusterSpec({}).versions;
}

/** Brings up the cloud's infrastructure: bridge, Heat, release mirror, registry, the overlord's engine and image. */
export async function openLocalCloud(options: LocalCloudOptions): Promise<LocalCloud> {
  const net = options.net ?? DEFAULT_NET;
  const emit = options.onEvent ?? (() => undefined);
  const timings: Record<string, number> = {};
  const phase = async <T>(label: string, fn: () => Promise<T>, detail?: (v: T) => string): Promise<T> => {
    const t = Date.now();
    const v = await fn();
    timings[label] = Date.now() - t;
    emit({ kind: 'phase', name: label, ms: timings[label]!, ...(detail ? { detail: detail(v) } : {}) });
    return v;
  };
  const missing = localCloudMissing();
  if (missing) throw new CorekubeError('E_IO', `the local cloud cannot run here: ${missing}`, { hint: 'run bash scripts/setup as root on Debian 12' });

  const workDir = await mkdtemp(path.join(os.tmpdir(), `corekube-localcloud-${net}-`));
  const heatDir = path.join(workDir, 'heat');
  mkdirSync(heatDir);
  const undoWork = onExit(`local cloud work dir ${workDir}`, () => {
    killLocalHeatNow(heatDir);
    rmSync(workDir, { recursive: true, force: true });
  });
  // each part is kept as soon as it is up, so a failure of another still tears it down
  const parts: Partial<Parts> = {};
  const closeAll = async () => {
    await parts.overlordHost?.close().catch(() => undefined);
    await parts.mirror?.close().catch(() => undefined);
    await parts.registry?.close().catch(() => undefined);
    await parts.metadata?.close().catch(() => undefined);
    await parts.heatService?.stop().catch(() => undefined);
    await parts.fleet?.teardown().catch(() => undefined);
    killLocalHeatNow(heatDir);
    await rm(workDir, { recursive: true, force: true });
    undoWork();
  };
  try {
    const p = await startParts(parts, { net, workDir, heatDir, mode: options.overlord ?? defaultOverlordMode(), phase, emit, ...(options.kubernetesVersion ? { kubernetesVersion: options.kubernetesVersion } : {}) });
    const workloadImage = await phase('images', () => pushLocalCloudImages(p.release, p.registry), () => `pause, CoreDNS and the test workload's image pushed to ${p.registry.host}`);
    const spec = localCloudSpec({
      name: options.name ?? 'demo', masters: options.masters, minions: options.minions, ...(options.overlords ? { overlords: options.overlords } : {}), net,
      ...(options.apiLoadBalancer ? { apiLoadBalancer: options.apiLoadBalancer } : {}),
      releaseBaseUrl: p.mirror.urlOn(p.fleet.gateway), releaseDigests: p.release.digests, registryMirror: p.registry.url,
      ...(options.kubernetesVersion ? { kubernetesVersion: options.kubernetesVersion } : {}),
    });
    return new Cloud(spec, net, workDir, p.fleet, p.heatService, p.mirror, p.release, p.registry, workloadImage, p.overlordHost, timings, emit, options.onOverlordLine, options.onStandbyLine, closeAll);
  } catch (err) {
    await closeAll();
    throw err;
  }
}

/** What the cloud runs on: the bridge (a fleet with no machine yet), Heat, the mirror, the registry, the metadata stand-in, the overlord's host. */
interface Parts {
  readonly fleet: Fleet;
  readonly heatService: LocalHeat;
  readonly mirror: MirrorServer;
  readonly overlordHost: OverlordHost;
  readonly registry: Registry;
  readonly metadata: MetadataStandIn;
  readonly release: LocalCloudRelease;
}

type Phase = <T>(label: string, fn: () => Promise<T>, detail?: (v: T) => string) => Promise<T>;

/** Starts every part, the bridge first (Heat and the mirror listen on its host address), then the others in parallel, keeping each in `parts`. */
async function startParts(parts: { -readonly [K in keyof Parts]?: Parts[K] }, c: { net: number; workDir: string; heatDir: string; mode: OverlordMode; phase: Phase; emit: (e: LocalCloudEvent) => void; kubernetesVersion?: string }): Promise<Parts> {
  const { phase } = c;
  const fleet = (parts.fleet = await phase(
    'bridge',
    () => bootMachines([], { net: c.net, readyTimeoutMs: 120_000, containers: { stateDirs: [`${LAYOUT.stateDir}/containerd`], kubelet: true } }),
    (f) => `${f.bridge} 10.200.${c.net}.0/24, host ${f.gateway}`,
  ));
  const gateway = fleet.gateway;
  const image = overlordImageTag();
  const started = await Promise.allSettled([
    phase('heat', () => startLocalHeat({ stateDir: c.heatDir, bindAddress: gateway }), (h) => `Keystone + heat-all on ${gateway} (${h.heatBaseUrl})`).then((h) => (parts.heatService = h)),
    phase('mirror', () => startMirror({ root: path.join(c.workDir, 'mirror'), listenOn: [gateway] }), (m) => `release mirror on ${m.urlOn(gateway)}`).then((m) => (parts.mirror = m)),
    phase('overlord image', () => OverlordHost.prepare(c.mode, image), (h) => (h.mode === 'docker' ? `${image} built from overlord/Dockerfile on a private Docker engine${h.image ? ` in ${(h.image.buildMs / 1000).toFixed(1)} s` : ''}` : 'the overlord runs as a process (no Docker)'))
      .then((h) => (parts.overlordHost = h)),
    phase('registry', () => startRegistry({ listenOn: gateway, dir: path.join(c.workDir, 'registry') }), (r) => `docker-registry on ${r.host}`).then((r) => (parts.registry = r)),
    phase('metadata', () => startMetadataStandIn(fleet.bridge), (m) => `metadata service stand-in at ${m.url}`).then((m) => (parts.metadata = m)),
    phase('release', () => buildLocalCloudRelease(defaultVersions(), path.join(c.workDir, 'mirror'), (event) => c.emit({ kind: 'release', event }), c.kubernetesVersion ? [c.kubernetesVersion] : []), (r) => {
      const fresh = [...r.built.values()].filter((b) => !b.cached);
      return `${r.manifest.artifacts.length} artifacts built from source${fresh.length > 0 ? ` (built now: ${fresh.map((b) => `${b.project} ${b.seconds} s`).join(', ')})` : ' (all cached)'}`;
    }).then((r) => (parts.release = r)),
  ]);
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  const { heatService, mirror, overlordHost, registry, metadata, release } = parts;
  if (!heatService || !mirror || !overlordHost || !registry || !metadata || !release) throw new CorekubeError('E_INTERNAL', 'a part of the local cloud did not start');
  return { fleet, heatService, mirror, overlordHost, registry, metadata, release };
}
