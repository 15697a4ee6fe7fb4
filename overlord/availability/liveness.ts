import { setMaxListeners } from 'node:events';
import { asCorekubeError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import type { HostRunner, HostTarget } from '../edges/host-runner.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import { probe } from '../edges/remote-commands.ts';
import { Semaphore } from '../../core/semaphore.ts';

/**
 * Liveness from more than the lease. A machine record lives as long as its lease is kept alive — and
 * etcd (before v3.6.14) lets any authenticated client keep any lease alive, so a record can outlive its machine,
 * and a dead master would stay in every machine's units forever. So the overlord also asks each machine it
 * deploys, over its pinned SSH connection, every `intervalMs` (a no-op command: any exit code is an answer);
 * a machine that has answered nothing for `deadAfterMs` is SILENT: the overlord treats it as gone
 * (overlord/discovery/admitted-discovery.ts leaves it out) until it answers again, whatever its lease says.
 *
 * The default `deadAfterMs` is three times the announce script's lease TTL (60 s): a machine that is merely
 * slow or briefly cut off is not dropped sooner than its own lease would have dropped it.
 */
export interface LivenessOptions {
  readonly hosts: HostRunner;
  readonly clock: Clock;
  readonly log: Logger;
  /** called when a machine turns silent or answers again */
  readonly onChange: () => void;
  /** how often each machine is asked (default 30 s) */
  readonly intervalMs?: number;
  /** how long without an answer makes a machine silent (default 180 s) */
  readonly deadAfterMs?: number;
  /** machines asked at once (default 4) */
  readonly concurrency?: number;
  /** deadline of one question (default 10 s) */
  readonly commandTimeoutMs?: number;
}

export const DEFAULT_LIVENESS = Object.freeze({ intervalMs: 30_000, deadAfterMs: 180_000 });

interface Tracked {
  target: HostTarget;
  /** clock ms of the last answer (or of when the machine was first tracked) */
  lastAnswer: number;
  nextAt: number;
  asking: boolean;
}

export class Liveness {
  private readonly tracked = new Map<string, Tracked>();
  private readonly silentSince = new Map<string, number>();
  private readonly stopping = new AbortController();
  private readonly semaphore: Semaphore;
  private readonly intervalMs: number;
  private readonly deadAfterMs: number;
  private loop: Promise<void> | undefined;
  /** changes whenever the silent set does */
  version = 0;

  constructor(private readonly options: LivenessOptions) {
    this.intervalMs = options.intervalMs ?? DEFAULT_LIVENESS.intervalMs;
    this.deadAfterMs = options.deadAfterMs ?? DEFAULT_LIVENESS.deadAfterMs;
    this.semaphore = new Semaphore(options.concurrency ?? 4);
    setMaxListeners(0, this.stopping.signal);
  }

  /** The machines to ask from now on (the deployable ones); a machine whose address or key changed starts afresh. */
  track(targets: Iterable<HostTarget>): void {
    const now = this.options.clock.now();
    const seen = new Set<string>();
    for (const target of targets) {
      seen.add(target.id);
      const t = this.tracked.get(target.id);
      if (t && t.target.ip === target.ip && t.target.hostKey === target.hostKey) continue;
      this.tracked.set(target.id, { target, lastAnswer: now, nextAt: now + this.intervalMs, asking: false });
      if (this.silentSince.delete(target.id)) this.version++;
    }
    for (const id of [...this.tracked.keys()]) {
      if (seen.has(id)) continue;
      this.tracked.delete(id);
      if (this.silentSince.delete(id)) this.version++;
    }
  }

  /** true while the machine has not answered for deadAfterMs */
  isSilent(id: string): boolean {
    return this.silentSince.has(id);
  }

  silentFor(id: string): number | undefined {
    const t = this.tracked.get(id);
    return this.silentSince.has(id) && t ? this.options.clock.now() - t.lastAnswer : undefined;
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopping.abort(new Error('liveness stopped'));
    await this.loop;
  }

  private async run(): Promise<void> {
    const tick = Math.max(100, Math.min(5_000, Math.floor(this.intervalMs / 4)));
    const { clock } = this.options;
    while (!this.stopping.signal.aborted) {
      try {
        await clock.sleep(tick, this.stopping.signal);
      } catch {
        return;
      }
      const now = clock.now();
      for (const t of this.tracked.values()) {
        if (t.asking || t.nextAt > now) continue;
        t.asking = true;
        void this.ask(t).finally(() => {
          t.asking = false;
          t.nextAt = this.options.clock.now() + this.intervalMs;
        });
      }
    }
  }

  private async ask(t: Tracked): Promise<void> {
    const { hosts, clock, log } = this.options;
    let release: (() => void) | undefined;
    try {
      release = await this.semaphore.acquire(this.stopping.signal);
      await hosts.exec(t.target, probe(), { timeoutMs: this.options.commandTimeoutMs ?? 10_000, signal: this.stopping.signal });
      t.lastAnswer = clock.now();
      if (this.silentSince.delete(t.target.id)) {
        this.version++;
        log.info({ event: 'machine.answering', machine: t.target.id, ip: t.target.ip }, 'the machine answers over SSH again: it is deployed as before');
        this.changed();
      }
    } catch (err) {
      if (this.stopping.signal.aborted || this.tracked.get(t.target.id) !== t) return;
      const silent = clock.now() - t.lastAnswer;
      if (silent >= this.deadAfterMs && !this.silentSince.has(t.target.id)) {
        this.silentSince.set(t.target.id, clock.now());
        this.version++;
        log.warn(
          { event: 'machine.silent', machine: t.target.id, ip: t.target.ip, silentMs: silent, ...errorFields(asCorekubeError(err, 'E_SSH')) },
          `the machine has not answered over SSH for ${Math.round(silent / 1000)} s: treated as gone, whatever its lease says`,
        );
        this.changed();
      }
    } finally {
      release?.();
    }
  }

  private changed(): void {
    try {
      this.options.onChange();
    } catch (err) {
      this.options.log.error({ event: 'liveness.change-failed', ...errorFields(err) }, 'reacting to a machine\'s liveness failed');
    }
  }
}
