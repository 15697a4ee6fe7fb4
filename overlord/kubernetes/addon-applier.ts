/**
 * Applies the cluster's add-ons (addons.ts) through the API once an API server is ready, and says when they
 * work. Level-based and idempotent: every term of a leading overlord applies each add-on once with
 * server-side apply (a changed or deleted object is put back; an unchanged one costs a no-op request), and
 * records what it applied at `<prefix>addons/<name>` (hash, time; fenced like the ledger), so `corekube status`
 * and a restarted overlord see it. A failure (the API not up yet, a refused object) is logged and tried again
 * with backoff until it works or the overlord stops.
 */
import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import { BACKOFF, retry, type Backoff } from '../../core/retry.ts';
import type { Clock } from '../../core/clock.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { Fence, Store } from '../edges/store.ts';
import type { KubernetesApi } from './api.ts';
import type { Addon } from './addons.ts';

export interface AddonRecord {
  readonly hash: string;
  readonly appliedAt: string;
}

export interface AddonApplierPorts {
  readonly api: KubernetesApi;
  readonly store: Store;
  readonly keys: ClusterKeys;
  readonly clock: Clock;
  readonly log: Logger;
  readonly fence?: () => Fence | undefined;
}

export interface AddonApplierOptions {
  /** between failed attempts (default BACKOFF.peer) */
  readonly backoff?: Backoff;
  readonly pollMs?: number;
}

export const addonKey = (keys: ClusterKeys, name: string) => `${keys.prefix}addons/${name}`;

export class AddonApplier {
  #applied: Promise<void> | undefined;
  /** the later add-ons, once `later` gave them */
  #later: readonly Addon[] = [];

  constructor(
    private readonly ports: AddonApplierPorts,
    private readonly addons: readonly Addon[],
    private readonly options: AddonApplierOptions = {},
    /** add-ons known only later (the cloud provider's, once its credentials are read): applied after the others */
    private readonly later?: (signal: AbortSignal) => Promise<readonly Addon[]>,
  ) {}

  /** Applies every add-on (once this term): resolves once they are all applied; rejects only when `signal` aborts. */
  applied(signal: AbortSignal): Promise<void> {
    this.#applied ??= (async () => {
      await this.#applyAll(this.addons, signal);
      if (!this.later) return;
      this.#later = await this.later(signal);
      await this.#applyAll(this.#later, signal);
    })();
    return this.#applied;
  }

  async #applyAll(addons: readonly Addon[], signal: AbortSignal): Promise<void> {
    const { api, log, clock } = this.ports;
    const notReady = new CorekubeError('E_KUBERNETES', 'the API server is not ready yet', { retryable: true });
    let waitingLogged = false;
    const applyAll = async () => {
      if (!(await api.ready(signal))) {
        if (!waitingLogged) log.info({ event: 'addons.waiting' }, 'add-ons wait for the API server to be ready');
        waitingLogged = true;
        throw notReady;
      }
      for (const addon of addons) {
        const t = clock.now();
        await api.apply(addon.objects);
        const record: AddonRecord = { hash: addon.hash, appliedAt: new Date(clock.now()).toISOString() };
        const fence = this.ports.fence?.();
        await this.ports.store.put(addonKey(this.ports.keys, addon.name), JSON.stringify(record), fence ? { fence } : {});
        log.info({ event: 'addons.applied', addon: addon.name, objects: addon.objects.length, hash: addon.hash.slice(0, 12), durationMs: clock.now() - t, server: api.server }, `add-on ${addon.name} applied (${addon.objects.length} objects)`);
      }
    };
    // a refused object is tried again too: the API server may be mid-upgrade, and nothing else would apply it
    await retry(applyAll, {
      policy: this.options.backoff ?? BACKOFF.peer,
      clock,
      signal,
      code: 'E_KUBERNETES',
      retryIf: () => true,
      onRetry: (e, _failures, delay) => {
        if (e !== notReady) log.warn({ event: 'addons.retry', nextRetryMs: delay, ...errorFields(e) }, 'applying the add-ons failed; retrying');
      },
    }).catch((err: unknown) => {
      throw signal.aborted ? signal.reason : err;
    });
  }

  /**
   * Waits until every add-on's Deployment has all its replicas available, at most `timeoutMs`; resolves with
   * what is still missing (empty when everything is available).
   */
  async available(signal: AbortSignal, timeoutMs: number): Promise<string[]> {
    const { api, clock } = this.ports;
    const deadline = clock.now() + timeoutMs;
    for (;;) {
      signal.throwIfAborted();
      const missing: string[] = [];
      for (const a of [...this.addons, ...this.#later]) {
        const d = await api.deployment(a.deployment.namespace, a.deployment.name).catch((err: unknown) => {
          const e = asCorekubeError(err, 'E_KUBERNETES');
          if (!e.retryable) throw e;
          return undefined;
        });
        if (!d || d.desired === 0 || d.available < d.desired) missing.push(`${a.name}: ${d ? `${d.available}/${d.desired} available` : 'not readable yet'}`);
      }
      if (missing.length === 0 || clock.now() >= deadline) return missing;
      await clock.sleep(this.options.pollMs ?? 2_000, signal);
    }
  }
}

/** Reads what the overlord recorded of the add-ons, by name. */
export async function readAddonRecords(store: Store, keys: ClusterKeys): Promise<Map<string, AddonRecord>> {
  const out = new Map<string, AddonRecord>();
  const prefix = `${keys.prefix}addons/`;
  for (const kv of (await store.list(prefix)).kvs) {
    try {
      const v = JSON.parse(kv.value) as Partial<AddonRecord>;
      if (typeof v.hash === 'string' && typeof v.appliedAt === 'string') out.set(kv.key.slice(prefix.length), { hash: v.hash, appliedAt: v.appliedAt });
    } catch {
      /* not ours: ignored */
    }
  }
  return out;
}
