/**
 * The overlord's narrow view of etcd: the only operations the core needs, in our own types. The etcd3
 * adapter (etcd-store.ts) implements it and converts every library error, once, into CorekubeError
 * E_ETCD (retryable: etcd unreachable, timed out) or E_ETCD_CONFLICT (a compare failed: re-read and re-plan)
 * or E_NOT_LEADER (the fence failed: this overlord no longer leads and must stop writing).
 *
 * Revisions are decimal strings (etcd's int64 does not fit a JS number in general).
 */
export interface KeyValue {
  readonly key: string;
  readonly value: string;
  /** revision of the last write to this key */
  readonly modRevision: string;
  /** revision that created this key (changes when the key is deleted and created again) */
  readonly createRevision: string;
}

export interface Listing {
  /** the store's revision the listing was read at; watch from `revision + 1` to miss nothing */
  readonly revision: string;
  readonly kvs: readonly KeyValue[];
}

export type WatchEvent =
  | { readonly type: 'put'; readonly kv: KeyValue }
  | { readonly type: 'delete'; readonly key: string; readonly modRevision: string };

export interface WatchListener {
  /** a batch of events in revision order */
  onEvents(events: readonly WatchEvent[]): void;
  /**
   * The watch ended and will not deliver more events: history was compacted past the revision asked for,
   * etcd cancelled it, an answer was larger than the client accepts, or `onEvents` threw. The consumer re-lists
   * and watches again from the new listing's revision.
   */
  onLost(reason: string): void;
}

export interface WatchHandle {
  cancel(): Promise<void>;
}

/**
 * Leader fencing: a write succeeds only while `key` still exists with this create revision —
 * the election key of the leader that holds it. A failed fence throws E_NOT_LEADER.
 */
export interface Fence {
  readonly key: string;
  readonly createRevision: string;
}

export interface PutOptions {
  /**
   * Compare-and-swap on the key's mod revision as read: a string revision = the key must still be at it;
   * `'0'` = the key must not exist; absent = unconditional. A failed compare throws E_ETCD_CONFLICT.
   */
  readonly expectModRevision?: string;
  readonly fence?: Fence;
}

export interface PutEntry {
  readonly key: string;
  readonly value: string;
  readonly expectModRevision?: string;
}

export interface Store {
  get(key: string): Promise<KeyValue | null>;
  /** Every key under the prefix, read at one revision (a scan, collected): for prefixes only the overlord writes. */
  list(prefix: string): Promise<Listing>;
  /**
   * Every key under the prefix, read at one revision a page at a time (contracts/discovery-limits.ts LIST_PAGE_KEYS
   * keys, so no answer is larger than the client accepts): `onPage` sees each page once, in key order, and keeps
   * what it needs of it. For prefixes others write (discovery): what they wrote is never all held at once.
   * Resolves with the revision read at (watch from `revision + 1`).
   */
  scan(prefix: string, onPage: (kvs: readonly KeyValue[]) => void): Promise<string>;
  /** Watches every key under the prefix from `fromRevision` (inclusive). */
  watch(prefix: string, fromRevision: string, listener: WatchListener): Promise<WatchHandle>;
  /** Returns the key's new mod revision. */
  put(key: string, value: string, options?: PutOptions): Promise<string>;
  delete(key: string, options?: PutOptions): Promise<void>;
  /**
   * Writes several keys in one transaction: all or none. Each entry may carry its own expected mod
   * revision (`'0'` = must not exist); one failed compare throws E_ETCD_CONFLICT and nothing is written.
   * Returns the revision of the write.
   */
  putAll(entries: readonly PutEntry[], options?: { readonly fence?: Fence }): Promise<string>;
  close(): Promise<void>;
}

/** `list` on top of `scan`: every page collected. */
export async function collect(store: Pick<Store, 'scan'>, prefix: string): Promise<Listing> {
  const kvs: KeyValue[] = [];
  const revision = await store.scan(prefix, (page) => {
    kvs.push(...page);
  });
  return { revision, kvs };
}

/** `revision + 1` on decimal strings (revisions may exceed 2^53). */
export function nextRevision(revision: string): string {
  return (BigInt(revision) + 1n).toString();
}
