import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import { addressPlan } from '../../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { clusterKeys, type ClusterKeys } from '../../contracts/keys.ts';
import type { Clock } from '../../core/clock.ts';
import { asCorekubeError, CorekubeError } from '../../core/errors.ts';
import { BACKOFF, retry, type Backoff } from '../../core/retry.ts';
import { createEtcdStore, type EtcdStoreOptions } from '../edges/etcd-store.ts';
import type { HostRunner } from '../edges/host-runner.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import { discoveryRbac, ensureDiscoveryAuth, ensureDiscoveryPasswords, pingDiscovery, ROOT_USER, type DiscoveryConnection } from './discovery-auth.ts';
import { derOf, fileHostKeys, pushDiscoveryFiles, servedCertificate } from './discovery-push.ts';
import { signalOverlordReady, type HandleDeps } from './heat-handles.ts';
import { CertificateAuthority, type DiscoveryPki } from './pki/authority.ts';
import { discoveryPkiFiles } from './pki/delivery.ts';
import { DirectoryPkiStore, type PkiStore } from './pki/store.ts';
import { overlordDiscoveryPassword, readOverlordSecret } from './sealed-state.ts';
import { fetchSharedState, publishSharedState } from './shared-state.ts';
import { keepChannelAgent } from '../edges/stack-channel.ts';
import { ensureSshIdentity, type SshIdentity } from './ssh-identity.ts';

/**
 * The overlord's boot sequence ("overlord first": the cluster's trust is made before anything else boots): what the
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
 * Then the composition root (overlord/overlord.ts) runs the overlord with what this returns: `etcd` (discovery as
 * root: the store and the leader election), the SSH key, the CA (each machine's PKI in its write-units step), the
 * discovery root and the machines' secret (the machines' own discovery users, for admission), the overlord
 * secret (the state it publishes after issuing certificates, the state a standby follows).
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
  /** backoff of every retried step (default BACKOFF.boot) */
  readonly backoff?: Backoff;
}

export interface Booted {
  readonly cluster: string;
  readonly keys: ClusterKeys;
  readonly standby: boolean;
  readonly stateDir: string;
  readonly configDir: string;
  readonly identity: SshIdentity;
  readonly authority: CertificateAuthority;
  readonly discovery: DiscoveryPki;
  readonly discoveryEndpoint: string;
  /** discovery's etcd as `root` over TLS (CA, root client cert, password): for createEtcdStore and the election */
  readonly etcd: EtcdStoreOptions;
  /** discovery as root, and the secret every machine's own discovery password derives from (trust/machine-credentials.ts) */
  readonly machineUsers: { readonly conn: DiscoveryConnection; readonly rootPassword: string; readonly secret: string };
  /** the overlord secret: standbys share this overlord's state sealed with it; undefined when booted by hand */
  readonly overlordSecret: string | undefined;
  /** PKI files written so far (the leader publishes the state again after issuing certificates) */
  pkiWrites(): number;
}

const DAY_MS = 24 * 3600 * 1000;
const JOIN_TOKEN = /^[A-Za-z0-9._~+/=-]{16,256}$/;

export async function bootOverlord(inputs: BootInputs, deps: BootDeps): Promise<Booted> {
  const b = new Boot(inputs, deps);
  b.log.info({ event: 'boot.start', cluster: b.cluster, stateDir: inputs.stateDir, discovery: b.endpoint, standby: b.standby }, `overlord boot${b.standby ? ' (standby)' : ''}: cluster ${b.cluster}, discovery ${b.endpoint}`);
  const secret = await b.overlordSecret(); // 0. (a standby fetches the state)
  const identity = await b.sshIdentity(); // 1.
  const pki = await b.pki(); // 2.
  if (!b.standby) await signalOverlordReady(identity.publicKey, pki.discovery.ca, handleDeps(inputs, deps, b.log)); // 3.
  await b.discoveryTls(identity, pki.discovery); // 4.
  const conn = await b.discoveryUp(pki.discovery); // 5.
  await b.discoveryAuth(conn, pki, secret); // 6.
  // the stack channel's user (user_data), kept with the state so standbys poll the stack too (edges/stack-channel.ts)
  if (!b.standby) await keepChannelAgent(inputs.configDir, inputs.stateDir);
  const etcd = await b.publish(identity, pki, secret); // 7., 8.
  b.log.info({ event: 'boot.done', fingerprint: identity.fingerprint }, 'overlord boot done');
  return Object.freeze({
    cluster: b.cluster,
    keys: b.keys,
    standby: b.standby,
    stateDir: inputs.stateDir,
    configDir: inputs.configDir,
    identity,
    authority: pki.authority,
    discovery: pki.discovery,
    discoveryEndpoint: b.endpoint,
    etcd,
    machineUsers: Object.freeze({ conn, rootPassword: pki.passwords.root, secret: pki.passwords.machines }),
    overlordSecret: secret,
    pkiWrites: pki.writes,
  });
}

interface Pki {
  readonly authority: CertificateAuthority;
  readonly discovery: DiscoveryPki;
  readonly passwords: { readonly root: string; readonly machines: string };
  readonly joinToken: string;
  writes(): number;
}

/** The steps of the boot sequence, in the order of the header. */
class Boot {
  readonly cluster: string;
  readonly keys: ClusterKeys;
  readonly log: Logger;
  readonly endpoint: string;
  readonly standby: boolean;

  constructor(
    private readonly inputs: BootInputs,
    private readonly deps: BootDeps,
  ) {
    this.cluster = inputs.cluster ?? inputs.spec.name;
    this.keys = clusterKeys(this.cluster);
    this.log = deps.log.child({ phase: 'boot' });
    this.endpoint = inputs.discoveryEndpoint ?? addressPlan(inputs.spec).discoveryEndpoint;
    this.standby = inputs.standby ?? false;
  }

  /** 0. The overlord secret; a standby fetches the bootstrap overlord's state with it. */
  async overlordSecret(): Promise<string | undefined> {
    const { configDir, stateDir } = this.inputs;
    const file = path.join(configDir, CONFIG_FILES.overlordSecret);
    const secret = await readOverlordSecret(file);
    if (!this.standby) {
      if (secret === undefined) this.log.info({ event: 'boot.no-overlord-secret', file }, 'no overlord secret (booted by hand): no standby can fetch this overlord\'s state');
      return secret;
    }
    if (secret === undefined) {
      throw new CorekubeError('E_USAGE', `a standby overlord needs the overlord secret in ${file}`, {
        hint: 'a standby server\'s user_data writes it from the stack\'s overlord_secret; without it, run this overlord without --standby',
      });
    }
    const ca = await readConfigFile(path.join(configDir, CONFIG_FILES.discoveryCa), 'the discovery CA');
    await fetchSharedState(
      { etcd: { endpoints: [this.endpoint], tls: { ca: Buffer.from(ca) } }, keys: this.keys, stateDir, secret },
      { log: this.log, clock: this.deps.clock, ...this.waits() },
    );
    return secret;
  }

  /** 1. The SSH identity. */
  async sshIdentity(): Promise<SshIdentity> {
    const identity = await ensureSshIdentity(this.inputs.stateDir, `corekube-overlord@${this.cluster}`);
    this.log.info({ event: 'boot.ssh-key', fingerprint: identity.fingerprint, created: identity.created }, `SSH key ${identity.fingerprint} ${identity.created ? 'made' : 'reused'}`);
    return identity;
  }

  /** 2. PKI and discovery passwords (before anything leaves this machine). */
  async pki(): Promise<Pki> {
    // writes counted: the leader publishes the state again after issuing certificates (step 8's contract)
    const directory = new DirectoryPkiStore(path.join(this.inputs.stateDir, 'pki'));
    let writes = 0;
    const pkiStore: PkiStore = { read: (name) => directory.read(name), write: (name, content) => directory.write(name, content).then(() => void writes++) };
    const authority = new CertificateAuthority({ store: pkiStore, clock: this.deps.clock, cluster: this.cluster, log: this.log, renewBeforeMs: this.inputs.spec.certificates.renewBeforeDays * DAY_MS });
    const discovery = await authority.ensureDiscovery(this.inputs.spec);
    await authority.ensureCa('cluster');
    await authority.ensureCa('etcd');
    await authority.ensureCa('front-proxy');
    await authority.ensureServiceAccountKey();
    // the admin client certificate of the overlord's Kubernetes side: issued here, before the state is published,
    // so that a standby fetches it instead of issuing one of its own (its boot writes nothing)
    await authority.ensureAdmin();
    const passwords = await ensureDiscoveryPasswords(pkiStore);
    const joinToken = await readJoinToken(path.join(this.inputs.configDir, CONFIG_FILES.joinToken));
    this.log.info({ event: 'boot.pki', issued: discovery.issued.map((i) => i.name) }, 'PKI ready (discovery, cluster and etcd CAs)');
    return { authority, discovery, passwords, joinToken, writes: () => writes };
  }

  /** 4. Discovery's TLS files, unless discovery already serves the current certificate. */
  async discoveryTls(identity: SshIdentity, discovery: DiscoveryPki): Promise<void> {
    const { host, port } = parseEndpoint(this.endpoint);
    const served = await servedCertificate(host, port, discovery.ca);
    if (served?.equals(derOf(discovery.server.cert))) {
      this.log.info({ event: 'boot.discovery-tls', ip: host, installed: false }, 'discovery already serves the current certificate');
      return;
    }
    const user = this.inputs.sshUser ?? 'corekube';
    const { createSshRunner } = await import('../edges/ssh-runner.ts');
    const hosts: HostRunner = createSshRunner({ user, privateKey: identity.privateKey, port: this.inputs.sshPort ?? 22, connectTimeoutMs: 20_000, hostKeys: fileHostKeys(this.inputs.stateDir) });
    try {
      await pushDiscoveryFiles(hosts, { id: 'discovery', ip: host }, discoveryPkiFiles(discovery), { user, clock: this.deps.clock, log: this.log, ...this.waits() });
    } finally {
      await hosts.close().catch(() => undefined);
    }
  }

  /** 5. Discovery's etcd answers over TLS. */
  async discoveryUp(discovery: DiscoveryPki): Promise<DiscoveryConnection> {
    const conn: DiscoveryConnection = { endpoints: [this.endpoint], ca: discovery.ca, cert: discovery.overlordClient.cert, key: discovery.overlordClient.key };
    await this.untilItWorks('waiting for the discovery etcd', () => pingDiscovery(conn));
    this.log.info({ event: 'boot.discovery-up', discovery: this.endpoint }, 'discovery etcd answers over TLS');
    return conn;
  }

  /** 6. Discovery's users and roles, and auth on. */
  async discoveryAuth(conn: DiscoveryConnection, pki: Pki, secret: string | undefined): Promise<void> {
    const rbac = discoveryRbac(this.keys, { root: pki.passwords.root, joiner: pki.joinToken, ...(secret === undefined ? {} : { overlord: overlordDiscoveryPassword(secret) }) });
    const auth = await this.untilItWorks('setting up discovery auth', () => ensureDiscoveryAuth(conn, rbac));
    this.log.info({ event: 'boot.discovery-auth', changes: auth.changes, wasEnabled: auth.wasEnabled }, auth.changes.length === 0 ? 'discovery auth already in place' : `discovery auth: ${auth.changes.join('; ')}`);
  }

  /** 7. The overlord's public key for the nodes, written as root; 8. the state for standbys. Discovery as root for what follows. */
  async publish(identity: SshIdentity, pki: Pki, secret: string | undefined): Promise<EtcdStoreOptions> {
    const { keys, log } = this;
    const etcd: EtcdStoreOptions = Object.freeze({
      endpoints: [this.endpoint],
      tls: { ca: Buffer.from(pki.discovery.ca), cert: Buffer.from(pki.discovery.overlordClient.cert), key: Buffer.from(pki.discovery.overlordClient.key) },
      auth: { username: ROOT_USER, password: pki.passwords.root },
    });
    const store = createEtcdStore(etcd);
    try {
      await this.untilItWorks('publishing the overlord\'s public key', async () => {
        const kv = await store.get(keys.overlordSshKey);
        if (kv?.value !== identity.publicKey) await store.put(keys.overlordSshKey, identity.publicKey);
      });
      // (a standby took the published state over in step 0 and publishes only once it leads)
      if (secret === undefined || this.standby) return etcd;
      const shared = await this.untilItWorks('publishing the overlord state', () => publishSharedState({ store, keys, stateDir: this.inputs.stateDir, secret, log, adopt: true })).catch((err: unknown) => {
        // a state too large for one etcd request must not stop the overlord: standbys keep what they have
        const e = asCorekubeError(err);
        if (e.code !== 'E_OVERLORD_STATE') throw e;
        log.error({ event: 'overlord-state.not-published', ...errorFields(e) }, 'the overlord state could not be published for standbys');
        return undefined;
      });
      if (shared && !shared.published) log.info({ event: 'overlord-state.current', fingerprint: shared.fingerprint, files: shared.files }, 'the published overlord state is current');
      return etcd;
    } finally {
      await store.close();
    }
  }

  private untilItWorks<T>(what: string, fn: () => Promise<T>): Promise<T> {
    return retry(fn, {
      policy: this.deps.backoff ?? BACKOFF.boot,
      clock: this.deps.clock,
      code: 'E_ETCD',
      ...(this.deps.signal ? { signal: this.deps.signal } : {}),
      onRetry: (e, attempt, delay) => this.log.warn({ event: 'boot.retry', what, attempt, nextRetryMs: delay, ...errorFields(e) }, `${what}: not yet; retrying`),
    });
  }

  private waits(): { signal?: AbortSignal; backoff?: Backoff } {
    return { ...(this.deps.signal ? { signal: this.deps.signal } : {}), ...(this.deps.backoff ? { backoff: this.deps.backoff } : {}) };
  }
}

/** What the Heat signals of this overlord need (trust/heat-handles.ts). */
export function handleDeps(inputs: Pick<BootInputs, 'stateDir' | 'configDir'>, deps: BootDeps, log: Logger = deps.log): HandleDeps {
  return {
    clock: deps.clock,
    log,
    stateDir: inputs.stateDir,
    configDir: inputs.configDir,
    ...(deps.signal ? { signal: deps.signal } : {}),
    ...(deps.fetch ? { fetch: deps.fetch } : {}),
    ...(deps.backoff ? { backoff: deps.backoff } : {}),
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
