/**
 * Machines that run a real systemd, for tests and demos: systemd-nspawn containers booted from the shared
 * rootfs (rootfs.ts), each on an overlayfs with its own upper layer on disk, in its own network namespace with a
 * veth on a bridge the harness owns. Net `k` (one per test file, so files never share a bridge):
 *
 *   bridge ckbr<k> 10.200.<k>.1/24 (the host) · machine i (1-based): netns ck<k>-<i>, veth ck<k>v<i>,
 *   address 10.200.<k>.(100+i) unless its spec gives one (the local cloud's fixed IPs and DHCP leases),
 *   cgroup ck<k>-<i> · work dir /tmp/corekube-machines/ck<k>/<i>
 *
 * Each machine gets its hostname, a random /etc/machine-id, a fresh ed25519 host key and (unless disabled)
 * a user `corekube` with passwordless sudo and the given authorized key. Without a cloud-init seed, cloud-init
 * is disabled in it. Everything is undone by `teardown()`, or at process exit when a test failed first;
 * `scripts/machines down` removes what a killed test process left behind.
 *
 * Rules from ../shared/recipes (machines.sh): nspawn needs --register=no and --keep-unit (no systemd on the
 * host); each nspawn starts in its own cgroup (else machines share `payload/` and break each other);
 * fs.inotify.max_user_instances must be raised; after a SIGKILL of nspawn the machine's systemd survives,
 * so teardown kills every pid in the machine's cgroup before unmounting.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { onExit } from '../cleanup.ts';
import { alive, applyHostSettings, bridgeOf, cleanupNet, hierarchies, INOTIFY, KUBELET_HOST_SETTINGS, names, reapMachine, restoreHostSettings, sh, tracesOf, WORK_ROOT } from './host.ts';
import { MachineImpl, type FleetOptions, type Machine, type MachineSpec } from './machine.ts';
import { ensureRootfs, rootfsMissing } from './rootfs.ts';

// the room's face: what a fleet's users need of its parts
export { CONTAINER_INIT, type ExecResult, type FleetOptions, type Machine, type MachineSpec } from './machine.ts';
export { cleanupNet, KUBELET_HOST_SETTINGS, netsInUse, WORK_ROOT } from './host.ts';

const DEFAULT_NET = 40;

export interface AddOptions {
  /**
   * called for each machine as soon as its systemd-nspawn runs with its network up, before the machine is
   * ready (systemd running, sshd answering): what a cloud reports as "the server is ACTIVE"
   */
  readonly onStarted?: (machine: Machine) => void;
}

export interface Fleet {
  readonly net: number;
  readonly bridge: string;
  /** the host's address on the bridge (10.200.<k>.1): serve things to machines here */
  readonly gateway: string;
  readonly machines: readonly Machine[];
  /** boots more machines on the same bridge (a machine joining later); returns the new ones */
  add(specs: readonly MachineSpec[], options?: AddOptions): Promise<Machine[]>;
  /** powers everything off and removes every trace; idempotent */
  teardown(): Promise<void>;
}
/** Why machines cannot run here, or undefined. */
export function machinesMissing(): string | undefined {
  if (process.getuid?.() !== 0) return 'systemd-nspawn machines need root';
  for (const [bin, pkg] of [['systemd-nspawn', 'systemd-container'], ['nsenter', 'util-linux'], ['ip', 'iproute2'], ['ssh-keygen', 'openssh-client']] as const) {
    if (spawnSync(bin, ['--version'], { stdio: 'ignore' }).error) return `${bin} is not installed (Debian package ${pkg})`;
  }
  if (hierarchies().length === 0) return 'no usable cgroup filesystem under /sys/fs/cgroup';
  return rootfsMissing();
}

/**
 * The net index of a test file: its own constant `k` (each file picks a distinct one, so files never share
 * a bridge), shifted by $COREKUBE_TEST_NET_OFFSET (default 0) when a host already uses that range.
 */
export function netFromEnv(k = DEFAULT_NET): number {
  const raw = process.env.COREKUBE_TEST_NET_OFFSET ?? '0';
  const offset = /^\d{1,3}$/.test(raw) ? Number(raw) : NaN;
  const net = k + offset;
  if (!Number.isInteger(net) || net < 1 || net > 254) throw new Error(`net index ${k} + COREKUBE_TEST_NET_OFFSET=${raw} is not in 1..254`);
  return net;
}

// ---------------------------------------------------------------------------------------------------------

/** Boots machines on net k and waits until each runs systemd and answers on SSH. */
export async function bootMachines(specs: readonly MachineSpec[], options: FleetOptions = {}): Promise<Fleet> {
  const k = options.net ?? netFromEnv();
  if (!Number.isInteger(k) || k < 1 || k > 254) throw new Error(`net index must be 1..254, got ${k}`);
  const bridge = bridgeOf(k);
  const gateway = `10.200.${k}.1`;
  const netDir = path.join(WORK_ROOT, `ck${k}`);
  const ownerFile = path.join(netDir, 'owner.pid');

  claimNet(k, netDir, ownerFile);

  const rootfs = options.rootfs ?? (await ensureRootfs());
  const readyTimeoutMs = options.readyTimeoutMs ?? 60_000;
  const machines: MachineImpl[] = [];
  let tornDown = false;

  applyHostSettings([INOTIFY, ...(options.containers?.kubelet ? KUBELET_HOST_SETTINGS : [])]);
  const unregister = onExit(`machines on ${bridge}`, () => {
    for (const m of machines) if (m.nspawnPid) try { process.kill(m.nspawnPid, 'SIGKILL'); } catch { /* gone */ }
    for (const m of machines) reapMachine(k, m.index);
    sh(['ip', 'link', 'del', bridge], true);
    rmSync(netDir, { recursive: true, force: true });
    restoreHostSettings();
  });

  bridgeUp(bridge, gateway);

  const add = async (more: readonly MachineSpec[], addOptions: AddOptions = {}): Promise<Machine[]> => {
    const start = machines.length + 1;
    const taken = new Set(machines.map((m) => m.ip));
    for (const [j, spec] of more.entries()) {
      const ip = spec.ip ?? names(k, start + j).ip;
      const host = Number(ip.split('.')[3]);
      if (!ip.startsWith(`10.200.${k}.`) || !(host >= 2 && host <= 254) || ip.split('.').length !== 4) throw new Error(`machine address ${ip} is not in 10.200.${k}.2-254 (the bridge ${bridge} is 10.200.${k}.0/24, the host .1)`);
      if (taken.has(ip)) throw new Error(`machine address ${ip} is already taken on ${bridge}`);
      taken.add(ip);
    }
    const created = more.map((spec, j) => {
      const m = new MachineImpl(k, start + j, spec, bridge, gateway, rootfs, options, readyTimeoutMs);
      machines.push(m);
      return m;
    });
    await Promise.all(created.map((m) => m.create()));
    await Promise.all(created.map((m) => m.boot(addOptions.onStarted ? () => addOptions.onStarted!(m) : undefined)));
    return created;
  };

  const fleet: Fleet = {
    net: k,
    bridge,
    gateway,
    machines,
    add,
    teardown: async () => {
      if (tornDown) return;
      tornDown = true;
      await Promise.all(machines.map((m) => m.stop('SIGTERM', 5000)));
      for (const m of machines) reapMachine(k, m.index);
      sh(['ip', 'link', 'del', bridge], true);
      rmSync(netDir, { recursive: true, force: true });
      unregister();
      restoreHostSettings();
      const left = tracesOf(k);
      if (left.length > 0) throw new Error(`teardown of ${bridge} left traces of machines ${left.join(', ')}`);
    },
  };
  try {
    await add(specs);
  } catch (err) {
    await fleet.teardown().catch(() => undefined);
    throw err;
  }
  return fleet;
}

/** Makes this process the owner of net k: a live owner means another test uses k; a dead one left traces to remove. */
function claimNet(k: number, netDir: string, ownerFile: string): void {
  const bridge = bridgeOf(k);
  if (existsSync(ownerFile)) {
    const owner = Number(readFileSync(ownerFile, 'utf8'));
    if (owner !== process.pid && alive(owner)) throw new Error(`net ${k} (${bridge}) is in use by pid ${owner}: give this test another net index`);
    if (owner !== process.pid) cleanupNet(k);
  } else if (tracesOf(k).length > 0 || sh(['ip', 'link', 'show', bridge], true) !== '') {
    cleanupNet(k);
  }
  mkdirSync(netDir, { recursive: true });
  writeFileSync(ownerFile, String(process.pid));
}

/** The bridge with the host's address on it, unless it is up already. */
function bridgeUp(bridge: string, gateway: string): void {
  if (sh(['ip', 'link', 'show', bridge], true) !== '') return;
  sh(['ip', 'link', 'add', bridge, 'type', 'bridge']);
  sh(['ip', 'addr', 'add', `${gateway}/24`, 'dev', bridge]);
  sh(['ip', 'link', 'set', bridge, 'up']);
}
