import { asCorekubeError } from '../core/errors.ts';
import type { Clock } from './clock.ts';
import type { ClusterKeys } from './keys.ts';
import type { Logger } from './log.ts';
import { parseMachineRecord, type MachineRecord } from './machine-record.ts';
import { nextRevision, type KeyValue, type Store, type WatchEvent, type WatchHandle } from './store.ts';

/**
 * Discovery: the overlord's current view of the machines announced under `<prefix>/machines/`. It lists
 * them, then watches from the listing's next revision (no polling); when the watch is lost (history
 * compacted, etcd cancelled it) it lists again and watches again. Its view is a cache kept current by
 * the watch; every change only calls `onChange` — the reconciler then reads the whole view and plans
 * (level-based: a change is a reason to look, never a delta to apply).
 *
 * A record that does not parse (malformed JSON, unknown role, …) is kept aside in `invalid`, reported once
 * per distinct reason (a warning and `corekube status`), and never planned.
 *
 * The same watch serves the join requests under `<prefix>/join/` (same record format, `source: JOIN_REQUESTS`),
 * which overlord/admission.ts reads; only the prefix and the log events differ.
 */
export interface RecordSource {
  /** the key prefix under ClusterKeys */
  readonly prefix: 'machines' | 'join';
  /** log events: `<event>.discovered|rebooted|gone|invalid`, and what the message calls one */
  readonly event: string;
  readonly noun: string;
}

export const MACHINE_RECORDS: RecordSource = Object.freeze({ prefix: 'machines', event: 'machine', noun: 'machine record' });
export const JOIN_REQUESTS: RecordSource = Object.freeze({ prefix: 'join', event: 'join', noun: 'join request' });

export interface InvalidRecord {
  readonly id: string;
  readonly reason: string;
  /** role and ip as given, when they are strings (for status) */
  readonly role: string | null;
  readonly ip: string | null;
}

export interface DiscoverySnapshot {
  readonly records: ReadonlyMap<string, MachineRecord>;
  readonly invalid: ReadonlyMap<string, InvalidRecord>;
}

export interface DiscoveryOptions {
  readonly store: Store;
  readonly keys: ClusterKeys;
  readonly log: Logger;
  readonly clock: Clock;
  readonly onChange: () => void;
  /** default MACHINE_RECORDS */
  readonly source?: RecordSource;
  /** wait between failed re-lists while etcd is unreachable */
  readonly relistBackoffMs?: { readonly initial: number; readonly max: number };
}

export class Discovery {
  private records = new Map<string, MachineRecord>();
  private invalid = new Map<string, InvalidRecord>();
  private readonly reported = new Set<string>();
  /** the view handed out until the next change (a thousand machines are not copied for every read) */
  private view: DiscoverySnapshot | null = null;
  private watch: WatchHandle | null = null;
  private readonly stopping = new AbortController();
  private relisting: Promise<void> | null = null;
  /** how many times the view was (re)listed: 1 after start; tests and metrics read it */
  lists = 0;

  private readonly source: RecordSource;
  private readonly prefix: string;

  constructor(private readonly options: DiscoveryOptions) {
    this.source = options.source ?? MACHINE_RECORDS;
    this.prefix = options.keys[this.source.prefix];
  }

  /** Lists and starts watching. Throws E_ETCD when etcd cannot be read at all. */
  async start(): Promise<void> {
    await this.listAndWatch();
  }

  /** The current view: a copy taken at the first read after a change, then the same object until the next. */
  snapshot(): DiscoverySnapshot {
    this.view ??= Object.freeze({ records: new Map(this.records), invalid: new Map(this.invalid) });
    return this.view;
  }

  async stop(): Promise<void> {
    this.stopping.abort(new Error('discovery stopped'));
    const w = this.watch;
    this.watch = null;
    await w?.cancel();
    await this.relisting?.catch(() => undefined);
  }

  private async listAndWatch(): Promise<void> {
    const { store } = this.options;
    const { event, noun } = this.source;
    const listing = await store.list(this.prefix);
    if (this.stopping.signal.aborted) return;
    this.lists++;
    const before = this.records;
    this.records = new Map();
    this.invalid = new Map();
    this.view = null;
    for (const kv of listing.kvs) this.apply({ type: 'put', kv }, before);
    for (const [id, r] of before) if (!this.records.has(id)) this.options.log.info({ event: `${event}.gone`, machine: id, role: r.role, hostname: r.hostname }, `${noun} gone`);
    this.watch = await store.watch(this.prefix, nextRevision(listing.revision), {
      onEvents: (events) => {
        for (const ev of events) this.apply(ev, this.records);
        this.options.onChange();
      },
      onLost: (reason) => {
        this.watch = null;
        if (this.stopping.signal.aborted) return;
        this.options.log.warn({ event: 'discovery.watch-lost', prefix: this.prefix, reason }, `watch on ${noun}s lost: listing them again`);
        this.relisting = this.relist();
      },
    });
    this.options.onChange();
  }

  /** Lists again until it works (etcd may be down), then watches from there. */
  private async relist(): Promise<void> {
    const backoff = this.options.relistBackoffMs ?? { initial: 500, max: 15_000 };
    let delay = backoff.initial;
    while (!this.stopping.signal.aborted) {
      try {
        await this.listAndWatch();
        return;
      } catch (err) {
        const e = asCorekubeError(err, 'E_ETCD');
        this.options.log.warn({ event: 'discovery.relist-failed', prefix: this.prefix, code: e.code, reason: e.message, nextRetryMs: delay }, `listing ${this.source.noun}s failed`);
        try {
          await this.options.clock.sleep(delay, this.stopping.signal);
        } catch {
          return;
        }
        delay = Math.min(backoff.max, delay * 2);
      }
    }
  }

  private apply(ev: WatchEvent, known: ReadonlyMap<string, MachineRecord>): void {
    const { log } = this.options;
    const { event, noun } = this.source;
    const key = ev.type === 'put' ? ev.kv.key : ev.key;
    const id = key.slice(this.prefix.length);
    this.view = null;
    if (ev.type === 'delete') {
      const had = this.records.get(id);
      this.records.delete(id);
      this.invalid.delete(id);
      if (had) log.info({ event: `${event}.gone`, machine: id, role: had.role, hostname: had.hostname }, `${noun} gone (lease expired or deleted)`);
      return;
    }
    const parsed = parseMachineRecord(id, ev.kv.value);
    if (parsed.ok) {
      this.invalid.delete(id);
      const old = known.get(id);
      this.records.set(id, parsed.record);
      if (!old) {
        log.info({ event: `${event}.discovered`, machine: id, role: parsed.record.role, ip: parsed.record.ip, hostname: parsed.record.hostname }, `${noun} discovered`);
      } else if (old.bootId !== parsed.record.bootId) {
        log.info({ event: `${event}.rebooted`, machine: id, role: parsed.record.role, hostname: parsed.record.hostname }, `${noun}: the machine announced a new boot`);
      }
      return;
    }
    this.records.delete(id);
    const invalid = { id, reason: `${this.source.prefix === 'machines' ? 'record' : noun} ${parsed.reason}`, ...loose(ev.kv) };
    this.invalid.set(id, invalid);
    const once = `${id}\0${invalid.reason}`;
    if (!this.reported.has(once)) {
      this.reported.add(once);
      log.warn({ event: `${event}.invalid`, machine: id, reason: invalid.reason }, `${noun} ${id} skipped: ${invalid.reason}`);
    }
  }
}

/** role and ip of a record that failed to parse, if they are at least strings (never the whole value). */
function loose(kv: KeyValue): { role: string | null; ip: string | null } {
  try {
    const v = JSON.parse(kv.value) as Record<string, unknown>;
    const short = (x: unknown) => (typeof x === 'string' && x.length <= 64 ? x : null);
    return { role: short(v?.role), ip: short(v?.ip) };
  } catch {
    return { role: null, ip: null };
  }
}
