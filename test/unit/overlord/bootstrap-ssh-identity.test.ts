/**
 * The overlord's own SSH key (overlord/trust/ssh-identity.ts): made once with node:crypto in OpenSSH's format,
 * kept 0600 in the state directory, reused on restart. ssh2 (what the overlord's SSH runner uses) must read
 * it; test/integration/discovery-trust-boot.test.ts logs in with it to a real sshd.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { afterEach, describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { findSecrets } from '../../../core/secrets.ts';
import { ensureSshIdentity, fingerprintOfLine, SSH_KEY_FILE, SSH_PUBLIC_KEY_FILE } from '../../../overlord/trust/ssh-identity.ts';

/** the slice of ssh2 (node-ssh's SSH library, no type declarations installed) this test uses */
interface Ssh2Key {
  type: string;
  getPublicSSH(): Buffer;
  sign(data: Buffer): Buffer | Error;
  verify(data: Buffer, signature: Buffer): boolean | Error;
}
const ssh2 = createRequire(import.meta.url)('ssh2') as { utils: { parseKey(text: string): Ssh2Key | Ssh2Key[] | Error } };

const dirs: string[] = [];
function stateDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'corekube-ssh-identity-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const mode = (file: string) => (statSync(file).mode & 0o777).toString(8);

describe('the overlord SSH identity', () => {
  it('makes an ed25519 pair at first boot, in OpenSSH format, readable by ssh2, kept 0600 under a 0700 directory', async () => {
    const dir = stateDir();
    const id = await ensureSshIdentity(dir, 'corekube-overlord@demo');
    expect(id.created).toBe(true);
    expect(id.privateKey).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END OPENSSH PRIVATE KEY-----\n$/);
    expect(id.publicKey).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5[A-Za-z0-9+/]+=* corekube-overlord@demo$/);
    const parsed = ssh2.utils.parseKey(id.privateKey);
    if (parsed instanceof Error) throw parsed;
    const key = Array.isArray(parsed) ? parsed[0]! : parsed;
    expect(key.type).toBe('ssh-ed25519');
    expect(key.getPublicSSH().toString('base64')).toBe(id.publicKey.split(' ')[1]);
    expect(id.fingerprint).toBe(fingerprintOfLine(id.publicKey));
    // ssh2 can sign with it and the public key verifies the signature
    const data = Buffer.from('corekube');
    expect(key.verify(data, key.sign(data) as Buffer)).toBe(true);

    expect(mode(path.join(dir, SSH_KEY_FILE))).toBe('600');
    expect(mode(path.join(dir, SSH_PUBLIC_KEY_FILE))).toBe('600');
    expect(mode(path.join(dir, 'ssh'))).toBe('700');
    expect(readFileSync(path.join(dir, SSH_PUBLIC_KEY_FILE), 'utf8')).toBe(`${id.publicKey}\n`);
  });

  it('reuses the stored pair on restart (same fingerprint) and repairs a lost public key file', async () => {
    const dir = stateDir();
    const first = await ensureSshIdentity(dir, 'corekube-overlord@demo');
    const again = await ensureSshIdentity(dir, 'corekube-overlord@demo');
    expect(again).toMatchObject({ created: false, fingerprint: first.fingerprint, publicKey: first.publicKey, privateKey: first.privateKey });
    unlinkSync(path.join(dir, SSH_PUBLIC_KEY_FILE));
    const repaired = await ensureSshIdentity(dir, 'corekube-overlord@demo');
    expect(repaired.fingerprint).toBe(first.fingerprint);
    expect(readFileSync(path.join(dir, SSH_PUBLIC_KEY_FILE), 'utf8')).toBe(`${first.publicKey}\n`);
  });

  it('refuses a key file readable by others, and a damaged one, naming the file but never its content', async () => {
    const dir = stateDir();
    const id = await ensureSshIdentity(dir, 'corekube-overlord@demo');
    const file = path.join(dir, SSH_KEY_FILE);
    chmodSync(file, 0o644);
    const open = await ensureSshIdentity(dir, 'corekube-overlord@demo').catch((e: unknown) => e);
    expect(open).toBeInstanceOf(CorekubeError);
    expect((open as CorekubeError).message).toContain('readable by group or others');
    chmodSync(file, 0o600);

    // one flipped byte inside the private section: the halves no longer match
    const lines = id.privateKey.split('\n');
    const mid = lines[3]!;
    lines[3] = (mid[0] === 'A' ? 'B' : 'A') + mid.slice(1);
    writeFileSync(file, lines.join('\n'), { mode: 0o600 });
    const damaged = (await ensureSshIdentity(dir, 'corekube-overlord@demo').catch((e: unknown) => e)) as CorekubeError;
    expect(damaged).toBeInstanceOf(CorekubeError);
    expect(damaged.code).toBe('E_PKI');
    expect(damaged.message).toContain(file);
    expect(findSecrets(`${damaged.message}\n${damaged.hint}`, { values: [id.privateKey, ...lines.filter((l) => l.length > 20)] })).toEqual([]);
  });

  it('makes a different pair for a different state directory', async () => {
    const a = await ensureSshIdentity(stateDir(), 'corekube-overlord@demo');
    const b = await ensureSshIdentity(stateDir(), 'corekube-overlord@demo');
    expect(a.fingerprint).not.toBe(b.fingerprint);
  });
});
