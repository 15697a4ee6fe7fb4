import { SCHEMA_VERSION } from './keys.ts';

/**
 * What a node announces about itself at `<prefix>/machines/<id>` (JSON), under a lease it keeps alive,
 * so a dead machine's record expires. Written by `announce` (cloud-config) on the node; read here.
 * A record that fails to parse is reported and skipped, never fatal.
 */
export type Role = 'master' | 'minion';
export const ROLES: readonly Role[] = ['master', 'minion'];

export interface MachineRecord {
  readonly schema: 1;
  /** /etc/machine-id: 32 lowercase hex characters; also the key under machines/ */
  readonly id: string;
  readonly role: Role;
  readonly ip: string;
  readonly hostname: string;
  /** /proc/sys/kernel/random/boot_id: a new boot of the same machine has a new one */
  readonly bootId: string;
  /** the node's SSH host public key (`ssh-ed25519 AAAA…`), pinned by the overlord; absent = trust on first use */
  readonly sshHostKey?: string;
  /** ISO 8601 */
  readonly announcedAt: string;
}

export type ParsedRecord = { ok: true; record: MachineRecord } | { ok: false; id: string; reason: string };

const MACHINE_ID = /^[0-9a-f]{32}$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HOSTNAME = /^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$/;
const BOOT_ID = /^[0-9a-f-]{32,36}$/;
const HOST_KEY = /^(ssh-ed25519|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521|ssh-rsa) [A-Za-z0-9+/]+=*$/;

/** Parses the JSON value stored at `machines/<keyId>`. Never throws. */
export function parseMachineRecord(keyId: string, text: string): ParsedRecord {
  const fail = (reason: string): ParsedRecord => ({ ok: false, id: keyId, reason });
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return fail('is not JSON');
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return fail('is not a JSON object');
  const r = v as Record<string, unknown>;
  if (r.schema !== SCHEMA_VERSION) return fail(`has schema ${JSON.stringify(r.schema)}, expected ${SCHEMA_VERSION}`);
  if (typeof r.id !== 'string' || !MACHINE_ID.test(r.id)) return fail('id is not a 32-hex machine id');
  if (r.id !== keyId) return fail(`id ${r.id} does not match its key ${keyId}`);
  if (typeof r.role !== 'string' || !(ROLES as readonly string[]).includes(r.role)) return fail(`role ${JSON.stringify(r.role)} is not one of ${ROLES.join(', ')}`);
  if (typeof r.ip !== 'string' || !IPV4.test(r.ip)) return fail(`ip ${JSON.stringify(r.ip)} is not an IPv4 address`);
  if (typeof r.hostname !== 'string' || !HOSTNAME.test(r.hostname)) return fail('hostname is not a valid host name');
  if (typeof r.bootId !== 'string' || !BOOT_ID.test(r.bootId)) return fail('bootId is not a boot id');
  if (r.sshHostKey !== undefined && (typeof r.sshHostKey !== 'string' || !HOST_KEY.test(r.sshHostKey))) return fail('sshHostKey is not an SSH public key');
  if (typeof r.announcedAt !== 'string' || Number.isNaN(Date.parse(r.announcedAt))) return fail('announcedAt is not a timestamp');
  const record: MachineRecord = {
    schema: SCHEMA_VERSION,
    id: r.id,
    role: r.role as Role,
    ip: r.ip,
    hostname: r.hostname,
    bootId: r.bootId,
    ...(r.sshHostKey === undefined ? {} : { sshHostKey: r.sshHostKey as string }),
    announcedAt: r.announcedAt,
  };
  return { ok: true, record: Object.freeze(record) };
}
