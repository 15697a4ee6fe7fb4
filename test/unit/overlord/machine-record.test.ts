/**
 * The machine record parser (contracts/machine-record.ts) reads what others write: bounded before it parses,
 * every field checked, every refusal naming the field with a short escaped excerpt, never a throw.
 */
import { describe, expect, it } from 'vitest';
import { MAX_RECORD_BYTES } from '../../../contracts/discovery-limits.ts';
import { parseMachineRecord } from '../../../contracts/machine-record.ts';
import { syntheticHostKey, syntheticNonce } from '../../../localcloud/identities.ts';

const ID = '0123456789abcdef0123456789abcdef';
const GOOD = {
  schema: 1,
  id: ID,
  role: 'minion',
  ip: '10.240.0.40',
  hostname: 'minion-1',
  bootId: '6a1ee2d4-3c0b-4b5e-9b7a-1f2e3d4c5b6a',
  sshHostKey: syntheticHostKey('m1'),
  nonceDigest: syntheticNonce('m1').digest,
  announcedAt: '2026-01-01T00:00:00Z',
};
const refusal = (text: string, key = ID) => {
  const p = parseMachineRecord(key, text);
  if (p.ok) throw new Error(`accepted: ${text.slice(0, 80)}`);
  return p;
};

describe('machine records', () => {
  it('accepts a record as corekube-announce writes it, nonce digest included', () => {
    expect(parseMachineRecord(ID, JSON.stringify(GOOD))).toEqual({ ok: true, record: GOOD });
  });

  it.each([
    ['schema', 2],
    ['id', 'f'.repeat(32)],
    ['id', 'NOT-HEX'],
    ['role', 'etcd'],
    ['role', ['master']],
    ['ip', '10.240.0.400'],
    ['ip', '10.240.0.40; rm -rf /'],
    ['ip', 167772200],
    ['hostname', 'a b'],
    ['hostname', 'minion-1\nevil: yes'],
    ['bootId', 'not a boot id'],
    ['sshHostKey', 'ssh-ed25519 $(reboot)'],
    ['sshHostKey', { type: 'ssh-ed25519' }],
    ['nonceDigest', 'ab'],
    ['announcedAt', '1'],
    ['announcedAt', 'March 7, 2020'],
    ['announcedAt', '2026-02-30T00:00:00Z'],
    ['announcedAt', '2026-01-01T00:00:00'],
  ])('refuses a bad %s (%j), naming the field', (field, value) => {
    const p = refusal(JSON.stringify({ ...GOOD, [field]: value }));
    expect(p.field).toBe(field);
    expect(p.reason.startsWith(`${field} `)).toBe(true);
    expect(p.fix.length).toBeGreaterThan(10);
  });

  it('refuses every bad field at once, showing at most three in its one line', () => {
    const p = refusal(JSON.stringify({ schema: 0, id: 1, role: 2, ip: 3, hostname: 4, bootId: 5, announcedAt: 6 }));
    expect(p.problems.map((x) => x.field)).toEqual(['schema', 'id', 'role', 'ip', 'hostname', 'bootId', 'announcedAt']);
    expect(p.reason).toMatch(/; and 4 more$/);
  });

  it('refuses a value larger than a record may be, or nested deeper, before parsing it — whatever its depth', () => {
    const big = refusal(JSON.stringify({ ...GOOD, hostname: 'x'.repeat(MAX_RECORD_BYTES) }));
    expect(big.field).toBe('value');
    expect(big.reason).toMatch(/more than 4096 bytes/);
    for (const depth of [3, 5_000, 100_000]) {
      const deep = refusal(`{"schema":${'['.repeat(depth)}${']'.repeat(depth)}}`);
      expect(deep.field).toBe('value');
      expect(deep.reason).toMatch(/bytes|levels deep/);
    }
    expect(refusal(`{"role":[[["x"]]]}`).reason).toMatch(/nests more than 2 levels deep/);
  });

  it('refuses unknown fields of any size, naming them', () => {
    const p = refusal(JSON.stringify({ ...GOOD, extra: 'y'.repeat(2000) }));
    expect(p.field).toBe('"extra"');
    expect(p.reason).toMatch(/^"extra" is not a field of a machine record \(got "y{48}\.\.\." \(2000 characters\)\)$/);
  });

  it('shows only a short, escaped excerpt of a hostile value: no newline, terminal escape or bidi override reaches a log line', () => {
    const hostile = `\u202e\u001b[31mred\n${'z'.repeat(3000)}`;
    const p = refusal(JSON.stringify({ ...GOOD, role: hostile }));
    expect(p.reason.length).toBeLessThan(200);
    expect(p.reason).not.toMatch(/[^\x20-\x7e]/);
    expect(p.reason).toContain('\\u202e\\u001b[31mred\\u000a');
  });

  it('refuses a key that is not a machine id, showing a digest of a long one', () => {
    const p = refusal(JSON.stringify(GOOD), 'x'.repeat(100_000));
    expect(p.problems[0]!.field).toBe('key');
    expect(p.id).toMatch(/^sha256:[0-9a-f]{32}$/);
  });

  it('keeps role and ip of a refused record for status only when they are short strings, escaped', () => {
    expect(refusal(JSON.stringify({ ...GOOD, role: 'etcd\n' }))).toMatchObject({ role: 'etcd\\u000a', ip: '10.240.0.40' });
    expect(refusal(JSON.stringify({ ...GOOD, role: 'r'.repeat(65), ip: 7 }))).toMatchObject({ role: null, ip: null });
  });
});
