import { asCorekubeError, type CorekubeError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import type { LeaderElection, Leadership, Role, TermWork } from './leader.ts';
import type { Logger } from '../edges/log.ts';
import type { Store } from '../edges/store.ts';

/**
 * The overlord's health: is etcd answering, and for how long has it not. Every etcd call the overlord
 * makes reports here (the store through `observedStore`, the election through its observer — the lease
 * keepalives, every TTL/3, make this a heartbeat that costs no extra request), so no probe is ever sent.
 *
 * Contract: etcd is `down` from the first failed call after an answer until the next answer (any answer,
 * a refused compare included). Down for longer than the retry budget, the overlord logs ONE error
 * (`etcd.unreachable`, with the last failure and what it does about it) and /healthz answers 503; it keeps
 * retrying with backoff and keeps its state — an orchestrator must not restart it (a restart would only
 * start over at the same etcd). The first answer after that logs `etcd.reachable`.
 */
export const DEFAULT_ETCD_BUDGET_SECONDS = 60;

export interface EtcdState {
  readonly etcd: 'ok' | 'down';
  /** 0 while ok */
  readonly downForMs: number;
  /** down for longer than the budget */
  readonly overBudget: boolean;
  readonly lastError: string | null;
}

export class EtcdHealth {
  private downSince: number | null = null;
  private lastError: string | null = null;
  private reported = false;
  private readonly closing = new AbortController();

  constructor(
    private readonly clock: Clock,
    private readonly log: Logger,
    readonly budgetMs: number = DEFAULT_ETCD_BUDGET_SECONDS * 1000,
  ) {}

  /** etcd answered (whatever the answer). */
  answered(): void {
    if (this.downSince !== null && this.reported) {
      this.log.info({ event: 'etcd.reachable', downForMs: this.clock.now() - this.downSince }, 'etcd answers again: resuming');
    }
    this.downSince = null;
    this.lastError = null;
    this.reported = false;
  }

  /** A call failed without an answer from etcd. */
  failed(err: CorekubeError): void {
    this.lastError = err.message;
    if (this.downSince !== null) return;
    const since = this.clock.now();
    this.downSince = since;
    this.clock.sleep(this.budgetMs, this.closing.signal).then(
      () => {
        if (this.downSince !== since) return;
        this.reported = true;
        this.log.error(
          { event: 'etcd.unreachable', code: 'E_ETCD', downForMs: this.clock.now() - since, budgetMs: this.budgetMs, reason: this.lastError, hint: err.hint },
          `etcd has not answered for ${Math.round(this.budgetMs / 1000)} s: the overlord keeps retrying with backoff and resumes from the ledger once it answers (health: 503)`,
        );
      },
      () => undefined,
    );
  }

  state(): EtcdState {
    const downForMs = this.downSince === null ? 0 : this.clock.now() - this.downSince;
    return { etcd: this.downSince === null ? 'ok' : 'down', downForMs, overBudget: this.downSince !== null && downForMs > this.budgetMs, lastError: this.lastError };
  }

  close(): void {
    this.closing.abort();
  }
}

/**
 * The store with every call reported to `health`: an E_ETCD error is a failure to reach etcd; anything
 * else (a value, a refused compare, E_NOT_LEADER) is an answer. Wraps every method, whatever the Store
 * interface grows, except close.
 */
export function observedStore(store: Store, health: Pick<EtcdHealth, 'answered' | 'failed'>): Store {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver);
      if (typeof value !== 'function' || prop === 'close') return value;
      return (...args: unknown[]) => {
        const result: unknown = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (!(result instanceof Promise)) return result;
        return result.then(
          (v: unknown) => {
            health.answered();
            return v;
          },
          (err: unknown) => {
            const e = asCorekubeError(err, 'E_ETCD');
            if (e.code === 'E_ETCD') health.failed(e);
            else health.answered();
            throw err;
          },
        );
      };
    },
  });
}

export interface HealthInput {
  readonly id: string;
  readonly role: Role;
  /** the leader's id as last read; null when none or unknown */
  readonly leader: string | null;
  readonly etcd: EtcdState;
  /** the leader's progress (its reconciler's summary) */
  readonly machines?: { readonly total: number; readonly deployed: number; readonly failed: number };
}

export interface HealthReport {
  /** 200, or 503 when etcd has been down longer than the budget or the overlord stopped */
  readonly status: 200 | 503;
  readonly body: {
    readonly role: Role;
    readonly id: string;
    readonly leader: string | null;
    readonly etcd: 'ok' | 'down';
    readonly etcdDownForMs?: number;
    readonly error?: string;
    readonly machines?: HealthInput['machines'];
  };
}

/** PURE: what /healthz answers. */
export function healthReport(input: HealthInput): HealthReport {
  const { etcd } = input;
  const body = {
    role: input.role,
    id: input.id,
    leader: input.leader,
    etcd: etcd.etcd,
    ...(etcd.etcd === 'down' ? { etcdDownForMs: etcd.downForMs } : {}),
    ...(etcd.overBudget && etcd.lastError ? { error: `etcd unreachable for ${Math.round(etcd.downForMs / 1000)} s: ${etcd.lastError}` } : {}),
    ...(input.machines ? { machines: input.machines } : {}),
  };
  return { status: etcd.overBudget || input.role === 'stopped' ? 503 : 200, body };
}

/** A term that says how far it got (term.ts Overlord). */
export type ReportingTerm = TermWork & { summary(): { readonly total: number; readonly deployed: number; readonly failed: readonly unknown[] } };

/**
 * Gathers the health of a running leadership: its role, who leads (read from etcd by a standby, given
 * up on after `leaderTimeoutMs`: an unreachable etcd must not hang the health check), etcd's state and,
 * for the leader, its progress.
 */
export async function leadershipHealth(
  leadership: Pick<Leadership<ReportingTerm>, 'id' | 'role' | 'overlord'>,
  election: Pick<LeaderElection, 'leader'>,
  health: Pick<EtcdHealth, 'state'>,
  leaderTimeoutMs = 1_000,
): Promise<HealthReport> {
  const role = leadership.role();
  let leader: string | null = role === 'leader' ? leadership.id : null;
  if (role === 'standby') {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), leaderTimeoutMs)));
    leader = await Promise.race([election.leader().catch(() => null), timeout]).finally(() => clearTimeout(timer));
  }
  const summary = leadership.overlord()?.summary();
  return healthReport({
    id: leadership.id,
    role,
    leader,
    etcd: health.state(),
    ...(summary ? { machines: { total: summary.total, deployed: summary.deployed, failed: summary.failed.length } } : {}),
  });
}
