import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { alive, cgroupDirs, cgroupPids, createCgroup, hierarchies, names, reapMachine, sh, sleep } from './host.ts';

/**
 * One machine: a systemd-nspawn container booted from the shared rootfs on its own overlay, network namespace and
 * cgroup (machines.ts boots them as a fleet). It runs a real systemd and sshd; `exec` enters all its namespaces.
 */
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
  /**
   * Nova's rebuild: powered off, a fresh disk from the image (a new machine id and host key, the same user_data),
   * the same address; booted and waited for. A lost server replaced in place.
   */
  rebuild(): Promise<void>;
  /** the console log (nspawn's stdout) */
  console(): string;
  /** bytes of memory the machine uses (its memory cgroup's usage, without inactive page cache); undefined when unknown */
  memory(): number | undefined;
}

export class MachineImpl implements Machine {
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
    this.createDisk();
    const { netns, veth } = this.n;
    sh(['ip', 'netns', 'add', netns]);
    sh(['ip', 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'host0', 'netns', netns]);
    sh(['ip', 'link', 'set', veth, 'master', this.bridge, 'up']);
    sh(['ip', '-n', netns, 'addr', 'add', `${this.ip}/24`, 'dev', 'host0']);
    sh(['ip', '-n', netns, 'link', 'set', 'host0', 'up']);
    sh(['ip', '-n', netns, 'link', 'set', 'lo', 'up']);
    sh(['ip', '-n', netns, 'route', 'add', 'default', 'via', this.gateway]);
    createCgroup(this.n.cgroup);
  }

  async rebuild(): Promise<void> {
    await this.stop('SIGKILL');
    sh(['umount', '-l', this.root]);
    // the disk is new: its upper layer and the state directories bound into it (containerd's) alike
    rmSync(path.join(this.n.dir, 'rw'), { recursive: true, force: true });
    rmSync(path.join(this.n.dir, 'state'), { recursive: true, force: true });
    this.createDisk();
    await this.boot();
  }

  /** the disk (an overlay on the shared rootfs) and the machine's identity, files, user and cloud-init seed */
  private createDisk(): void {
    const { dir } = this.n;
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
