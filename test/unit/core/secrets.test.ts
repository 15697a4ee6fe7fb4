import { describe, expect, it } from 'vitest';
import { base64Markers, findSecrets } from '../../../core/secrets.ts';

const pem = (label: string) => `-----BEGIN ${label}-----\nMHcCAQEEIBbXdz0vXnZsYmFrZWtleWJ5dGVzZm9ydGVzdHNvbmx5oAoGCCqGSM49\n-----END ${label}-----\n`;

describe('findSecrets', () => {
  it('finds PEM private keys of every kind, with their line', () => {
    for (const label of ['PRIVATE KEY', 'EC PRIVATE KEY', 'RSA PRIVATE KEY', 'OPENSSH PRIVATE KEY', 'ENCRYPTED PRIVATE KEY']) {
      expect(findSecrets(`log line\n${pem(label)}`)).toEqual([`line 2: PEM private key block (BEGIN ${label})`]);
    }
  });

  it('finds base64 of a PEM private key wherever it sits in the encoded text', () => {
    for (const prefix of ['', 'x', 'xy', 'some prefix before ']) {
      const b64 = Buffer.from(prefix + pem('EC PRIVATE KEY')).toString('base64');
      expect(findSecrets(`data: ${b64}`).join()).toMatch(/base64 of a PEM private key/);
    }
    expect(findSecrets('LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t')).not.toEqual([]);
  });

  it('finds a kubeconfig client-key-data value in YAML and JSON', () => {
    expect(findSecrets('    client-key-data: QUJDREVGR0hJSktMTU5PUFFSU1RVVg==')).toEqual(['line 1: kubeconfig client-key-data value']);
    expect(findSecrets('{"client-key-data":"QUJDREVGR0hJSktMTU5PUFFSU1RVVg=="}')).toEqual(['line 1: kubeconfig client-key-data value']);
  });

  it('finds given secret values verbatim and base64-encoded, never repeating them', () => {
    const token = 'k8J2mQ9xTz4vLw7pRn3s';
    const found = findSecrets(`joined with ${token}\nheader ${Buffer.from(`joiner:${token}`).toString('base64')}`, { values: [token] });
    expect(found).toEqual(['line 1: secret value #1', 'line 2: base64 of secret value #1']);
    expect(found.join()).not.toContain(token);
  });

  it('passes ordinary logs, certificates, public keys and file references', () => {
    const clean = [
      '{"level":30,"event":"pki.cert.issued","name":"machines/0001/kubelet","serialNumber":"4f00"}',
      '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----',
      '-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----',
      'client-key: /etc/corekube/pki/kubelet.key',
    ].join('\n');
    expect(findSecrets(clean, { values: ['short'] })).toEqual([]);
  });

  it('computes the three alignments of a base64 marker', () => {
    const markers = base64Markers('PRIVATE KEY-----');
    expect(markers).toHaveLength(3);
    for (let offset = 0; offset < 3; offset++) {
      expect(Buffer.from(`${'a'.repeat(offset)}PRIVATE KEY-----and more`).toString('base64')).toContain(markers[offset]);
    }
  });
});
