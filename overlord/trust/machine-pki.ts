import { CorekubeError, asCorekubeError } from '../../core/errors.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { DISCOVERY_CLIENT_PATHS } from '../../units/pki-paths.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { MachineCredentials } from './machine-credentials.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import type { CertificateAuthority, MachinePki } from './pki/authority.ts';
import { readCertificate } from './pki/x509.ts';
import { systemClock, type Clock } from '../../core/clock.ts';
import type { CatalogOptions } from './pki/catalog.ts';
import { CERT_MODE, machinePkiFiles } from './pki/delivery.ts';
import type { ClusterView } from '../../contracts/step.ts';
import type { RemoteFile } from '../../contracts/step.ts';
import type { Fence } from '../edges/store.ts';

/**
 * Each machine's PKI files, ready when its units are rendered. Issuing is asynchronous (WebCrypto), but a
 * machine's units are rendered synchronously in the reconciler's pass, so the work is split:
 * - `prepare(records)` (async) issues — or reuses from the PKI store — every announced machine's
 *   certificates for the current set of machines, and keeps its files;
 * - `filesFor(record, view)` (sync) returns them when the units are rendered.
 * runOverlord's `machinePki` (SharedMachinePki below) runs `prepare` before the reconciler sees a change of the
 * machines, so `filesFor` always finds the files for the very record the units are rendered for.
 *
 * The files (overlord/trust/pki/delivery.ts machinePkiFiles: CA certificates, the machine's own pairs, keys 0600,
 * never a CA key) are carried by the machine's write-units step, so they are part of the units hash: a
 * re-issued certificate (a new master changes every API server cert's SANs) redeploys the machine. Added to
 * them, for the machine's access to discovery (units/pki-paths.ts DISCOVERY_CLIENT_PATHS): the discovery CA,
 * and the machine's own discovery etcd user (0600; overlord/trust/machine-credentials.ts).
 *
 * Certificates are renewed: a machine whose earliest certificate expires within the authority's renewBeforeMs
 * (spec certificates.renewBeforeDays, 30 by default) is prepared again, at the next `prepare` after that moment —
 * the term asks for one every `renewalCheckMs` (overlord/term.ts) — and the authority issues it new pairs; their new
 * content changes the units hash, so the machine is redeployed and the units that read them restart (one master
 * at a time: overlord/deploy/planner.ts rule 10). Also checked when a machine's record changes and at every start.
 *
 * A CA rotation's phase (overlord/trust/pki/rotation.ts) prepares every machine again: its CA files become a bundle
 * (trust), its leaves are re-issued by the next CA (sign), its bundle becomes the new CA alone (finish).
 */
export interface MachinePkiOptions {
  readonly authority: CertificateAuthority;
  readonly spec: ClusterSpec;
  /** the discovery CA certificate (PEM) */
  readonly discoveryCa: string;
  /** each machine's own discovery etcd user (its credentials file) */
  readonly credentials: Pick<MachineCredentials, 'fileFor'>;
  readonly log: Logger;
  readonly catalog?: CatalogOptions;
  /** now, for renewals (default: the system clock) */
  readonly clock?: Pick<Clock, 'now'>;
}

/** `expires`: the earliest notAfter (ms) of the machine's own certificates; due for renewal renewBeforeMs before */
type Prepared = ({ readonly key: string; readonly files: readonly RemoteFile[]; readonly expires: number } | { readonly key: string; readonly error: CorekubeError }) & {
  /** the CA rotation state it was prepared under (authority.rotation()): a new phase prepares every machine again */
  readonly epoch: string;
};

export class MachinePkiFiles {
  private readonly prepared = new Map<string, Prepared>();
  /** per machine, how often its files were prepared anew (the reconciler renders it again on a new version) */
  private readonly versions = new Map<string, number>();
  private readonly shared: readonly RemoteFile[];

  constructor(private readonly options: MachinePkiOptions) {
    this.shared = Object.freeze([Object.freeze({ path: DISCOVERY_CLIENT_PATHS.ca, content: options.discoveryCa, mode: CERT_MODE })]);
  }

  /**
   * Issues what the machines in `records` lack (idempotent: a machine whose record did not change
   * is skipped without touching the store). A machine whose PKI cannot be issued keeps the error, which
   * `filesFor` throws: the reconciler then fails that machine with the reason.
   */
  async prepare(records: readonly MachineRecord[]): Promise<void> {
    const ids = new Set(records.map((r) => r.id));
    for (const id of this.prepared.keys()) if (!ids.has(id)) this.prepared.delete(id);
    const now = (this.options.clock ?? systemClock).now();
    // a CA rotation's new phase changes every machine's CA bundle or leaves (also under a standby that took over)
    const epoch = JSON.stringify((await this.options.authority.rotation()) ?? null);
    for (const record of records) {
      const key = keyOf(record);
      const had = this.prepared.get(record.id);
      // due when it expires within renewBeforeMs (strictly, as the authority's plan says 'expiring')
      if (had?.key === key && had.epoch === epoch && !('expires' in had && now > had.expires - this.options.authority.renewBeforeMs)) continue;
      try {
        const pki = await this.options.authority.issueFor(this.options.spec, record, this.options.catalog);
        this.prepared.set(record.id, Object.freeze({ key, epoch, expires: earliestNotAfter(pki), files: Object.freeze([...machinePkiFiles(pki), ...this.shared, this.options.credentials.fileFor(record.id)]) }));
        this.versions.set(record.id, (this.versions.get(record.id) ?? 0) + 1);
      } catch (err) {
        const e = asCorekubeError(err, 'E_PKI');
        this.options.log.error({ event: 'pki.machine-failed', machine: record.id, hostname: record.hostname, ...errorFields(e) }, 'cannot issue the machine\'s certificates');
        this.prepared.set(record.id, Object.freeze({ key, epoch, error: e }));
      }
    }
  }

  /** When the machine's earliest certificate expires (ISO 8601), once prepared. */
  expiresOf(id: string): string | undefined {
    const p = this.prepared.get(id);
    return p && 'expires' in p ? new Date(p.expires).toISOString() : undefined;
  }

  /** How often the machine's files were prepared anew. */
  versionOf(id: string): number {
    return this.versions.get(id) ?? 0;
  }

  /** The files of one machine, for the masters of `view`; throws when `prepare` did not cover them. */
  filesFor(record: MachineRecord, view: ClusterView): readonly RemoteFile[] {
    const entry = this.prepared.get(record.id);
    const key = keyOf(record);
    if (entry === undefined || entry.key !== key) {
      throw new CorekubeError('E_INTERNAL', `the PKI of machine ${record.id} was not prepared for its current record and masters`, {
        hint: 'runOverlord must be given machinePki (SharedMachinePki over these files) together with them',
      });
    }
    if ('error' in entry) throw entry.error;
    return entry.files;
  }
}

/** What a machine's certificates depend on: its identity, its address and name. */
function keyOf(record: MachineRecord): string {
  return JSON.stringify([record.id, record.role, record.ip, record.hostname]);
}

/**
 * The machines' PKI of a booted overlord, as a term prepares it: issued before the reconciler sees a change of the
 * machines, and — when that wrote anything and standbys share the state — the state published again.
 */
export class SharedMachinePki {
  constructor(
    private readonly files: MachinePkiFiles,
    /** PKI files written so far (trust/bootstrap.ts Booted.pkiWrites) */
    private readonly writes: () => number,
    private readonly republisher: { publish(fence: Fence | undefined): Promise<void> } | undefined,
  ) {}

  versionOf(id: string): number {
    return this.files.versionOf(id);
  }

  async prepare(records: readonly MachineRecord[], fence?: Fence): Promise<void> {
    const before = this.writes();
    await this.files.prepare(records);
    if (this.writes() !== before) await this.republisher?.publish(fence);
  }
}

/** The earliest notAfter (ms) of a machine's own certificates. */
function earliestNotAfter(pki: MachinePki): number {
  let earliest = Infinity;
  for (const [entry, pair] of Object.entries(pki.pairs)) if (pair) earliest = Math.min(earliest, readCertificate(pair.cert, entry).notAfter);
  return earliest;
}
