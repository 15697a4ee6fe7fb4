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
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
  chmodSync,
  chownSync,
  openSync,
  closeSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { onExit } from '../cleanup.ts';
import { ensureRootfs, rootfsMissing } from './rootfs.ts';

export const WORK_ROOT = '/tmp/corekube-machines';
const DEFAULT_NET = 40;

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface MachineSpec {
  /** host name, also nspawn's machine name (default `m<i>`) */
  readonly hostname?: string;
  /** NoCloud seed: when given, cloud-init runs at boot with it (and may create users itself) */
  readonly cloudInit?: { readonly userData: string; readonly metaData: string };
  /**
   * its address on the bridge, 10.200.<k>.2–254 (default .100+index): a cloud's fixed IP or DHCP lease.
   * Not the host's .1 and not another machine's.
   */
  readonly ip?: string;
  /**
   * files of its image, written into its disk before the first boot (absolute paths inside the machine):
   * what a cloud image would bring, e.g. its apt sources
   */
  readonly files?: readonly { readonly path: string; readonly content: string; readonly mode?: number }[];
}

export interface AddOptions {
  /**
   * called for each machine as soon as its systemd-nspawn runs with its network up, before the machine is
   * ready (systemd running, sshd answering): what a cloud reports as "the server is ACTIVE"
   */
  readonly onStarted?: (machine: Machine) => void;
}

export interface FleetOptions {
  /** net index k (1..254): bridge ckbr<k>, subnet 10.200.<k>.0/24. Default: netFromEnv() */
  readonly net?: number;
  /** authorized key line for user `corekube` (and the user is created); omit to create no user */
  readonly authorizedKey?: string;
  /** the rootfs to boot (default: the cached build, built first if absent) */
  readonly rootfs?: string;
  /** per machine: until systemd is running and sshd answers (default 60 s) */
  readonly readyTimeoutMs?: number;
  /** accept a `degraded` system (default false: failed units fail the boot, listed in the error) */
  readonly allowDegraded?: boolean;
  /**
   * machines that run containers (containerd, runc, a kubelet), set up as kind sets up its node containers:
   * every capability, no nspawn seccomp filter (runc joins a session keyring), /dev/kmsg (the kubelet reads
   * it), writable cgroup controllers (CONTAINER_INIT remounts them before systemd starts), and each of
   * `stateDirs` (absolute paths in the machine) bind-mounted from the host's disk, because an overlay
   * snapshotter cannot stack on the machine's own overlay root. These exist only because the machines are
   * containers on this host; a real cloud's machine needs none of it.
   */
  readonly containers?: {
    readonly stateDirs: readonly string[];
    /** the machines run a kubelet: the host holds the kernel settings it needs (KUBELET_HOST_SETTINGS) */
    readonly kubelet?: boolean;
  };
}

/**
 * PID 1 of a machine that runs containers: nspawn mounts the v1 cgroup controllers read-only; this remounts
 * each one read-write inside the machine's own cgroup namespace (a fresh mount: remounting the hierarchy
 * itself answers "busy"), makes /sys/module visible (read-only), then becomes systemd.
 */
export const CONTAINER_INIT = '/usr/local/sbin/corekube-localcloud-init';
const CONTAINER_INIT_SCRIPT = `#!/bin/sh
# corekube's local cloud: make the cgroup controllers writable for containerd and the kubelet, then boot systemd
mount -o remount,rw /sys/fs/cgroup
awk '$3 == "cgroup" { print $2, $4 }' /proc/self/mounts | while read -r dir opts; do
  controllers=$(echo "$opts" | tr , '\\n' | grep -Ev '^(rw|ro|nosuid|nodev|noexec|relatime|name=.*|xattr|clone_children)$' | paste -sd, -)
  [ -n "$controllers" ] || continue
  umount "$dir" && mount -t cgroup -o "$controllers" cgroup "$dir"
done
# kube-proxy reads nf_conntrack's hashsize under /sys/module, which nspawn's /sys leaves out: bind it in, read-only
if [ ! -d /sys/module ]; then
  mount -o remount,rw /sys && mkdir -p /sys/module /run/corekube-sysfs \\
    && mount -t sysfs -o ro,nosuid,nodev,noexec sysfs /run/corekube-sysfs && mount --bind /run/corekube-sysfs/module /sys/module \\
    && umount /run/corekube-sysfs && rmdir /run/corekube-sysfs
  mount -o remount,ro /sys
fi
exec /lib/systemd/systemd "$@"
`;

export interface Machine {
  /** 1-based index within its fleet (its address is .100+index) */
  readonly index: number;
  readonly hostname: string;
  /** /etc/machine-id (32 hex), the id a node announces */
  readonly id: string;
  readonly ip: string;
  /** `ssh-ed25519 AAAA…`, read from the machine after boot (cloud-init may replace the key we made) */
  readonly hostKey: string;
  /** host-side path of the machine's `/` (the overlay mount) */
  readonly root: string;
  /** the container's PID 1 (systemd) as seen from the host; undefined while stopped */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** runs argv inside the machine (all its namespaces) via nsenter; never a shell string */
  exec(argv: readonly string[], options?: { stdin?: string; timeoutMs?: number }): Promise<ExecResult>;
  /** SIGTERM: clean poweroff; SIGKILL: power cut. Disk (upper layer), address and identity are kept. */
  stop(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** boots the machine again (a new boot id, same disk) and waits until it is ready */
  boot(): Promise<void>;
  /** the console log (nspawn's stdout) */
  console(): string;
  /** bytes of memory the machine uses (its memory cgroup's usage, without inactive page cache); undefined when unknown */
  memory(): number | undefined;
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
// names

const names = (k: number, i: number) => ({
  netns: `ck${k}-${i}`,
  veth: `ck${k}v${i}`,
  cgroup: `ck${k}-${i}`,
  dir: path.join(WORK_ROOT, `ck${k}`, String(i)),
  ip: `10.200.${k}.${100 + i}`,
});
const bridgeOf = (k: number) => `ckbr${k}`;

/**
 * Where a machine's cgroups go: one directory in every mounted hierarchy (each v1 controller, `name=systemd`,
 * the v2 `unified` one, or a pure v2 tree), below this process's own cgroup there. A machine in its own cgroup
 * of every hierarchy has its own cgroup namespace root in each, so what its systemd and its containers create
 * (`system.slice`, `kubepods.slice`) is its own and never another machine's.
 */
interface Hierarchy {
  /** the mount point, e.g. /sys/fs/cgroup/memory */
  readonly mount: string;
  /** this process's cgroup in it, e.g. / or /process_api/<id> */
  readonly base: string;
  readonly cpuset: boolean;
}

let hierarchyCache: Hierarchy[] | undefined;
function hierarchies(): Hierarchy[] {
  if (hierarchyCache) return hierarchyCache;
  const own = new Map<string, string>();
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (m) own.set(m[1]!, m[2]!);
  }
  const out: Hierarchy[] = [];
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [, mount, type, opts] = line.split(' ');
    if (!mount?.startsWith('/sys/fs/cgroup') || (type !== 'cgroup' && type !== 'cgroup2')) continue;
    if (!existsSync(path.join(mount, 'cgroup.procs'))) continue;
    const options = (opts ?? '').split(',');
    const key = type === 'cgroup2' ? '' : [...own.keys()].find((k) => k !== '' && k.split(',').every((c) => options.includes(c)));
    if (key === undefined) continue;
    out.push({ mount, base: own.get(key) ?? '/', cpuset: type === 'cgroup' && key.split(',').includes('cpuset') });
  }
  hierarchyCache = out;
  return out;
}

/** A machine's cgroup directory in every hierarchy. */
function cgroupDirs(cgroup: string): string[] {
  return hierarchies().map((h) => path.join(h.mount, h.base, cgroup));
}

/** Creates a machine's cgroup in every hierarchy (a v1 cpuset child starts empty: it gets its parent's cpus and mems). */
function createCgroup(cgroup: string): void {
  for (const h of hierarchies()) {
    const dir = path.join(h.mount, h.base, cgroup);
    mkdirSync(dir, { recursive: true });
    if (h.cpuset) {
      for (const f of ['cpuset.cpus', 'cpuset.mems']) {
        if (readFileSync(path.join(dir, f), 'utf8').trim() === '') writeFileSync(path.join(dir, f), readFileSync(path.join(path.dirname(dir), f), 'utf8'));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// small synchronous helpers (also used at process exit, where nothing async runs)

function sh(argv: readonly string[], allowFail = false): string {
  const [cmd, ...args] = argv as [string, ...string[]];
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (!allowFail && (r.error || r.status !== 0)) {
    throw new Error(`${argv.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? '').trim()}`);
  }
  return r.stdout ?? '';
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every pid in a cgroup tree (all hierarchies). */
function cgroupPids(cgroup: string): number[] {
  const pids = new Set<number>();
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return; // vanished
    }
    for (const e of entries) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else if (e.name === 'cgroup.procs') {
        try {
          for (const line of readFileSync(path.join(dir, e.name), 'utf8').split('\n')) if (line) pids.add(Number(line));
        } catch {
          /* vanished */
        }
      }
    }
  };
  for (const dir of cgroupDirs(cgroup)) walk(dir);
  return [...pids];
}

/** Removes a cgroup tree depth-first (a cgroup dir can only be removed once it has no children and no pids). */
function removeCgroup(cgroup: string): void {
  const rm = (dir: string) => {
    let entries: string[] = [];
    try {
      entries = readdirSync(dir);
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e);
      if (statSync(p, { throwIfNoEntry: false })?.isDirectory()) rm(p);
    }
    try {
      rmdirSync(dir);
    } catch {
      /* busy: reported by the caller's leftovers check */
    }
  };
  for (const dir of cgroupDirs(cgroup)) rm(dir);
}

function isMounted(dir: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);
}

/**
 * Kills what is left of machine i and removes its mounts, namespace, cgroups and work dir. Synchronous so
 * the exit handler can run it; safe to run on a machine that is half set up or already gone.
 */
function reapMachine(k: number, i: number, keepDisk = false): void {
  const n = names(k, i);
  for (let round = 0; round < 20; round++) {
    const pids = cgroupPids(n.cgroup);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    sleepSync(50);
  }
  if (keepDisk) return;
  for (const m of [path.join(n.dir, 'root'), path.join(n.dir, 'rw')]) {
    if (isMounted(m)) sh(['umount', m], true);
    if (isMounted(m)) sh(['umount', '-l', m], true);
  }
  if (existsSync(`/run/netns/${n.netns}`)) sh(['ip', 'netns', 'del', n.netns], true);
  sh(['ip', 'link', 'del', n.veth], true); // normally gone with the netns
  removeCgroup(n.cgroup);
  rmSync(n.dir, { recursive: true, force: true });
}

/** Machine indexes that have traces on this host for net k (work dirs, netns, cgroups). */
function tracesOf(k: number): number[] {
  const found = new Set<number>();
  const dir = path.join(WORK_ROOT, `ck${k}`);
  if (existsSync(dir)) for (const e of readdirSync(dir)) if (/^\d+$/.test(e)) found.add(Number(e));
  const re = new RegExp(`^ck${k}-(\\d+)$`);
  for (const e of existsSync('/run/netns') ? readdirSync('/run/netns') : []) {
    const m = re.exec(e);
    if (m) found.add(Number(m[1]));
  }
  for (const h of hierarchies()) {
    const parent = path.join(h.mount, h.base);
    for (const e of existsSync(parent) ? readdirSync(parent) : []) {
      const m = re.exec(e);
      if (m) found.add(Number(m[1]));
    }
  }
  return [...found].sort((a, b) => a - b);
}

/** Removes everything of net k (machines, bridge, work dir) — for leftovers of a killed test run. */
export function cleanupNet(k: number): void {
  for (const i of tracesOf(k)) reapMachine(k, i);
  sh(['ip', 'link', 'del', bridgeOf(k)], true);
  rmSync(path.join(WORK_ROOT, `ck${k}`), { recursive: true, force: true });
  if (settingUsers === 0) restoreHostSettings(true);
}

/** Net indexes with traces on this host (bridges ckbr<k>, work dirs). */
export function netsInUse(): number[] {
  const found = new Set<number>();
  for (const e of existsSync(WORK_ROOT) ? readdirSync(WORK_ROOT) : []) {
    const m = /^ck(\d+)$/.exec(e);
    if (m) found.add(Number(m[1]));
  }
  for (const line of sh(['ip', '-o', 'link', 'show', 'type', 'bridge'], true).split('\n')) {
    const m = /^\d+: ckbr(\d+)[:@]/.exec(line);
    if (m) found.add(Number(m[1]));
  }
  return [...found].sort((a, b) => a - b);
}

// ---------------------------------------------------------------------------------------------------------
// Host settings a fleet needs, changed while any fleet is up; each original value is kept in a file so the
// last fleet to go — in this process, or `scripts/machines down` after a killed run — puts it back.
// - inotify: every container's systemd, journald, logind and dbus use inotify instances of uid 0; the default
//   128 runs out at ~15-20 machines;
// - for machines that run a kubelet (containers.kubelet): the kernel settings the kubelet and kube-proxy insist
//   on (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1, nf_conntrack_max), which are not per
//   container: a machine cannot set them (its /proc/sys is read-only), so the host holds them while the fleet runs.

interface HostSetting {
  readonly path: string;
  readonly value: string;
  /** true when the current value must be changed */
  readonly needs: (current: string) => boolean;
}

const INOTIFY: HostSetting = { path: '/proc/sys/fs/inotify/max_user_instances', value: '1024', needs: (v) => Number(v) < 1024 };
export const KUBELET_HOST_SETTINGS: readonly HostSetting[] = [
  { path: '/proc/sys/vm/overcommit_memory', value: '1', needs: (v) => v !== '1' },
  { path: '/proc/sys/kernel/panic', value: '10', needs: (v) => v !== '10' },
  { path: '/proc/sys/kernel/panic_on_oops', value: '1', needs: (v) => v !== '1' },
  // kube-proxy sets nf_conntrack_max unless it already has its value (32768 a CPU, at least 131072, at most
  // 1048576); the value is the init namespace's and read-only in a machine's
  (() => {
    const value = String(Math.min(1048576, Math.max(131072, 32768 * os.cpus().length)));
    return { path: '/proc/sys/net/netfilter/nf_conntrack_max', value, needs: (v: string) => v !== value };
  })(),
];
const SAVED_SETTINGS = path.join(WORK_ROOT, 'host-settings');
let settingUsers = 0;

const savedFile = (p: string) => path.join(SAVED_SETTINGS, `${p.replace(/^\/proc\/sys\//, '').replace(/\//g, '.')}.orig`);

function applyHostSettings(settings: readonly HostSetting[]): void {
  settingUsers++;
  for (const s of settings) {
    const current = readFileSync(s.path, 'utf8').trim();
    if (!s.needs(current)) continue;
    mkdirSync(SAVED_SETTINGS, { recursive: true });
    if (!existsSync(savedFile(s.path))) writeFileSync(savedFile(s.path), `${s.path}\n${current}\n`);
    writeFileSync(s.path, s.value);
  }
}

/** Puts every saved value back once no net of this harness has machines left. */
function restoreHostSettings(force = false): void {
  if (!force && --settingUsers > 0) return;
  if (!existsSync(SAVED_SETTINGS) || netsInUse().length > 0) return;
  for (const f of readdirSync(SAVED_SETTINGS)) {
    const [file, value] = readFileSync(path.join(SAVED_SETTINGS, f), 'utf8').trim().split('\n');
    if (file?.startsWith('/proc/sys/') && value !== undefined) writeFileSync(file, value);
    rmSync(path.join(SAVED_SETTINGS, f), { force: true });
  }
  rmSync(SAVED_SETTINGS, { recursive: true, force: true });
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

  // one owner per net: a live owner means another test uses k; a dead one left traces to remove
  if (existsSync(ownerFile)) {
    const owner = Number(readFileSync(ownerFile, 'utf8'));
    if (owner !== process.pid && alive(owner)) throw new Error(`net ${k} (${bridge}) is in use by pid ${owner}: give this test another net index`);
    if (owner !== process.pid) cleanupNet(k);
  } else if (tracesOf(k).length > 0 || sh(['ip', 'link', 'show', bridge], true) !== '') {
    cleanupNet(k);
  }
  mkdirSync(netDir, { recursive: true });
  writeFileSync(ownerFile, String(process.pid));

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

  if (sh(['ip', 'link', 'show', bridge], true) === '') {
    sh(['ip', 'link', 'add', bridge, 'type', 'bridge']);
    sh(['ip', 'addr', 'add', `${gateway}/24`, 'dev', bridge]);
    sh(['ip', 'link', 'set', bridge, 'up']);
  }

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

class MachineImpl implements Machine {
  readonly hostname: string;
  readonly ip: string;
  readonly root: string;
  id = '';
  hostKey = '';
  nspawnPid: number | undefined;
  private initPid: number | undefined;
  private readonly n: ReturnType<typeof names>;

  constructor(
    readonly k: number,
    readonly index: number,
    private readonly spec: MachineSpec,
    private readonly bridge: string,
    private readonly gateway: string,
    private readonly rootfs: string,
    private readonly options: FleetOptions,
    private readonly readyTimeoutMs: number,
  ) {
    this.n = names(k, index);
    this.hostname = spec.hostname ?? `m${index}`;
    this.ip = spec.ip ?? this.n.ip;
    this.root = path.join(this.n.dir, 'root');
  }

  get pid(): number | undefined {
    return this.running ? this.initPid : undefined;
  }

  get running(): boolean {
    return alive(this.nspawnPid);
  }

  /** disk, identity, user and network; no processes yet */
  async create(): Promise<void> {
    const { dir, netns, veth } = this.n;
    const rw = path.join(dir, 'rw');
    mkdirSync(this.root, { recursive: true });
    // the upper layer on the host's disk: a machine's binaries and images cost disk, not memory
    mkdirSync(path.join(rw, 'upper'), { recursive: true, mode: 0o755 });
    mkdirSync(path.join(rw, 'work'));
    sh(['mount', '-t', 'overlay', 'overlay', '-o', `lowerdir=${this.rootfs},upperdir=${rw}/upper,workdir=${rw}/work`, this.root]);

    const etc = (p: string) => path.join(this.root, 'etc', p);
    this.id = randomBytes(16).toString('hex');
    writeFileSync(etc('machine-id'), `${this.id}\n`);
    writeFileSync(etc('hostname'), `${this.hostname}\n`);
    // sudo resolves the host name; without this line it warns on stderr of every command
    writeFileSync(etc('hosts'), `127.0.0.1 localhost\n127.0.1.1 ${this.hostname}\n::1 localhost ip6-localhost ip6-loopback\n`);
    for (const f of readdirSync(etc('ssh'))) if (f.startsWith('ssh_host_')) rmSync(etc(`ssh/${f}`));
    sh(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', `root@${this.hostname}`, '-f', etc('ssh/ssh_host_ed25519_key')]);

    for (const f of this.spec.files ?? []) {
      const target = path.join(this.root, f.path);
      if (!path.isAbsolute(f.path) || !target.startsWith(`${this.root}/`)) throw new Error(`${this.hostname}: image file ${f.path} is not an absolute path inside the machine`);
      mkdirSync(path.dirname(target), { recursive: true });
      writeFileSync(target, f.content);
      chmodSync(target, f.mode ?? 0o644);
    }
    if (this.options.authorizedKey !== undefined) this.addUser(this.options.authorizedKey);
    if (this.options.containers) {
      const init = path.join(this.root, CONTAINER_INIT);
      mkdirSync(path.dirname(init), { recursive: true });
      writeFileSync(init, CONTAINER_INIT_SCRIPT, { mode: 0o755 });
      for (const [j] of this.options.containers.stateDirs.entries()) mkdirSync(path.join(dir, 'state', String(j)), { recursive: true });
    }
    const seedDir = path.join(this.root, 'var/lib/cloud/seed/nocloud');
    if (this.spec.cloudInit) {
      mkdirSync(seedDir, { recursive: true });
      writeFileSync(path.join(seedDir, 'meta-data'), this.spec.cloudInit.metaData);
      writeFileSync(path.join(seedDir, 'user-data'), this.spec.cloudInit.userData);
    } else if (existsSync(etc('cloud'))) {
      writeFileSync(etc('cloud/cloud-init.disabled'), '');
    }

    sh(['ip', 'netns', 'add', netns]);
    sh(['ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'host0', 'netns', netns]);
    sh(['ip', 'link', 'set', veth, 'master', this.bridge, 'up']);
    sh(['ip', '-n', netns, 'addr', 'add', `${this.ip}/24`, 'dev', 'host0']);
    sh(['ip', '-n', netns, 'link', 'set', 'host0', 'up']);
    sh(['ip', '-n', netns, 'link', 'set', 'lo', 'up']);
    sh(['ip', '-n', netns, 'route', 'add', 'default', 'via', this.gateway]);
    createCgroup(this.n.cgroup);
  }

  private addUser(authorizedKey: string): void {
    sh(['chroot', this.root, 'useradd', '--create-home', '--shell', '/bin/bash', '--user-group', 'corekube']);
    const [, , uid, gid] = readFileSync(path.join(this.root, 'etc/passwd'), 'utf8')
      .split('\n')
      .find((l) => l.startsWith('corekube:'))!
      .split(':')
      .map((f, j) => (j === 2 || j === 3 ? Number(f) : f)) as [string, string, number, number];
    const ssh = path.join(this.root, 'home/corekube/.ssh');
    mkdirSync(ssh, { mode: 0o700 });
    writeFileSync(path.join(ssh, 'authorized_keys'), `${authorizedKey.trim()}\n`, { mode: 0o600 });
    chownSync(ssh, uid, gid);
    chownSync(path.join(ssh, 'authorized_keys'), uid, gid);
    writeFileSync(path.join(this.root, 'etc/sudoers.d/corekube'), 'corekube ALL=(ALL) NOPASSWD:ALL\n', { mode: 0o440 });
  }

  async boot(onStarted?: () => void): Promise<void> {
    if (this.running) return;
    const procsFiles = cgroupDirs(this.n.cgroup).map((d) => path.join(d, 'cgroup.procs'));
    const log = openSync(path.join(this.n.dir, 'console.log'), 'a');
    // the wrapper moves itself into the machine's own cgroup, then becomes nspawn (argv passed through, no shell text)
    const containers = this.options.containers;
    const nspawn = [
      'systemd-nspawn', '--quiet', `--directory=${this.root}`, `--machine=${this.hostname}`,
      '--register=no', '--keep-unit', '--private-network', `--network-namespace-path=/run/netns/${this.n.netns}`, '--console=read-only',
      ...(containers
        ? [
            '--capability=all', '--bind=/dev/kmsg', '--kill-signal=SIGRTMIN+3',
            ...containers.stateDirs.map((d, j) => `--bind=${path.join(this.n.dir, 'state', String(j))}:${d}`),
            CONTAINER_INIT,
          ]
        : ['--boot']),
    ];
    const child = spawn(
      'sh',
      ['-c', 'while [ "$1" != -- ]; do echo $$ > "$1"; shift; done; shift; exec "$@"', 'ck-nspawn', ...procsFiles, '--', ...nspawn],
      // SYSTEMD_SECCOMP=0: runc joins a session keyring, which nspawn's seccomp filter refuses
      { detached: true, stdio: ['ignore', log, log], env: containers ? { ...process.env, SYSTEMD_SECCOMP: '0' } : process.env },
    );
    closeSync(log);
    child.unref();
    this.nspawnPid = child.pid;
    this.initPid = undefined;
    onStarted?.();
    await this.waitReady();
  }

  private async waitReady(): Promise<void> {
    const deadline = Date.now() + this.readyTimeoutMs;
    const check = () => {
      if (!this.running) throw new Error(`${this.hostname}: systemd-nspawn exited during boot:\n${this.console().split('\n').slice(-20).join('\n')}`);
      if (Date.now() > deadline) throw new Error(`${this.hostname}: not ready within ${this.readyTimeoutMs} ms:\n${this.console().split('\n').slice(-20).join('\n')}`);
    };
    // PID 1 of the container: in our cgroup, pid 1 in its own pid namespace, already exec'd into systemd
    while (!this.initPid) {
      check();
      this.initPid = cgroupPids(this.n.cgroup).find((pid) => {
        try {
          const status = readFileSync(`/proc/${pid}/status`, 'utf8');
          const nspid = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
          return nspid.length >= 2 && nspid[nspid.length - 1] === '1' && /^Name:\s+systemd$/m.test(status);
        } catch {
          return false;
        }
      });
      if (!this.initPid) await sleep(20);
    }
    let state = '';
    for (;;) {
      check();
      const r = await this.exec(['systemctl', 'is-system-running', '--wait'], { timeoutMs: Math.max(1000, deadline - Date.now()) }).catch(() => undefined);
      state = r?.stdout.trim() ?? '';
      if (state === 'running' || state === 'degraded') break;
      await sleep(100);
    }
    if (state === 'degraded' && !this.options.allowDegraded) {
      const failed = await this.exec(['systemctl', '--failed', '--no-legend', '--plain']);
      throw new Error(`${this.hostname}: system is degraded; failed units:\n${failed.stdout}`);
    }
    while (!(await sshBanner(this.ip))) {
      check();
      await sleep(50);
    }
    this.hostKey = readFileSync(path.join(this.root, 'etc/ssh/ssh_host_ed25519_key.pub'), 'utf8').trim().split(/\s+/).slice(0, 2).join(' ');
  }

  exec(argv: readonly string[], options: { stdin?: string; timeoutMs?: number } = {}): Promise<ExecResult> {
    const pid = this.pid;
    if (!pid) return Promise.reject(new Error(`${this.hostname} is not running`));
    return new Promise((resolve, reject) => {
      const child = spawn('nsenter', ['--target', String(pid), '--all', '--', ...argv], {
        stdio: [options.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
        env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
        ...(options.timeoutMs ? { timeout: options.timeoutMs } : {}),
      });
      let stdout = '';
      let stderr = '';
      child.stdout!.setEncoding('utf8').on('data', (c: string) => (stdout += c));
      child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code: code ?? 128 + (signal === 'SIGKILL' ? 9 : 15), stdout, stderr }));
      if (child.stdin) {
        // a command that exits without reading its stdin closes the pipe: not an error of ours
        child.stdin.on('error', () => undefined);
        child.stdin.end(options.stdin);
      }
    });
  }

  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM', graceMs = 10_000): Promise<void> {
    const pid = this.nspawnPid;
    if (pid && alive(pid)) {
      process.kill(pid, signal);
      const deadline = Date.now() + graceMs;
      while (alive(pid) && Date.now() < deadline) await sleep(50);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    // after a SIGKILL of nspawn the machine's systemd and everything under it survive: kill the cgroup
    reapMachine(this.k, this.index, true);
    this.nspawnPid = undefined;
    this.initPid = undefined;
  }

  console(): string {
    try {
      return readFileSync(path.join(this.n.dir, 'console.log'), 'utf8');
    } catch {
      return '';
    }
  }

  memory(): number | undefined {
    const h = hierarchies().find((x) => x.mount.endsWith('/memory')) ?? hierarchies().find((x) => x.mount === '/sys/fs/cgroup');
    if (!h) return undefined;
    const dir = path.join(h.mount, h.base, this.n.cgroup);
    try {
      const v1 = existsSync(path.join(dir, 'memory.usage_in_bytes'));
      const usage = Number(readFileSync(path.join(dir, v1 ? 'memory.usage_in_bytes' : 'memory.current'), 'utf8'));
      const stat = readFileSync(path.join(dir, 'memory.stat'), 'utf8');
      const inactive = Number(new RegExp(`^${v1 ? 'total_inactive_file' : 'inactive_file'} (\\d+)$`, 'm').exec(stat)?.[1] ?? 0);
      return usage - inactive;
    } catch {
      return undefined;
    }
  }
}

/** True when something at ip:22 sends an SSH identification line. */
function sshBanner(ip: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: ip, port: 22 });
    let data = '';
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.on('data', (c) => {
      data += c.toString('latin1');
      if (data.includes('\n')) done(data.startsWith('SSH-'));
    });
    socket.on('error', () => done(false));
    socket.on('close', () => done(false));
  });
}
