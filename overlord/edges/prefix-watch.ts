import { BACKOFF, retry, type Backoff } from '../../core/retry.ts';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from './log.ts';
import { nextRevision, type KeyValue, type Store, type WatchEvent, type WatchHandle } from './store.ts';

/**
 * Follows every key under a prefix: lists them (page by page, Store.scan), then watches from the listing's next
 * revision (no polling); when the watch is lost (history compacted, etcd cancelled it, an answer too large) it
 * lists again and watches again, retrying with backoff while etcd is unreachable. The follower builds its view
 * from each listing aside and takes it as a whole at its end (a listing that fails half way changes nothing),
 * and applies the events in between. Discovery's records and the identity book are kept this way.
 */
export interface PrefixFollower {
  /** a listing starts: `page` sees each page once; `end` runs only when the whole listing was read */
  begin(): { page(kvs: readonly KeyValue[]): void; end(): void };
  /** events since the listing, in revision order */
  events(events: readonly WatchEvent[]): void;
}

export interface PrefixWatchOptions {
  readonly store: Store;
  readonly prefix: string;
  readonly clock: Clock;
  readonly log: Logger;
  /** what the log calls the keys ("machine records") */
  readonly what: string;
  /** wait between failed listings while etcd is unreachable (default BACKOFF.peer) */
  readonly backoff?: Backoff;
}

export class PrefixWatch {
  private watch: WatchHandle | null = null;
  private readonly stopping = new AbortController();
  private relisting: Promise<void> | null = null;
  /** how many times the prefix was (re)listed: 1 after start */
  lists = 0;

  constructor(
    private readonly options: PrefixWatchOptions,
    private readonly follower: PrefixFollower,
  ) {}

  /** Lists and starts watching. Throws E_ETCD when etcd cannot be read at all. */
  async start(): Promise<void> {
    await this.listAndWatch();
  }

  async stop(): Promise<void> {
    this.stopping.abort(new Error(`following ${this.options.what} stopped`));
    const w = this.watch;
    this.watch = null;
    await w?.cancel();
    await this.relisting?.catch(() => undefined);
  }

  private async listAndWatch(): Promise<void> {
    const { store, prefix } = this.options;
    const listing = this.follower.begin();
    const revision = await store.scan(prefix, (kvs) => listing.page(kvs));
    if (this.stopping.signal.aborted) return;
    this.lists++;
    listing.end();
    this.watch = await store.watch(prefix, nextRevision(revision), {
      onEvents: (events) => this.follower.events(events),
      onLost: (reason) => {
        this.watch = null;
        if (this.stopping.signal.aborted) return;
        this.options.log.warn({ event: 'discovery.watch-lost', prefix, reason }, `watch on ${this.options.what} lost: listing them again`);
        this.relisting = this.relist();
      },
    });
  }

  /** Lists again until it works (etcd may be down, whatever it answers), then watches from there. */
  private async relist(): Promise<void> {
    await retry(() => this.listAndWatch(), {
      policy: this.options.backoff ?? BACKOFF.peer,
      clock: this.options.clock,
      signal: this.stopping.signal,
      code: 'E_ETCD',
      retryIf: () => true,
      onRetry: (e, _failures, delay) =>
        this.options.log.warn({ event: 'discovery.relist-failed', prefix: this.options.prefix, code: e.code, reason: e.message, nextRetryMs: delay }, `listing ${this.options.what} failed`),
    }).catch(() => undefined);
  }
}
