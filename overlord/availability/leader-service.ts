import type { ClusterKeys } from '../../contracts/keys.ts';
import type { EtcdStoreOptions } from '../edges/etcd-store.ts';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../edges/log.ts';
import { createEtcdElection } from './etcd-election.ts';
import { leadershipHealth, type EtcdHealth, type ReportingTerm } from './health.ts';
import { startHealthServer, type HealthServer } from './health-server.ts';
import { runLeader, type Leadership, type LeaderOptions } from './leader.ts';

/** How this overlord takes part in the election, and whether it serves /healthz. */
export interface LeaderConfig {
  /** this overlord's id: the election value, shown by `corekube status` and /healthz */
  readonly id: string;
  readonly leaseTtlSeconds: number;
  readonly health: { readonly port: number; readonly address: string } | undefined;
  /** how long etcd may be unreachable before the overlord reports it (an error line, /healthz 503) */
  readonly etcdBudgetMs: number;
}

export interface LeaderService<T extends ReportingTerm> {
  readonly leadership: Leadership<T>;
  readonly health: HealthServer | undefined;
  /** stops nothing: closes the election's client and the health endpoint once the leadership is done */
  close(): Promise<void>;
}

/** Starts the etcd election, the leadership loop (leader.ts) and, when asked, the /healthz endpoint. */
export async function startLeaderService<T extends ReportingTerm>(input: {
  readonly config: LeaderConfig;
  readonly etcd: EtcdStoreOptions;
  readonly keys: ClusterKeys;
  readonly health: EtcdHealth;
  readonly ports: { readonly clock: Clock; readonly log: Logger };
  readonly term: LeaderOptions<T>['term'];
  readonly signal: AbortSignal;
}): Promise<LeaderService<T>> {
  const { config, ports } = input;
  const election = createEtcdElection({ ...input.etcd, keys: input.keys, clock: ports.clock, observer: input.health });
  const leadership = runLeader(ports, { id: config.id, election, leaseTtlSeconds: config.leaseTtlSeconds, term: input.term, signal: input.signal });
  let server: HealthServer | undefined;
  try {
    if (config.health) {
      server = await startHealthServer({ host: config.health.address, port: config.health.port, report: () => leadershipHealth(leadership, election, input.health) });
      ports.log.info({ event: 'health.listening', url: server.url }, `health endpoint at ${server.url}`);
    }
  } catch (err) {
    await leadership.stop();
    await election.close();
    throw err;
  }
  return {
    leadership,
    health: server,
    close: async () => {
      await server?.close();
      input.health.close();
      await election.close();
    },
  };
}
