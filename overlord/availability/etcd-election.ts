import { Etcd3, Lease, type Campaign, type Election, type Namespace } from 'etcd3';
import { CorekubeError } from '../../core/errors.ts';
import type { Clock } from '../../core/clock.ts';
import { etcdClientOptions, toEtcdError, type EtcdStoreOptions } from '../edges/etcd-store.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import type { LeaderElection, Term } from './leader.ts';

/**
 * The etcd3 adapter of LeaderElection: etcd3's Election (1.1.2, which has the two-leaders fix) named
 * `overlord` in the namespace `<prefix>leader/`, so every candidate is a key
 * `keys.leaderCandidates + <lease id>` under its own lease, and the oldest key leads. Besides etcd-store.ts,
 * the only module that imports etcd3; it has its own client (its own connection) and converts every
 * library error with etcd-store.ts's toEtcdError.
 *
 * etcd3 reports a lease lost only after 2 TTLs without a keepalive, far too late for a leader to stop
 * acting before a successor is elected. So this adapter also follows the lease's keepalives: `renewedAt()`
 * is when the request etcd last answered was SENT (a lower bound of etcd's renewal), from which leader.ts
 * decides when to step down. etcd3's Campaign keeps its lease private; the adapter reads it by name, and
 * refuses to run (E_INTERNAL) should a future etcd3 keep it elsewhere.
 *
 * A withdrawn candidacy leaves etcd3's wait for the previous candidate's key behind (a watch that etcd3
 * would re-establish forever, even on a closed client, keeping the process alive): the adapter cancels
 * the watches of each election it made once that election is over (see cancelWatches).
 */
export interface EtcdElectionOptions extends EtcdStoreOptions {
  readonly keys: ClusterKeys;
  readonly clock: Clock;
  /** told of every answer (lease granted or renewed) and every failure to reach etcd (health) */
  readonly observer?: { answered(): void; failed(err: CorekubeError): void };
}

const ELECTION = 'overlord';

export function createEtcdElection(options: EtcdElectionOptions): LeaderElection {
  return new EtcdElection(options);
}

class EtcdElection implements LeaderElection {
  private readonly endpoints: readonly string[];
  private readonly client: Etcd3;
  private readonly namespace: Namespace;
  /** elections whose campaign may still hold a watch */
  private readonly open = new Set<Election>();

  constructor(private readonly options: EtcdElectionOptions) {
    this.endpoints = options.endpoints.map((e) => e.trim()).filter((e) => e !== '');
    if (this.endpoints.length === 0) throw new CorekubeError('E_USAGE', 'no etcd endpoint given', { hint: 'pass --etcd-endpoints https://HOST:2379[,…]' });
    this.client = new Etcd3(etcdClientOptions(options, this.endpoints));
    this.namespace = this.client.namespace(`${options.keys.leader}/`);
  }

  async campaign(candidate: string, ttlSeconds: number, signal: AbortSignal): Promise<Term> {
    if (signal.aborted) throw signal.reason;
    // the lease grant goes out as the campaign is made: its send time is the first renewal's lower bound
    const grantSentAt = this.options.clock.now();
    const election = this.namespace.election(ELECTION, ttlSeconds);
    this.open.add(election);
    const campaign = election.campaign(candidate);
    const lease = leaseOf(campaign);
    const renewals = followRenewals(lease, grantSentAt, this.options.clock, this.options.observer, (err) => this.failed('renewing the leader lease', err));
    let resolveLost!: (reason: string) => void;
    const lost = new Promise<string>((r) => (resolveLost = r));
    // etcd3 emits 'error' when the lease is lost or the campaign fails; an unheard 'error' would crash
    campaign.on('error', (err: Error) => resolveLost(err.message || 'the lease is gone'));
    // a candidacy that fails before its term starts: stop renewing, withdraw, drop the election's watches
    const withdraw = async (): Promise<void> => {
      renewals.stop();
      await campaign.resign().catch(() => undefined);
      await cancelWatches(election);
      this.open.delete(election);
    };
    let fence: Term['fence'];
    try {
      await this.elected(campaign, candidate, signal);
      fence = await this.fenceOf(campaign);
    } catch (err) {
      await withdraw();
      throw err;
    }
    let resigned = false;
    return {
      fence,
      renewedAt: () => renewals.renewedAt(),
      lost,
      resign: async () => {
        renewals.stop();
        // Campaign.resign revokes once; a revoke that failed (etcd away) is retried on the lease itself
        if (!resigned) {
          resigned = true;
          await this.call('revoking the leader lease', () => campaign.resign());
        } else {
          await this.call('revoking the leader lease', () => lease.revoke());
        }
        this.open.delete(election);
      },
    };
  }

  async leader(): Promise<string | null> {
    const value = await this.call('reading the leader', () => this.namespace.election(ELECTION).leader());
    return value ?? null;
  }

  async close(): Promise<void> {
    await Promise.all([...this.open].map(cancelWatches));
    this.open.clear();
    this.client.close();
  }

  /** Resolves once the campaign is elected; rejects when it fails or the signal aborts. */
  private async elected(campaign: Campaign, candidate: string, signal: AbortSignal): Promise<void> {
    let onAbort: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        campaign.once('elected', () => resolve());
        campaign.once('error', (err: Error) => reject(this.failed(`campaigning for the lead as ${candidate}`, err)));
        onAbort = () => reject(signal.reason);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
    }
  }

  /** The term's fence: the leader key and its create revision, read back (gone already = its lease expired). */
  private async fenceOf(campaign: Campaign): Promise<Term['fence']> {
    const key = await campaign.getCampaignKey();
    const res = await this.call(`reading the leader key ${key}`, () => this.client.get(key).exec());
    const kv = res.kvs[0];
    if (!kv) throw new CorekubeError('E_ETCD', `elected, but the leader key ${key} is already gone (its lease expired)`, { retryable: true, hint: 'campaigning again' });
    return Object.freeze({ key, createRevision: String(kv.create_revision) });
  }

  private failed(what: string, err: unknown): CorekubeError {
    const e = toEtcdError(what, err, this.endpoints);
    this.options.observer?.failed(e);
    return e;
  }

  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      const res = await fn();
      this.options.observer?.answered();
      return res;
    } catch (err) {
      throw this.failed(what, err);
    }
  }
}

/**
 * Cancels every watch of an election's namespace (each etcd3 Election has its own namespace and watch
 * manager; a campaign waiting for its predecessor's key holds one). Best effort: the fields are private.
 */
async function cancelWatches(election: Election): Promise<void> {
  const manager = (election as unknown as { namespace?: { watchManager?: { watchers?: unknown } } }).namespace?.watchManager;
  const watchers = Array.isArray(manager?.watchers) ? (manager.watchers as { cancel?: () => Promise<void> }[]) : [];
  await Promise.all(
    [...watchers].map((w) =>
      typeof w.cancel === 'function'
        ? Promise.race([w.cancel().catch(() => undefined), new Promise<void>((r) => setTimeout(r, 1_000).unref())])
        : undefined,
    ),
  );
}

/** etcd3's Campaign holds its lease in a private field: read it, and check it is what we expect. */
function leaseOf(campaign: Campaign): Lease {
  const lease = (campaign as unknown as { lease?: unknown }).lease;
  if (!(lease instanceof Lease)) {
    throw new CorekubeError('E_INTERNAL', 'etcd3 Campaign no longer exposes its lease as `lease`', {
      hint: 'etcd3 is pinned to 1.1.2 in package.json; adapt overlord/availability/etcd-election.ts before upgrading it',
    });
  }
  return lease;
}

/**
 * Follows a lease's keepalives: each request's send time is queued; an answer (in order, on one stream)
 * confirms the oldest; a failed or new stream drops what is queued (those requests are lost).
 */
function followRenewals(
  lease: Lease,
  grantSentAt: number,
  clock: Clock,
  observer: EtcdElectionOptions['observer'],
  onFailure: (err: unknown) => void,
): { renewedAt(): number; stop(): void } {
  let renewedAt = Number.NEGATIVE_INFINITY;
  let stopped = false;
  const sent: number[] = [];
  lease.grant().then(
    () => {
      if (stopped) return;
      renewedAt = Math.max(renewedAt, grantSentAt);
      observer?.answered();
    },
    () => undefined, // reported by the campaign's error
  );
  const listeners = {
    keepaliveEstablished: () => (sent.length = 0),
    keepaliveFired: () => sent.push(clock.now()),
    keepaliveSucceeded: () => {
      const at = sent.shift();
      if (at !== undefined) renewedAt = Math.max(renewedAt, at);
      observer?.answered();
    },
    keepaliveFailed: (err: unknown) => {
      sent.length = 0;
      if (!stopped) onFailure(err);
    },
  };
  for (const [event, fn] of Object.entries(listeners)) lease.on(event as 'keepaliveFired', fn as () => void);
  return {
    renewedAt: () => renewedAt,
    stop: () => {
      stopped = true;
      for (const [event, fn] of Object.entries(listeners)) lease.off(event, fn as () => void);
    },
  };
}

