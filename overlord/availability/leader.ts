import { setMaxListeners } from 'node:events';
import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import { BACKOFF, Backoffs, retry, type Backoff } from '../../core/retry.ts';
import { errorFields } from '../edges/log.ts';
import type { Logger } from '../edges/log.ts';
import type { Clock } from '../../core/clock.ts';
import type { Fence } from '../edges/store.ts';

/**
 * Leadership: any number of overlords run against one cluster; the one elected in etcd (etcd3's Election
 * on a lease, keys.leaderCandidates; adapter: etcd-election.ts) deploys, the others stand by. Each won
 * election is a TERM, and a term runs what `term` starts (the composition root gives term.ts runOverlord: ledger and discovery loaded afresh, so a
 * new leader resumes from what the ledger says, whoever wrote it).
 *
 * Contract of a term:
 * - Every ledger write (and TOFU host key record) carries the term's fence {key: the leader's election
 *   key, createRevision}: etcd refuses it (E_NOT_LEADER) once that key is gone — its lease expired or was
 *   revoked. A successor is elected only after that, so a deposed leader can never write after it.
 * - The leader stops acting (no new step, every wait aborted, SSH commands abandoned) as soon as it can no
 *   longer be sure of its lease, BEFORE etcd can expire it: when the lease is reported lost, when a fenced
 *   write is refused, or when no renewal has been confirmed for `stepDownAfterMs` (2/3 of the TTL) counted
 *   from when the request etcd last answered was SENT — etcd keeps the lease at least a TTL after it got
 *   that request, so the leader is idle at least TTL/3 before a successor can exist.
 * - Having stepped down it resigns (revokes its lease, retried while etcd is away: a standby takes over
 *   at once rather than a TTL later) and campaigns again — behind the new leader, as a standby.
 * A campaign that cannot reach etcd is retried with backoff, never a crash: the process keeps its state
 * and leads again when etcd is back. Only a terminal error (credentials refused) ends `done` with it.
 */
export interface Term {
  readonly fence: Fence;
  /**
   * Lower bound of etcd's last renewal of the lease, clock milliseconds: when the keepalive (or grant)
   * request that etcd last answered was sent.
   */
  renewedAt(): number;
  /** resolves (never rejects) with the reason once the lease is known to be gone */
  readonly lost: Promise<string>;
  /** revokes the lease (its key disappears at once); throws E_ETCD when etcd does not answer — call again */
  resign(): Promise<void>;
}

/** The seam to etcd's election: etcd-election.ts over etcd3; unit tests use an in-memory one. */
export interface LeaderElection {
  /**
   * Campaigns as `candidate` under a lease of `ttlSeconds` and resolves once elected. Rejects with E_ETCD
   * (retryable) when etcd cannot be reached, or with the signal's reason when it aborts (the candidacy is
   * withdrawn then).
   */
  campaign(candidate: string, ttlSeconds: number, signal: AbortSignal): Promise<Term>;
  /** the id of the current leader, null when none */
  leader(): Promise<string | null>;
  close(): Promise<void>;
}

export type Role = 'standby' | 'leader' | 'stopped';

export const DEFAULT_LEASE_TTL_SECONDS = 10;
export const MIN_LEASE_TTL_SECONDS = 2;
export const MAX_LEASE_TTL_SECONDS = 300;

/** How long without a confirmed renewal the leader keeps acting: 2/3 of the TTL (see the contract above). */
export function stepDownAfterMs(ttlSeconds: number): number {
  return Math.floor((ttlSeconds * 1000 * 2) / 3);
}

/** What a term runs, once started: `done` settles when it has stopped (rejects with E_NOT_LEADER when it lost the lead). */
export interface TermWork {
  readonly done: Promise<void>;
}

export interface LeaderOptions<T extends TermWork = TermWork> {
  /** this overlord's id: the election value, shown by `corekube status` and /healthz */
  readonly id: string;
  readonly election: LeaderElection;
  /** default DEFAULT_LEASE_TTL_SECONDS; a standby takes over at most this long after the leader vanished */
  readonly leaseTtlSeconds?: number;
  /** starts what a term runs, with the term's signal (abort = step down) and fence (every write of the term carries it) */
  readonly term: (scope: { readonly signal: AbortSignal; readonly fence: () => Fence }) => Promise<T>;
  /** abort = stop: the leader stops its overlord and resigns, a standby withdraws */
  readonly signal?: AbortSignal;
  /** between failed campaigns and resignations (etcd unreachable); default BACKOFF.election */
  readonly backoff?: Backoff;
  readonly onRoleChange?: (role: Role) => void;
}

export interface Leadership<T extends TermWork = TermWork> {
  readonly id: string;
  readonly leaseTtlSeconds: number;
  role(): Role;
  /** the current term's fence; undefined while standing by */
  fence(): Fence | undefined;
  /** what the current term runs; undefined while standing by or starting */
  overlord(): T | undefined;
  /** terms won so far */
  terms(): number;
  /** resolves once stopped; rejects with a terminal error (e.g. etcd refused the credentials) */
  readonly done: Promise<void>;
  stop(): Promise<void>;
}

export function validateLeaseTtl(ttl: number): number {
  if (!Number.isInteger(ttl) || ttl < MIN_LEASE_TTL_SECONDS || ttl > MAX_LEASE_TTL_SECONDS) {
    throw new CorekubeError('E_USAGE', `the lease TTL must be a whole number of seconds from ${MIN_LEASE_TTL_SECONDS} to ${MAX_LEASE_TTL_SECONDS}, got ${ttl}`, {
      hint: `use --lease-ttl ${DEFAULT_LEASE_TTL_SECONDS}: a standby takes over at most that long after the leader is gone`,
    });
  }
  return ttl;
}

export function runLeader<T extends TermWork>(ports: { readonly clock: Clock; readonly log: Logger }, options: LeaderOptions<T>): Leadership<T> {
  return new LeaderLoop(ports, options);
}

/** The loop of one overlord in the election: campaign, lead a term, step down, resign, campaign again. */
class LeaderLoop<T extends TermWork> implements Leadership<T> {
  readonly id: string;
  readonly leaseTtlSeconds: number;
  readonly done: Promise<void>;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly stopping = new AbortController();
  private readonly finished: Promise<void>;
  private currentRole: Role = 'standby';
  private currentFence: Fence | undefined;
  private current: T | undefined;
  private termCount = 0;
  /** revocations of past terms' leases still being retried (awaited on stop) */
  private readonly resigning = new Set<Promise<void>>();

  constructor(
    ports: { readonly clock: Clock; readonly log: Logger },
    private readonly options: LeaderOptions<T>,
  ) {
    this.id = options.id;
    this.leaseTtlSeconds = validateLeaseTtl(options.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS);
    this.clock = ports.clock;
    this.log = ports.log;
    this.backoff = options.backoff ?? BACKOFF.election;
    setMaxListeners(0, this.stopping.signal);
    const onOuterAbort = () => this.stopping.abort(options.signal?.reason);
    if (options.signal?.aborted) onOuterAbort();
    else options.signal?.addEventListener('abort', onOuterAbort, { once: true });
    let resolveDone!: () => void;
    let rejectDone!: (err: unknown) => void;
    this.done = new Promise<void>((res, rej) => {
      resolveDone = res;
      rejectDone = rej;
    });
    this.done.catch(() => undefined);
    this.finished = this.loop()
      .then(
        () => undefined,
        (err: unknown) => err,
      )
      .then(async (err) => {
        this.setRole('stopped');
        this.currentFence = undefined;
        options.signal?.removeEventListener('abort', onOuterAbort);
        await Promise.allSettled([...this.resigning]);
        if (err === undefined) resolveDone();
        else rejectDone(err);
      });
  }

  role(): Role {
    return this.currentRole;
  }

  fence(): Fence | undefined {
    return this.currentFence;
  }

  overlord(): T | undefined {
    return this.current;
  }

  terms(): number {
    return this.termCount;
  }

  async stop(): Promise<void> {
    if (!this.stopping.signal.aborted) this.stopping.abort(new CorekubeError('E_INTERNAL', 'the overlord is stopping'));
    await this.finished;
  }

  /** Campaigns until stopped, leading a term each time it wins; a campaign etcd does not answer is tried again. */
  private async loop(): Promise<void> {
    const { log, options, stopping } = this;
    const failures = new Backoffs(this.backoff);
    while (!stopping.signal.aborted) {
      let term: Term;
      try {
        log.info({ event: 'leader.campaign', id: options.id, leaseTtlSeconds: this.leaseTtlSeconds }, 'standing by: campaigning for the lead');
        term = await options.election.campaign(options.id, this.leaseTtlSeconds, stopping.signal);
      } catch (err) {
        if (stopping.signal.aborted) break;
        const e = asCorekubeError(err, 'E_ETCD');
        if (!e.retryable) throw e;
        const delay = failures.next();
        log.warn({ event: 'leader.campaign-failed', nextRetryMs: delay, ...errorFields(e) }, 'campaigning failed; retrying');
        await this.clock.sleep(delay, stopping.signal).catch(() => undefined);
        continue;
      }
      failures.reset();
      this.termCount++;
      await this.leadTerm(term);
    }
  }

  /** One term: runs what the term runs until it stops, or until the lease is in doubt or lost; then resigns. */
  private async leadTerm(term: Term): Promise<void> {
    const { log, options, stopping } = this;
    const termAbort = new AbortController();
    setMaxListeners(0, termAbort.signal);
    let reason: CorekubeError | undefined;
    const stepDown = (why: CorekubeError) => {
      if (termAbort.signal.aborted) return;
      reason = why;
      this.currentFence = undefined;
      this.setRole(stopping.signal.aborted ? 'stopped' : 'standby');
      const fields = { event: 'leader.stepping-down', term: this.termCount, fence: term.fence.key, ...errorFields(why) };
      if (why.code === 'E_NOT_LEADER') log.warn(fields, `stepping down: ${why.message}; no new step, waits aborted`);
      else log.info(fields, 'stepping down: the overlord stops');
      termAbort.abort(why);
    };
    const onStop = () => stepDown(new CorekubeError('E_INTERNAL', 'the overlord is stopping', { hint: 'a standby takes over' }));

    this.currentFence = term.fence;
    this.setRole('leader');
    log.info({ event: 'leader.elected', id: options.id, term: this.termCount, fence: term.fence.key, leaseTtlSeconds: this.leaseTtlSeconds }, `elected leader (term ${this.termCount}): deploying`);
    stopping.signal.addEventListener('abort', onStop, { once: true });
    if (stopping.signal.aborted) onStop();
    this.watchLease(term, termAbort.signal, stepDown);

    try {
      const work = await options.term({ signal: termAbort.signal, fence: () => term.fence });
      this.current = work;
      await work.done;
    } catch (err) {
      const e = asCorekubeError(err);
      if (!termAbort.signal.aborted) {
        stepDown(e);
        if (e.code !== 'E_NOT_LEADER') throw e;
      }
    } finally {
      this.current = undefined;
      stopping.signal.removeEventListener('abort', onStop);
    }
    log.info({ event: 'leader.stepped-down', term: this.termCount, reason: reason?.message }, 'stepped down: the overlord of this term has stopped');
    void this.resign(term);
  }

  /** Steps down once no renewal was confirmed for stepDownAfterMs, or once the lease is reported lost. */
  private watchLease(term: Term, signal: AbortSignal, stepDown: (why: CorekubeError) => void): void {
    const ttl = this.leaseTtlSeconds;
    this.leaseDoubt(term, signal).then(
      (silentMs) =>
        stepDown(
          new CorekubeError('E_NOT_LEADER', `no lease renewal confirmed for ${silentMs} ms (lease TTL ${ttl} s): etcd may expire the lease soon`, {
            hint: 'check that etcd is reachable from the overlord; a standby takes over if it expires',
          }),
        ),
      () => undefined,
    );
    void term.lost.then((why) => stepDown(new CorekubeError('E_NOT_LEADER', `the leader lease is lost: ${why}`, { hint: 'a standby takes over; this overlord campaigns again' })));
  }

  /** Resolves with how long the lease went unconfirmed once that reaches stepDownAfterMs. */
  private async leaseDoubt(term: Term, signal: AbortSignal): Promise<number> {
    const limit = stepDownAfterMs(this.leaseTtlSeconds);
    for (;;) {
      const silent = this.clock.now() - term.renewedAt();
      if (silent >= limit) return silent;
      await this.clock.sleep(limit - silent, signal);
    }
  }

  /** Revokes a past term's lease, retrying while etcd is away, for at most a few TTLs. */
  private resign(term: Term): Promise<void> {
    const { clock, log } = this;
    const started = clock.now();
    const p = retry(() => term.resign(), {
      policy: this.backoff,
      clock,
      signal: this.stopping.signal,
      // past a few TTLs the lease has expired on its own (an etcd restart extends leases by one TTL)
      retryIf: () => clock.now() - started <= 3 * this.leaseTtlSeconds * 1000,
      onRetry: (err, _failures, delay) => log.debug({ event: 'leader.resign-retry', nextRetryMs: delay, ...errorFields(err) }, 'revoking the old lease failed; retrying'),
    })
      .then(
        () => log.info({ event: 'leader.resigned', fence: term.fence.key }, 'resigned: the lease is revoked'),
        () => undefined,
      )
      .finally(() => this.resigning.delete(p));
    this.resigning.add(p);
    return p;
  }

  private setRole(next: Role): void {
    if (this.currentRole === next) return;
    this.currentRole = next;
    this.options.onRoleChange?.(next);
  }
}
