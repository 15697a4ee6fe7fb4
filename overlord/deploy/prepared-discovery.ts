import { BACKOFF, Backoffs, type Backoff } from '../../core/retry.ts';
import type { Clock } from '../../core/clock.ts';
import type { DiscoverySnapshot } from '../discovery/discovery.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';

/**
 * Discovery's view, advanced only once the machines in it are prepared. The reconciler renders a machine's
 * units synchronously; what must exist before that and can only be made asynchronously (each machine's
 * certificates, overlord/trust/machine-pki.ts) is made by `prepare` for a snapshot of the machines, and only then
 * does the reconciler see that snapshot. So the reconciler always plans against machines whose prepared
 * state matches them exactly — a lag of one `prepare` (milliseconds when nothing is new).
 *
 * Changes that arrive while `prepare` runs coalesce into one more run. A failing `prepare` (it should record
 * per-machine failures itself and not throw) is retried with backoff; meanwhile the previous view stays.
 */
export interface PreparedDiscoveryOptions {
  readonly source: { snapshot(): DiscoverySnapshot };
  readonly prepare: (records: readonly MachineRecord[]) => Promise<void>;
  /** called after each new view is published (the reconciler's trigger) */
  readonly onChange: () => void;
  readonly clock: Clock;
  readonly log: Logger;
  /** between failed runs of `prepare` (default BACKOFF.boot) */
  readonly backoff?: Backoff;
}

const EMPTY: DiscoverySnapshot = Object.freeze({ records: new Map(), invalid: new Map(), overflow: 0 });

export class PreparedDiscovery {
  private view: DiscoverySnapshot = EMPTY;
  private running: Promise<void> | undefined;
  private dirty = false;
  private readonly stopping = new AbortController();

  constructor(private readonly options: PreparedDiscoveryOptions) {}

  /** The last prepared view. */
  snapshot(): DiscoverySnapshot {
    return this.view;
  }

  /** Prepares the source's current view, then publishes it; resolves once a run begun after this call is done. */
  refresh(): Promise<void> {
    this.dirty = true;
    this.running ??= this.loop().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  stop(): void {
    this.stopping.abort(new Error('prepared discovery stopped'));
  }

  private async loop(): Promise<void> {
    const failures = new Backoffs(this.options.backoff ?? BACKOFF.boot);
    while (this.dirty && !this.stopping.signal.aborted) {
      this.dirty = false;
      const next = this.options.source.snapshot();
      try {
        await this.options.prepare([...next.records.values()]);
      } catch (err) {
        const delay = failures.next();
        this.options.log.error({ event: 'machines.prepare-failed', nextRetryMs: delay, ...errorFields(err) }, 'preparing the machines failed; retrying');
        this.dirty = true;
        await this.options.clock.sleep(delay, this.stopping.signal).catch(() => undefined);
        continue;
      }
      failures.reset();
      if (this.stopping.signal.aborted) return;
      this.view = next;
      this.options.onChange();
    }
  }
}
