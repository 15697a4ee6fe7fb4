import { readFileSync } from 'node:fs';
import { CONFIG_DIR, MACHINE_PATHS } from '../cloud-config/machine-paths.ts';
import { systemClock } from '../core/clock.ts';
import { CorekubeError } from '../core/errors.ts';
import { createLogger, errorFields, parseLogFormat } from '../overlord/edges/log.ts';
import { serveOverlord, type OverlordConfig } from '../overlord/overlord.ts';
import { DEFAULT_CONCURRENCY } from '../overlord/term.ts';
import type { Command } from './command.ts';
import { LEADER_OPTIONS, LEADER_USAGE, parseLeaderFlags } from './leader-options.ts';
import { parseSpecArgs, specUsage } from './spec-options.ts';
import { ETCD_OPTIONS, ETCD_USAGE, etcdStoreOptions } from './status.ts';

/*
 * `corekube overlord -c /etc/corekube/overlord.yaml` (no --etcd-endpoints: what overlord.service runs in the
 * overlord container) boots the cluster's trust first (overlord/trust/bootstrap.ts: its SSH key, its PKI,
 * overlord_ready, discovery's TLS files, users and auth), then runs the overlord against discovery as root.
 * With --etcd-endpoints it only runs the overlord, on the etcd and SSH key the flags give. The wiring is
 * overlord/overlord.ts, the composition root: this command parses, calls it and sets the exit code.
 */
const usage = `Usage: corekube overlord -c overlord.yaml [--state-dir DIR] [--config-dir DIR] [--standby] [options]
       corekube overlord --etcd-endpoints URLS [--etcd-ca FILE --etcd-cert FILE --etcd-key FILE]
                        --ssh-key FILE [options] [spec options]
Options: [--ssh-user USER] [--concurrency N] [--cluster NAME] [--id ID] [--lease-ttl S]
         [--health-port N] [--log-format json|pretty]

Runs the overlord: watches the machines announced in the discovery etcd, deploys each role's units over
SSH in parallel, records every step in etcd (ledger) and resumes where it stopped after a restart.
Any number of overlords may run: they elect a leader in etcd, which deploys; the others stand by and
take over within the lease TTL. SIGTERM/SIGINT stop it cleanly (a leader resigns at once). Logs go to
stdout: JSON, or pretty on a terminal.

Without --etcd-endpoints the overlord boots the cluster first (what the overlord server runs): makes its
SSH key and CAs, signals overlord_ready to Heat, installs discovery's certificate over SSH, sets up the
discovery etcd's users (root, joiner, and overlord for standbys) and enables auth, then admits each
machine with a discovery user of its own and deploys it with its certificates; it signals cluster_ready
once the initial machines are deployed. Every step is idempotent: a restart reuses its key and CAs.
  --state-dir DIR        the overlord's state: SSH key, PKI, markers (default ${MACHINE_PATHS.overlordState})
  --config-dir DIR       where the join token and the Heat signal files are (default ${CONFIG_DIR})
  --standby              a standby overlord server: first fetch the bootstrap overlord's state (SSH key, CAs;
                         sealed in discovery with <config-dir>/secrets/overlord-secret) instead of making it,
                         signal nothing, then stand by in the leader election

${ETCD_USAGE}
  --ssh-user USER        user the overlord logs in as on every machine (privileged commands use sudo -n
                         unless it is root) (default corekube)
  --ssh-key FILE         the overlord's SSH private key (required with --etcd-endpoints)
  --ssh-port N           SSH port of the machines (default 22)
  --concurrency N        machines deployed at once (default ${DEFAULT_CONCURRENCY})
  --cluster NAME         etcd key prefix /corekube/NAME/ (default: the spec's name)
  --log-format FORMAT    json (default unless stdout is a terminal) or pretty
  --log-level LEVEL      info (default), debug, warn, error
${LEADER_USAGE}

The cluster spec (the file the overlord server's cloud-config writes, given with -c) says how many masters
and minions the initial cluster has (cluster-ready) and what every machine's units contain.

${specUsage()}`;

export const overlordCommand: Command = {
  path: ['overlord'],
  summary: 'run the overlord: deploy every announced machine over SSH, record progress in etcd',
  usage,
  async run(argv) {
    const { spec, values } = parseSpecArgs(
      argv,
      {
        ...ETCD_OPTIONS,
        ...LEADER_OPTIONS,
        'ssh-user': { type: 'string' },
        'ssh-key': { type: 'string' },
        'ssh-port': { type: 'string' },
        concurrency: { type: 'string' },
        cluster: { type: 'string' },
        'log-format': { type: 'string' },
        'log-level': { type: 'string' },
        'state-dir': { type: 'string' },
        'config-dir': { type: 'string' },
        standby: { type: 'boolean' },
      },
      usage,
    );
    const booting = values['etcd-endpoints'] === undefined;
    const misplaced = booting
      ? (['ssh-key', 'etcd-ca', 'etcd-cert', 'etcd-key'] as const).filter((f) => values[f] !== undefined)
      : (['state-dir', 'config-dir', 'standby'] as const).filter((f) => values[f] !== undefined);
    if (misplaced.length > 0) {
      throw new CorekubeError('E_USAGE', `${misplaced.map((f) => `--${f}`).join(', ')} ${misplaced.length === 1 ? 'is' : 'are'} ${booting ? 'only for use with --etcd-endpoints' : 'for booting (without --etcd-endpoints)'}`, {
        hint: booting ? 'booting, the overlord makes its own SSH key and etcd credentials' : 'drop them, or drop --etcd-endpoints to boot the cluster',
      });
    }
    const sshUser = values['ssh-user'] ?? 'corekube';
    if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(sshUser)) throw new CorekubeError('E_USAGE', `--ssh-user ${JSON.stringify(sshUser)} is not a user name`, { hint: 'for example --ssh-user corekube' });
    if (!booting && values['ssh-key'] === undefined) throw new CorekubeError('E_USAGE', '--ssh-key is required', { hint: 'give the overlord\'s SSH private key file, e.g. --ssh-key /var/lib/corekube/ssh/id_ed25519' });
    const concurrency = positiveInt('concurrency', values.concurrency, DEFAULT_CONCURRENCY);
    const sshPort = positiveInt('ssh-port', values['ssh-port'], 22);
    const format = parseLogFormat(values['log-format']);
    const cluster = values.cluster ?? spec.name;
    const leaderFlags = parseLeaderFlags(values);
    let privateKey: string | undefined;
    if (values['ssh-key'] !== undefined) {
      try {
        privateKey = readFileSync(values['ssh-key'], 'utf8');
      } catch (err) {
        throw new CorekubeError('E_USAGE', `--ssh-key ${values['ssh-key']} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`, { hint: 'give the path of the overlord\'s SSH private key' });
      }
    }

    const log = createLogger({ ...(format ? { format } : {}), ...(values['log-level'] ? { level: values['log-level'] } : {}) });
    const stop = new AbortController();
    const onSignal = (sig: NodeJS.Signals) => {
      log.info({ event: 'overlord.signal', signal: sig }, `received ${sig}`);
      stop.abort(new CorekubeError('E_INTERNAL', `stopped by ${sig}`));
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    const config: OverlordConfig = {
      spec,
      cluster,
      sshUser,
      sshPort,
      concurrency,
      leader: leaderFlags,
      ...(booting
        ? { boot: { stateDir: values['state-dir'] ?? MACHINE_PATHS.overlordState, configDir: values['config-dir'] ?? CONFIG_DIR, standby: values.standby === true } }
        : { given: { etcd: etcdStoreOptions(values), privateKey: privateKey! } }),
    };
    try {
      await serveOverlord(config, { log, clock: systemClock, signal: stop.signal });
      return 0;
    } catch (err) {
      log.fatal({ event: 'overlord.fatal', ...errorFields(err) }, 'overlord stopped on an error');
      throw err;
    } finally {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    }
  },
};

function positiveInt(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new CorekubeError('E_USAGE', `--${flag} must be a positive whole number (got ${JSON.stringify(value)})`, { hint: `for example --${flag} ${fallback}` });
  return n;
}
