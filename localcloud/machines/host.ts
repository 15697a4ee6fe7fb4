import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * The host side of the machines: their names on net k, their cgroups in every hierarchy, the synchronous helpers
 * teardown and process exit use, what a killed run left behind (cleanupNet, netsInUse), and the host settings a
 * fleet needs while it is up.
 */
export const WORK_ROOT = '/tmp/corekube-machines';


export const names = (k: number, i: number) => ({
  netns: `ck${k}-${i}`,
  veth: `ck${k}v${i}`,
  cgroup: `ck${k}-${i}`,
  dir: path.join(WORK_ROOT, `ck${k}`, String(i)),
  ip: `10.200.${k}.${100 + i}`,
});
export const bridgeOf = (k: number) => `ckbr${k}`;

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
export function hierarchies(): Hierarchy[] {
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
export function cgroupDirs(cgroup: string): string[] {
  return hierarchies().map((h) => path.join(h.mount, h.base, cgroup));
}

/** Creates a machine's cgroup in every hierarchy (a v1 cpuset child starts empty: it gets its parent's cpus and mems). */
export function createCgroup(cgroup: string): void {
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

export function sh(argv: readonly string[], allowFail = false): string {
  const [cmd, ...args] = argv as [string, ...string[]];
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (!allowFail && (r.error || r.status !== 0)) {
    throw new Error(`${argv.join(' ')} failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? '').trim()}`);
  }
  return r.stdout ?? '';
}

export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every pid in a cgroup tree (all hierarchies). */
export function cgroupPids(cgroup: string): number[] {
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
export function removeCgroup(cgroup: string): void {
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

export function isMounted(dir: string): boolean {
  return readFileSync('/proc/self/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === dir);
}

/**
 * Kills what is left of machine i and removes its mounts, namespace, cgroups and work dir. Synchronous so
 * the exit handler can run it; safe to run on a machine that is half set up or already gone.
 */
export function reapMachine(k: number, i: number, keepDisk = false): void {
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
export function tracesOf(k: number): number[] {
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

export const INOTIFY: HostSetting = { path: '/proc/sys/fs/inotify/max_user_instances', value: '1024', needs: (v) => Number(v) < 1024 };
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

export function applyHostSettings(settings: readonly HostSetting[]): void {
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
export function restoreHostSettings(force = false): void {
  if (!force && --settingUsers > 0) return;
  if (!existsSync(SAVED_SETTINGS) || netsInUse().length > 0) return;
  for (const f of readdirSync(SAVED_SETTINGS)) {
    const [file, value] = readFileSync(path.join(SAVED_SETTINGS, f), 'utf8').trim().split('\n');
    if (file?.startsWith('/proc/sys/') && value !== undefined) writeFileSync(file, value);
    rmSync(path.join(SAVED_SETTINGS, f), { force: true });
  }
  rmSync(SAVED_SETTINGS, { recursive: true, force: true });
}
