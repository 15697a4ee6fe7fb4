import { createHash } from 'node:crypto';
import { syntheticHostKey, syntheticNonce } from '../../localcloud/identities.ts';

/**
 * The hostile inputs of test/adversarial/discovery-hostile.test.ts: what a join-token holder can write under
 * `join/` (any key, any value up to discovery's request limit), and what an admitted node can write as its own
 * etcd user (its own record, any value). Each names the log event the overlord must answer it with and the field
 * that line must name. Shell metacharacters and newlines in every field, huge and deeply nested values, wrong
 * types, unicode, unknown fields, oversized keys, foreign and duplicate addresses, another machine's id or key.
 */
export interface Machines {
  /** the good master, the victim minion (both admitted and deployed), the attacker minion (admitted, deployed) */
  readonly master: { readonly id: string; readonly ip: string; readonly hostKey: string };
  readonly victim: { readonly id: string; readonly ip: string; readonly hostKey: string };
  readonly attacker: { readonly id: string; readonly ip: string; readonly hostKey: string };
  /** a node that asks to join with a wrong token: a real machine, never admitted, holding its own join nonce */
  readonly stranger: { readonly id: string; readonly ip: string; readonly hostKey: string };
  /** an address of the machines' range where no machine is */
  readonly free: string;
  /** the net's prefix, `10.200.<k>.` */
  readonly net: string;
  /** the attacker's record as its announce wrote it */
  readonly attackerRecord: Record<string, unknown>;
}

export type HostileEvent = 'join.invalid' | 'join.refused' | 'machine.invalid' | 'machine.refused';

export interface HostileInput {
  readonly name: string;
  /** a join-token holder writes `join/<key>`; the attacker node writes its own `machines/<id>` */
  readonly by: 'joiner' | 'attacker';
  /** the key under join/ (default: a fresh machine id of this input's own) */
  readonly key?: (m: Machines) => string;
  readonly value: (m: Machines, key: string) => string;
  readonly event: HostileEvent;
  readonly field: string;
}

/** A fresh machine id per input (32 hex). */
export const idOf = (name: string) => createHash('sha256').update(name).digest('hex').slice(0, 32);
const NOW = '2026-01-01T00:00:00Z';

/** A join request that would pass every check but the one an input breaks. */
function request(m: Machines, id: string, over: Record<string, unknown> = {}): string {
  return JSON.stringify({ schema: 1, id, role: 'minion', ip: m.free, hostname: 'joining', bootId: 'b'.repeat(32), sshHostKey: syntheticHostKey(id), nonceDigest: syntheticNonce(id).digest, announcedAt: NOW, ...over });
}
const without = (json: string, field: string) => {
  const v = JSON.parse(json) as Record<string, unknown>;
  delete v[field];
  return JSON.stringify(v);
};

const field = (name: string, f: string, value: unknown, event: HostileEvent = 'join.invalid'): HostileInput => ({ name, by: 'joiner', value: (m, key) => request(m, key, { [f]: value }), event, field: f });
/** an unknown field: the refusal names it quoted */
const unknown = (name: string, f: string, value: unknown): HostileInput => ({ ...field(name, f, value), field: `"${f}"` });
const raw = (name: string, text: (m: Machines, key: string) => string, f = 'value'): HostileInput => ({ name, by: 'joiner', value: text, event: 'join.invalid', field: f });
const keyed = (name: string, key: string): HostileInput => ({ name, by: 'joiner', key: () => key, value: (m) => request(m, idOf(name)), event: 'join.invalid', field: 'key' });
const record = (name: string, over: (m: Machines) => Record<string, unknown>, f: string, event: HostileEvent = 'machine.refused'): HostileInput => ({
  name,
  by: 'attacker',
  // a new boot id, so that the overlord would deploy it again if it took it
  value: (m) => JSON.stringify({ ...m.attackerRecord, bootId: idOf(name), ...over(m) }),
  event,
  field: f,
});
const deep = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;

export const HOSTILE_INPUTS: readonly HostileInput[] = [
  // shell metacharacters and newlines in every field
  field('a command substitution in the id', 'id', '$(reboot)'),
  field('a newline in the id', 'id', `${'a'.repeat(31)}\n`),
  field('a command list in the role', 'role', 'minion; rm -rf /'),
  field('a newline in the role', 'role', 'minion\nmaster'),
  field('a command list after the ip', 'ip', '10.200.0.40; reboot'),
  field('a newline after the ip', 'ip', '10.200.0.40\n'),
  field('a command substitution in the hostname', 'hostname', 'h$(reboot)'),
  field('a header injected through the hostname', 'hostname', 'h\r\nX-Evil: 1'),
  field('backticks in the boot id', 'bootId', '`reboot`'),
  field('a newline in the boot id', 'bootId', `${'a'.repeat(16)}\n${'b'.repeat(16)}`),
  field('a command list in the host key', 'sshHostKey', 'ssh-ed25519 AAAAC3Nza;reboot'),
  field('a second key line in the host key', 'sshHostKey', `${syntheticHostKey('x')}\nssh-rsa AAAAB3NzaC1yc2E`),
  field('a command substitution in the nonce digest', 'nonceDigest', '$(cat /etc/shadow)'),
  field('a newline after the nonce digest', 'nonceDigest', `${'a'.repeat(64)}\n`),
  field('a command list after the timestamp', 'announcedAt', `${NOW}; reboot`),
  field('a newline after the timestamp', 'announcedAt', `${NOW}\n`),
  field('a command list in the schema', 'schema', '1; reboot'),
  // wrong types
  field('the schema as a string', 'schema', '1'),
  field('the role as a number', 'role', 1),
  field('the ip as a number', 'ip', 167772200),
  field('the hostname as an array', 'hostname', ['a']),
  field('the boot id as an object', 'bootId', {}),
  field('the host key as a boolean', 'sshHostKey', true),
  field('the nonce digest as a number', 'nonceDigest', 42),
  field('the timestamp as a number', 'announcedAt', 1767225600),
  field('the id as null', 'id', null),
  // lenient timestamps
  field('a timestamp in words', 'announcedAt', 'March 7, 2020'),
  field('a timestamp of one digit', 'announcedAt', '1'),
  field('a day that does not exist', 'announcedAt', '2026-02-30T00:00:00Z'),
  // unicode
  field('an accented hostname', 'hostname', 'mínion'),
  field('a right-to-left override in the hostname', 'hostname', '\u202eretsam'),
  field('a full-width role', 'role', 'ｍａｓｔｅｒ'),
  field('full-width digits in the ip', 'ip', '１０.200.0.40'),
  field('a Cyrillic letter in the id', 'id', `${'a'.repeat(31)}а`),
  // unknown fields
  unknown('an unknown field', 'admin', true),
  unknown('a __proto__ field', '__proto__', { admin: true }),
  unknown('a constructor field', 'constructor', 'x'),
  // huge and deeply nested values, wrong shapes
  raw('a megabyte of padding', (m, key) => request(m, key, { pad: 'p'.repeat(1_000_000) })),
  raw('a value nested 5,000 levels deep', () => `{"schema":${deep(5_000)}}`),
  raw('a value nested 400,000 levels deep', () => `{"schema":${deep(400_000)}}`),
  raw('a hostname of 100,000 characters', (m, key) => request(m, key, { hostname: 'h'.repeat(100_000) })),
  raw('an array', () => '[]'),
  raw('null', () => 'null'),
  raw('a string', () => '"minion"'),
  raw('broken JSON', () => '{'),
  raw('nothing at all', () => ''),
  raw('a byte-order mark before the object', (m, key) => `\ufeff${request(m, key)}`),
  raw('unpaired surrogates', () => '\udc80\ud800{}'),
  raw('a role nested three deep', (m, key) => request(m, key, { role: [['master']] })),
  // keys: oversized, not a machine id, escaping the prefix
  keyed('a key of half a megabyte', 'k'.repeat(500_000)),
  keyed('a key that climbs out of join/', '../machines/00000000000000000000000000000001'),
  keyed('a command substitution in the key', '$(reboot)'),
  keyed('a newline in the key', `${'a'.repeat(16)}\n${'b'.repeat(15)}`),
  keyed('an empty key', ''),
  keyed('a full-width key', 'ｍａｃｈｉｎｅ'),
  // foreign and duplicate addresses (checked before any connection)
  field('a public address', 'ip', '8.8.8.8', 'join.refused'),
  field('the loopback address', 'ip', '127.0.0.1', 'join.refused'),
  field('the metadata service', 'ip', '169.254.169.254', 'join.refused'),
  field('a pod network address', 'ip', '10.244.0.5', 'join.refused'),
  field('the service network', 'ip', '10.96.0.1', 'join.refused'),
  { name: "discovery's address", by: 'joiner', value: (m, key) => request(m, key, { ip: `${m.net}10` }), event: 'join.refused', field: 'ip' },
  { name: 'the gateway', by: 'joiner', value: (m, key) => request(m, key, { ip: `${m.net}1` }), event: 'join.refused', field: 'ip' },
  { name: 'the broadcast address', by: 'joiner', value: (m, key) => request(m, key, { ip: `${m.net}255` }), event: 'join.refused', field: 'ip' },
  { name: "the master's address", by: 'joiner', value: (m, key) => request(m, key, { ip: m.master.ip }), event: 'join.refused', field: 'ip' },
  { name: "the victim's address and host key under a made-up id", by: 'joiner', value: (m, key) => request(m, key, { ip: m.victim.ip, sshHostKey: m.victim.hostKey }), event: 'join.refused', field: 'ip' },
  // another machine's id or key
  { name: "the victim's host key at a free address", by: 'joiner', value: (m, key) => request(m, key, { sshHostKey: m.victim.hostKey }), event: 'join.refused', field: 'sshHostKey' },
  { name: 'no host key', by: 'joiner', value: (m, key) => without(request(m, key), 'sshHostKey'), event: 'join.refused', field: 'sshHostKey' },
  { name: 'no nonce digest', by: 'joiner', value: (m, key) => without(request(m, key), 'nonceDigest'), event: 'join.refused', field: 'nonceDigest' },
  { name: "the victim's id asking to be a master", by: 'joiner', key: (m) => m.victim.id, value: (m) => request(m, m.victim.id, { ip: m.victim.ip, sshHostKey: m.victim.hostKey, role: 'master' }), event: 'join.refused', field: 'role' },
  { name: "the victim's id at the stranger's address and key", by: 'joiner', key: (m) => m.victim.id, value: (m) => request(m, m.victim.id, { ip: m.stranger.ip, sshHostKey: m.stranger.hostKey }), event: 'join.refused', field: 'sshHostKey' },
  // … proved over SSH on the real machines
  { name: "a made-up id at the stranger's address and key (the machine there is another id)", by: 'joiner', value: (m, key) => request(m, key, { ip: m.stranger.ip, sshHostKey: m.stranger.hostKey }), event: 'join.refused', field: 'id' },
  { name: "a made-up id at the stranger's address with a key nobody pinned (the handshake shows another)", by: 'joiner', value: (m, key) => request(m, key, { ip: m.stranger.ip }), event: 'join.refused', field: 'sshHostKey' },
  { name: "the stranger's own id, address and key with a guessed nonce", by: 'joiner', key: (m) => m.stranger.id, value: (m) => request(m, m.stranger.id, { ip: m.stranger.ip, sshHostKey: m.stranger.hostKey }), event: 'join.refused', field: 'nonceDigest' },
  { name: "the victim's own id, address and key with a guessed nonce", by: 'joiner', key: (m) => m.victim.id, value: (m) => request(m, m.victim.id, { ip: m.victim.ip, sshHostKey: m.victim.hostKey }), event: 'join.refused', field: 'nonceDigest' },
  // an admitted node rewriting its own record
  record("its record at the victim's address", (m) => ({ ip: m.victim.ip }), 'ip'),
  record("its record at the master's address", (m) => ({ ip: m.master.ip }), 'ip'),
  record("its record with the victim's host key", (m) => ({ sshHostKey: m.victim.hostKey }), 'sshHostKey'),
  record("its record with the stranger's host key", (m) => ({ sshHostKey: m.stranger.hostKey }), 'sshHostKey'),
  record("its record at the victim's address with the victim's key", (m) => ({ ip: m.victim.ip, sshHostKey: m.victim.hostKey }), 'ip'),
  record('its record at a public address', () => ({ ip: '8.8.8.8' }), 'ip'),
  record('its record at the loopback address', () => ({ ip: '127.0.0.1' }), 'ip'),
  record('its record at the metadata service', () => ({ ip: '169.254.169.254' }), 'ip'),
  record('its record in the pod network', () => ({ ip: '10.244.1.1' }), 'ip'),
  record("its record at discovery's address", (m) => ({ ip: `${m.net}10` }), 'ip'),
  record("its record at the stranger's address", (m) => ({ ip: m.stranger.ip }), 'ip'),
  record('its record at a free address', (m) => ({ ip: m.free }), 'ip'),
  record('its record as a master', () => ({ role: 'master' }), 'role'),
  record("its record with the victim's id", (m) => ({ id: m.victim.id }), 'id', 'machine.invalid'),
  record('a newline in its hostname', () => ({ hostname: 'attacker\nmaster' }), 'hostname', 'machine.invalid'),
  record('a command substitution in its boot id', () => ({ bootId: '$(reboot)' }), 'bootId', 'machine.invalid'),
  record('an unknown field in its record', () => ({ privileged: true }), '"privileged"', 'machine.invalid'),
  record('a junk timestamp in its record', () => ({ announcedAt: 'yesterday' }), 'announcedAt', 'machine.invalid'),
  { name: 'its record a megabyte long', by: 'attacker', value: (m) => JSON.stringify({ ...m.attackerRecord, pad: 'p'.repeat(1_000_000) }), event: 'machine.invalid', field: 'value' },
  { name: 'its record nested 5,000 deep', by: 'attacker', value: () => `{"schema":${deep(5_000)}}`, event: 'machine.invalid', field: 'value' },
  { name: 'its record as null', by: 'attacker', value: () => 'null', event: 'machine.invalid', field: 'value' },
];
