import os from 'node:os';
import { CorekubeError } from '../core/errors.ts';
import { DEFAULT_ETCD_BUDGET_SECONDS } from '../overlord/availability/health.ts';
import { DEFAULT_LEASE_TTL_SECONDS, MAX_LEASE_TTL_SECONDS, MIN_LEASE_TTL_SECONDS, validateLeaseTtl } from '../overlord/availability/leader.ts';
import type { LeaderConfig } from '../overlord/availability/leader-service.ts';

/**
 * `corekube overlord`'s leader-election and health flags, parsed into what overlord/availability/leader-service.ts
 * starts: the etcd election, the leadership loop and the /healthz endpoint.
 */
export const LEADER_OPTIONS = {
  id: { type: 'string' },
  'lease-ttl': { type: 'string' },
  'health-port': { type: 'string' },
  'health-address': { type: 'string' },
  'etcd-retry-budget': { type: 'string' },
} as const;

export const LEADER_USAGE = `  --id ID                this overlord's name in the leader election (default: HOSTNAME-PID). Any number
                         of overlords may run: the elected one deploys, the others stand by
  --lease-ttl SECONDS    leader lease TTL, ${MIN_LEASE_TTL_SECONDS}..${MAX_LEASE_TTL_SECONDS}: a standby takes over at most this long after the
                         leader is gone; a leader cut off from etcd stops acting after 2/3 of it (default ${DEFAULT_LEASE_TTL_SECONDS})
  --health-port N        serve GET /healthz on this port: 200 {"role":"leader|standby","etcd":"ok|down",…},
                         503 once etcd has been unreachable longer than the retry budget (default: no endpoint)
  --health-address ADDR  address the health endpoint listens on (default 127.0.0.1)
  --etcd-retry-budget S  seconds etcd may be unreachable before the overlord logs an error and /healthz answers
                         503; it keeps retrying either way (default ${DEFAULT_ETCD_BUDGET_SECONDS})`;

type Values = { readonly [K in keyof typeof LEADER_OPTIONS]?: string };

export function parseLeaderFlags(values: Values): LeaderConfig {
  const id = values.id ?? `${os.hostname()}-${process.pid}`;
  if (!/^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$/.test(id)) {
    throw new CorekubeError('E_USAGE', `--id ${JSON.stringify(id)} is not a name of letters, digits, '.', '_', ':' or '-' (at most 63)`, { hint: 'for example --id overlord-1' });
  }
  const ttl = values['lease-ttl'] === undefined ? DEFAULT_LEASE_TTL_SECONDS : wholeNumber('lease-ttl', values['lease-ttl'], DEFAULT_LEASE_TTL_SECONDS);
  validateLeaseTtl(ttl);
  const budget = values['etcd-retry-budget'] === undefined ? DEFAULT_ETCD_BUDGET_SECONDS : wholeNumber('etcd-retry-budget', values['etcd-retry-budget'], DEFAULT_ETCD_BUDGET_SECONDS);
  if (budget < 1) throw new CorekubeError('E_USAGE', `--etcd-retry-budget must be at least 1 second, got ${budget}`, { hint: `for example --etcd-retry-budget ${DEFAULT_ETCD_BUDGET_SECONDS}` });
  const port = values['health-port'] === undefined ? undefined : wholeNumber('health-port', values['health-port'], 8740);
  if (port !== undefined && (port < 1 || port > 65535)) throw new CorekubeError('E_USAGE', `--health-port must be a TCP port (1..65535), got ${port}`, { hint: 'for example --health-port 8740' });
  const address = values['health-address'] ?? '127.0.0.1';
  return Object.freeze({ id, leaseTtlSeconds: ttl, health: port === undefined ? undefined : { port, address }, etcdBudgetMs: budget * 1000 });
}

function wholeNumber(flag: string, value: string, example: number): number {
  const n = /^\d{1,6}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n)) throw new CorekubeError('E_USAGE', `--${flag} must be a whole number (got ${JSON.stringify(value)})`, { hint: `for example --${flag} ${example}` });
  return n;
}
