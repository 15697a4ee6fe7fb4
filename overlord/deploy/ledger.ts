import { CorekubeError } from '../../core/errors.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { parseLedgerEntry, type LedgerEntry } from '../../contracts/ledger-entry.ts';
import type { Fence, Store } from '../edges/store.ts';

interface Cached {
  readonly entry: LedgerEntry | null;
  /** '0' = no key in etcd */
  readonly modRevision: string;
}

/**
 * The ledger in etcd, with the overlord's own copy: loaded once when the overlord starts (or takes the lead),
 * then kept current by its own writes — the leader is the only writer, so no watch is needed. A write
 * compares the mod revision of the copy; a conflict (someone else wrote) re-reads that entry and throws
 * E_ETCD_CONFLICT so the caller re-plans from what is really there.
 */
export class Ledger {
  private readonly cache = new Map<string, Cached>();
  /** the parsed entries, kept with the cache: entries() hands it out without copying */
  private readonly live = new Map<string, LedgerEntry>();

  constructor(
    private readonly store: Store,
    private readonly keys: ClusterKeys,
    /** the leader's fence: every write carries it */
    private readonly fence: () => Fence | undefined = () => undefined,
  ) {}

  async load(): Promise<void> {
    const listing = await this.store.list(this.keys.ledger);
    this.cache.clear();
    this.live.clear();
    for (const kv of listing.kvs) {
      const id = kv.key.slice(this.keys.ledger.length);
      this.remember(id, { entry: parseLedgerEntry(kv.value), modRevision: kv.modRevision });
    }
  }

  get(id: string): LedgerEntry | null {
    return this.cache.get(id)?.entry ?? null;
  }

  /**
   * Every parsed entry by machine id. A live view (it changes with the next write): read it synchronously,
   * do not keep it across an await.
   */
  entries(): ReadonlyMap<string, LedgerEntry> {
    return this.live;
  }

  async write(entry: LedgerEntry): Promise<void> {
    const expect = this.cache.get(entry.id)?.modRevision ?? '0';
    const fence = this.fence();
    try {
      const rev = await this.store.put(this.keys.ledgerOf(entry.id), JSON.stringify(entry), { expectModRevision: expect, ...(fence ? { fence } : {}) });
      this.remember(entry.id, { entry, modRevision: rev });
    } catch (err) {
      if (err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT') await this.reread(entry.id);
      throw err;
    }
  }

  /** Deletes a removed machine's entry (overlord/lifecycle/removals.ts); compared like a write, fenced. */
  async forget(id: string): Promise<void> {
    const cached = this.cache.get(id);
    if (cached && cached.modRevision === '0') return;
    const fence = this.fence();
    try {
      await this.store.delete(this.keys.ledgerOf(id), { ...(cached ? { expectModRevision: cached.modRevision } : {}), ...(fence ? { fence } : {}) });
      this.remember(id, { entry: null, modRevision: '0' });
    } catch (err) {
      if (err instanceof CorekubeError && err.code === 'E_ETCD_CONFLICT') await this.reread(id);
      throw err;
    }
  }

  async reread(id: string): Promise<LedgerEntry | null> {
    const kv = await this.store.get(this.keys.ledgerOf(id));
    const cached: Cached = kv ? { entry: parseLedgerEntry(kv.value), modRevision: kv.modRevision } : { entry: null, modRevision: '0' };
    this.remember(id, cached);
    return cached.entry;
  }

  private remember(id: string, cached: Cached): void {
    this.cache.set(id, cached);
    if (cached.entry) this.live.set(id, cached.entry);
    else this.live.delete(id);
  }
}
