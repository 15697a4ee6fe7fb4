import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from './pki/store.ts';
import path from 'node:path';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import { addressPlan } from '../../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import type { Clock } from '../../core/clock.ts';
import { discoveryRbac, ensureDiscoveryAuth, ensureDiscoveryPasswords, pingDiscovery, ROOT_USER, type DiscoveryConnection } from './discovery-auth.ts';
import { derOf, fileHostKeys, pushDiscoveryFiles, servedCertificate } from './discovery-push.ts';
import { createEtcdStore, type EtcdStoreOptions } from '../edges/etcd-store.ts';
import { signalOnce, type SignalFiles } from '../edges/heat-signal.ts';
import type { HostRunner } from '../edges/host-runner.ts';
import { clusterKeys, type ClusterKeys } from '../../contracts/keys.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import { DiscoveryMachineCredentials } from './machine-credentials.ts';
import { MachinePkiFiles } from './machine-pki.ts';
import { CertificateAuthority, type DiscoveryPki } from './pki/authority.ts';
import { discoveryPkiFiles } from './pki/delivery.ts';
import { DirectoryPkiStore, type PkiStore } from './pki/store.ts';
import { ensureSshIdentity, type SshIdentity } from './ssh-identity.ts';
import { fetchSharedState, followSharedState, overlordDiscoveryPassword, publishSharedState, readOverlordSecret, type Follower } from './shared-state.ts';
import type { Fence, Store } from '../edges/store.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import type { UnitsWiring } from '../deploy/machine-units.ts';

/**
 * The overlord's boot sequence ("overlord first", issue 4 point 3 and issue 2's trust bootstrap): what the
 * overlord container does, in order, before it deploys anything. Every step is idempotent, so a restarted
 * overlord runs the whole sequence again and only does what is missing:
 *
 * 1. SSH identity: its own ed25519 key pair in `<stateDir>/ssh/` (made at first boot, reused after).
 * 2. PKI in `<stateDir>/pki/` (overlord/trust/pki): the discovery CA, discovery's server cert (SAN: the discovery
 *    IP) and the overlord's root client cert; the cluster and etcd CAs; the service-account key; the
 *    password of discovery's `root` etcd user and the secret the machines' own passwords derive from.
 * 3. overlord_ready: signals the Heat wait condition with data "<base64 public key line>:<base64 discovery
 *    CA PEM>" (once: a marker in `<stateDir>/heat/` remembers it). Heat then creates discovery, masters and
 *    minions with both in their user_data. No URL (booted by hand): nothing to signal. It also keeps the
 *    cluster_ready handle in `<stateDir>/handles/` (HANDLE_FILES), so standbys get it with the state.
 * 4. Discovery TLS: unless discovery's etcd already serves the current server cert, logs in to discovery as
 *    `corekube` (its host key trusted on first use, pinned in `<stateDir>/ssh/discovery.host-key`) and
 *    writes `/etc/corekube/pki/discovery/{ca.crt,server.crt,server.key}`; discovery's path unit starts
 *    etcd. Retried with backoff while discovery boots.
 * 5. Waits until discovery's etcd answers over TLS (verified against the discovery CA).
 * 6. Discovery auth (overlord/trust/discovery-auth.ts): users root and joiner (password = the join token from
 *    `<configDir>/secrets/join-token`), their roles, then `auth enable`. Idempotent. Each machine's own user
 *    is made when it is admitted (overlord/discovery/admission.ts, overlord/trust/machine-credentials.ts).
 * 7. Publishes its public key at `<prefix>ssh/overlord.pub`, as `root` over TLS.
 * 8. With an overlord secret (`<configDir>/secrets/overlord-secret`): publishes its state — ssh/ and pki/,
 *    sealed with the secret — at `<prefix>overlord/state` for standby overlords (overlord/trust/shared-state.ts),
 *    when absent or different, after taking over what is published (a restart after another overlord led
 *    publishes a superset of that leader's state, never an older one); step 6 then also made discovery's
 *    `overlord` user, which may read only that.
 *    No secret (booted by hand): no `overlord` user, nothing published, no standby can join.
 *
 * A STANDBY overlord (`standby: true`, a standby server of the stack) first fetches that state — as
 * `overlord`, over TLS verified with the discovery CA from `<configDir>/pki/discovery-ca.crt`, waiting until
 * the bootstrap overlord has published it — into its own state directory, then runs the same sequence,
 * which then changes nothing: the key and CAs exist, discovery already serves its certificate, auth is in
 * place, the key and the state are published. It signals nothing (it holds no wait-condition handle).
 * Then the caller runs the overlord with what this returns: `etcd` (discovery as root: the store and the
 * leader election), the SSH key, `units` + `prepareMachines` (each machine's PKI in its write-units step),
 * `credentials` (the machines' own discovery users, for admission; the caller closes it), and
 * `signalClusterReady` for onClusterReady (cluster_ready, once).
 *
 * Nothing secret is logged: keys, passwords and tokens are named, never printed.
 */
export interface BootInputs {
  readonly spec: ClusterSpec;
  /** etcd key prefix /corekube/<cluster>/ (default: the spec's name) */
  readonly cluster?: string;
  /** the overlord's state (SSH key, PKI, markers), read-write, mode 0700 */
  readonly stateDir: string;
  /** where cloud-config wrote the join token and the Heat signal files (CONFIG_FILES, relative) */
  readonly configDir: string;
  /** default: the address plan's discovery endpoint (https://<discovery IP>:2379) */
  readonly discoveryEndpoint?: string;
  /** the user the overlord logs in as on discovery (default corekube); root = no sudo */
  readonly sshUser?: string;
  readonly sshPort?: number;
  /** a standby server's overlord: fetch the state from discovery first, signal nothing */
  readonly standby?: boolean;
}

export interface BootDeps {
  readonly log: Logger;
  readonly clock: Clock;
  /** aborts the sequence (SIGTERM while booting) */
  readonly signal?: AbortSignal;
  /** for tests: the HTTP client of the Heat signals */
  readonly fetch?: typeof fetch;
  /** backoff of every retried step (default 1 s doubling to 30 s) */
  readonly backoffMs?: { readonly initial: number; readonly max: number };
}

export interface Booted {
  readonly cluster: string;
  readonly keys: ClusterKeys;
  readonly identity: SshIdentity;
  readonly authority: CertificateAuthority;
  readonly discovery: DiscoveryPki;
  readonly discoveryEndpoint: string;
  /** discovery's etcd as `root` over TLS (CA, root client cert, password): for createEtcdStore and the election */
  readonly etcd: EtcdStoreOptions;
  /** each machine's PKI files */
  readonly machineFiles: MachinePkiFiles;
  /** unitsForSpec(spec, units): the machine's PKI files in its write-units step */
  readonly units: UnitsWiring;
  /** the machines' own discovery etcd users (runOverlord's admission); close it when the overlord stops */
  readonly credentials: DiscoveryMachineCredentials;
  /** runOverlord's prepareMachines: issues the machines' PKI before the reconciler sees them (and republishes the state, fenced) */
  readonly prepareMachines: (records: readonly MachineRecord[], fence?: Fence) => Promise<void>;
  /** signals cluster_ready once (nothing to do when booted by hand or already signalled) */
  signalClusterReady(summary: string): Promise<void>;
  /**
   * Keeps the state directory current with the state the leader publishes while `applies()` (this overlord
   * does not lead): overlord/trust/shared-state.ts followSharedState. Undefined without an overlord secret.
   */
  readonly followState: ((store: Store, applies: () => boolean) => Follower) | undefined;
}

/** Heat signal marker files under the state dir: what was sent, so a restart does not send it again. */
export const MARKERS = Object.freeze({ overlordReady: 'heat/overlord-ready.sent', clusterReady: 'heat/cluster-ready.sent' });
/**
 * The stack's cluster_ready handle (URL and token), kept in the state directory by the bootstrap overlord so
 * it travels, sealed, to standby overlords (overlord/trust/shared-state.ts): whichever overlord leads when the last
 * machine is deployed signals it. (Heat takes a second signal with the same id as the same one.)
 */
export const HANDLE_FILES: SignalFiles = Object.freeze({ url: 'handles/cluster-ready.url', header: 'handles/cluster-ready.header' });
/** the id of the overlord's signals: the key of `data` in the wait condition's data attribute */
export const SIGNAL_ID = 'overlord';

const JOIN_TOKEN = /^[A-Za-z0-9._~+/=-]{16,256}$/;

export async function bootOverlord(inputs: BootInputs, deps: BootDeps): Promise<Booted> {
  const { spec, stateDir, configDir } = inputs;
  const cluster = inputs.cluster ?? spec.name;
  const keys = clusterKeys(cluster);
  const log = deps.log.child({ phase: 'boot' });
  const endpoint = inputs.discoveryEndpoint ?? addressPlan(spec).discoveryEndpoint;
  const { host, port } = parseEndpoint(endpoint);
  const sshUser = inputs.sshUser ?? 'corekube';
  const retry = <T>(what: string, fn: () => Promise<T>) => untilItWorks(what, fn, log, deps);
  const standby = inputs.standby ?? false;
  log.info({ event: 'boot.start', cluster, stateDir, discovery: endpoint, standby }, `overlord boot${standby ? ' (standby)' : ''}: cluster ${cluster}, discovery ${endpoint}`);

  // 0. the overlord secret; a standby fetches the bootstrap overlord's state with it
  const secret = await readOverlordSecret(path.join(configDir, CONFIG_FILES.overlordSecret));
  if (standby) {
    if (secret === undefined) {
      throw new CorekubeError('E_USAGE', `a standby overlord needs the overlord secret in ${path.join(configDir, CONFIG_FILES.overlordSecret)}`, {
        hint: 'a standby server\'s user_data writes it from the stack\'s overlord_secret; without it, run this overlord without --standby',
      });
    }
    const ca = await readConfigFile(path.join(configDir, CONFIG_FILES.discoveryCa), 'the discovery CA');
    await fetchSharedState(
      { etcd: { endpoints: [endpoint], tls: { ca: Buffer.from(ca) } }, keys, stateDir, secret },
      { log, clock: deps.clock, ...(deps.signal ? { signal: deps.signal } : {}), ...(deps.backoffMs ? { backoffMs: deps.backoffMs } : {}) },
    );
  } else if (secret === undefined) {
    log.info({ event: 'boot.no-overlord-secret', file: path.join(configDir, CONFIG_FILES.overlordSecret) }, 'no overlord secret (booted by hand): no standby can fetch this overlord\'s state');
  }

  // 1. SSH identity
  const identity = await ensureSshIdentity(stateDir, `corekube-overlord@${cluster}`);
  log.info({ event: 'boot.ssh-key', fingerprint: identity.fingerprint, created: identity.created }, `SSH key ${identity.fingerprint} ${identity.created ? 'made' : 'reused'}`);

  // 2. PKI and discovery passwords (before anything leaves this machine)
  // writes counted: the leader publishes the state again after issuing certificates (step 8's contract)
  const directory = new DirectoryPkiStore(path.join(stateDir, 'pki'));
  let pkiWrites = 0;
  const pkiStore: PkiStore = { read: (name) => directory.read(name), write: (name, content) => directory.write(name, content).then(() => void pkiWrites++) };
  const authority = new CertificateAuthority({ store: pkiStore, clock: deps.clock, cluster, log });
  const discovery = await authority.ensureDiscovery(spec);
  await authority.ensureCa('cluster');
  await authority.ensureCa('etcd');
  await authority.ensureCa('front-proxy');
  await authority.ensureServiceAccountKey();
  // the admin client certificate of the overlord's Kubernetes side: issued here, before the state is published,
  // so that a standby fetches it instead of issuing one of its own (its boot writes nothing)
  await authority.ensureAdmin();
  const passwords = await ensureDiscoveryPasswords(pkiStore);
  const joinToken = await readJoinToken(path.join(configDir, CONFIG_FILES.joinToken));
  log.info({ event: 'boot.pki', issued: discovery.issued.map((i) => i.name) }, 'PKI ready (discovery, cluster and etcd CAs)');

  // 3. overlord_ready (a standby holds no handle: the bootstrap overlord signalled it)
  if (!standby) {
    const ready = signalFiles(configDir, 'readyUrl', 'readyHeader');
    const data = `${Buffer.from(identity.publicKey).toString('base64')}:${Buffer.from(discovery.ca).toString('base64')}`;
    await signalOnce(ready, path.join(stateDir, MARKERS.overlordReady), { status: 'SUCCESS', reason: 'overlord key pair and discovery CA made', id: SIGNAL_ID, data }, signalDeps(stateDir, deps, log));
    await keepClusterReadyHandle(signalFiles(configDir, 'clusterReadyUrl', 'clusterReadyHeader'), stateDir);
  }

  // 4. discovery's TLS files
  const served = await servedCertificate(host, port, discovery.ca);
  if (served?.equals(derOf(discovery.server.cert))) {
    log.info({ event: 'boot.discovery-tls', ip: host, installed: false }, 'discovery already serves the current certificate');
  } else {
    const { createSshRunner } = await import('../edges/ssh-runner.ts');
    const hosts: HostRunner = createSshRunner({ user: sshUser, privateKey: identity.privateKey, port: inputs.sshPort ?? 22, connectTimeoutMs: 20_000, hostKeys: fileHostKeys(stateDir) });
    try {
      await pushDiscoveryFiles(hosts, { id: 'discovery', ip: host }, discoveryPkiFiles(discovery), {
        user: sshUser,
        clock: deps.clock,
        log,
        ...(deps.signal ? { signal: deps.signal } : {}),
        ...(deps.backoffMs ? { backoffMs: deps.backoffMs } : {}),
      });
    } finally {
      await hosts.close().catch(() => undefined);
    }
  }

  // 5. discovery's etcd answers over TLS
  const conn: DiscoveryConnection = { endpoints: [endpoint], ca: discovery.ca, cert: discovery.overlordClient.cert, key: discovery.overlordClient.key };
  await retry('waiting for the discovery etcd', () => pingDiscovery(conn));
  log.info({ event: 'boot.discovery-up', discovery: endpoint }, 'discovery etcd answers over TLS');

  // 6. discovery auth
  const rbac = discoveryRbac(keys, { root: passwords.root, joiner: joinToken, ...(secret === undefined ? {} : { overlord: overlordDiscoveryPassword(secret) }) });
  const auth = await retry('setting up discovery auth', () => ensureDiscoveryAuth(conn, rbac));
  log.info({ event: 'boot.discovery-auth', changes: auth.changes, wasEnabled: auth.wasEnabled }, auth.changes.length === 0 ? 'discovery auth already in place' : `discovery auth: ${auth.changes.join('; ')}`);

  // 7. the overlord's public key for the nodes, written as root
  const etcd: EtcdStoreOptions = Object.freeze({
    endpoints: [endpoint],
    tls: { ca: Buffer.from(discovery.ca), cert: Buffer.from(discovery.overlordClient.cert), key: Buffer.from(discovery.overlordClient.key) },
    auth: { username: ROOT_USER, password: passwords.root },
  });
  const store = createEtcdStore(etcd);
  try {
    await retry('publishing the overlord\'s public key', async () => {
      const kv = await store.get(keys.overlordSshKey);
      if (kv?.value !== identity.publicKey) await store.put(keys.overlordSshKey, identity.publicKey);
    });
    // 8. the state for standbys
    // (a standby took the published state over in step 0 and publishes only once it leads)
    if (secret !== undefined && !standby) {
      const shared = await retry('publishing the overlord state', () => publishSharedState({ store, keys, stateDir, secret, log, adopt: true })).catch((err: unknown) => {
        // a state too large for one etcd request must not stop the overlord: standbys keep what they have
        const e = asCorekubeError(err);
        if (e.code !== 'E_OVERLORD_STATE') throw e;
        log.error({ event: 'overlord-state.not-published', ...errorFields(e) }, 'the overlord state could not be published for standbys');
        return undefined;
      });
      if (shared && !shared.published) log.info({ event: 'overlord-state.current', fingerprint: shared.fingerprint, files: shared.files }, 'the published overlord state is current');
    }
  } finally {
    await store.close();
  }
  log.info({ event: 'boot.done', fingerprint: identity.fingerprint }, 'overlord boot done');

  const credentials = new DiscoveryMachineCredentials(conn, passwords.root, keys, passwords.machines);
  const machineFiles = new MachinePkiFiles({ authority, spec, discoveryCa: discovery.ca, credentials, log: deps.log });
  // the leading overlord issued machines' certificates: standbys should take over with them, not re-issue
  // them (a re-issued pair redeploys its machine). Best effort: a failure is logged, the deploy goes on.
  // fenced on the leader's election key: an overlord that lost its lead cannot publish over its successor's
  const republish = async (key: string, fence: Fence | undefined): Promise<void> => {
    const shared = createEtcdStore(etcd);
    try {
      await publishSharedState({ store: shared, keys, stateDir, secret: key, log: deps.log, ...(fence ? { fence } : {}) });
    } catch (err) {
      deps.log.warn({ event: 'overlord-state.not-published', ...errorFields(err) }, 'the overlord state could not be published for standbys; next time certificates are issued');
    } finally {
      await shared.close();
    }
  };
  // a standby signals the handle the bootstrap overlord shared (there is none when it was booted by hand)
  const clusterReadyFiles = standby
    ? { url: path.join(stateDir, HANDLE_FILES.url), header: path.join(stateDir, HANDLE_FILES.header) }
    : signalFiles(configDir, 'clusterReadyUrl', 'clusterReadyHeader');
  const signalClusterReady = async (summary: string): Promise<void> => {
    if (standby && !(await readFile(clusterReadyFiles.url, 'utf8').then(() => true, () => false))) {
      deps.log.info({ event: 'heat.no-handle', standby }, 'standby overlord: the bootstrap overlord shared no cluster_ready handle; nothing to signal');
      return;
    }
    await signalOnce(clusterReadyFiles, path.join(stateDir, MARKERS.clusterReady), { status: 'SUCCESS', reason: summary, id: SIGNAL_ID, data: summary }, signalDeps(stateDir, deps, deps.log));
  };
  return Object.freeze({
    cluster,
    keys,
    identity,
    authority,
    discovery,
    discoveryEndpoint: endpoint,
    etcd,
    machineFiles,
    credentials,
    units: Object.freeze<UnitsWiring>({ machineFiles: (record, view) => machineFiles.filesFor(record, view), nodeReady: true }),
    prepareMachines: async (records: readonly MachineRecord[], fence?: Fence) => {
      const before = pkiWrites;
      await machineFiles.prepare(records);
      if (secret !== undefined && pkiWrites !== before) await republish(secret, fence);
    },
    signalClusterReady,
    followState:
      secret === undefined ? undefined : (shared: Store, applies: () => boolean) => followSharedState({ store: shared, keys, stateDir, secret, log: deps.log, clock: deps.clock, applies }),
  });
}

/** Copies the cluster_ready handle files into the state directory (0600) when there is a handle and they differ. */
async function keepClusterReadyHandle(files: SignalFiles, stateDir: string): Promise<void> {
  const read = (f: string) => readFile(f, 'utf8').catch(() => '');
  const url = await read(files.url);
  if (url.trim() === '') return;
  for (const [from, to] of [[files.url, HANDLE_FILES.url], [files.header, HANDLE_FILES.header]] as const) {
    const content = await read(from);
    if ((await read(path.join(stateDir, to))) !== content) await writeFileAtomic(path.join(stateDir, to), content, { root: stateDir });
  }
}

function signalFiles(configDir: string, url: 'readyUrl' | 'clusterReadyUrl', header: 'readyHeader' | 'clusterReadyHeader'): SignalFiles {
  return { url: path.join(configDir, CONFIG_FILES[url]), header: path.join(configDir, CONFIG_FILES[header]) };
}

function signalDeps(stateDir: string, deps: BootDeps, log: Logger) {
  return {
    clock: deps.clock,
    log,
    stateDir,
    ...(deps.signal ? { signal: deps.signal } : {}),
    ...(deps.fetch ? { fetch: deps.fetch } : {}),
    ...(deps.backoffMs ? { backoffMs: deps.backoffMs } : {}),
  };
}

async function readJoinToken(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CorekubeError('E_IO', `cannot read the join token ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      hint: 'the overlord server\'s cloud-config writes it from the stack\'s join token; mount /etc/corekube into the container',
    });
  }
  const token = text.trim();
  if (!JOIN_TOKEN.test(token)) {
    throw new CorekubeError('E_USAGE', `${file} does not hold a join token (16-256 characters of A-Za-z0-9._~+/=-)`, {
      hint: 'write the join token the machines were given into it, on one line',
    });
  }
  return token;
}

async function readConfigFile(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    throw new CorekubeError('E_IO', `cannot read ${what} ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`, {
      hint: 'a standby server\'s cloud-config writes it from overlord_ready\'s data; mount /etc/corekube into the container',
    });
  }
}

function parseEndpoint(endpoint: string): { host: string; port: number } {
  const m = /^https:\/\/((?:\d{1,3}\.){3}\d{1,3}):(\d{1,5})\/?$/.exec(endpoint);
  if (!m) throw new CorekubeError('E_USAGE', `the discovery endpoint ${JSON.stringify(endpoint)} is not https://<IPv4>:<port>`, { hint: 'for example https://10.240.0.10:2379' });
  return { host: m[1]!, port: Number(m[2]) };
}

async function untilItWorks<T>(what: string, fn: () => Promise<T>, log: Logger, deps: BootDeps): Promise<T> {
  const backoff = deps.backoffMs ?? { initial: 1_000, max: 30_000 };
  let delay = backoff.initial;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const e = asCorekubeError(err, 'E_ETCD');
      if (!e.retryable || deps.signal?.aborted) throw e;
      log.warn({ event: 'boot.retry', what, attempt, nextRetryMs: delay, ...errorFields(e) }, `${what}: not yet; retrying`);
      await deps.clock.sleep(delay, deps.signal);
      delay = Math.min(backoff.max, delay * 2);
    }
  }
}
