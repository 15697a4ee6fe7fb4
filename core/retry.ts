import type { Clock } from './clock.ts';
import { asCorekubeError, type CorekubeError, type ErrorCode } from './errors.ts';

/**
 * The one retry policy: how long a loop waits before it tries again (a named backoff, below), and whether it tries
 * again at all (`decide`). Every loop of corekube that tries something again asks here; none writes its own
 * doubling sleep.
 *
 * One meaning of "retryable": `CorekubeError.retryable`, set once by the adapter that converted the failure
 * (etcd, SSH, the Kubernetes API, Heat, the executor) — trying the same thing again can succeed (a peer did not
 * answer, a unit did not come up yet), so a loop tries it again after a wait, within its budget. `E_NOT_LEADER`
 * is fatal: the loop stops at once, whatever it was doing.
 *
 * One meaning of "requeue": once the same thing is not tried again (out of attempts, or not retryable), a
 * failure of the work's SURROUNDINGS (`REQUEUED_CODES`: a machine unreachable over SSH, etcd or the API server
 * away or refusing, a Node not Ready) puts the whole work back in the queue, to be planned again from the start
 * after the requeue backoff — controller-runtime's requeue. Any other failure (a unit that keeps failing, a
 * start that times out, a refused identity) gives up until something changes: a new record, new units, an
 * operator. The ledger records exactly that decision (`LedgerEntry.retryable`: requeued).
 */
export interface Backoff {
  /** the wait after the first failure */
  readonly initialMs: number;
  /** the longest wait */
  readonly maxMs: number;
  /** growth of the wait per further failure (default 2) */
  readonly factor?: number;
}

/** A backoff with a budget: `retries` tries after the first (Infinity: until it works or the loop stops). */
export interface RetryPolicy extends Backoff {
  readonly retries: number;
}

/**
 * The named defaults. Each says whom it waits for; a loop that waits for the same thing uses the same one.
 */
export const BACKOFF = Object.freeze({
  /** a peer the overlord needs and expects back soon: etcd (startup reads, re-lists, ledger writes), the API server (add-ons) */
  peer: Object.freeze({ initialMs: 500, maxMs: 15_000 }),
  /** the leader election (campaign, resignation): short, so that a standby takes over well within the lease TTL */
  election: Object.freeze({ initialMs: 500, maxMs: 5_000 }),
  /** the boot: discovery coming up, its TLS files, its auth, the shared state a standby waits for, the machines' certificates */
  boot: Object.freeze({ initialMs: 1_000, maxMs: 30_000 }),
  /** Heat's wait-condition signal: the cloud's API may be away for minutes */
  heat: Object.freeze({ initialMs: 1_000, maxMs: 60_000 }),
  /** a machine that asked to join but does not answer yet over SSH (it is still booting) */
  admission: Object.freeze({ initialMs: 2_000, maxMs: 60_000 }),
  /** one step on one machine, tried again while its failure is retryable */
  step: Object.freeze({ initialMs: 2_000, maxMs: 30_000, retries: 4 }),
  /** a machine failed for its surroundings (unreachable, etcd or the API away), planned again from the start */
  requeue: Object.freeze({ initialMs: 30_000, maxMs: 5 * 60_000 }),
  /** etcd refused a request checked against an older auth revision (it applied nothing): sent again at once, a few times */
  staleAuth: Object.freeze({ initialMs: 5, maxMs: 50, retries: 15 }),
}) satisfies Readonly<Record<string, Backoff | RetryPolicy>>;

/** Failures of the work's surroundings: once not tried again, the work is requeued instead of given up. */
export const REQUEUED_CODES: readonly ErrorCode[] = Object.freeze(['E_SSH', 'E_ETCD', 'E_KUBERNETES', 'E_NODE_NOT_READY']);

/** The wait after `failures` failures in a row (1 = the first): initialMs × factor^(failures−1), at most maxMs. */
export function delayMs(backoff: Backoff, failures: number): number {
  if (failures < 1) return 0;
  return Math.min(backoff.maxMs, Math.round(backoff.initialMs * (backoff.factor ?? 2) ** (failures - 1)));
}

/** A backoff in progress: each failure waits longer, a success starts again from the first wait. */
export class Backoffs {
  private count = 0;

  constructor(private readonly backoff: Backoff) {}

  /** the number of failures in a row so far */
  get failures(): number {
    return this.count;
  }

  /** Counts one more failure and returns the wait before the next try. */
  next(): number {
    this.count++;
    return delayMs(this.backoff, this.count);
  }

  reset(): void {
    this.count = 0;
  }
}

export type Decision =
  /** fatal (E_NOT_LEADER): stop at once */
  | { readonly kind: 'stop' }
  /** try the same thing again after `delayMs` */
  | { readonly kind: 'retry'; readonly delayMs: number }
  /** not tried again, failed for its surroundings: plan the whole work again after the requeue backoff */
  | { readonly kind: 'requeue' }
  /** terminal: wait for a change */
  | { readonly kind: 'give-up' };

/** The one decision after the `failures`-th failure in a row of work tried under `policy`. */
export function decide(err: CorekubeError, failures: number, policy: RetryPolicy): Decision {
  if (err.code === 'E_NOT_LEADER') return { kind: 'stop' };
  if (err.retryable && failures <= policy.retries) return { kind: 'retry', delayMs: delayMs(policy, failures) };
  return REQUEUED_CODES.includes(err.code) ? { kind: 'requeue' } : { kind: 'give-up' };
}

export interface RetryOptions {
  /** the backoff, with `retries` (default: until it works, fails terminally or the signal aborts) */
  readonly policy: Backoff & { readonly retries?: number };
  readonly clock: Pick<Clock, 'sleep'>;
  /** abort = stop waiting: the wait rejects with the signal's reason */
  readonly signal?: AbortSignal;
  /** what a thrown value that is not a CorekubeError counts as (default E_INTERNAL, terminal) */
  readonly code?: ErrorCode;
  /** which failures are tried again (default: the retryable ones) */
  readonly retryIf?: (err: CorekubeError) => boolean;
  /** before each wait: log it, record it (an await here delays the next try) */
  readonly onRetry?: (err: CorekubeError, failures: number, delayMs: number) => void | Promise<void>;
}

/**
 * Runs `fn` until it resolves, trying again after the policy's waits while its failure is retryable (or
 * `retryIf` says so) and the budget lasts; otherwise throws the last failure as it was thrown (converting
 * errors is the adapters' business). E_NOT_LEADER is never tried again.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const retries = options.policy.retries ?? Infinity;
  const retryIf = options.retryIf ?? ((e: CorekubeError) => e.retryable);
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      const e = asCorekubeError(err, options.code);
      if (options.signal?.aborted || e.code === 'E_NOT_LEADER' || attempt > retries || !retryIf(e)) throw err;
      const wait = delayMs(options.policy, attempt);
      await options.onRetry?.(e, attempt, wait);
      await options.clock.sleep(wait, options.signal);
    }
  }
}
