import type { DiscoverySnapshot, InvalidRecord } from './discovery.ts';
import type { HostTarget } from '../edges/host-runner.ts';
import { addressClaims, resolveRecord, type IdentityRules } from './identity.ts';
import type { Liveness } from '../availability/liveness.ts';
import { errorFields, type Logger } from '../edges/log.ts';
import type { MachineRecord } from '../../contracts/machine-record.ts';
import { MAX_INVALID_REMEMBERED } from '../../contracts/discovery-limits.ts';
import { BoundedMemo } from '../../core/untrusted.ts';

/**
 * What the reconciler deploys: discovery's records that pass the identity rules (overlord/discovery/identity.ts), each with
 * the host key it is to be deployed with (the admitted one, never one the record names), and that answer over
 * SSH (overlord/availability/liveness.ts). A record refused by a rule is listed in `invalid` with the field and the reason,
 * reported once (one warning line) and never planned; a silent machine likewise until it answers again.
 *
 * Level-based and cheap: the view is rebuilt only when discovery's view, the identity book or the silent set
 * changed, and a record that passes is handed out as the same frozen object as long as it and its identity do
 * (the reconciler caches renders and plans per object).
 */
export interface AdmittedDiscoveryOptions {
  readonly source: { snapshot(): DiscoverySnapshot };
  readonly rules: IdentityRules;
  readonly liveness?: Liveness;
  /** machines being removed or removed (overlord/lifecycle/removals.ts): never deployed */
  readonly removals?: { excluded(id: string): boolean; readonly version: number };
  readonly log: Logger;
  /** called after every change of the view (the reconciler's trigger) */
  readonly onChange: () => void;
}

interface Built {
  readonly source: DiscoverySnapshot;
  readonly book: number;
  readonly live: number;
  readonly removals: number;
  readonly view: DiscoverySnapshot;
  readonly moved: ReadonlyMap<string, MachineRecord>;
}

export class AdmittedDiscovery {
  private built: Built | undefined;
  /** per record: the object handed out for it, and the host key it was resolved with */
  private readonly resolved = new WeakMap<MachineRecord, { readonly hostKey: string | undefined; readonly record: MachineRecord }>();
  /** per machine: the field last reported refused (one line per machine and field) */
  private readonly reported = new BoundedMemo<string>(MAX_INVALID_REMEMBERED);
  private readonly unsubscribe: () => void;

  constructor(private readonly options: AdmittedDiscoveryOptions) {
    this.unsubscribe = options.rules.book.onChange(() => this.invalidate());
  }

  snapshot(): DiscoverySnapshot {
    return this.build().view;
  }

  /** Admitted machines whose record names another address (admission moves them once they prove it there). */
  moved(): ReadonlyMap<string, MachineRecord> {
    return this.build().moved;
  }

  /** Something it is built from changed: tell the reconciler (the view is rebuilt at its next read). */
  invalidate(): void {
    try {
      this.options.onChange();
    } catch (err) {
      this.options.log.error({ event: 'identity.change-failed', ...errorFields(err) }, 'reacting to a change of the machines failed');
    }
  }

  close(): void {
    this.unsubscribe();
  }

  private build(): Built {
    const { source, rules, liveness, removals, log } = this.options;
    const snapshot = source.snapshot();
    const b = this.built;
    if (b && b.source === snapshot && b.book === rules.book.version && b.live === (liveness?.version ?? 0) && b.removals === (removals?.version ?? 0)) return b;

    const claims = addressClaims(snapshot.records.values());
    const records = new Map<string, MachineRecord>();
    const invalid = new Map<string, InvalidRecord>(snapshot.invalid);
    const moved = new Map<string, MachineRecord>();
    const deployable: MachineRecord[] = [];
    for (const record of snapshot.records.values()) {
      if (removals?.excluded(record.id)) {
        invalid.set(record.id, Object.freeze({ id: record.id, field: 'removal', reason: 'the machine is being removed from the cluster, or was', role: record.role, ip: record.ip }));
        continue;
      }
      const r = resolveRecord(record, rules, claims);
      if (r.ok) {
        deployable.push(this.withKey(record, r.hostKey));
        this.reported.delete(record.id);
        continue;
      }
      if (r.moved) moved.set(record.id, record);
      const reason = `record ${r.field} ${r.reason}`;
      invalid.set(record.id, Object.freeze({ id: record.id, field: r.field, reason, role: record.role, ip: record.ip }));
      if (this.reported.firstTime(record.id, r.field)) {
        log.warn({ event: 'machine.refused', machine: record.id, hostname: record.hostname, field: r.field, reason, hint: r.fix }, `machine record of ${record.hostname} ignored: ${reason}`);
      }
    }
    liveness?.track(deployable.map((r): HostTarget => ({ id: r.id, ip: r.ip, ...(r.sshHostKey ? { hostKey: r.sshHostKey } : {}) })));
    for (const record of deployable) {
      if (liveness?.isSilent(record.id)) {
        const s = Math.round((liveness.silentFor(record.id) ?? 0) / 1000);
        invalid.set(record.id, Object.freeze({ id: record.id, field: 'liveness', reason: `machine has not answered over SSH for ${s} s: treated as gone while its record lives`, role: record.role, ip: record.ip }));
      } else {
        records.set(record.id, record);
      }
    }
    const view: DiscoverySnapshot = Object.freeze({ records, invalid, overflow: snapshot.overflow });
    this.built = { source: snapshot, book: rules.book.version, live: liveness?.version ?? 0, removals: removals?.version ?? 0, view, moved };
    return this.built;
  }

  /** The record as deployed: with the host key the rules resolved (the same object while nothing changed). */
  private withKey(record: MachineRecord, hostKey: string | undefined): MachineRecord {
    if (record.sshHostKey === hostKey) return record;
    const hit = this.resolved.get(record);
    if (hit && hit.hostKey === hostKey) return hit.record;
    const { sshHostKey: _dropped, ...rest } = record;
    const out: MachineRecord = Object.freeze(hostKey === undefined ? rest : { ...rest, sshHostKey: hostKey });
    this.resolved.set(record, { hostKey, record: out });
    return out;
  }
}
