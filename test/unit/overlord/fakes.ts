/**
 * In-memory stand-ins for the overlord's ports, for UNIT tests of its pure logic only (the edges are
 * tested against real etcd and real machines in test/integration/):
 * - FakeClock: time moves only when a test advances it; sleeps resolve in time order;
 * - MemoryStore: revisions, compare-and-swap, fences, prefix watches with history and compaction;
 * - FakeMachines: a HostRunner whose machines model what the executor relies on in systemd — unit files,
 *   daemon-reload, start jobs, ActiveState/SubState/Result/InvocationID, the journal, unreachable hosts — and,
 *   for machines `place`d at an address, what admission relies on: the machine at that address answers (not
 *   the id the overlord names), with its host key checked in the handshake, its machine id and join nonce.
 */
import { CorekubeError } from '../../../core/errors.ts';
import type { Clock } from '../../../core/clock.ts';
import type { ExecOptions, ExecResult, HostRunner, HostTarget } from '../../../overlord/edges/host-runner.ts';
import { parseMachineRecord, type MachineRecord } from '../../../contracts/machine-record.ts';
import type { Role } from '../../../contracts/roles.ts';
import type { RenderedUnits } from '../../../contracts/step.ts';
import type { Fence, KeyValue, Listing, PutEntry, PutOptions, Store, WatchEvent, WatchHandle, WatchListener } from '../../../overlord/edges/store.ts';

export const flush = async (rounds = 5) => {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
};

export class FakeClock implements Clock {
  private t = Date.parse('2026-01-01T00:00:00Z');
  private timers: { at: number; seq: number; resolve: () => void }[] = [];
  private seq = 0;

  now(): number {
    return this.t;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.timers = this.timers.filter((x) => x !== timer);
        reject(signal!.reason);
      };
      const timer = {
        at: this.t + Math.max(0, ms),
        seq: this.seq++,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      this.timers.push(timer);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  get pending(): number {
    return this.timers.length;
  }

  /** Fires the earliest timer (moving time to it); false when none is left. */
  async next(): Promise<boolean> {
    await flush();
    if (this.timers.length === 0) return false;
    this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
    const timer = this.timers.shift()!;
    this.t = Math.max(this.t, timer.at);
    timer.resolve();
    await flush();
    return true;
  }

  /** Moves time on, firing every timer due. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await flush();
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const first = this.timers[0];
      if (!first || first.at > end) break;
      await this.next();
    }
    this.t = end;
    await flush();
  }

  /** Runs timers until `done()` holds (or no timer is left, or `limit` timers fired). */
  async runUntil(done: () => boolean, limit = 10_000): Promise<void> {
    for (let i = 0; i < limit; i++) {
      await flush();
      if (done()) return;
      if (!(await this.next())) {
        await flush();
        if (done()) return;
        throw new Error('runUntil: nothing left to run and the condition does not hold');
      }
    }
    throw new Error(`runUntil: condition not met after ${limit} timers`);
  }
}

// ---------------------------------------------------------------------------------------------------------

interface Stored {
  value: string;
  modRevision: number;
  createRevision: number;
}

export class MemoryStore implements Store {
  revision = 1;
  compacted = 0;
  readonly data = new Map<string, Stored>();
  private history: { revision: number; event: WatchEvent }[] = [];
  private watchers = new Set<{ prefix: string; from: number; listener: WatchListener; dead: boolean }>();
  /** requests made, by kind */
  readonly requests = { get: 0, list: 0, put: 0, delete: 0, watch: 0 };
  /** set to make every request fail as if etcd were unreachable */
  down = false;

  private check(): void {
    if (this.down) throw new CorekubeError('E_ETCD', 'etcd did not answer (test: down)', { retryable: true });
  }

  private kv(key: string, s: Stored): KeyValue {
    return { key, value: s.value, modRevision: String(s.modRevision), createRevision: String(s.createRevision) };
  }

  async get(key: string): Promise<KeyValue | null> {
    this.requests.get++;
    this.check();
    const s = this.data.get(key);
    return s ? this.kv(key, s) : null;
  }

  /** the prefix of each range read, in order */
  readonly listed: string[] = [];

  async list(prefix: string): Promise<Listing> {
    this.requests.list++;
    this.listed.push(prefix);
    this.check();
    const kvs = [...this.data.entries()].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, s]) => this.kv(k, s));
    return { revision: String(this.revision), kvs };
  }

  /** keys a scan hands over at once (etcd-store pages by LIST_PAGE_KEYS) */
  pageSize = 3;

  async scan(prefix: string, onPage: (kvs: readonly KeyValue[]) => void): Promise<string> {
    const { revision, kvs } = await this.list(prefix);
    for (let i = 0; i < kvs.length; i += this.pageSize) onPage(kvs.slice(i, i + this.pageSize));
    return revision;
  }

  async watch(prefix: string, fromRevision: string, listener: WatchListener): Promise<WatchHandle> {
    this.requests.watch++;
    this.check();
    const w = { prefix, from: Number(fromRevision), listener, dead: false };
    this.watchers.add(w);
    if (w.from <= this.compacted) {
      this.lose(w, 'mvcc: required revision has been compacted');
    } else {
      const past = this.history.filter((h) => h.revision >= w.from && keyOf(h.event).startsWith(prefix)).map((h) => h.event);
      if (past.length > 0) queueMicrotask(() => !w.dead && listener.onEvents(past));
    }
    return {
      cancel: async () => {
        w.dead = true;
        this.watchers.delete(w);
      },
    };
  }

  async put(key: string, value: string, options: PutOptions = {}): Promise<string> {
    this.requests.put++;
    this.check();
    this.compare(key, options);
    const rev = ++this.revision;
    const old = this.data.get(key);
    const s = { value, modRevision: rev, createRevision: old?.createRevision ?? rev };
    this.data.set(key, s);
    this.emit(rev, { type: 'put', kv: this.kv(key, s) });
    return String(rev);
  }

  async delete(key: string, options: PutOptions = {}): Promise<void> {
    this.requests.delete++;
    this.check();
    this.compare(key, options);
    if (!this.data.has(key)) return;
    const rev = ++this.revision;
    this.data.delete(key);
    this.emit(rev, { type: 'delete', key, modRevision: String(rev) });
  }

  async putAll(entries: readonly PutEntry[], options: { readonly fence?: Fence } = {}): Promise<string> {
    this.requests.put++;
    this.check();
    entries.forEach((e, i) => this.compare(e.key, { ...(i === 0 && options.fence ? { fence: options.fence } : {}), ...(e.expectModRevision === undefined ? {} : { expectModRevision: e.expectModRevision }) }));
    const rev = ++this.revision;
    for (const e of entries) {
      const old = this.data.get(e.key);
      const s = { value: e.value, modRevision: rev, createRevision: old?.createRevision ?? rev };
      this.data.set(e.key, s);
      this.emit(rev, { type: 'put', kv: this.kv(e.key, s) });
    }
    return String(rev);
  }

  async close(): Promise<void> {
    for (const w of this.watchers) w.dead = true;
    this.watchers.clear();
  }

  /** Drops history up to the current revision and cancels every watch (as etcd does to a watch behind it). */
  compactAndLoseWatches(): void {
    this.compacted = this.revision;
    this.history = [];
    for (const w of [...this.watchers]) this.lose(w, 'mvcc: required revision has been compacted');
  }

  get watchCount(): number {
    return this.watchers.size;
  }

  private lose(w: { dead: boolean; listener: WatchListener }, reason: string): void {
    this.watchers.delete(w as never);
    queueMicrotask(() => {
      if (w.dead) return;
      w.dead = true;
      w.listener.onLost(reason);
    });
  }

  private compare(key: string, options: PutOptions): void {
    if (options.fence) {
      const f = this.data.get(options.fence.key);
      if (!f || String(f.createRevision) !== options.fence.createRevision) throw new CorekubeError('E_NOT_LEADER', `fence ${options.fence.key} not held`);
    }
    if (options.expectModRevision !== undefined) {
      const mod = String(this.data.get(key)?.modRevision ?? 0);
      if (mod !== options.expectModRevision) throw new CorekubeError('E_ETCD_CONFLICT', `${key} changed`, { retryable: true });
    }
  }

  private emit(revision: number, event: WatchEvent): void {
    this.history.push({ revision, event });
    for (const w of this.watchers) {
      if (!w.dead && keyOf(event).startsWith(w.prefix) && revision >= w.from) queueMicrotask(() => !w.dead && w.listener.onEvents([event]));
    }
  }
}

function keyOf(e: WatchEvent): string {
  return e.type === 'put' ? e.kv.key : e.key;
}

// ---------------------------------------------------------------------------------------------------------

/** How a unit behaves when started: reaches its state, fails, never settles; `failTimes` fails first N starts. */
export interface UnitBehaviour {
  readonly outcome?: 'ok' | 'fail' | 'hang' | 'crashloop';
  readonly failTimes?: number;
  /** oneshot without RemainAfterExit: ends inactive/dead with result success */
  readonly oneshotNoRemain?: boolean;
}

interface UnitSim {
  activeState: string;
  subState: string;
  result: string;
  invocation: number;
  /** shows left before a queued start settles */
  settling: number;
  starts: number;
}

/**
 * The masters' etcd as `etcdctl` on any master sees it (one per FakeMachines): members formed from the bootstrap
 * files the overlord writes (state new), added by `member add`, removed by `member remove`; `down` members answer
 * no health check.
 */
export class FakeEtcd {
  readonly members: { id: string; name: string; peerURLs: string[]; clientURLs: string[]; isLearner?: boolean }[] = [];
  readonly down = new Set<string>();
  readonly log: string[] = [];
  private next = 0xa1;

  command(a: readonly string[]): ExecResult {
    const ok = (v: unknown): ExecResult => ({ code: 0, stdout: JSON.stringify(v), stderr: '' });
    const words = a.filter((x, i) => (!x.startsWith('-') && a[i - 1] !== '-w') || x.startsWith('--peer-urls='));
    const [op, sub, arg] = words.slice(1);
    this.log.push(`${op} ${sub}${arg ? ` ${arg}` : ''}`);
    // as etcdctl prints it without --hex: ids as (64-bit) numbers, the learner flag only when set
    if (op === 'member' && sub === 'list') return ok({ members: this.members.map((m) => ({ ID: Number.parseInt(m.id, 16), name: m.name, peerURLs: m.peerURLs, clientURLs: m.clientURLs.length ? m.clientURLs : null, ...(m.isLearner ? { isLearner: true } : {}) })) });
    if (op === 'member' && sub === 'promote') {
      const m = this.members.find((x) => x.id === arg);
      if (!m || !m.isLearner || m.clientURLs.length === 0) return { code: 1, stdout: '', stderr: 'Error: etcdserver: can only promote a learner member which is in sync with leader' };
      m.isLearner = false;
      return ok({});
    }
    if (op === 'endpoint' && sub === 'health') {
      const started = this.members.filter((m) => m.clientURLs.length > 0);
      const health = started.map((m) => ({ endpoint: m.clientURLs[0], health: !this.down.has(m.name) }));
      return { code: health.every((h) => h.health) ? 0 : 1, stdout: JSON.stringify(health), stderr: '' };
    }
    if (op === 'member' && sub === 'add') {
      const url = words.find((w) => w.startsWith('--peer-urls='))!.slice('--peer-urls='.length);
      this.members.push({ id: (this.next++).toString(16), name: '', peerURLs: [url], clientURLs: [], isLearner: a.includes('--learner') });
      return ok({});
    }
    if (op === 'member' && sub === 'remove') {
      const i = this.members.findIndex((m) => m.id === arg);
      if (i < 0) return { code: 1, stdout: '', stderr: 'Error: etcdserver: member not found' };
      this.members.splice(i, 1);
      return ok({});
    }
    return { code: 1, stdout: '', stderr: `unknown etcdctl ${a.join(' ')}` };
  }

  /** A member's first start with its bootstrap file: formed members appear, an added one gets its name and runs. */
  started(env: string): void {
    const cluster = /ETCD_INITIAL_CLUSTER=(\S+)/.exec(env)?.[1] ?? '';
    for (const pair of cluster.split(',').filter(Boolean)) {
      const [name, url] = pair.split('=') as [string, string];
      const client = url.replace(':2380', ':2379');
      const m = this.members.find((x) => x.peerURLs.includes(url));
      if (!m) this.members.push({ id: (this.next++).toString(16), name, peerURLs: [url], clientURLs: [client] });
    }
  }

  /** The member at `ip` runs (its etcd started): named, with its client URL. */
  run(ip: string): void {
    const m = this.members.find((x) => x.peerURLs.includes(`https://${ip}:2380`));
    if (m && !m.name) Object.assign(m, { name: `etcd-${ip.replace(/\./g, '-')}`, clientURLs: [`https://${ip}:2379`] });
  }
}

export class FakeMachine {
  /** the cluster's etcd, as etcdctl on this machine reaches it (FakeMachines gives every machine the same one) */
  etcd: FakeEtcd | undefined;
  /** directories that exist (`test -d`) */
  readonly dirs = new Set<string>();
  /** its address, once placed (for the etcd member it runs) */
  ip: string | undefined;
  /** placed machines: their host key line and announce script's join nonce (absent = none on the machine) */
  hostKey: string | undefined;
  nonce: string | undefined;
  readonly files = new Map<string, { content: string; mode: string }>();
  readonly units = new Map<string, UnitSim>();
  readonly behaviour = new Map<string, UnitBehaviour>();
  reloads = 0;
  reachable = true;
  /** every argv run, for tests that need it (prefer asserting state) */
  readonly log: string[] = [];
  /** what `systemd` loaded at the last daemon-reload: units defined on disk */
  private loaded = new Set<string>();

  constructor(readonly id: string) {}

  unit(name: string): UnitSim {
    let u = this.units.get(name);
    if (!u) {
      u = { activeState: 'inactive', subState: 'dead', result: 'success', invocation: 0, settling: 0, starts: 0 };
      this.units.set(name, u);
    }
    return u;
  }

  starts(name: string): number {
    return this.units.get(name)?.starts ?? 0;
  }

  /** units `systemctl enable`d: systemd starts them at boot */
  readonly enabled = new Set<string>();

  /** A reboot: units stop, unit files stay; systemd starts the enabled ones again by itself (a start each). */
  reboot(): void {
    for (const [name, u] of this.units) {
      Object.assign(u, { activeState: 'inactive', subState: 'dead', result: 'success', invocation: 0, settling: 0 });
      if (this.enabled.has(name) && this.loaded.has(name)) {
        u.starts++;
        u.invocation++;
        this.settle(name, u);
      }
    }
  }

  exec(argv: readonly string[], stdin: string | undefined): ExecResult {
    const a = argv[0] === 'sudo' ? argv.slice(2) : [...argv];
    this.log.push(a.join(' '));
    const ok = (stdout = ''): ExecResult => ({ code: 0, stdout, stderr: '' });
    const fail = (code: number, stderr: string): ExecResult => ({ code, stdout: '', stderr });
    if (a[0] === 'sh' && a[1] === '-c' && a[3] === 'corekube-write-file') {
      this.files.set(a[4]!, { content: stdin ?? '', mode: a[5]! });
      if (a[4]!.endsWith('/etcd/bootstrap.env')) this.etcd?.started(stdin ?? '');
      return ok();
    }
    if (a[0] === 'test' && a[1] === '-d') return this.dirs.has(a[2]!) ? ok() : fail(1, '');
    if (a[0]?.endsWith('/etcdctl')) return this.etcd ? this.etcd.command(a) : fail(127, 'etcdctl: not found');
    if (a[0] === 'systemctl' && a[1] === 'daemon-reload') {
      this.reloads++;
      this.loaded = new Set([...this.files.keys()].filter((p) => p.startsWith('/etc/systemd/system/')).map((p) => p.slice('/etc/systemd/system/'.length)));
      return ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'reset-failed') {
      const u = this.unit(a[2]!);
      if (u.activeState === 'failed') Object.assign(u, { activeState: 'inactive', subState: 'dead', result: 'success' });
      return ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'start') {
      if (a.at(-1) === 'corekube-etcd.service') this.etcdRuns();
      // --no-block queues the job; without it, the start returns once the job is done: the unit settles now
      // (a unit that hangs stays activating — the fake's job ends anyway; the executor's timeout catches it)
      const noBlock = a[2] === '--no-block';
      const name = a[noBlock ? 3 : 2]!;
      if (!this.loaded.has(name)) return fail(5, `Failed to start ${name}: Unit ${name} not found.`);
      const u = this.unit(name);
      if (u.activeState === 'active') return ok();
      u.starts++;
      u.invocation++;
      Object.assign(u, { activeState: 'activating', subState: 'start', result: 'success', settling: 1 });
      if (noBlock) return ok();
      this.settle(name, u);
      return u.activeState === 'failed' ? fail(1, `Job for ${name} failed because the control process exited with error code.`) : ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'enable') {
      const name = a.at(-1)!;
      if (!this.loaded.has(name)) return fail(1, `Failed to enable unit: Unit file ${name} does not exist.`);
      this.enabled.add(name);
      return ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'restart') {
      // a new invocation whatever the state (a oneshot runs again), settling as a start does
      const name = a[2]!;
      const u = this.unit(name);
      u.starts++;
      u.invocation++;
      if (!this.loaded.has(name)) {
        Object.assign(u, { activeState: 'active', subState: 'running', result: 'success', settling: 0 });
        return ok();
      }
      Object.assign(u, { activeState: 'activating', subState: 'start', result: 'success', settling: 1 });
      this.settle(name, u);
      return u.activeState === 'failed' ? fail(1, `Job for ${name} failed because the control process exited with error code.`) : ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'disable' && a[2] === '--now') {
      for (const name of a.slice(3).filter((x) => !x.startsWith('--'))) {
        this.enabled.delete(name);
        Object.assign(this.unit(name), { activeState: 'inactive', subState: 'dead', result: 'success' });
      }
      return ok();
    }
    if (a[0] === 'systemctl' && a[1] === 'show') {
      const name = a[4]!;
      const u = this.unit(name);
      if (u.activeState === 'activating' && u.settling-- <= 0) this.settle(name, u);
      return ok(`ActiveState=${u.activeState}\nSubState=${u.subState}\nResult=${u.result}\nInvocationID=${u.invocation ? `inv${u.invocation}` : ''}\n`);
    }
    if (a[0] === 'journalctl') return ok(`${a[2]} starting\n${a[2]}: fatal: something went wrong`);
    if (a[0] === 'head' && a.includes('/etc/machine-id')) {
      return this.nonce === undefined ? { code: 1, stdout: `${this.id}\n`, stderr: `head: cannot open '${a.at(-1)}' for reading: No such file or directory` } : ok(`${this.id}\n${this.nonce}\n`);
    }
    if (a[0] === 'true') return ok();
    return fail(127, `unknown command ${a[0]}`);
  }

  /** its etcd member starts: an added member gets its name, and its data directory holds the member */
  private etcdRuns(): void {
    const env = this.files.get('/etc/corekube/etcd/bootstrap.env');
    if (env && this.ip) this.etcd?.run(this.ip);
    if (env) this.dirs.add('/var/lib/corekube/etcd/member');
  }

  private settle(name: string, u: UnitSim): void {
    const b = this.behaviour.get(name) ?? {};
    const failing = b.outcome === 'fail' || (b.failTimes !== undefined && u.starts <= b.failTimes);
    if (failing) Object.assign(u, { activeState: 'failed', subState: 'failed', result: 'exit-code' });
    else if (b.outcome === 'hang') u.settling = Number.POSITIVE_INFINITY;
    else if (b.outcome === 'crashloop') Object.assign(u, { activeState: 'activating', subState: 'auto-restart', result: 'exit-code', settling: Number.POSITIVE_INFINITY });
    else if (name.includes('download')) {
      Object.assign(u, b.oneshotNoRemain ? { activeState: 'inactive', subState: 'dead', result: 'success' } : { activeState: 'active', subState: 'exited', result: 'success' });
    } else Object.assign(u, { activeState: 'active', subState: 'running', result: 'success' });
  }
}

export class FakeMachines implements HostRunner {
  readonly machines = new Map<string, FakeMachine>();
  /** address → the machine there (placed machines only) */
  readonly addresses = new Map<string, FakeMachine>();
  /** commands running right now, and the most at once (per machine and overall) */
  running = 0;
  peak = 0;
  closed = 0;

  constructor(private readonly latency?: { clock: FakeClock; ms: number }) {}

  /** the masters' etcd, shared by every machine's etcdctl */
  readonly etcd = new FakeEtcd();

  machine(id: string): FakeMachine {
    let m = this.machines.get(id);
    if (!m) {
      m = new FakeMachine(id);
      m.etcd = this.etcd;
      this.machines.set(id, m);
    }
    return m;
  }

  /** A machine at an address, with its host key and join nonce: commands to that address reach it, whatever id they name. */
  place(id: string, at: { ip: string; hostKey: string; nonce?: string }): FakeMachine {
    const m = this.machine(id);
    m.hostKey = at.hostKey;
    m.nonce = at.nonce;
    this.addresses.set(at.ip, m);
    return m;
  }

  async exec(target: HostTarget, argv: readonly string[], options: ExecOptions = {}): Promise<ExecResult> {
    const m = this.addresses.get(target.ip) ?? (this.addresses.size > 0 ? undefined : this.machine(target.id));
    if (!m || !m.reachable) throw new CorekubeError('E_SSH', `cannot connect to ${target.ip}: connection refused`, { retryable: true });
    if (m.hostKey !== undefined && target.hostKey !== undefined && m.hostKey !== target.hostKey) {
      throw new CorekubeError('E_SSH_HOSTKEY', `machine ${target.id} (${target.ip}) presented another host key`);
    }
    m.ip ??= target.ip;
    this.running++;
    this.peak = Math.max(this.peak, this.running);
    try {
      if (this.latency) await this.latency.clock.sleep(this.latency.ms, options.signal);
      return m.exec(argv, options.stdin);
    } finally {
      this.running--;
    }
  }

  async close(): Promise<void> {
    this.closed++;
  }
}

// ---------------------------------------------------------------------------------------------------------

export function machineId(n: number): string {
  return n.toString(16).padStart(32, '0');
}

export function makeRecord(n: number, role: Role, extra: Partial<MachineRecord> = {}): MachineRecord {
  const id = machineId(n);
  const text = JSON.stringify({
    schema: 1,
    id,
    role,
    ip: `10.240.0.${32 + n}`,
    hostname: `${role}-${n}`,
    bootId: `b0070000${String(n).padStart(24, '0')}`,
    announcedAt: '2026-01-01T00:00:00Z',
    ...extra,
  });
  const parsed = parseMachineRecord(id, text);
  if (!parsed.ok) throw new Error(`test record ${n}: ${parsed.reason}`);
  return parsed.record;
}

/** A small stand-in for units/: a download oneshot then the role's services; the hash follows `version`. */
export function fakeUnits(version = 'v1') {
  return (record: MachineRecord): RenderedUnits => {
    const services = record.role === 'master' ? ['etcd.service', 'kube-apiserver.service'] : ['kubelet.service'];
    const units = ['corekube-download.service', ...services];
    return {
      files: units.map((u) => ({ path: `/etc/systemd/system/${u}`, content: `[Unit]\nDescription=${u} ${version} for ${record.hostname}\n`, mode: '0644' })),
      start: units.map((u) => ({ unit: u, until: u.includes('download') ? ('exited' as const) : ('active' as const) })),
      hash: `${version}-${record.role}-${record.ip}`,
    };
  };
}
