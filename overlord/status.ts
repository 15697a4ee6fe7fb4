import type { ClusterKeys } from '../contracts/keys.ts';
import { currentStep, parseLedgerEntry, type LedgerEntry } from '../contracts/ledger-entry.ts';
import { admittedMismatch, parseAdmittedIdentity, type AdmittedIdentity } from './discovery/identity.ts';
import { parseMachineRecord, type MachineRecord, type ParsedRecord } from '../contracts/machine-record.ts';
import type { KeyValue, Store } from './edges/store.ts';
import { podSubnets } from './pod-network/registry.ts';
import { readNodeStates, type NodeState } from './kubernetes/node-states.ts';
import { nextPhase, parseRemovalRequest, type RemovalRequest } from '../contracts/removal.ts';
import { isReleaseTag } from '../contracts/overlord-channel.ts';
import { parseRotationRecord, type RotationProgress, type RotationRequest } from '../contracts/ca-rotation.ts';

/**
 * The status of every machine, read from etcd alone (machine records + ledger), so `corekube status`
 * works from anywhere that reaches etcd and needs no running overlord. The shape is an interface that
 * scripts rely on (`corekube status --json`, `corekube demo --json`):
 *
 *   {"machines":[{"id","role","ip","state":"pending|deploying|deployed|failed|unreachable|removing","step","error","subnet","node","certificatesExpire"}…],"leader":"<id>"}
 *
 * - pending: announced, nothing done yet (or waiting for a master) — with step `join` while the machine has
 *   only asked to join (`join/<id>`) and waits for the overlord to admit it (overlord/discovery/admission.ts); deploying: a deployment is under way
 *   (or was, when an overlord stopped mid-deploy); deployed: every step done for the current boot and units;
 *   failed: `error` says the step and the reason. A record that does not parse is listed as failed with
 *   the reason. unreachable: the overlord deployed (or tried) it, but its record expired — powered off,
 *   rebooting or cut off; it is listed from the ledger and never removed by that alone. removing: the overlord is
 *   removing it from the cluster (`corekube node remove`, or the stack's count dropped: overlord/lifecycle/): `step`
 *   is the phase it is at, `error` the last failure of that phase (retried).
 * - A machine admitted with an identity (overlord/discovery/identity.ts) is shown at its admitted address and role; a record
 *   that names another address, key or role is listed as failed with what differs (the overlord ignores it).
 * - `subnet`: the machine's flannel pod subnet (CIDR) once the overlord reserved one, else null.
 * - `node`: the machine's Kubernetes Node as the overlord last saw it (overlord/kubernetes/node-states.ts):
 *   name, ready, reason (when not Ready), podCIDR, kubelet version, since when; null for a machine with none.
 * - `certificatesExpire`: the earliest expiry (ISO 8601) of the machine's own certificates the overlord last deployed to the
 *   machine (the ledger records it with the deployment), null before its first deployment.
 * - `desired`: the Kubernetes release the stack asked for and the overlord accepted (absent: the config's); a
 *   machine rolling it out is `deploying` at its step (`drain`, a restart, `node-ready`, `uncordon`).
 * - `changing`: every machine being deployed or changed now — hostname, step, since when (from the ledger).
 * - `leader`: the id of the overlord that leads (overlord/availability/leader.ts); the field is absent while none does.
 * - `rotation`: a CA rotation (`corekube pki rotate-ca`, contracts/ca-rotation.ts), absent when none was ever asked for:
 *   the CA and the phase the overlord's authority is in, since when, when it was rolled out to every machine (null
 *   while not yet) and the machines it waits for; `requested` while a phase asked for is not carried out yet,
 *   `refused` when the overlord refused the last one (why).
 */
export type MachineState = 'pending' | 'deploying' | 'deployed' | 'failed' | 'unreachable' | 'removing';

export interface MachineStatus {
  readonly id: string;
  readonly role: string | null;
  readonly ip: string | null;
  readonly state: MachineState;
  readonly step: string | null;
  readonly error: string | null;
  readonly subnet: string | null;
  readonly node: NodeState | null;
  readonly certificatesExpire: string | null;
}

export interface StatusReport {
  readonly machines: readonly MachineStatus[];
  /** the Kubernetes release the stack asked for and the overlord accepted (overlord/lifecycle/desired-spec.ts); absent: the config's */
  readonly desired?: { readonly kubernetes: string };
  /** machines being deployed or changed now (a rollout): at which step, since when (ISO 8601); absent when none */
  readonly changing?: readonly { readonly id: string; readonly hostname: string; readonly step: string; readonly since: string }[];
  /** the id of the overlord that leads (oldest election key), present only while one does */
  readonly leader?: string;
  /** a CA rotation asked for or under way (contracts/ca-rotation.ts); absent when none ever was */
  readonly rotation?: RotationStatus;
}

export type RotationStatus = Partial<RotationProgress> & {
  /** a phase asked for that the overlord has not carried out (nor refused) yet */
  readonly requested?: RotationRequest;
  /** why the overlord refused the last phase asked for */
  readonly refused?: string;
};

/** PURE: the rotation as `corekube status` shows it, from the record at `<prefix>pki/rotation`. */
export function rotationStatus(text: string | undefined): RotationStatus | undefined {
  const record = text === undefined ? undefined : parseRotationRecord(text);
  if (!record || (!record.progress && !record.request)) return undefined;
  const { progress, request, refused } = record;
  const carried = request && progress && progress.ca === request.ca && progress.phase === request.phase;
  const refusedNow = request && refused?.requestedAt === request.requestedAt;
  return {
    ...(progress ?? {}),
    ...(request && !carried && !refusedNow ? { requested: request } : {}),
    ...(refusedNow ? { refused: refused.reason } : {}),
  };
}

/** PURE: the leader among the election's candidate keys: the oldest (etcd3 Election's rule). */
export function leaderOf(candidates: readonly KeyValue[]): string | undefined {
  let oldest: KeyValue | undefined;
  for (const kv of candidates) if (!oldest || BigInt(kv.createRevision) < BigInt(oldest.createRevision)) oldest = kv;
  return oldest?.value;
}

export type RecordInput = { readonly id: string; readonly record: MachineRecord } | { readonly id: string; readonly invalid: string; readonly role: string | null; readonly ip: string | null };

/** PURE: records and ledger entries → one row per machine, masters first, then by id. */
export function machineStatuses(records: readonly RecordInput[], ledger: ReadonlyMap<string, LedgerEntry>, subnets: ReadonlyMap<string, string> = new Map(), joining: readonly MachineRecord[] = [], nodes: ReadonlyMap<string, NodeState> = new Map(), removals: ReadonlyMap<string, RemovalRequest> = new Map()): StatusReport {
  const rows = new Map<string, MachineStatus>();
  for (const r of records) {
    if ('invalid' in r) {
      rows.set(r.id, { id: r.id, role: r.role, ip: r.ip, state: 'failed', step: null, error: `skipped: ${r.invalid}`, subnet: null, node: null, certificatesExpire: null });
      continue;
    }
    rows.set(r.id, rowOf(r.record.id, r.record.role, r.record.ip, ledger.get(r.id) ?? null, r.record.bootId));
  }
  for (const [id, entry] of ledger) {
    if (!rows.has(id)) rows.set(id, { ...rowOf(id, entry.role, entry.ip, entry, entry.bootId), state: 'unreachable', step: null, error: UNREACHABLE });
  }
  for (const r of joining) {
    if (!rows.has(r.id)) rows.set(r.id, { id: r.id, role: r.role, ip: r.ip, state: 'pending', step: 'join', error: null, subnet: null, node: null, certificatesExpire: null });
  }
  for (const [id, r] of removals) {
    const row = rows.get(id) ?? { id, role: r.role, ip: r.ip, state: 'removing' as const, step: null, error: null, subnet: null, node: null, certificatesExpire: null };
    rows.set(id, { ...row, state: 'removing', step: nextPhase(r) ?? 'records', error: r.error });
  }
  for (const [id, row] of rows) rows.set(id, { ...row, subnet: subnets.get(id) ?? null, node: nodes.get(id) ?? null });
  const rank = (role: string | null) => (role === 'master' ? 0 : role === 'minion' ? 1 : 2);
  const machines = [...rows.values()].sort((a, b) => rank(a.role) - rank(b.role) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { machines };
}

const UNREACHABLE = 'no machine record: its lease expired (powered off, rebooting or cut off); it comes back when the machine announces again';

function rowOf(id: string, role: string, ip: string, entry: LedgerEntry | null, bootId: string): MachineStatus {
  const none = { subnet: null, node: null, certificatesExpire: entry?.certificatesExpire ?? null };
  if (!entry) return { id, role, ip, state: 'pending', step: null, error: null, ...none };
  const step = currentStep(entry);
  if (entry.state === 'failed') return { id, role, ip, state: 'failed', step, error: entry.error, ...none };
  // deployed in an earlier boot: the start steps are checked again in this one
  if (entry.state === 'deployed') return { id, role, ip, state: entry.bootId === bootId ? 'deployed' : 'deploying', step: null, error: null, ...none };
  const retrying = step ? entry.steps[step]?.lastError ?? null : null;
  return { id, role, ip, state: 'deploying', step, error: retrying, ...none };
}

/**
 * The edge: reads records, join requests, ledger, subnets, the leader and Node states from etcd and builds the report. Records
 * and join requests are written by others: they are read page by page and parsed bounded, like the overlord does.
 */
export async function readStatus(store: Store, keys: ClusterKeys): Promise<StatusReport> {
  const parsedRecords: ParsedRecord[] = [];
  const joining: MachineRecord[] = [];
  const admitted = new Map<string, AdmittedIdentity>();
  const removals = new Map<string, RemovalRequest>();
  const [, , , ledger, subnets, candidates, nodes, removalKvs, desiredKv, rotationKv] = await Promise.all([
    store.scan(keys.machines, (kvs) => {
      for (const kv of kvs) parsedRecords.push(parseMachineRecord(kv.key.slice(keys.machines.length), kv.value));
    }),
    store.scan(keys.admitted, (kvs) => {
      for (const kv of kvs) {
        const identity = parseAdmittedIdentity(kv.key.slice(keys.admitted.length), kv.value);
        if (identity) admitted.set(identity.id, identity);
      }
    }),
    store.scan(keys.join, (kvs) => {
      for (const kv of kvs) {
        const parsed = parseMachineRecord(kv.key.slice(keys.join.length), kv.value);
        if (parsed.ok) joining.push(parsed.record);
      }
    }),
    store.list(keys.ledger),
    podSubnets(store, keys),
    store.list(keys.leaderCandidates),
    readNodeStates(store, keys),
    store.list(keys.removals),
    store.get(`${keys.prefix}desired/versions`),
    store.get(keys.caRotation),
  ]);
  const rotation = rotationStatus(rotationKv?.value);
  const desired = desiredOf(desiredKv?.value);
  for (const kv of removalKvs.kvs) {
    const r = parseRemovalRequest(kv.key.slice(keys.removals.length), kv.value);
    if (r) removals.set(r.id, r);
  }
  // a machine is shown as it was admitted; a record that says otherwise is shown as what the overlord makes of it
  const records = parsedRecords.map((parsed): RecordInput => {
    if (!parsed.ok) return { id: parsed.id, invalid: `record ${parsed.reason}`, role: parsed.role, ip: parsed.ip };
    const identity = admitted.get(parsed.record.id);
    const differs = identity && admittedMismatch(parsed.record, identity);
    return identity && differs ? { id: identity.id, invalid: `record ${differs.field} ${differs.reason}`, role: identity.role, ip: identity.ip } : { id: parsed.record.id, record: parsed.record };
  });
  const entries = new Map<string, LedgerEntry>();
  for (const kv of ledger.kvs) {
    const entry = parseLedgerEntry(kv.value);
    if (entry) entries.set(kv.key.slice(keys.ledger.length), entry);
  }
  const leader = leaderOf(candidates.kvs);
  const changing = [...entries.values()]
    .filter((e) => e.state === 'deploying')
    .map((e) => {
      const step = currentStep(e) ?? e.plan[0] ?? '';
      return { id: e.id, hostname: e.hostname, step, since: e.steps[step]?.startedAt ?? e.startedAt };
    });
  return { ...machineStatuses(records, entries, subnets, joining, nodes, removals), ...(leader === undefined ? {} : { leader }), ...(desired ? { desired } : {}), ...(changing.length ? { changing } : {}), ...(rotation ? { rotation } : {}) };
}

function desiredOf(text: string | undefined): { kubernetes: string } | undefined {
  if (text === undefined) return undefined;
  try {
    const v = JSON.parse(text) as { kubernetes?: unknown };
    return isReleaseTag(v.kubernetes) ? { kubernetes: v.kubernetes } : undefined;
  } catch {
    return undefined;
  }
}

/** The table `corekube status` prints without --json. */
export function formatStatusTable(report: StatusReport): string {
  const leader = `leader: ${report.leader ?? 'none (no overlord is running, or none has been elected yet)'}\n`;
  if (report.machines.length === 0) return `no machines have announced themselves yet\n${rotationLine(report.rotation)}${leader}`;
  const header = ['ID', 'ROLE', 'IP', 'SUBNET', 'STATE', 'NODE', 'CERTS EXPIRE', 'STEP', 'ERROR'];
  const node = (n: NodeState | null) => (n === null ? '-' : `${n.name} ${n.ready ? 'Ready' : 'NotReady'}`);
  const rows = report.machines.map((m) => [m.id.slice(0, 12), m.role ?? '-', m.ip ?? '-', m.subnet ?? '-', m.state, node(m.node), m.certificatesExpire?.slice(0, 10) ?? '-', m.step ?? '-', m.error ? (m.error.split('\n')[0] ?? '') : m.node && !m.node.ready && m.node.reason ? m.node.reason : '-']);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const states = ['deployed', 'deploying', 'pending', 'failed', ...(['unreachable', 'removing'] as const).filter((s) => report.machines.some((m) => m.state === s))] as const;
  const counts = states.map((s) => `${report.machines.filter((m) => m.state === s).length} ${s}`).join(', ');
  const changing = (report.changing ?? []).map((c) => `${c.hostname} at ${c.step} since ${c.since.slice(11, 19)}`);
  const rollout = report.desired ? `Kubernetes ${report.desired.kubernetes} (the stack's kubernetes_version)${changing.length ? `: rolling out — ${changing.join(', ')}` : ''}\n` : '';
  return `${[line(header), ...rows.map(line)].join('\n')}\n\n${report.machines.length} machines: ${counts}\n${rollout}${rotationLine(report.rotation)}${leader}`;
}

/** `CA rotation: cluster CA in phase trust since …, rolled out …` — one line, or none. */
function rotationLine(r: RotationStatus | undefined): string {
  if (r === undefined) return '';
  const at = r.phase ? `the ${r.ca} CA in phase ${r.phase} since ${r.since}${r.phase === 'finish' && r.rolledOut ? ' (done)' : ''}, ${r.rolledOut ? `rolled out ${r.rolledOut}` : `rolling out${r.waiting?.length ? ` — waiting for ${r.waiting.join(', ')}` : ''}`}` : 'none under way';
  const asked = r.requested ? `; asked: --ca ${r.requested.ca} --phase ${r.requested.phase} (${r.requested.requestedAt})` : '';
  const refused = r.refused ? `; refused: ${r.refused}` : '';
  return `CA rotation: ${at}${asked}${refused}\n`;
}
