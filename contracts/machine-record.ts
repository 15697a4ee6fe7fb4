import type { FieldProblem } from '../core/errors.ts';
import { MAX_RECORD_BYTES, MAX_RECORD_DEPTH } from './discovery-limits.ts';
import { SCHEMA_VERSION } from './keys.ts';
import { escapeText, excerpt, keyRef, parseBoundedJson } from '../core/untrusted.ts';
import { isRole, ROLES, type Role } from './roles.ts';

/**
 * What a node announces about itself at `<prefix>/machines/<id>` (JSON), under a lease it keeps alive,
 * so a dead machine's record expires; the same JSON is its join request at `<prefix>/join/<id>`. Written by
 * `announce` (cloud-config) on the node; read here, as untrusted input: the text is bounded in size
 * and depth before it is parsed (core/untrusted.ts), every field is checked, unknown fields are refused, and
 * a refusal names each bad field with a short excerpt of its value — never the value itself. A record that fails
 * to parse is reported and skipped, never fatal; this function never throws.
 */
export interface MachineRecord {
  readonly schema: 1;
  /** /etc/machine-id: 32 lowercase hex characters; also the key under machines/ */
  readonly id: string;
  readonly role: Role;
  readonly ip: string;
  readonly hostname: string;
  /** /proc/sys/kernel/random/boot_id: a new boot of the same machine has a new one */
  readonly bootId: string;
  /** the node's SSH host public key (`ssh-ed25519 AAAA…`); required in a join request, pinned by the overlord at admission */
  readonly sshHostKey?: string;
  /**
   * SHA-256 (hex) of the per-boot nonce the announce script keeps root-only on the machine: a join request commits
   * to it, and the overlord admits the request only if the machine it reaches over SSH holds that nonce
   * (overlord/discovery/admission.ts). Required in a join request.
   */
  readonly nonceDigest?: string;
  /** ISO 8601 */
  readonly announcedAt: string;
}

export type ParsedRecord =
  | { readonly ok: true; readonly record: MachineRecord }
  | {
      readonly ok: false;
      /** the key's id, or a digest of it when it is long or not printable (core/untrusted.ts keyRef) */
      readonly id: string;
      /** every problem, each naming its field; the first names `field` */
      readonly problems: readonly FieldProblem[];
      readonly field: string;
      /** one short line: up to three problems, each `field: what is wrong (got excerpt)` */
      readonly reason: string;
      /** the fix of the first problem */
      readonly fix: string;
      /** role and ip as given, when they are short strings (for status), escaped */
      readonly role: string | null;
      readonly ip: string | null;
    };

export const MACHINE_ID = /^[0-9a-f]{32}$/;
export const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$/;
const BOOT_ID = /^[0-9a-f-]{32,36}$/;
const HOST_KEY = /^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) [A-Za-z0-9+/]{16,2000}={0,2}$/;
const DIGEST = /^[0-9a-f]{64}$/;
/** ISO 8601 with a time zone, as `date -u +%Y-%m-%dT%H:%M:%SZ` writes it (Date.parse alone takes "1" or "March 7") */
const TIMESTAMP = /^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$/;

const FIELDS = ['schema', 'id', 'role', 'ip', 'hostname', 'bootId', 'sshHostKey', 'nonceDigest', 'announcedAt'] as const;

const FIX = {
  key: 'the key must end in the machine\'s 32-hex /etc/machine-id',
  value: `a record is one flat JSON object of at most ${MAX_RECORD_BYTES} bytes, as corekube-announce writes it`,
  schema: `write schema ${SCHEMA_VERSION}`,
  id: 'write the machine\'s /etc/machine-id (32 lowercase hex), the same as its key',
  role: `write one of ${ROLES.join(', ')}`,
  ip: 'write the machine\'s private IPv4 address, such as 10.240.0.40',
  hostname: 'write a host name of letters, digits, dots and dashes (at most 253 characters)',
  bootId: 'write /proc/sys/kernel/random/boot_id',
  sshHostKey: 'write the machine\'s OpenSSH public host key line, "ssh-ed25519 AAAA…"',
  nonceDigest: 'write the SHA-256 (64 lowercase hex) of the announce script\'s per-boot nonce',
  announcedAt: 'write an ISO 8601 time with a zone, such as 2026-01-01T00:00:00Z',
  unknown: `remove it: a record holds only ${FIELDS.join(', ')}`,
} as const;

/** Parses the JSON value stored at `machines/<keyId>` (or `join/<keyId>`). Never throws. */
export function parseMachineRecord(keyId: string, text: string): ParsedRecord {
  const problems: FieldProblem[] = [];
  const bad = (field: string, value: unknown, message: string, fix: string) => problems.push({ field, value: excerpt(value), message, fix });
  if (!MACHINE_ID.test(keyId)) bad('key', keyId, 'is not a machine id', FIX.key);

  const parsed = parseBoundedJson(text, { maxBytes: MAX_RECORD_BYTES, maxDepth: MAX_RECORD_DEPTH });
  if (!parsed.ok) {
    bad('value', text, parsed.reason, FIX.value);
    return failure(keyId, problems, null);
  }
  const v = parsed.value;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    bad('value', v, 'is not a JSON object', FIX.value);
    return failure(keyId, problems, null);
  }
  const r = v as Record<string, unknown>;
  const unknown = Object.keys(r).filter((k) => !(FIELDS as readonly string[]).includes(k));
  for (const k of unknown.slice(0, 3)) bad(excerpt(k), r[k], 'is not a field of a machine record', FIX.unknown);
  if (unknown.length > 3) bad('fields', unknown.length, `${unknown.length - 3} more unknown fields`, FIX.unknown);

  if (r.schema !== SCHEMA_VERSION) bad('schema', r.schema, `is not ${SCHEMA_VERSION}`, FIX.schema);
  if (typeof r.id !== 'string' || !MACHINE_ID.test(r.id)) bad('id', r.id, 'is not a 32-hex machine id', FIX.id);
  else if (r.id !== keyId) bad('id', r.id, 'does not match its key', FIX.id);
  if (!isRole(r.role)) bad('role', r.role, `is not one of ${ROLES.join(', ')}`, FIX.role);
  if (typeof r.ip !== 'string' || !IPV4.test(r.ip)) bad('ip', r.ip, 'is not an IPv4 address', FIX.ip);
  if (typeof r.hostname !== 'string' || !HOSTNAME.test(r.hostname)) bad('hostname', r.hostname, 'is not a host name', FIX.hostname);
  if (typeof r.bootId !== 'string' || !BOOT_ID.test(r.bootId)) bad('bootId', r.bootId, 'is not a boot id', FIX.bootId);
  if (r.sshHostKey !== undefined && (typeof r.sshHostKey !== 'string' || !HOST_KEY.test(r.sshHostKey))) bad('sshHostKey', r.sshHostKey, 'is not an SSH public key', FIX.sshHostKey);
  if (r.nonceDigest !== undefined && (typeof r.nonceDigest !== 'string' || !DIGEST.test(r.nonceDigest))) bad('nonceDigest', r.nonceDigest, 'is not a SHA-256 digest', FIX.nonceDigest);
  if (typeof r.announcedAt !== 'string' || !isTimestamp(r.announcedAt)) bad('announcedAt', r.announcedAt, 'is not an ISO 8601 time', FIX.announcedAt);
  if (problems.length > 0) return failure(keyId, problems, r);

  const record: MachineRecord = {
    schema: SCHEMA_VERSION,
    id: r.id as string,
    role: r.role as Role,
    ip: r.ip as string,
    hostname: r.hostname as string,
    bootId: r.bootId as string,
    ...(r.sshHostKey === undefined ? {} : { sshHostKey: r.sshHostKey as string }),
    ...(r.nonceDigest === undefined ? {} : { nonceDigest: r.nonceDigest as string }),
    announcedAt: r.announcedAt as string,
  };
  return { ok: true, record: Object.freeze(record) };
}

/** One short line for a log or `corekube status`: up to three problems. */
export function describeProblems(problems: readonly FieldProblem[]): string {
  const shown = problems.slice(0, 3).map((p) => `${p.field} ${p.message} (got ${String(p.value)})`);
  return problems.length > 3 ? `${shown.join('; ')}; and ${problems.length - 3} more` : shown.join('; ');
}

function failure(keyId: string, problems: FieldProblem[], r: Record<string, unknown> | null): ParsedRecord {
  const loose = (x: unknown) => (typeof x === 'string' && x.length <= 64 ? escapeText(x) : null);
  return {
    ok: false,
    id: keyRef(keyId),
    problems,
    field: problems[0]!.field,
    reason: describeProblems(problems),
    fix: problems[0]!.fix,
    role: loose(r?.role),
    ip: loose(r?.ip),
  };
}

function isTimestamp(s: string): boolean {
  const m = TIMESTAMP.exec(s);
  if (!m || !Number.isFinite(Date.parse(s))) return false;
  // Date.parse rolls 2026-02-30 over into March: the day must exist in its month
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return new Date(Date.UTC(year, month - 1, day)).getUTCDate() === day;
}
