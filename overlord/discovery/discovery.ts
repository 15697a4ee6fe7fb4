import type { Clock } from '../../core/clock.ts';
import type { Backoff } from '../../core/retry.ts';
import { MAX_INVALID_REMEMBERED } from '../../contracts/discovery-limits.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import { parseMachineRecord, type MachineRecord } from '../../contracts/machine-record.ts';
import { PrefixWatch } from '../edges/prefix-watch.ts';
import type { Store, WatchEvent } from '../edges/store.ts';
import { BoundedMemo, keyRef } from '../../core/untrusted.ts';

/**
 * Discovery: the overlord's current view of the machines announced under `<prefix>/machines/`, kept current by
 * following the prefix (overlord/edges/prefix-watch.ts: listed page by page, then watched; listed again when the watch
 * is lost). Every change only calls `onChange` — the reconciler then reads the whole view and plans
 * (level-based: a change is a reason to look, never a delta to apply).
 *
 * What is under the prefix is untrusted: a record that does not parse (too large, too deep,
 * malformed, a bad field — contracts/machine-record.ts) is kept aside in `invalid` — under a short reference to
 * its key, with a short reason naming the field — reported ONCE per key and problem (one warning line, and
 * `corekube status`), and never planned. What it remembers is bounded: at most MAX_INVALID_REMEMBERED bad keys
 * and `source.maxRecords` records (more are counted in `overflow`, not kept). Nothing a key holds can make
 * handling it throw out of a watch or list callback: a failure there costs one log line and that key.
 *
 * The same watch serves the join requests under `<prefix>/join/` (same record format, `source: JOIN_REQUESTS`),
 * which overlord/discovery/admission.ts reads; only the prefix, the log events and the caps differ.
 */
export interface RecordSource {
  /** the key prefix under ClusterKeys */
  readonly prefix: 'machines' | 'join';
  /** log events: `<event>.discovered|rebooted|gone|invalid`, and what the message calls one */
  readonly event: string;
  readonly noun: string;
  /** records kept at most; keys beyond it are counted in `overflow` and skipped until others go */
  readonly maxRecords: number;
}

/** machines/: one key an admitted machine (only its own etcd user writes it) — the cap only bounds a mistake */
export const MACHINE_RECORDS: RecordSource = Object.freeze({ prefix: 'machines', event: 'machine', noun: 'machine record', maxRecords: 100_000 });
/** join/: anyone holding the join token writes there; four times the largest scale-up a spec describes */
export const JOIN_REQUESTS: RecordSource = Object.freeze({ prefix: 'join', event: 'join', noun: 'join request', maxRecords: 2_048 });

export interface InvalidRecord {
  /** the key's id, or a digest of it (core/untrusted.ts keyRef) */
  readonly id: string;
  /** the first bad field */
  readonly field: string;
  readonly reason: string;
  /** role and ip as given, when they are short strings (for status), escaped */
  readonly role: string | null;
  readonly ip: string | null;
}

export interface DiscoverySnapshot {
  readonly records: ReadonlyMap<string, MachineRecord>;
  readonly invalid: ReadonlyMap<string, InvalidRecord>;
  /** about how many keys are neither: beyond the caps, counted and not kept */
  readonly overflow: number;
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
  readonly relistBackoff?: Backoff;
}

interface View {
  readonly records: Map<string, MachineRecord>;
  readonly invalid: Map<string, InvalidRecord>;
  overflow: number;
}

const emptyView = (): View => ({ records: new Map(), invalid: new Map(), overflow: 0 });

export class Discovery {
  private state: View = emptyView();
  /** what was reported per bad key (its problem), so a key rewritten with the same problem costs no new line */
  private readonly reported = new BoundedMemo<string>(MAX_INVALID_REMEMBERED);
  /** the view handed out until the next change (a thousand machines are not copied for every read) */
  private view: DiscoverySnapshot | null = null;
  /** the overflow count last logged (powers of ten) */
  private overflowLogged = 0;
  private readonly watch: PrefixWatch;

  private readonly source: RecordSource;
  private readonly prefix: string;

  constructor(private readonly options: DiscoveryOptions) {
    this.source = options.source ?? MACHINE_RECORDS;
    this.prefix = options.keys[this.source.prefix];
    this.watch = new PrefixWatch(
      { store: options.store, prefix: this.prefix, clock: options.clock, log: options.log, what: `${this.source.noun}s`, ...(options.relistBackoff ? { backoff: options.relistBackoff } : {}) },
      {
        begin: () => {
          // built aside and swapped in whole: a listing that fails half way leaves the view as it was
          const next = emptyView();
          const before = this.state.records;
          return {
            page: (kvs) => {
              for (const kv of kvs) this.safely(kv.key, () => this.apply({ type: 'put', kv }, next, before));
            },
            end: () => {
              this.state = next;
              this.view = null;
              for (const [id, r] of before) if (!next.records.has(id)) this.options.log.info({ event: `${this.source.event}.gone`, machine: id, role: r.role, hostname: r.hostname }, `${this.source.noun} gone`);
              this.changed();
            },
          };
        },
        events: (events) => {
          for (const ev of events) this.safely(ev.type === 'put' ? ev.kv.key : ev.key, () => this.apply(ev, this.state, this.state.records));
          this.changed();
        },
      },
    );
  }

  /** how many times the view was (re)listed: 1 after start; tests and metrics read it */
  get lists(): number {
    return this.watch.lists;
  }

  /** Lists and starts watching. Throws E_ETCD when etcd cannot be read at all. */
  async start(): Promise<void> {
    await this.watch.start();
  }

  /** The current view: a copy taken at the first read after a change, then the same object until the next. */
  snapshot(): DiscoverySnapshot {
    this.view ??= Object.freeze({ records: new Map(this.state.records), invalid: new Map(this.state.invalid), overflow: this.state.overflow });
    return this.view;
  }

  async stop(): Promise<void> {
    await this.watch.stop();
  }

  /** Runs one key's handling; whatever it throws costs that key one log line, never the watch or the process. */
  private safely(key: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.options.log.error({ event: 'discovery.key-failed', prefix: this.prefix, key: keyRef(key.slice(this.prefix.length)), ...errorFields(err) }, `handling a ${this.source.noun} failed: it is skipped`);
    }
  }

  private changed(): void {
    try {
      this.options.onChange();
    } catch (err) {
      this.options.log.error({ event: 'discovery.change-failed', prefix: this.prefix, ...errorFields(err) }, `reacting to a change of the ${this.source.noun}s failed`);
    }
  }

  private apply(ev: WatchEvent, into: View, known: ReadonlyMap<string, MachineRecord>): void {
    const { log } = this.options;
    const { event, noun } = this.source;
    const suffix = (ev.type === 'put' ? ev.kv.key : ev.key).slice(this.prefix.length);
    const ref = keyRef(suffix);
    if (into === this.state) this.view = null;
    if (ev.type === 'delete') {
      const had = into.records.get(suffix);
      const wasInvalid = into.invalid.delete(ref);
      into.records.delete(suffix);
      this.reported.delete(ref);
      if (!had && !wasInvalid && into.overflow > 0) into.overflow--;
      if (had) log.info({ event: `${event}.gone`, machine: suffix, role: had.role, hostname: had.hostname }, `${noun} gone (lease expired or deleted)`);
      return;
    }
    const parsed = parseMachineRecord(suffix, ev.kv.value);
    if (parsed.ok) {
      const { record } = parsed;
      if (into.invalid.delete(ref)) this.reported.delete(ref);
      const old = known.get(record.id);
      if (!into.records.has(record.id) && into.records.size >= this.source.maxRecords) {
        this.overflowed(into);
        return;
      }
      into.records.set(record.id, record);
      if (!old) {
        log.info({ event: `${event}.discovered`, machine: record.id, role: record.role, ip: record.ip, hostname: record.hostname }, `${noun} discovered`);
      } else if (old.bootId !== record.bootId) {
        log.info({ event: `${event}.rebooted`, machine: record.id, role: record.role, hostname: record.hostname }, `${noun}: the machine announced a new boot`);
      }
      return;
    }
    into.records.delete(suffix);
    const reason = `${this.source.prefix === 'machines' ? 'record' : noun} ${parsed.reason}`;
    if (into.invalid.has(ref) || into.invalid.size < MAX_INVALID_REMEMBERED) {
      into.invalid.set(ref, Object.freeze({ id: ref, field: parsed.field, reason, role: parsed.role, ip: parsed.ip }));
    } else {
      this.overflowed(into);
    }
    // one line per key and problem: the same bad field rewritten with other values is not reported again
    const problem = parsed.problems.map((p) => `${p.field} ${p.message}`).join('\0');
    if (this.reported.firstTime(ref, problem)) {
      log.warn({ event: `${event}.invalid`, machine: ref, field: parsed.field, reason, hint: parsed.fix }, `${noun} ${ref} skipped: ${reason}`);
    }
  }

  private overflowed(into: View): void {
    into.overflow++;
    // one line at 1, 10, 100, … keys beyond the caps
    if (into.overflow >= this.overflowLogged * 10 || this.overflowLogged === 0) {
      this.overflowLogged = Math.max(1, this.overflowLogged * 10);
      this.options.log.warn(
        { event: 'discovery.overflow', prefix: this.prefix, overflow: into.overflow, maxRecords: this.source.maxRecords, maxInvalid: MAX_INVALID_REMEMBERED },
        `more ${this.source.noun}s than the overlord keeps (${into.overflow} skipped): each is skipped until it is written again or listed after others went`,
      );
    }
  }
}
