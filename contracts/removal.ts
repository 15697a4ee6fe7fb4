import { parseIpv4 } from '../clusterspec/cidr.ts';
import type { Role } from './roles.ts';

/**
 * A machine's removal from the cluster, between whoever asks for it and the overlord that carries it out
 * (overlord/lifecycle/removals.ts), at `<prefix>removals/<id>` (contracts/keys.ts): `corekube node remove` (as
 * discovery's root) or the leading overlord itself when the stack's minion count drops. The overlord records there
 * each phase it finished, so a restarted or new leader goes on where the last one stopped, never doing a phase
 * twice; when every phase is done it leaves a tombstone at `<prefix>removed/<id>` and deletes the request.
 *
 * The phases, in order — each one safe to run again:
 *   cordon       the Node unschedulable
 *   drain        its pods evicted through the Eviction API, PodDisruptionBudgets respected (kubernetes/drain.ts)
 *   member       a master's etcd member removed, asked on another master — refused while that would leave etcd
 *                without a quorum of healthy members, or without members (contracts/etcd-members.ts)
 *   stop         a machine still up stops its units (its kubelet would register the Node again)
 *   node         the Node deleted
 *   subnet       its pod subnet released (the pod network's reservation and index)
 *   credentials  its own discovery etcd user and role deleted
 *   records      its ledger entry, admitted identity, pinned host key, record and join request deleted; the tombstone
 */
export const REMOVAL_PHASES = ['cordon', 'drain', 'member', 'stop', 'node', 'subnet', 'credentials', 'records'] as const;
export type RemovalPhase = (typeof REMOVAL_PHASES)[number];

export type RemovalReason = 'stack' | 'command';

export interface RemovalRequest {
  readonly schema: 1;
  readonly id: string;
  readonly hostname: string;
  readonly ip: string;
  readonly role: Role;
  /** `stack`: the stack's count dropped below its index; `command`: corekube node remove */
  readonly reason: RemovalReason;
  readonly requestedAt: string;
  /** the phases done so far, in order */
  readonly done: readonly RemovalPhase[];
  /** the last failure (retried), null when none */
  readonly error: string | null;
}

/** A removed machine: who it was, why, and when the removal ended. */
export type Tombstone = Pick<RemovalRequest, 'schema' | 'id' | 'hostname' | 'ip' | 'role' | 'reason'> & { readonly removedAt: string };

const MACHINE_ID = /^[0-9a-f]{32}$/;
const HOSTNAME = /^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/;
const MAX_VALUE = 4096;

/** PURE: the next phase to run, or undefined when all are done. */
export function nextPhase(request: RemovalRequest): RemovalPhase | undefined {
  return REMOVAL_PHASES.find((p) => !request.done.includes(p));
}

/** Parses `removals/<id>` (written by root or the leader, still read bounded); undefined when malformed. */
export function parseRemovalRequest(id: string, text: string): RemovalRequest | undefined {
  if (!MACHINE_ID.test(id) || text.length > MAX_VALUE) return undefined;
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || v.schema !== 1 || v.id !== id) return undefined;
  if (typeof v.hostname !== 'string' || !HOSTNAME.test(v.hostname) || typeof v.ip !== 'string' || parseIpv4(v.ip) === undefined) return undefined;
  if (v.role !== 'master' && v.role !== 'minion') return undefined;
  if (v.reason !== 'stack' && v.reason !== 'command') return undefined;
  if (typeof v.requestedAt !== 'string' || Number.isNaN(Date.parse(v.requestedAt))) return undefined;
  const done = Array.isArray(v.done) ? v.done : [];
  if (!done.every((p) => (REMOVAL_PHASES as readonly unknown[]).includes(p))) return undefined;
  const error = typeof v.error === 'string' ? v.error.slice(0, 1000) : null;
  return Object.freeze({ schema: 1, id, hostname: v.hostname, ip: v.ip, role: v.role, reason: v.reason, requestedAt: v.requestedAt, done: Object.freeze(done as RemovalPhase[]), error });
}

/** Parses `removed/<id>`; undefined when malformed (the id still counts as removed: the key says so). */
export function parseTombstone(id: string, text: string): Tombstone | undefined {
  if (!MACHINE_ID.test(id) || text.length > MAX_VALUE) return undefined;
  try {
    const v = JSON.parse(text) as Tombstone;
    return v && v.schema === 1 && v.id === id && typeof v.hostname === 'string' && typeof v.removedAt === 'string' ? Object.freeze({ ...v }) : undefined;
  } catch {
    return undefined;
  }
}
