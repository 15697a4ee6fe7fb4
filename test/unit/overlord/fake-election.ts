/**
 * An in-memory LeaderElection for UNIT tests of overlord/availability/leader.ts (the etcd3 adapter is tested against a
 * real etcd in test/integration/overlord-leader.test.ts). Candidates are keys in a MemoryStore under
 * keys.leaderCandidates, so the store's fences behave as etcd's do; the oldest key leads. Time is the
 * FakeClock's; a connected candidate's lease is renewed continuously, a partitioned one's is not, and
 * `expire` plays etcd expiring a lease.
 */
import { CorekubeError } from '../../../core/errors.ts';
import type { ClusterKeys } from '../../../contracts/keys.ts';
import type { LeaderElection, Term } from '../../../overlord/availability/leader.ts';
import type { FakeClock, MemoryStore } from './fakes.ts';

interface Candidate {
  readonly id: string;
  readonly key: string;
  readonly createRevision: string;
  /** renewal time frozen by a partition; null while connected */
  frozenAt: number | null;
  resolveLost(reason: string): void;
}

export class FakeElection implements LeaderElection {
  /** candidates by id (the latest campaign of each) */
  readonly candidates = new Map<string, Candidate>();
  /** ids cut off from etcd: their campaigns and revokes fail, their renewals stop */
  readonly partitioned = new Set<string>();
  /** every campaign fails (etcd down for everyone) */
  down = false;
  campaigns = 0;
  private seq = 0;
  private waiters: (() => void)[] = [];

  constructor(
    private readonly store: MemoryStore,
    private readonly keys: ClusterKeys,
    private readonly clock: FakeClock,
  ) {}

  async campaign(id: string, _ttlSeconds: number, signal: AbortSignal): Promise<Term> {
    this.campaigns++;
    if (this.down || this.partitioned.has(id)) throw new CorekubeError('E_ETCD', `etcd did not answer (test: ${id} cut off)`, { retryable: true });
    const key = `${this.keys.leaderCandidates}${(++this.seq).toString(16)}`;
    const rev = await this.store.put(key, id);
    let resolveLost!: (r: string) => void;
    const lost = new Promise<string>((r) => (resolveLost = r));
    const c: Candidate = { id, key, createRevision: rev, frozenAt: null, resolveLost };
    this.candidates.set(id, c);
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (signal.aborted) return reject(signal.reason);
        if (this.oldest()?.key === key) return resolve();
        if (!this.store.data.has(key)) return reject(new CorekubeError('E_ETCD', 'lease lost while campaigning', { retryable: true }));
        this.waiters.push(check);
      };
      signal.addEventListener('abort', () => this.wake(), { once: true });
      check();
    });
    return {
      fence: { key, createRevision: rev },
      renewedAt: () => c.frozenAt ?? this.clock.now(),
      lost,
      resign: async () => {
        if (this.partitioned.has(id)) throw new CorekubeError('E_ETCD', 'etcd did not answer (test: cut off)', { retryable: true });
        await this.store.delete(key);
        this.wake();
      },
    };
  }

  async leader(): Promise<string | null> {
    return this.oldest()?.value ?? null;
  }

  async close(): Promise<void> {}

  /** Cuts a candidate off: no more renewals, campaigns and revokes fail. */
  partition(id: string): void {
    this.partitioned.add(id);
    const c = this.candidates.get(id);
    if (c && c.frozenAt === null) c.frozenAt = this.clock.now();
  }

  heal(id: string): void {
    this.partitioned.delete(id);
  }

  /** etcd expires the candidate's lease: its key goes; `tell` = the candidate hears of it (etcd3's lost). */
  async expire(id: string, tell = false): Promise<void> {
    const c = this.candidates.get(id);
    if (!c) return;
    await this.store.delete(c.key);
    if (tell) c.resolveLost('lease expired (test)');
    this.wake();
  }

  /** the key of the candidate that leads */
  leaderKey(): string | undefined {
    return this.oldest()?.key;
  }

  private oldest(): { key: string; value: string } | undefined {
    let best: { key: string; value: string; rev: number } | undefined;
    for (const [key, s] of this.store.data) {
      if (!key.startsWith(this.keys.leaderCandidates)) continue;
      if (!best || s.createRevision < best.rev) best = { key, value: s.value, rev: s.createRevision };
    }
    return best;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
