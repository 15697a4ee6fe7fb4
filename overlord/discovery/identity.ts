import { addressPlan } from '../../clusterspec/address-plan.ts';
import { parseIpv4 } from '../../clusterspec/cidr.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import type { Clock } from '../../core/clock.ts';
import type { Logger } from '../edges/log.ts';
import { PrefixWatch } from '../edges/prefix-watch.ts';
import { fingerprintOf, hostKeyOf, sameHostKey } from '../edges/host-key.ts';
import type { ClusterKeys } from '../../contracts/keys.ts';
import { IPV4, MACHINE_ID, type MachineRecord } from '../../contracts/machine-record.ts';
import { ROLES, type Role } from '../../contracts/roles.ts';
import type { Store } from '../edges/store.ts';
import { keyRef, parseBoundedJson } from '../../core/untrusted.ts';

/**
 * A machine's admitted identity: the address and SSH host key the overlord admitted it with
 * (overlord/discovery/admission.ts, after the machine proved over SSH that it is the id that asked), stored at
 * `<prefix>admitted/<id>` by the leading overlord only. From then on:
 *
 * - the overlord deploys the machine only at that address, with that host key, in that role: a record that names
 *   another key or role is ignored (the machine's own etcd user can rewrite its record, never its identity — a
 *   minion cannot make itself a master and get a master's certificates); a record that names another address is
 *   ignored until the machine proves its identity there (then the identity moves);
 * - no other machine may be admitted at that address or with that key;
 * - every address is one the cluster gives machines: in the private network, from the first DHCP address on
 *   (below it sit the gateway, discovery and the overlord) — never 127.0.0.1, 169.254.169.254, 8.8.8.8, the pod
 *   network or another machine's address.
 *
 * `resolveRecord` applies these rules (PURE); `IdentityBook` holds the identities (and the host keys pinned for
 * machines admitted before identities were recorded, `hostkeys/<id>`), read once a term and kept current by the
 * leader's own writes — it is their only writer.
 */
export interface AdmittedIdentity {
  readonly id: string;
  readonly role: Role;
  readonly ip: string;
  /** `type base64` */
  readonly hostKey: string;
  readonly admittedAt: string;
}

/**
 * The addresses a machine of the cluster can have (clusterspec/address-plan.ts): the masters' five fixed
 * addresses, and the private network's DHCP range (minions, and anything booted by hand).
 */
export interface MachineAddresses {
  readonly masters: AddressRange;
  readonly dhcp: AddressRange;
}

export interface AddressRange {
  readonly first: string;
  readonly last: string;
}

export function machineAddresses(spec: ClusterSpec): MachineAddresses {
  const plan = addressPlan(spec);
  return Object.freeze({
    masters: Object.freeze({ first: plan.masters[0]!, last: plan.masters[plan.masters.length - 1]! }),
    dhcp: Object.freeze({ first: plan.dhcpStart, last: plan.dhcpEnd }),
  });
}

/** PURE: why `ip` cannot be a machine's address, or undefined when it can. */
export function addressProblem(ip: string, addresses: MachineAddresses | undefined): string | undefined {
  if (addresses === undefined) return undefined;
  const n = parseIpv4(ip);
  if (n === undefined) return 'is not an IPv4 address';
  const within = (r: AddressRange) => n >= parseIpv4(r.first)! && n <= parseIpv4(r.last)!;
  if (within(addresses.masters) || within(addresses.dhcp)) return undefined;
  return `is not a machine address of the cluster (masters ${addresses.masters.first} to ${addresses.masters.last}, other machines ${addresses.dhcp.first} to ${addresses.dhcp.last})`;
}

/** The JSON stored at `admitted/<id>`. */
export function admittedValue(identity: AdmittedIdentity): string {
  return JSON.stringify({ schema: 1, id: identity.id, role: identity.role, ip: identity.ip, hostKey: hostKeyOf(identity.hostKey), admittedAt: identity.admittedAt });
}

/** Parses `admitted/<id>` (the overlord's own writes, still read bounded); undefined when malformed. */
export function parseAdmittedIdentity(id: string, text: string): AdmittedIdentity | undefined {
  const parsed = parseBoundedJson(text, { maxBytes: 4096, maxDepth: 1 });
  if (!parsed.ok || parsed.value === null || typeof parsed.value !== 'object') return undefined;
  const v = parsed.value as Record<string, unknown>;
  if (v.schema !== 1 || v.id !== id || !MACHINE_ID.test(id) || typeof v.ip !== 'string' || !IPV4.test(v.ip)) return undefined;
  if (typeof v.role !== 'string' || !(ROLES as readonly string[]).includes(v.role)) return undefined;
  if (typeof v.hostKey !== 'string' || fingerprintOf(v.hostKey).startsWith('not') || typeof v.admittedAt !== 'string') return undefined;
  return Object.freeze({ id, role: v.role as Role, ip: v.ip, hostKey: hostKeyOf(v.hostKey), admittedAt: v.admittedAt });
}

export class IdentityBook {
  private admitted = new Map<string, AdmittedIdentity>();
  /** `hostkeys/<id>`: pinned at admission, or on first use for machines admitted before identities were recorded */
  private pins = new Map<string, string>();
  private ipOwners = new Map<string, string>();
  private keyOwners = new Map<string, string>();
  private readonly listeners = new Set<() => void>();
  private watches: PrefixWatch[] = [];
  /** changes with every change (views built from the book compare it) */
  version = 0;

  /**
   * Reads every identity and pin, then follows both prefixes: the leader's own writes come back this way too, and
   * an operator who deletes a machine's `admitted/` and `hostkeys/` keys (to admit it anew) is heard at once.
   * What does not parse is logged (one line each) and left out. Throws E_ETCD when etcd cannot be read.
   */
  async start(deps: { readonly store: Store; readonly keys: ClusterKeys; readonly log: Logger; readonly clock: Clock }): Promise<void> {
    const { keys, log } = deps;
    const identity = (id: string, value: string) => {
      const parsed = parseAdmittedIdentity(id, value);
      if (!parsed) log.warn({ event: 'identity.malformed', machine: keyRef(id) }, `${keys.admitted}${keyRef(id)} is not an admitted identity: ignored (the machine is admitted again when it asks)`);
      return parsed;
    };
    this.watches = [
      this.follow(deps, keys.admitted, 'admitted identities', identity, (m) => (this.admitted = m), () => this.admitted),
      this.follow(deps, keys.hostkeys, 'pinned host keys', (_id, value) => hostKeyOf(value), (m) => (this.pins = m), () => this.pins),
    ];
    for (const w of this.watches) await w.start();
  }

  /** One prefix into one map: a listing replaces it whole, events update it; every change is told. */
  private follow<T>(deps: { readonly store: Store; readonly log: Logger; readonly clock: Clock }, prefix: string, what: string, parse: (id: string, value: string) => T | undefined, replace: (m: Map<string, T>) => void, current: () => Map<string, T>): PrefixWatch {
    const put = (into: Map<string, T>, key: string, value: string) => {
      const id = key.slice(prefix.length);
      const parsed = parse(id, value);
      if (parsed === undefined) into.delete(id);
      else into.set(id, parsed);
    };
    return new PrefixWatch(
      { store: deps.store, prefix, clock: deps.clock, log: deps.log, what },
      {
        begin: () => {
          const next = new Map<string, T>();
          return {
            page: (kvs) => {
              for (const kv of kvs) put(next, kv.key, kv.value);
            },
            end: () => {
              replace(next);
              this.changed();
            },
          };
        },
        events: (events) => {
          for (const ev of events) {
            if (ev.type === 'put') put(current(), ev.kv.key, ev.kv.value);
            else current().delete(ev.key.slice(prefix.length));
          }
          this.changed();
        },
      },
    );
  }

  async stop(): Promise<void> {
    await Promise.all(this.watches.map((w) => w.stop()));
  }

  get(id: string): AdmittedIdentity | undefined {
    return this.admitted.get(id);
  }

  /** the key the machine must present: its admitted one, else the one pinned for it */
  keyOf(id: string): string | undefined {
    return this.admitted.get(id)?.hostKey ?? this.pins.get(id);
  }

  /** the admitted machine at this address, if any */
  ownerOfIp(ip: string): string | undefined {
    return this.ipOwners.get(ip);
  }

  /** the machine this host key is admitted or pinned for, if any */
  ownerOfKey(key: string): string | undefined {
    return this.keyOwners.get(hostKeyOf(key));
  }

  get size(): number {
    return this.admitted.size;
  }

  /** Records an identity the leader has just written. */
  admit(identity: AdmittedIdentity): void {
    this.admitted.set(identity.id, identity);
    this.pins.set(identity.id, hostKeyOf(identity.hostKey));
    this.changed();
  }

  /** Calls `fn` after every change; returns the unsubscribe. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private changed(): void {
    this.ipOwners = new Map([...this.admitted.values()].map((a) => [a.ip, a.id]));
    this.keyOwners = new Map([...[...this.pins].map(([id, key]) => [key, id] as const), ...[...this.admitted.values()].map((a) => [a.hostKey, a.id] as const)]);
    this.version++;
    for (const fn of this.listeners) fn();
  }
}

export interface IdentityRules {
  readonly book: IdentityBook;
  /** absent: any IPv4 address (an overlord run by hand without a spec's private network) */
  readonly addresses?: MachineAddresses;
  /** true where nodes are admitted (the booted overlord): a record of a machine never admitted is not deployed */
  readonly requireAdmission: boolean;
}

export type Resolution =
  | { readonly ok: true; /** the host key to deploy with, when one is known */ readonly hostKey: string | undefined }
  | {
      readonly ok: false;
      readonly field: 'id' | 'role' | 'ip' | 'sshHostKey';
      readonly reason: string;
      readonly fix: string;
      /**
       * an admitted machine announces another address (or one admitted before identities were recorded announces
       * its first): admission records its identity there once it proves it over SSH with its known key
       */
      readonly moved: boolean;
    };

/**
 * PURE: whether a machine record may be deployed, and with which host key, under the identity rules. `claims`:
 * how many records name each address (two records at one address are both refused unless one is admitted there).
 */
export function resolveRecord(record: MachineRecord, rules: IdentityRules, claims: ReadonlyMap<string, number>): Resolution {
  const refuse = (field: 'id' | 'role' | 'ip' | 'sshHostKey', reason: string, fix: string, moved = false): Resolution => ({ ok: false, field, reason, fix, moved });
  const { book } = rules;
  const admitted = book.get(record.id);
  const outside = addressProblem(record.ip, rules.addresses);
  if (outside) return refuse('ip', `${record.ip} ${outside}`, 'the record names an address the overlord never deploys to; the machine must announce its private address');
  const owner = book.ownerOfIp(record.ip);
  if (owner !== undefined && owner !== record.id) return refuse('ip', `${record.ip} is the address of machine ${owner}`, 'an address belongs to the one machine admitted there');
  if (admitted) {
    const differs = admittedMismatch(record, admitted);
    return differs ? refuse(differs.field, differs.reason, differs.fix, differs.field === 'ip') : { ok: true, hostKey: admitted.hostKey };
  }
  const pinned = book.keyOf(record.id);
  if (rules.requireAdmission) {
    // admitted by an overlord that recorded only the host key: it proves itself with that key, then it has an identity
    const legacy = pinned !== undefined && (record.sshHostKey === undefined || sameHostKey(pinned, record.sshHostKey)) && (claims.get(record.ip) ?? 0) <= 1;
    return legacy
      ? refuse('id', 'has a pinned host key but no admitted identity yet', 'it is deployed once it proves its identity over SSH at this address with its pinned key', true)
      : refuse('id', 'has not been admitted', 'only machines admitted over SSH are deployed: the machine asks to join with its join token (corekube-announce)');
  }
  if (pinned !== undefined && record.sshHostKey !== undefined && !sameHostKey(pinned, record.sshHostKey)) {
    return refuse('sshHostKey', `${fingerprintOf(record.sshHostKey)} is not the host key pinned for the machine (${fingerprintOf(pinned)})`, `delete <prefix>/hostkeys/${record.id} if the machine was reinstalled`);
  }
  if ((claims.get(record.ip) ?? 0) > 1) return refuse('ip', `${record.ip} is named by ${claims.get(record.ip)} machine records`, 'machine addresses are unique: none of them is deployed until the others change');
  return { ok: true, hostKey: record.sshHostKey ?? pinned };
}

/** PURE: what in a record differs from the machine's admitted identity (role, then host key, then address), if anything. */
export function admittedMismatch(record: MachineRecord, admitted: AdmittedIdentity): { readonly field: 'role' | 'sshHostKey' | 'ip'; readonly reason: string; readonly fix: string } | undefined {
  if (record.role !== admitted.role) {
    return { field: 'role', reason: `${record.role} is not the role the machine was admitted as (${admitted.role})`, fix: 'a machine keeps its role; one that really changes role is rebuilt (delete its admitted/ and hostkeys/ keys)' };
  }
  if (record.sshHostKey !== undefined && !sameHostKey(record.sshHostKey, admitted.hostKey)) {
    return { field: 'sshHostKey', reason: `${fingerprintOf(record.sshHostKey)} is not the host key the machine was admitted with (${fingerprintOf(admitted.hostKey)})`, fix: 'the overlord deploys only with the admitted key; a machine with a new key must be admitted again (delete its admitted/ and hostkeys/ keys)' };
  }
  if (record.ip !== admitted.ip) {
    return { field: 'ip', reason: `${record.ip} is not the address the machine was admitted at (${admitted.ip})`, fix: 'it is deployed there once it proves its identity at the new address over SSH' };
  }
  return undefined;
}

/** PURE: how many records name each address. */
export function addressClaims(records: Iterable<MachineRecord>): Map<string, number> {
  const claims = new Map<string, number>();
  for (const r of records) claims.set(r.ip, (claims.get(r.ip) ?? 0) + 1);
  return claims;
}
