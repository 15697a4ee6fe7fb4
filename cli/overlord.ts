import { readFileSync } from 'node:fs';
import { CorekubeError } from '../core/errors.ts';
import { bootOverlord, type Booted } from '../overlord/trust/bootstrap.ts';
import { systemClock } from '../core/clock.ts';
import { etcdHostKeys } from '../overlord/discovery/hostkeys.ts';
import { clusterKeys } from '../contracts/keys.ts';
import { createLogger, errorFields, parseLogFormat } from '../overlord/edges/log.ts';
import { DEFAULT_CONCURRENCY } from '../overlord/term.ts';
import { createEtcdStore } from '../overlord/edges/etcd-store.ts';
import { MACHINE_PATHS, CONFIG_DIR } from '../cloud-config/machine-paths.ts';
import { EtcdHealth, observedStore } from '../overlord/availability/health.ts';
import type { Leadership } from '../overlord/availability/leader.ts';
import { unitsForSpec } from '../overlord/deploy/machine-units.ts';
import type { Command } from './command.ts';
import { parseSpecArgs, specUsage } from './spec-options.ts';
import { ETCD_OPTIONS, ETCD_USAGE, etcdStoreOptions } from './status.ts';
import { LEADER_OPTIONS, LEADER_USAGE, parseLeaderFlags, startLeaderService } from './leader-options.ts';
import { flannelConfig } from '../overlord/pod-network/flannel.ts';
import { createKubernetesApi } from '../overlord/kubernetes/api.ts';
import { clusterAddons } from '../overlord/kubernetes/addons.ts';
import type { KubernetesOptions } from '../overlord/term.ts';
import type { ClusterSpec } from '../clusterspec/cluster-spec.ts';
import { machineAddresses } from '../overlord/discovery/identity.ts';
import { DEFAULT_LIVENESS } from '../overlord/availability/liveness.ts';

/*
 * `corekube overlord -c /etc/corekube/overlord.yaml` (no --etcd-endpoints: what overlord.service runs in the
 * overlord container) boots the cluster's trust first — overlord/trust/bootstrap.ts, in order: its own SSH key
 * (<state-dir>/ssh), the PKI (<state-dir>/pki: discovery CA + discovery server cert + its root client cert,
 * cluster and etcd CAs), overlord_ready signalled once to Heat (<config-dir>/heat/ready.{url,header}; no
 * URL = booted by hand), discovery's TLS files installed over SSH as corekube (unless discovery already
 * serves them), discovery's etcd awaited over TLS, its users and roles set up (root, joiner = the join token
 * from <config-dir>/secrets/join-token, flannel) and auth enabled, the public key published at
 * <prefix>ssh/overlord.pub — then runs the overlord against discovery as root, each machine's PKI in its
 * write-units step, and signals cluster_ready once when the initial masters and minions are deployed.
 * With --etcd-endpoints it only runs the overlord, on the etcd and SSH key the flags give.
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
discovery etcd's users (root, joiner, flannel) and enables auth, then deploys with each machine's
certificates; it signals cluster_ready once the initial machines are deployed. Every step is idempotent:
a restart reuses its key and CAs.
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
    let booted: Booted | undefined;
    if (booting) {
      try {
        booted = await bootOverlord(
          { spec, cluster, stateDir: values['state-dir'] ?? MACHINE_PATHS.overlordState, configDir: values['config-dir'] ?? CONFIG_DIR, sshUser, sshPort, standby: values.standby === true },
          { log, clock: systemClock, signal: stop.signal },
        );
      } catch (err) {
        process.off('SIGTERM', onSignal);
        process.off('SIGINT', onSignal);
        if (stop.signal.aborted) return 0;
        log.fatal({ event: 'overlord.fatal', ...errorFields(err) }, 'overlord boot failed');
        throw err;
      }
      privateKey = booted.identity.privateKey;
    }
    const etcd = booted?.etcd ?? etcdStoreOptions(values);
    // every etcd answer and failure feeds the health (/healthz, the etcd.unreachable error)
    const health = new EtcdHealth(systemClock, log, leaderFlags.etcdBudgetMs);
    const store = observedStore(createEtcdStore(etcd), health);
    let leadership: Leadership | undefined;
    // loaded here, not at the top: `corekube --help` and other commands need not load ssh2
    const { createSshRunner } = await import('../overlord/edges/ssh-runner.ts');
    const hosts = createSshRunner({ user: sshUser, privateKey: privateKey!, port: sshPort, connectTimeoutMs: 20_000, hostKeys: etcdHostKeys(store, clusterKeys(cluster), () => leadership?.fence()) });

    let service: Awaited<ReturnType<typeof startLeaderService>> | undefined;
    let follower: ReturnType<NonNullable<Booted['followState']>> | undefined;
    try {
      // only the elected overlord runs the deployment (a term = one runOverlord); see overlord/availability/leader.ts
      service = await startLeaderService({
        flags: leaderFlags,
        etcd,
        keys: clusterKeys(cluster),
        health,
        ports: { store, hosts, clock: systemClock, log },
        overlord: {
          cluster,
          sshUser,
          unitsFor: unitsForSpec(spec, booted?.units),
          expected: { masters: spec.masters, minions: spec.minions },
          concurrency,
          podNetwork: flannelConfig(spec),
          // machines are deployed only while they answer over SSH; booted, only at addresses of the private network
          // (by hand, on --etcd-endpoints, records name whatever addresses the operator's machines have)
          liveness: DEFAULT_LIVENESS,
          ...(booted
            ? {
                addresses: machineAddresses(spec),
                prepareMachines: booted.prepareMachines,
                admission: { credentials: booted.credentials },
                onClusterReady: () => booted.signalClusterReady(`${spec.masters} masters and ${spec.minions} minions deployed, every Node Ready, the add-ons available`),
                kubernetes: await kubernetesOf(spec, booted),
              }
            : {}),
        },
        signal: stop.signal,
      });
      leadership = service.leadership;
      // a standby keeps the certificates the leader issues, so that it takes over without re-issuing them
      follower = booted?.followState?.(store, () => leadership?.role() !== 'leader');
      await leadership.done;
      return 0;
    } catch (err) {
      log.fatal({ event: 'overlord.fatal', ...errorFields(err) }, 'overlord stopped on an error');
      throw err;
    } finally {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      await follower?.stop();
      await service?.close();
      await hosts.close().catch(() => undefined);
      booted?.credentials.close();
      await store.close();
    }
  },
};

/** The cluster's Kubernetes side, as its admin (the client certificate the overlord's PKI issues). */
async function kubernetesOf(spec: ClusterSpec, booted: Booted): Promise<KubernetesOptions> {
  const admin = await booted.authority.ensureAdmin();
  const credentials = { ca: admin.ca, cert: admin.client.cert, key: admin.client.key };
  return { api: (servers) => createKubernetesApi(servers, credentials), addons: clusterAddons(spec) };
}

function positiveInt(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new CorekubeError('E_USAGE', `--${flag} must be a positive whole number (got ${JSON.stringify(value)})`, { hint: `for example --${flag} ${fallback}` });
  return n;
}
