import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { quoteArg, quoteArgv } from '../../../overlord/edges/ssh-runner.ts';
import { formatHostKey, hostKeyFingerprint, parseHostKey } from '../../../overlord/edges/host-key.ts';

// a public key made with `ssh-keygen -t ed25519`; `ssh-keygen -lf` printed the fingerprint below
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAi8XvyIMaOUGTipiAAu8dPdZwm3WU5gnbG7F4EMiu4s';
const FINGERPRINT = 'SHA256:cZFZ0Qlh9THHDihV4t2JA03yVJYemARaFxJ6W7K4q3Y';

describe('quoting argv for the remote shell', () => {
  it('leaves words of safe characters bare', () => {
    expect(quoteArgv(['systemctl', 'start', '--no-block', 'kube-apiserver.service', '/etc/a_b/c@d:1,2', 'X=1'])).toBe(
      'systemctl start --no-block kube-apiserver.service /etc/a_b/c@d:1,2 X=1',
    );
  });

  it('single-quotes everything a shell would interpret', () => {
    expect(quoteArg('$(touch /pwned)')).toBe("'$(touch /pwned)'");
    expect(quoteArg('`id`')).toBe("'`id`'");
    expect(quoteArg('a b')).toBe("'a b'");
    expect(quoteArg('*')).toBe("'*'");
    expect(quoteArg('~')).toBe("'~'");
    expect(quoteArg('x;y|z&w')).toBe("'x;y|z&w'");
    expect(quoteArg('new\nline')).toBe("'new\nline'");
  });

  it('quotes the empty string as an empty word', () => {
    expect(quoteArgv(['printf', '%s', ''])).toBe("printf %s ''");
  });

  it('escapes single quotes by closing, escaping and reopening the quote', () => {
    expect(quoteArg("it's")).toBe("'it'\\''s'");
    expect(quoteArg("'")).toBe("''\\'''");
  });

  it('refuses a NUL byte and an empty command as internal errors', () => {
    expect(() => quoteArg('a\0b')).toThrow(CorekubeError);
    expect(() => quoteArgv([])).toThrow(/empty remote command/);
  });
});

describe('host keys', () => {
  it('parses a public key line into its type and wire blob, ignoring the comment', () => {
    const parsed = parseHostKey(`${KEY} root@m1`);
    expect(parsed?.type).toBe('ssh-ed25519');
    expect(formatHostKey(parsed!.blob)).toBe(KEY);
  });

  it('rejects lines that are not keys, and a blob of another type than the line claims', () => {
    expect(parseHostKey('')).toBeUndefined();
    expect(parseHostKey('ssh-ed25519')).toBeUndefined();
    expect(parseHostKey('ssh-ed25519 not*base64')).toBeUndefined();
    expect(parseHostKey(KEY.replace('ssh-ed25519', 'ssh-rsa'))).toBeUndefined();
  });

  it('prints the fingerprint ssh-keygen prints', () => {
    expect(hostKeyFingerprint(parseHostKey(KEY)!.blob)).toBe(FINGERPRINT);
  });
});
