/**
 * The local cloud's Octavia: a real load balancer (Debian's haproxy) on the host, configured from the Octavia
 * resources Heat created (localcloud/heat/providers/load-balancer.ts stand-ins). Only Octavia's API stands in:
 * the VIP is an address on the cloud's bridge, the listener a haproxy frontend (TCP, `allowed_cidrs` enforced),
 * the pool a backend of its members with the health monitor's probe (HTTPS GET /readyz here), and a change in
 * the stack — members added by a master_count update — reloads haproxy without dropping connections.
 *
 * Pure parts (the configuration from the resources, haproxy's text, its statistics) are exported for tests;
 * HostLoadBalancer is the edge: haproxy in master-worker mode, the VIP, the watch.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { HeatClient, StackRef, StackResource } from '../cloud/heat-client.ts';
import { CorekubeError } from '../core/errors.ts';
import { onExit } from './cleanup.ts';
import { until } from './until.ts';

export interface LbMember {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  readonly enabled: boolean;
}

export interface LbMonitor {
  readonly type: string;
  readonly method: string;
  readonly urlPath: string;
  readonly expectedCodes: string;
  readonly delaySec: number;
  readonly timeoutSec: number;
  readonly maxRetries: number;
}

export interface LbListener {
  readonly id: string;
  readonly port: number;
  readonly protocol: string;
  readonly allowedCidrs: readonly string[];
  readonly algorithm: string;
  readonly members: readonly LbMember[];
  readonly monitor: LbMonitor | undefined;
}

export interface LoadBalancerConfig {
  readonly id: string;
  readonly name: string;
  readonly vip: string;
  readonly listeners: readonly LbListener[];
}

type Given = Record<string, unknown>;
export interface OctaviaResource {
  readonly type: string;
  /** the id get_resource gives: the stand-in's nested stack id */
  readonly id: string;
  readonly given: Given;
}

const str = (v: unknown, fallback = '') => (typeof v === 'string' ? v : v === undefined || v === null ? fallback : String(v));
const num = (v: unknown, fallback: number) => (Number.isFinite(Number(v)) && v !== '' && v !== null ? Number(v) : fallback);
const bool = (v: unknown) => v !== false && v !== 'false' && v !== 'False';
const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : typeof v === 'string' && v !== '' ? v.split(',') : []);

/** The load balancers the Octavia resources describe, linked by the ids they give each other. Pure. */
export function loadBalancersOf(resources: readonly OctaviaResource[]): LoadBalancerConfig[] {
  const of = (type: string) => resources.filter((r) => r.type === `OS::Octavia::${type}`);
  return of('LoadBalancer').map((lb) => ({
    id: lb.id,
    name: str(lb.given.name, lb.id),
    vip: str(lb.given.vip_address),
    listeners: of('Listener')
      .filter((l) => str(l.given.loadbalancer) === lb.id && bool(l.given.admin_state_up))
      .map((l) => {
        const pool = of('Pool').find((p) => str(p.given.listener) === l.id);
        const monitor = pool && of('HealthMonitor').find((m) => str(m.given.pool) === pool.id && bool(m.given.admin_state_up));
        return {
          id: l.id,
          port: num(l.given.protocol_port, 0),
          protocol: str(l.given.protocol, 'TCP'),
          allowedCidrs: list(l.given.allowed_cidrs),
          algorithm: str(pool?.given.lb_algorithm, 'ROUND_ROBIN'),
          members: pool
            ? of('PoolMember')
                .filter((m) => str(m.given.pool) === pool.id)
                .map((m) => ({ address: str(m.given.address), port: num(m.given.protocol_port, 0), weight: num(m.given.weight, 1), enabled: bool(m.given.admin_state_up) }))
                .sort((a, b) => a.address.localeCompare(b.address, 'en', { numeric: true }))
            : [],
          monitor: monitor
            ? {
                type: str(monitor.given.type, 'TCP'),
                method: str(monitor.given.http_method, 'GET'),
                urlPath: str(monitor.given.url_path, '/'),
                expectedCodes: str(monitor.given.expected_codes, '200'),
                delaySec: num(monitor.given.delay, 5),
                timeoutSec: num(monitor.given.timeout, 5),
                maxRetries: num(monitor.given.max_retries, 3),
              }
            : undefined,
        };
      }),
  }));
}

const ALGORITHMS: Readonly<Record<string, string>> = { ROUND_ROBIN: 'roundrobin', LEAST_CONNECTIONS: 'leastconn', SOURCE_IP: 'source' };
/** haproxy's name of a member: the backend's server line and the statistics' `svname` */
export const memberName = (m: Pick<LbMember, 'address' | 'port'>) => `m-${m.address.replace(/\./g, '-')}-${m.port}`;

/**
 * haproxy's configuration for the load balancers (TCP listeners; anything else is refused by name). Pure.
 * The statistics socket gives each member's state and the seconds since its last session (`lastsess`).
 */
export function haproxyConfig(lbs: readonly LoadBalancerConfig[], options: { statsSocket: string }): string {
  const out = [
    '# corekube local cloud: the Octavia load balancers of the stack, served by haproxy. Generated; do not edit.',
    'global',
    `  stats socket ${options.statsSocket} mode 600 level admin`,
    '  log stdout format short local0 info',
    'defaults',
    '  mode tcp',
    '  log global',
    '  option tcplog',
    // as Octavia's amphorae: a connection a member refuses is retried, the last time on another member
    '  retries 3',
    '  option redispatch',
    '  timeout connect 5s',
    // the API's watches are long-lived: Octavia's default member/client timeouts are 50 s, kubelets reconnect
    '  timeout client 300s',
    '  timeout server 300s',
  ];
  for (const lb of lbs) {
    for (const l of lb.listeners) {
      if (l.protocol !== 'TCP') throw new CorekubeError('E_USAGE', `the local cloud's load balancer serves TCP listeners only, not ${l.protocol} (listener ${l.id})`, { hint: 'use protocol TCP (TLS passthrough)' });
      const name = `lb-${lb.vip.replace(/\./g, '-')}-${l.port}`;
      out.push(`frontend ${name}`, `  bind ${lb.vip}:${l.port}`);
      if (l.allowedCidrs.length > 0) out.push(`  tcp-request connection reject unless { src ${l.allowedCidrs.join(' ')} }`);
      out.push(`  default_backend ${name}`, `backend ${name}`, `  balance ${ALGORITHMS[l.algorithm] ?? 'roundrobin'}`);
      const m = l.monitor;
      let check = '';
      if (m) {
        if (m.type === 'HTTPS' || m.type === 'HTTP') {
          out.push('  option httpchk', `  http-check send meth ${m.method} uri ${m.urlPath}`, `  http-check expect status ${m.expectedCodes.split(/[,-]/)[0]}`);
        }
        check = ` check${m.type === 'HTTPS' ? ' check-ssl verify none' : ''} inter ${m.delaySec}s fall ${m.maxRetries} rise ${m.maxRetries}`;
        out.push(`  timeout check ${m.timeoutSec}s`);
      }
      for (const member of l.members) {
        out.push(`  server ${memberName(member)} ${member.address}:${member.port} weight ${member.weight}${check}${member.enabled ? '' : ' disabled'}`);
      }
    }
  }
  return `${out.join('\n')}\n`;
}

export interface MemberStat {
  readonly backend: string;
  readonly member: string;
  readonly address: string;
  /** UP, DOWN, MAINT, no check… as haproxy says */
  readonly status: string;
  /** seconds since the member's last session; undefined = never */
  readonly lastSessionSec: number | undefined;
  readonly sessions: number;
}

/** Members from haproxy's `show stat` CSV. Pure. */
export function parseStats(csv: string): MemberStat[] {
  const lines = csv.split('\n').filter((l) => l.trim() !== '');
  const header = (lines.shift() ?? '').replace(/^#\s*/, '').split(',');
  const col = (row: string[], name: string) => row[header.indexOf(name)] ?? '';
  return lines
    .map((l) => l.split(','))
    .filter((row) => !['FRONTEND', 'BACKEND'].includes(col(row, 'svname')))
    .map((row) => ({
      backend: col(row, 'pxname'),
      member: col(row, 'svname'),
      address: col(row, 'addr').split(':')[0] ?? '',
      status: col(row, 'status'),
      lastSessionSec: col(row, 'lastsess') === '' || col(row, 'lastsess') === '-1' ? undefined : Number(col(row, 'lastsess')),
      sessions: Number(col(row, 'stot') || 0),
    }));
}

/** The Octavia resources of a stack and its nested stacks, read through Heat (a resource complete is read once). */
export function stackOctavia(heat: HeatClient, stack: StackRef): () => Promise<OctaviaResource[]> {
  const cache = new Map<string, Given>();
  return () => octaviaResources(heat, stack, cache);
}

async function octaviaResources(heat: HeatClient, stack: StackRef, cache: Map<string, Given>): Promise<OctaviaResource[]> {
  const all = await heat.resources(stack, { nestedDepth: 5 });
  const octavia = all.filter((r): r is StackResource & { nested: StackRef } => r.type.startsWith('OS::Octavia::') && r.nested !== undefined && !r.status.startsWith('DELETE'));
  return Promise.all(
    octavia.map(async (r) => {
      let given = cache.get(r.nested.id);
      if (given === undefined || !r.status.endsWith('_COMPLETE')) {
        given = ((await heat.outputs(r.nested)).given ?? {}) as Given;
        if (r.status.endsWith('_COMPLETE')) cache.set(r.nested.id, given);
      }
      return { type: r.type, id: r.nested.id, given };
    }),
  );
}

export type LoadBalancerEvent =
  | { readonly kind: 'lb.configured'; readonly vips: readonly string[]; readonly members: number }
  | { readonly kind: 'lb.failed'; readonly reason: string };

export interface HostLoadBalancerOptions {
  /** the Octavia resources to serve: `stackOctavia(heat, stack)` in the local cloud */
  readonly resources: () => Promise<readonly OctaviaResource[]>;
  /** the cloud's bridge: the VIPs are added to it (none: the VIPs are local already, e.g. 127.0.0.0/8) */
  readonly bridge?: string;
  /** where haproxy's configuration, pid and statistics socket live */
  readonly dir: string;
  readonly onEvent?: (e: LoadBalancerEvent) => void;
  readonly pollMs?: number;
}

/** haproxy on the host, following the stack's Octavia resources until stopped. */
export class HostLoadBalancer {
  readonly #o: HostLoadBalancerOptions;
  readonly #vips = new Set<string>();
  #haproxy: ChildProcess | undefined;
  #config = '';
  #lbs: LoadBalancerConfig[] = [];
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #busy: Promise<void> = Promise.resolve();
  #stderr = '';
  #unregister: (() => void) | undefined;

  constructor(options: HostLoadBalancerOptions) {
    this.#o = options;
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
  }

  get statsSocket(): string {
    return path.join(this.#o.dir, 'haproxy.sock');
  }

  /** The load balancers as last configured. */
  get loadBalancers(): readonly LoadBalancerConfig[] {
    return this.#lbs;
  }

  /** Starts following the stack (a first look at once). */
  start(): void {
    const tick = () => {
      if (this.#stopped) return;
      this.#busy = this.sync()
        .catch((err: unknown) => this.#o.onEvent?.({ kind: 'lb.failed', reason: (err as Error).message }))
        .finally(() => {
          if (!this.#stopped) this.#timer = setTimeout(tick, this.#o.pollMs ?? 3000);
        });
    };
    tick();
  }

  /** One look at the stack: haproxy configured (started, or reloaded when its configuration changed). */
  async sync(): Promise<void> {
    const lbs = loadBalancersOf(await this.#o.resources()).filter((lb) => lb.vip !== '');
    if (lbs.length === 0) return;
    const config = haproxyConfig(lbs, { statsSocket: this.statsSocket });
    if (config === this.#config && this.#haproxy?.exitCode === null) return;
    for (const lb of lbs) this.#addVip(lb.vip);
    const file = path.join(this.#o.dir, 'haproxy.cfg');
    writeFileSync(file, config, { mode: 0o600 });
    execFileSync('haproxy', ['-c', '-q', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    if (this.#haproxy === undefined || this.#haproxy.exitCode !== null) {
      // master-worker: SIGUSR2 reloads the configuration with new workers, the old ones finish their connections
      this.#haproxy = spawn('haproxy', ['-W', '-db', '-f', file, '-p', path.join(this.#o.dir, 'haproxy.pid')], { stdio: ['ignore', 'ignore', 'pipe'] });
      const child = this.#haproxy;
      this.#unregister?.();
      this.#unregister = onExit(`haproxy in ${this.#o.dir}`, () => {
        if (child.exitCode === null) child.kill('SIGKILL');
        this.#removeVips();
      });
      this.#haproxy.stderr?.on('data', (d: Buffer) => (this.#stderr = `${this.#stderr}${d.toString('utf8')}`.slice(-8000)));
      await until('haproxy to open its statistics socket', 10_000, async () => ((await tryConnect(this.statsSocket)) ? true : undefined), () => this.#stderr.slice(-2000), 100);
    } else {
      this.#haproxy.kill('SIGUSR2');
    }
    this.#config = config;
    this.#lbs = lbs;
    this.#o.onEvent?.({ kind: 'lb.configured', vips: lbs.map((lb) => lb.vip), members: lbs.flatMap((lb) => lb.listeners.flatMap((l) => l.members)).length });
  }

  /** Every member's state and last session, from haproxy's statistics. */
  async stats(): Promise<MemberStat[]> {
    return parseStats(await socketCommand(this.statsSocket, 'show stat'));
  }

  /** The member the load balancer used last (the smallest `lastsess`), or undefined before any session. */
  async lastUsedMember(): Promise<MemberStat | undefined> {
    const used = (await this.stats()).filter((s) => s.lastSessionSec !== undefined);
    return used.sort((a, b) => a.lastSessionSec! - b.lastSessionSec!)[0];
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#busy.catch(() => undefined);
    const p = this.#haproxy;
    if (p && p.exitCode === null) {
      const exited = new Promise((resolve) => p.once('exit', resolve));
      p.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (p.exitCode === null) p.kill('SIGKILL');
    }
    this.#removeVips();
    this.#unregister?.();
  }

  #removeVips(): void {
    for (const vip of this.#vips) {
      try {
        execFileSync('ip', ['addr', 'del', `${vip}/32`, 'dev', this.#o.bridge!], { stdio: 'ignore' });
      } catch {
        /* the bridge may be gone already */
      }
    }
    this.#vips.clear();
  }

  #addVip(vip: string): void {
    if (this.#vips.has(vip) || this.#o.bridge === undefined) return;
    const shown = execFileSync('ip', ['-o', '-4', 'addr', 'show', 'dev', this.#o.bridge], { encoding: 'utf8' });
    if (!shown.includes(` ${vip}/`)) execFileSync('ip', ['addr', 'add', `${vip}/32`, 'dev', this.#o.bridge]);
    this.#vips.add(vip);
  }
}

/** Why the load balancer cannot run here, or undefined. */
export function haproxyMissing(): string | undefined {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'haproxy is not installed (Debian package haproxy; scripts/setup installs it)';
  }
}

/** Kills the haproxy whose pid `dir` holds, if it runs (a cleanup after a killed demo); true if it did. */
export function killHaproxyNow(dir: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(path.join(dir, 'haproxy.pid'), 'utf8').trim());
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 1) return false;
  try {
    // only a haproxy whose command line names this directory: a pid may have been reused
    if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) return false;
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

function socketCommand(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let out = '';
    c.setTimeout(5000, () => c.destroy(new Error(`haproxy's statistics socket ${socket} did not answer`)));
    c.on('connect', () => c.end(`${command}\n`));
    c.on('data', (d) => (out += d.toString('utf8')));
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
}

const tryConnect = (socket: string) => socketCommand(socket, 'show info').then(() => true, () => false);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

