import type { ClusterKeys } from '../../contracts/keys.ts';
import { nextPhase, parseRemovalRequest, type RemovalPhase, type RemovalRequest, type Tombstone } from '../../contracts/removal.ts';
import type { Clock } from '../../core/clock.ts';
import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import { BACKOFF, Backoffs, type Backoff } from '../../core/retry.ts';
import type { Ledger } from '../deploy/ledger.ts';
import { ANNOUNCE_UNIT } from '../discovery/admission.ts';
import type { HostRunner, HostTarget } from '../edges/host-runner.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import { stopUnits, type RemoteContext } from '../edges/remote-commands.ts';
import type { Fence, Store } from '../edges/store.ts';
import type { KubernetesApi } from '../kubernetes/api.ts';
import { DEFAULT_DRAIN, drainNode, type DrainOptions } from '../kubernetes/drain.ts';
import type { PodNetwork } from '../pod-network/pod-network.ts';
import type { MachineCredentials } from '../trust/machine-credentials.ts';
import type { EtcdMembers } from '../edges/etcd-members.ts';

/**
 * Removes machines from the cluster, one at a time, each through the phases of contracts/removal.ts — cordon, drain,
 * stop, delete the Node, release the pod subnet, delete the discovery user, delete its keys and leave a tombstone
 * — recording each phase done in its request (`removals/<id>`), so a killed overlord's successor goes on where it
 * stopped and nothing is done twice. Requests come from `corekube node remove` or from the stack's count
 * (lifecycle/stack-members.ts); the leader reads them when the stack is read, when the machines change and at its
 * start (`refresh`), and carries out a request of its own at once.
 *
 * While a machine is being removed, and for ever after, the reconciler does not see it (`excluded`: the view of
 * discovery/admitted-discovery.ts leaves it out) and admission refuses its join requests. A failed phase is
 * recorded in the request's `error` and tried again at the next look (a drain blocked by a budget, the API away).
 * A master's etcd member is removed before its units stop (the `member` phase, asked on another running master):
 * never the last member, never while the members left would lack a quorum of healthy ones — then the request waits,
 * its error saying why, and goes on by itself once it is safe (a stopped master back, another one removed).
 */
export interface RemovalsPorts {
  readonly store: Store;
  readonly keys: ClusterKeys;
  readonly hosts: HostRunner;
  readonly clock: Clock;
  readonly log: Logger;
  readonly ledger: Ledger;
  readonly fence?: () => Fence | undefined;
  /** the cluster's API (undefined: the overlord has no Kubernetes side; the Node phases are skipped) */
  readonly api: () => KubernetesApi | undefined;
  readonly podNetwork: () => PodNetwork | undefined;
  /** the masters' etcd membership (overlord/edges/etcd-members.ts) */
  readonly etcd?: Pick<EtcdMembers, 'remove'>;
  readonly credentials?: MachineCredentials;
  /** where to reach the machine if it still announces itself (then it is up: drained and stopped properly) */
  readonly announced: (id: string) => HostTarget | undefined;
  /** the view of the machines changed (one more machine excluded) */
  readonly onChange: () => void;
}

export interface RemovalsOptions {
  readonly remote: RemoteContext;
  /** a removal that failed is tried again after this backoff (default BACKOFF.requeue) */
  readonly backoff?: Backoff;
  readonly drain?: Omit<DrainOptions, 'machineGone'>;
}

interface Pending {
  readonly value: string;
  readonly modRevision: string;
}

export class Removals {
  /** ids being removed or removed: left out of the reconciler's view */
  private readonly excludedIds = new Set<string>();
  /** the requests as etcd had them at the last read */
  private pending = new Map<string, Pending>();
  /** bumped when excludedIds grows (the view's cache key) */
  version = 0;
  private dirty = true;
  private wake: (() => void) | undefined;
  private readonly reported = new Map<string, string>();

  constructor(
    private readonly ports: RemovalsPorts,
    private readonly options: RemovalsOptions,
  ) {}

  /** Reads the tombstones and the requests (before the reconciler's first look). */
  async load(): Promise<void> {
    const { store, keys } = this.ports;
    const removed = await store.list(keys.removed);
    for (const kv of removed.kvs) this.exclude(kv.key.slice(keys.removed.length));
    await this.refresh();
  }

  /**
   * Reads the requests again (one range read) and carries out what is new. Not a watch: the etcd client loses
   * track of its watchers when several are re-attached at once after a compaction (etcd3's "Failed to find
   * watcher"), and discovery's watches matter more. The term calls it when the stack is read (every 15 s), when
   * the machines change, and at its start; a request made in this process is carried out at once.
   */
  async refresh(): Promise<void> {
    const { store, keys } = this.ports;
    // scanned page by page: `corekube node remove` writes here too, not only the overlord
    const next = new Map<string, Pending>();
    await store.scan(keys.removals, (kvs) => {
      for (const kv of kvs) next.set(kv.key.slice(keys.removals.length), { value: kv.value, modRevision: kv.modRevision });
    });
    const changed = next.size !== this.pending.size || [...next].some(([id, p]) => this.pending.get(id)?.modRevision !== p.modRevision);
    this.pending = next;
    if (changed) this.changed();
  }

  excluded(id: string): boolean {
    return this.excludedIds.has(id);
  }

  /** Asks for a removal (create-if-absent: a request under way keeps its progress); true when it was new. */
  async request(request: Omit<RemovalRequest, 'schema' | 'done' | 'error' | 'requestedAt'>): Promise<boolean> {
    const { store, keys, clock, log } = this.ports;
    if (this.excludedIds.has(request.id)) return false;
    const value: RemovalRequest = { schema: 1, ...request, requestedAt: new Date(clock.now()).toISOString(), done: [], error: null };
    try {
      await store.put(keys.removalOf(request.id), JSON.stringify(value), { expectModRevision: '0', ...this.fenced() });
    } catch (err) {
      if (err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT') return false;
      throw err;
    }
    log.info({ event: 'removal.requested', machine: request.id, hostname: request.hostname, ip: request.ip, reason: request.reason }, `removing ${request.hostname} (${request.ip}) from the cluster: ${request.reason === 'stack' ? 'the stack no longer counts it' : 'asked by corekube node remove'}`);
    this.exclude(request.id);
    await this.refresh();
    return true;
  }

  /** Until the signal: every request carried out when one comes or changes; a failed one tried again after a backoff. */
  async run(signal: AbortSignal): Promise<void> {
    const waits = new Backoffs(this.options.backoff ?? BACKOFF.requeue);
    try {
      while (!signal.aborted) {
        if (!this.dirty) await this.idle(signal);
        this.dirty = false;
        if (signal.aborted) break;
        const failed = await this.pass(signal).catch((err: unknown) => {
          if (!signal.aborted && !(err instanceof CorekubeError && err.code === 'E_NOT_LEADER')) this.ports.log.warn({ event: 'removal.pass-failed', ...errorFields(err) }, 'carrying out the removals failed; tried again');
          return true;
        });
        if (!failed) {
          waits.reset();
          continue;
        }
        await this.ports.clock.sleep(waits.next(), signal).catch(() => undefined);
        this.dirty = true;
      }
    } finally {
      this.wake = undefined;
    }
  }

  /** One look at every request, each to its end or its first failure; true when one failed. */
  async pass(signal?: AbortSignal): Promise<boolean> {
    const { log, keys } = this.ports;
    let failed = false;
    for (const [id, p] of [...this.pending]) {
      signal?.throwIfAborted();
      const request = parseRemovalRequest(id, p.value);
      if (!request) {
        if (this.reported.get(id) !== 'malformed') log.warn({ event: 'removal.malformed', key: keys.removalOf(id) }, `${keys.removalOf(id)} is not a removal request: ignored (delete it, then run corekube node remove again)`);
        this.reported.set(id, 'malformed');
        continue;
      }
      this.exclude(id);
      if (!(await this.carryOut(request, p.modRevision, signal))) failed = true;
    }
    return failed;
  }

  private changed(): void {
    for (const id of this.pending.keys()) this.exclude(id);
    this.dirty = true;
    this.wake?.();
  }

  private idle(signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        this.wake = undefined;
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.wake = done;
      signal.addEventListener('abort', done, { once: true });
    });
  }

  /** true when the request was carried out to its end */
  private async carryOut(start: RemovalRequest, modRevision: string, signal?: AbortSignal): Promise<boolean> {
    const { store, keys, log, clock } = this.ports;
    let request = start;
    let revision = modRevision;
    const t0 = clock.now();
    for (let phase = nextPhase(request); phase !== undefined; phase = nextPhase(request)) {
      signal?.throwIfAborted();
      try {
        const detail = await this.runPhase(phase, request, signal);
        if (phase === 'records') {
          this.reported.delete(request.id);
          log.info({ event: 'machine.removed', machine: request.id, hostname: request.hostname, ip: request.ip, reason: request.reason, ms: clock.now() - t0 }, `${request.hostname} (${request.ip}) removed from the cluster`);
          return true;
        }
        request = { ...request, done: [...request.done, phase], error: null };
        revision = await store.put(keys.removalOf(request.id), JSON.stringify(request), { expectModRevision: revision, ...this.fenced() });
        this.pending.set(request.id, { value: JSON.stringify(request), modRevision: revision });
        log.info({ event: 'removal.phase', machine: request.id, hostname: request.hostname, phase, ...(detail ? { detail } : {}) }, `removing ${request.hostname}: ${phase} done${detail ? ` (${detail})` : ''}`);
      } catch (err) {
        if (signal?.aborted) throw err;
        const e = asCorekubeError(err);
        if (e.code === 'E_NOT_LEADER') throw e;
        const message = `${phase}: ${e.message}`;
        if (this.reported.get(request.id) !== message) {
          this.reported.set(request.id, message);
          log.warn({ event: 'removal.failed', machine: request.id, hostname: request.hostname, phase, ...errorFields(e) }, `removing ${request.hostname} stopped at ${phase}: ${e.message}; tried again`);
          const failed = JSON.stringify({ ...request, error: message });
          // the request's new revision kept: the next attempt writes its progress over this one, not over the last
          const written = await store.put(keys.removalOf(request.id), failed, { expectModRevision: revision, ...this.fenced() }).catch(() => undefined);
          if (written !== undefined) this.pending.set(request.id, { value: failed, modRevision: written });
        }
        return false;
      }
    }
    return true;
  }

  /** One phase; resolves with a short detail for the log. */
  private async runPhase(phase: RemovalPhase, request: RemovalRequest, signal?: AbortSignal): Promise<string | undefined> {
    const { hosts, credentials, clock } = this.ports;
    const podNetwork = this.ports.podNetwork();
    const api = this.ports.api();
    const node = request.hostname;
    switch (phase) {
      case 'cordon': {
        if (!api || !(await api.node(node))) return 'no Node';
        await api.patchNode(node, { spec: { unschedulable: true } });
        return undefined;
      }
      case 'drain': {
        if (!api || !(await api.node(node))) return 'no Node';
        const gone = this.ports.announced(request.id) === undefined;
        const r = await drainNode(api, clock, node, { ...DEFAULT_DRAIN, ...this.options.drain, machineGone: gone }, signal);
        return `${r.evicted.length} pods evicted, ${r.left.length} DaemonSet or static pods left${r.blocked.length ? `, ${r.blocked.length} left to the pod garbage collector (the machine is gone)` : ''}`;
      }
      case 'member': {
        if (request.role !== 'master') return 'no etcd member';
        if (!this.ports.etcd) throw new CorekubeError('E_INTERNAL', `removing master ${request.hostname}, but this overlord does not manage etcd members`, { hint: 'runOverlord gives Removals its etcd port: this is a bug' });
        return this.ports.etcd.remove(request.ip, signal);
      }
      case 'stop': {
        const target = this.ports.announced(request.id);
        if (!target) return 'the machine is gone';
        const entry = this.ports.ledger.get(request.id);
        const units = [...Object.keys(entry?.applied ?? {}), ANNOUNCE_UNIT];
        const r = await hosts.exec(target, stopUnits(this.options.remote, units), { timeoutMs: 120_000 });
        if (r.code !== 0) throw new CorekubeError('E_COMMAND_FAILED', `stopping the units of ${request.hostname} exited ${r.code}: ${r.stderr.trim().split('\n')[0] ?? ''}`, { retryable: true });
        return `${units.length} units stopped and disabled`;
      }
      case 'node':
        return api && (await api.deleteNode(node)) ? undefined : 'no Node';
      case 'subnet': {
        const released = await podNetwork?.release(request.id, this.ports.fence?.());
        return released ?? 'it held none';
      }
      case 'credentials':
        return (await credentials?.remove(request.id)) ? undefined : 'none';
      case 'records':
        await this.deleteRecords(request);
        return undefined;
    }
  }

  /** The tombstone first (so the id stays refused), then every key of the machine, the request last. */
  private async deleteRecords(request: RemovalRequest): Promise<void> {
    const { store, keys, clock, ledger } = this.ports;
    const tombstone: Tombstone = { schema: 1, id: request.id, hostname: request.hostname, ip: request.ip, role: request.role, reason: request.reason, removedAt: new Date(clock.now()).toISOString() };
    await store.put(keys.removedOf(request.id), JSON.stringify(tombstone), this.fenced());
    await ledger.forget(request.id);
    for (const key of [keys.admittedOf(request.id), keys.hostkeyOf(request.id), keys.joinOf(request.id), keys.machine(request.id), keys.removalOf(request.id)]) {
      await store.delete(key, this.fenced());
    }
  }

  private exclude(id: string): void {
    if (this.excludedIds.has(id)) return;
    this.excludedIds.add(id);
    this.version++;
    this.ports.onChange();
  }

  private fenced(): { fence?: Fence } {
    const fence = this.ports.fence?.();
    return fence ? { fence } : {};
  }
}
