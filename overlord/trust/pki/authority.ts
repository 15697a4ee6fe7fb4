import { CorekubeError } from '../../../core/errors.ts';
import type { ClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import type { Role } from '../../../contracts/roles.ts';
import {
  adminProfile,
  CA_KINDS,
  CA_NAMES,
  caCommonName,
  discoveryProfiles,
  holdsServiceAccountKey,
  machineProfiles,
  SERVICE_ACCOUNT_NAME,
  type CaKind,
  type CatalogOptions,
  type CertEntry,
  type CertProfile,
} from './catalog.ts';
import { planIssuance, RENEW_BEFORE_MS, type Existing, type IssueReason } from './plan.ts';
import { phaseOrderProblem, type RotatedCa, type RotationPhase } from '../../../contracts/ca-rotation.ts';
import { nextCaName, parseRotationState, retiredCaName, ROTATION_STATE, trustsTwo, type RotationState } from './rotation.ts';
import type { PkiStore } from './store.ts';
import {
  createCaCertificate,
  generateKeyPair,
  importPrivateKey,
  privateKeyPem,
  publicKeyId,
  publicKeyPem,
  readCertificate,
  signCertificate,
  type KeyPairHandle,
  type Signer,
} from './x509.ts';

/**
 * The overlord's certificate authority: the edge that turns the catalog's profiles and the plan's decisions
 * into keys and certificates in the PkiStore. Idempotent: each CA is made once and reused for ever (also by a
 * restarted overlord); a leaf is issued only when the plan says so (missing, expiring within 30 days, or its
 * subject/SANs/usage/issuer changed). Calls are serialised, so concurrent deploys never make two CAs.
 *
 * A CA of kind cluster, etcd or front-proxy can be rotated (`rotate`, phases trust → sign → finish: rotation.ts):
 * while a rotation trusts two CAs, every machine's CA file of that kind is a bundle (current + next PEM), and in
 * phase sign the leaves of that kind are issued by the next CA (the plan's issuer check re-issues them). Loaded
 * CAs are cached by their files' content, so files that change under the authority (finish, a standby taking over
 * the leader's published state) are read anew, never used stale.
 *
 * Logs carry names, reasons, serials and dates — never key or certificate content.
 */
export const CA_VALIDITY_MS = 3650 * 24 * 3600 * 1000;
export const LEAF_VALIDITY_MS = 365 * 24 * 3600 * 1000;
/** notBefore is backdated so a machine whose clock is a little behind the overlord's accepts a new cert */
export const BACKDATE_MS = 5 * 60 * 1000;

export interface Clock {
  now(): number;
}

/** The slice of a pino logger the PKI uses. */
export interface PkiLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface AuthorityOptions {
  readonly store: PkiStore;
  readonly clock: Clock;
  /** cluster name, in each CA's subject */
  readonly cluster: string;
  readonly log?: PkiLog;
  /**
   * false: a missing CA is an error instead of being made (tools such as `corekube kubeconfig`, which must use
   * the cluster's existing CA or nothing)
   */
  readonly createCas?: boolean;
  /** a leaf is issued again once it expires within this long (default RENEW_BEFORE_MS, 30 days; spec certificates.renewBeforeDays) */
  readonly renewBeforeMs?: number;
}

export interface IssuedPair {
  readonly cert: string;
  readonly key: string;
}

export interface Issued {
  readonly name: string;
  readonly reason: IssueReason;
  readonly serialNumber: string;
  readonly notAfter: string;
}

export interface CaCertificate {
  readonly kind: CaKind;
  readonly cert: string;
  /** subject key id (hex) */
  readonly keyId: string;
}

/** What one machine receives: the CA certificates, its own pairs and (masters) the service-account key. */
export interface MachinePki {
  readonly machineId: string;
  readonly role: Role;
  readonly clusterCa: string;
  readonly etcdCa: string;
  readonly frontProxyCa: string;
  readonly pairs: Readonly<Partial<Record<CertEntry, IssuedPair>>>;
  readonly serviceAccount: { readonly publicKey: string; readonly privateKey: string } | undefined;
  /** what this call issued (empty when everything was current) */
  readonly issued: readonly Issued[];
}

export interface DiscoveryPki {
  readonly ca: string;
  readonly server: IssuedPair;
  /** the overlord's own client cert for discovery (CN=root); stays on the overlord */
  readonly overlordClient: IssuedPair;
  readonly issued: readonly Issued[];
}

export interface AdminPki {
  readonly ca: string;
  readonly client: IssuedPair;
  readonly issued: readonly Issued[];
}

interface LoadedCa extends CaCertificate {
  readonly key: KeyPairHandle;
  /** the stored texts it was loaded from (the cache is valid while they are unchanged) */
  readonly keyPem: string;
}

/** Who signs a kind's leaves now, and what its machines trust (one CA's PEM, or current + next). */
interface Trust {
  readonly signer: LoadedCa;
  readonly bundle: string;
}

/** What a call to `rotate` did. */
export interface RotationResult {
  readonly state: RotationState;
  /** false: the authority was in that phase already (the call did nothing) */
  readonly changed: boolean;
}

const silent: PkiLog = { info: () => undefined, warn: () => undefined };

export class CertificateAuthority {
  private readonly store: PkiStore;
  private readonly clock: Clock;
  private readonly cluster: string;
  private readonly log: PkiLog;
  private readonly createCas: boolean;
  /** loaded CAs by store name (`ca/cluster`, `ca/cluster.next`) */
  private readonly cas = new Map<string, LoadedCa>();
  private lastAdmin: AdminPki | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  /** how long before a leaf's expiry it is issued again */
  readonly renewBeforeMs: number;

  constructor(options: AuthorityOptions) {
    this.store = options.store;
    this.clock = options.clock;
    this.cluster = options.cluster;
    this.log = options.log ?? silent;
    this.createCas = options.createCas ?? true;
    this.renewBeforeMs = options.renewBeforeMs ?? RENEW_BEFORE_MS;
  }

  /** The CA of `kind`, made on first use and read back from the store ever after. */
  ensureCa(kind: CaKind): Promise<CaCertificate> {
    return this.exclusive(async () => publicCa(await this.loadCa(kind)));
  }

  /** The service-account signing key pair (PEM), made once. */
  ensureServiceAccountKey(): Promise<{ publicKey: string; privateKey: string }> {
    return this.exclusive(() => this.loadServiceAccountKey());
  }

  /** Ensures every profile has a current pair; returns them by profile name. */
  ensure(profiles: readonly CertProfile[]): Promise<{ pairs: ReadonlyMap<string, IssuedPair>; issued: readonly Issued[] }> {
    return this.exclusive(() => this.ensureProfiles(profiles));
  }

  /**
   * One machine's PKI, issuing what is missing or stale (a new address or name re-issues what names it). A
   * machine's certificates name the machine alone: a master that comes or goes re-issues no other's.
   */
  issueFor(spec: ClusterSpec, machine: MachineRecord, options: CatalogOptions = {}): Promise<MachinePki> {
    return this.exclusive(async () => {
      const profiles = machineProfiles(spec, machine, options);
      const trust = await this.trusts();
      const { pairs, issued } = await this.ensureProfiles(profiles, trust);
      const byEntry: Partial<Record<CertEntry, IssuedPair>> = {};
      for (const p of profiles) {
        if (p.owner.kind === 'machine') byEntry[p.owner.entry] = pairs.get(p.name)!;
      }
      const [cluster, etcd, frontProxy] = [await trust('cluster'), await trust('etcd'), await trust('front-proxy')];
      return Object.freeze({
        machineId: machine.id,
        role: machine.role,
        clusterCa: cluster.bundle,
        etcdCa: etcd.bundle,
        frontProxyCa: frontProxy.bundle,
        pairs: Object.freeze(byEntry),
        serviceAccount: holdsServiceAccountKey(machine.role) ? await this.loadServiceAccountKey() : undefined,
        issued,
      });
    });
  }

  /** First boot: discovery's CA, its server cert and the overlord's root client cert. */
  ensureDiscovery(spec: ClusterSpec): Promise<DiscoveryPki> {
    return this.exclusive(async () => {
      const [server, client] = discoveryProfiles(spec) as [CertProfile, CertProfile];
      const { pairs, issued } = await this.ensureProfiles([server, client]);
      return Object.freeze({ ca: (await this.loadCa('discovery')).cert, server: pairs.get(server.name)!, overlordClient: pairs.get(client.name)!, issued });
    });
  }

  /** The admin client cert (CN=admin, O=system:masters) for kubeconfigs. */
  ensureAdmin(): Promise<AdminPki> {
    return this.exclusive(() => this.loadAdmin());
  }

  /**
   * The admin credentials the last `ensureAdmin` or `rotate` returned (the overlord's own Kubernetes client reads
   * them at each call: a rotation changes the CA it trusts and, in phase sign, its certificate).
   */
  currentAdmin(): AdminPki | undefined {
    return this.lastAdmin;
  }

  /** Where a CA rotation stands (rotation.ts); a finish found unfinished is completed first. */
  rotation(): Promise<RotationState | undefined> {
    return this.exclusive(() => this.rotationState());
  }

  /**
   * Moves the rotation of `ca` to `phase` — idempotent (the phase it is in already: nothing happens) and
   * resumable (a crash at any point leaves a state the next call, or any use of the authority, completes):
   * - trust: the next CA is made (key, then certificate, then the state: a crash before the state makes it anew,
   *   nothing trusts it yet);
   * - sign: the state alone; the leaves are re-issued by the next CA as the machines are prepared again;
   * - finish: the next CA's files replace the current one's, the old ones kept as `retired` (rotation.ts).
   * The admin certificate follows at once (re-issued by the signer of the phase), since the overlord itself uses it.
   * A phase out of order is refused (E_USAGE, contracts/ca-rotation.ts phaseOrderProblem).
   */
  rotate(ca: RotatedCa, phase: RotationPhase): Promise<RotationResult> {
    return this.exclusive(async () => {
      const result = await this.moveRotation(ca, phase);
      await this.loadAdmin();
      return result;
    });
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private validity(lifetimeMs: number): { notBefore: Date; notAfter: Date } {
    const now = this.clock.now();
    return { notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + lifetimeMs) };
  }

  private async loadAdmin(): Promise<AdminPki> {
    const profile = adminProfile();
    const trust = await this.trusts();
    const { pairs, issued } = await this.ensureProfiles([profile], trust);
    const admin: AdminPki = Object.freeze({ ca: (await trust('cluster')).bundle, client: pairs.get(profile.name)!, issued });
    const last = this.lastAdmin;
    if (last === undefined || last.ca !== admin.ca || last.client.cert !== admin.client.cert || last.client.key !== admin.client.key) this.lastAdmin = admin;
    return admin;
  }

  /** The current CA of `kind`. */
  private loadCa(kind: CaKind): Promise<LoadedCa> {
    return this.loadCaAt(kind, CA_NAMES[kind], this.createCas);
  }

  /** Each kind's Trust under the rotation state as stored now, loaded once for one call. */
  private async trusts(): Promise<(kind: CaKind) => Promise<Trust>> {
    const state = await this.rotationState();
    const loaded = new Map<CaKind, Promise<Trust>>();
    return (kind) => {
      let t = loaded.get(kind);
      if (t === undefined) loaded.set(kind, (t = this.trustOf(kind, state)));
      return t;
    };
  }

  /** Who signs `kind`'s leaves and what its machines trust, under the rotation `state`. */
  private async trustOf(kind: CaKind, state: RotationState | undefined): Promise<Trust> {
    const current = await this.loadCa(kind);
    if (!trustsTwo(state, kind)) return { signer: current, bundle: current.cert };
    const next = await this.loadCaAt(kind, nextCaName(kind as RotatedCa), false);
    return { signer: state!.phase === 'sign' ? next : current, bundle: bundleOf(current.cert, next.cert) };
  }

  private async rotationState(): Promise<RotationState | undefined> {
    const text = await this.store.read(ROTATION_STATE);
    const state = parseRotationState(text);
    if (state === 'invalid') {
      throw new CorekubeError('E_PKI', `the CA rotation state ${ROTATION_STATE} in the PKI store is damaged`, {
        hint: `restore ${ROTATION_STATE} from the overlord's backup (or, with no rotation under way, remove it)`,
      });
    }
    if (state?.phase === 'finish' && !state.finished) return this.completeFinish(state);
    return state;
  }

  private async moveRotation(ca: RotatedCa, phase: RotationPhase): Promise<RotationResult> {
    const state = await this.rotationState();
    // in that phase already (and, for finish, completed): nothing to do
    if (state?.ca === ca && state.phase === phase) return { state, changed: false };
    const problem = phaseOrderProblem(state, ca, phase);
    if (problem) throw problem;
    const now = this.clock.now();
    const since = new Date(now).toISOString();
    if (phase === 'trust') {
      const name = nextCaName(ca);
      const key = await generateKeyPair();
      await this.store.write(`${name}.key`, await privateKeyPem(key));
      const cert = await createCaCertificate(key, caCommonName(this.cluster, ca), this.validity(CA_VALIDITY_MS));
      await this.store.write(`${name}.crt`, cert);
      const info = readCertificate(cert, `${name}.crt`);
      this.log.info({ event: 'pki.ca.next-created', ca, serialNumber: info.serialNumber, notAfter: new Date(info.notAfter).toISOString() }, `the next ${ca} CA is made: machines are given both CAs`);
    } else {
      // the next CA must be there (a store restored without it is refused here, before anything changes)
      await this.loadCaAt(ca, nextCaName(ca), false);
    }
    const written: RotationState = Object.freeze({ schema: 1, ca, phase, since, retired: phase === 'finish' ? retiredCaName(ca, now) : null, finished: false });
    await this.store.write(ROTATION_STATE, `${JSON.stringify(written)}\n`);
    this.log.info({ event: 'pki.ca.rotation', ca, phase, since }, `${ca} CA rotation: phase ${phase}`);
    return { state: phase === 'finish' ? await this.completeFinish(written) : written, changed: true };
  }

  /** Finish, from wherever a crash left it (the order is rotation.ts's). */
  private async completeFinish(state: RotationState): Promise<RotationState> {
    const kind = state.ca;
    const [current, next, retired] = [CA_NAMES[kind], nextCaName(kind), state.retired!];
    const nextKey = await this.store.read(`${next}.key`);
    const nextCert = await this.store.read(`${next}.crt`);
    if (nextKey === undefined || nextCert === undefined) {
      throw new CorekubeError('E_PKI', `the ${kind} CA rotation is finishing but the next CA ${next}.key/.crt is not in the PKI store`, {
        hint: `restore ${next}.key and ${next}.crt from the overlord's backup: the machines' certificates are signed by it`,
      });
    }
    const [currentKey, currentCert] = [await this.store.read(`${current}.key`), await this.store.read(`${current}.crt`)];
    // the old CA is kept while the current files still hold it (after a crash past this point they hold the next)
    if (currentKey !== undefined && currentKey !== nextKey) {
      if ((await this.store.read(`${retired}.key`)) === undefined) await this.store.write(`${retired}.key`, currentKey);
      if (currentCert !== undefined && (await this.store.read(`${retired}.crt`)) === undefined) await this.store.write(`${retired}.crt`, currentCert);
    }
    if (currentKey !== nextKey) await this.store.write(`${current}.key`, nextKey);
    if (currentCert !== nextCert) await this.store.write(`${current}.crt`, nextCert);
    const done: RotationState = Object.freeze({ ...state, finished: true });
    await this.store.write(ROTATION_STATE, `${JSON.stringify(done)}\n`);
    this.log.info({ event: 'pki.ca.rotated', ca: kind, retired }, `the ${kind} CA is replaced by the next one; the old one is kept as ${retired}`);
    return done;
  }

  /**
   * The CA stored under `name` (made when absent and `create`). Cached while its stored key and certificate are
   * unchanged: files replaced under the authority are read anew.
   */
  private async loadCaAt(kind: CaKind, name: string, create: boolean): Promise<LoadedCa> {
    const [keyPem, certPem] = await Promise.all([this.store.read(`${name}.key`), this.store.read(`${name}.crt`)]);
    const cached = this.cas.get(name);
    if (cached && cached.keyPem === keyPem && cached.cert === certPem) return cached;
    if (keyPem === undefined && certPem !== undefined) {
      throw new CorekubeError('E_PKI', `the ${kind} CA certificate ${name}.crt is stored but its key ${name}.key is not`, {
        hint: `restore ${name}.key from the overlord's backup: machines trust this CA, so corekube will not replace it with a new one`,
      });
    }
    let key: KeyPairHandle;
    let storedKey = keyPem;
    if (storedKey === undefined) {
      if (!create) {
        throw new CorekubeError('E_PKI', name === CA_NAMES[kind] ? `there is no ${kind} CA in the PKI store` : `there is no next ${kind} CA ${name}.key in the PKI store`, {
          hint: name === CA_NAMES[kind]
            ? "point --pki-dir at the overlord's PKI directory (/var/lib/corekube/pki in the overlord container)"
            : `restore ${name}.key from the overlord's backup: a rotation of the ${kind} CA is under way (${ROTATION_STATE})`,
        });
      }
      key = await generateKeyPair();
      storedKey = await privateKeyPem(key);
      await this.store.write(`${name}.key`, storedKey);
    } else {
      key = await importPrivateKey(storedKey, `${name}.key`);
    }
    const spki = await publicKeyId(key);
    let cert = certPem;
    let info = cert === undefined ? undefined : readCertificateOrUndefined(cert, `${name}.crt`);
    if (cert === undefined || info === undefined || !info.isCa || info.publicKey !== spki) {
      // a key without a (matching) certificate: a crash between the two writes, or a damaged file
      cert = await createCaCertificate(key, caCommonName(this.cluster, kind), this.validity(CA_VALIDITY_MS));
      await this.store.write(`${name}.crt`, cert);
      info = readCertificate(cert, `${name}.crt`);
      const event = keyPem === undefined ? 'pki.ca.created' : 'pki.ca.recertified';
      this.log.info({ event, ca: kind, serialNumber: info.serialNumber, notAfter: new Date(info.notAfter).toISOString() }, `${kind} CA ${keyPem === undefined ? 'created' : 'certificate re-made from its stored key'}`);
    }
    if (info.notAfter - this.clock.now() < RENEW_BEFORE_MS && name === CA_NAMES[kind]) {
      const how = kind === 'discovery' ? 'corekube does not rotate the discovery CA: re-key discovery by hand' : `rotate it: corekube pki rotate-ca --ca ${kind} --phase trust (then sign, then finish: overlord/trust/pki/README.md)`;
      this.log.warn({ event: 'pki.ca.expiring', ca: kind, notAfter: new Date(info.notAfter).toISOString() }, `${kind} CA expires soon: ${how}`);
    }
    const loaded: LoadedCa = Object.freeze({ kind, cert, keyId: info.subjectKeyId ?? '', key, keyPem: storedKey });
    this.cas.set(name, loaded);
    return loaded;
  }

  private async loadServiceAccountKey(): Promise<{ publicKey: string; privateKey: string }> {
    const name = `${SERVICE_ACCOUNT_NAME}.key`;
    let privateKey = await this.store.read(name);
    let key: KeyPairHandle;
    if (privateKey === undefined) {
      key = await generateKeyPair();
      privateKey = await privateKeyPem(key);
      await this.store.write(name, privateKey);
      this.log.info({ event: 'pki.key.created', name: SERVICE_ACCOUNT_NAME }, 'service-account signing key created');
    } else {
      key = await importPrivateKey(privateKey, name);
    }
    return { publicKey: await publicKeyPem(key), privateKey };
  }

  private async ensureProfiles(profiles: readonly CertProfile[], given?: (kind: CaKind) => Promise<Trust>): Promise<{ pairs: ReadonlyMap<string, IssuedPair>; issued: Issued[] }> {
    // each kind's leaves are signed by its signer of the rotation phase (the next CA in phase sign)
    const trust = given ?? (await this.trusts());
    const cas = new Map<CaKind, LoadedCa>();
    for (const kind of new Set(profiles.map((p) => p.ca))) cas.set(kind, (await trust(kind)).signer);

    const stored = new Map<string, { cert?: string; key?: string; handle?: KeyPairHandle }>();
    const existing = new Map<string, Existing>();
    await Promise.all(
      profiles.map(async (p) => {
        const [key, cert] = await Promise.all([this.store.read(`${p.name}.key`), this.store.read(`${p.name}.crt`)]);
        const handle = key === undefined ? undefined : await importPrivateKey(key, `${p.name}.key`).catch(() => {
          this.log.warn({ event: 'pki.key.unreadable', name: p.name }, 'stored key is not readable: a new one will be made');
          return undefined;
        });
        const facts = cert === undefined ? undefined : readCertificateOrUndefined(cert, `${p.name}.crt`);
        stored.set(p.name, { ...(cert === undefined ? {} : { cert }), ...(handle === undefined ? {} : { key, handle }) });
        existing.set(p.name, { cert: facts, keyPublicKey: handle === undefined ? undefined : await publicKeyId(handle) });
      }),
    );

    const caKeyIds = Object.fromEntries(CA_KINDS.map((k) => [k, cas.get(k)?.keyId])) as Record<CaKind, string | undefined>;
    const plan = planIssuance(profiles, existing, caKeyIds, this.clock.now(), this.renewBeforeMs);
    const issued: Issued[] = [];
    for (const { profile, reason, keepKey } of plan) {
      const had = stored.get(profile.name)!;
      let handle = keepKey ? had.handle : undefined;
      let keyPem = keepKey ? had.key : undefined;
      if (handle === undefined || keyPem === undefined) {
        handle = await generateKeyPair();
        keyPem = await privateKeyPem(handle);
        // key first: a crash before the cert is written leaves a key whose cert no longer matches, which the
        // next run re-issues (key-mismatch) for that key
        await this.store.write(`${profile.name}.key`, keyPem);
      }
      const ca = cas.get(profile.ca)!;
      const signer: Signer = { cert: ca.cert, key: ca.key };
      const cert = await signCertificate(profile, handle.publicKey, signer, this.validity(LEAF_VALIDITY_MS));
      await this.store.write(`${profile.name}.crt`, cert);
      const info = readCertificate(cert, `${profile.name}.crt`);
      const entry: Issued = Object.freeze({ name: profile.name, reason, serialNumber: info.serialNumber, notAfter: new Date(info.notAfter).toISOString() });
      issued.push(entry);
      stored.set(profile.name, { cert, key: keyPem, handle });
      this.log.info({ event: 'pki.cert.issued', ...entry, ca: profile.ca, commonName: profile.commonName }, `issued ${profile.name} (${reason})`);
    }

    const pairs = new Map<string, IssuedPair>();
    for (const p of profiles) {
      const s = stored.get(p.name)!;
      pairs.set(p.name, Object.freeze({ cert: s.cert!, key: s.key! }));
    }
    return { pairs, issued };
  }
}

/** Two CA certificates in one PEM file (what OpenSSL, Go and Node read as a list of trusted CAs). */
function bundleOf(current: string, next: string): string {
  const end = (pem: string) => (pem.endsWith('\n') ? pem : `${pem}\n`);
  return `${end(current)}${end(next)}`;
}

function publicCa(ca: LoadedCa): CaCertificate {
  return Object.freeze({ kind: ca.kind, cert: ca.cert, keyId: ca.keyId });
}

function readCertificateOrUndefined(pem: string, what: string) {
  try {
    return readCertificate(pem, what);
  } catch {
    return undefined;
  }
}
