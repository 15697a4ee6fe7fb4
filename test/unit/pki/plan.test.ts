import { describe, expect, it } from 'vitest';
import { machineProfiles, type CertProfile } from '../../../overlord/trust/pki/catalog.ts';
import { planIssuance, reasonToIssue, RENEW_BEFORE_MS, type CertFacts, type Existing } from '../../../overlord/trust/pki/plan.ts';
import { DAY, master1, minion1, spec } from './fixtures.ts';

const NOW = Date.parse('2026-11-21T22:00:00Z');
const kubelet = machineProfiles(spec, minion1).find((p) => p.name.endsWith('/kubelet'))!;
const cas = { cluster: 'aa', etcd: 'bb', 'front-proxy': 'dd', discovery: 'cc' };

function issued(p: CertProfile, change: Partial<CertFacts> = {}): Existing {
  const cert: CertFacts = {
    commonName: p.commonName,
    organizations: p.organizations,
    dnsNames: [...p.dnsNames].reverse(),
    ipAddresses: p.ipAddresses,
    usage: p.usage,
    notAfter: NOW + 365 * DAY,
    authorityKeyId: cas[p.ca],
    publicKey: 'k1',
    ...change,
  };
  return { cert, keyPublicKey: 'k1' };
}

describe('the issuance plan', () => {
  it('keeps a current certificate (SANs compared as sets)', () => {
    expect(reasonToIssue(kubelet, issued(kubelet), 'aa', NOW)).toBeUndefined();
    expect(planIssuance([kubelet], new Map([[kubelet.name, issued(kubelet)]]), cas, NOW)).toEqual([]);
  });

  it('issues a missing certificate with a new key', () => {
    expect(planIssuance([kubelet], new Map(), cas, NOW)).toEqual([{ profile: kubelet, reason: 'missing', keepKey: false }]);
  });

  it('renews a certificate within 30 days of its expiry, keeping its key', () => {
    const soon = issued(kubelet, { notAfter: NOW + RENEW_BEFORE_MS - 1 });
    expect(planIssuance([kubelet], new Map([[kubelet.name, soon]]), cas, NOW)).toEqual([{ profile: kubelet, reason: 'expiring', keepKey: true }]);
    expect(reasonToIssue(kubelet, issued(kubelet, { notAfter: NOW + RENEW_BEFORE_MS + 1 }), 'aa', NOW)).toBeUndefined();
  });

  it('re-issues when the SANs, the subject, the usage or the signing CA changed', () => {
    expect(reasonToIssue(kubelet, issued(kubelet, { ipAddresses: ['10.240.0.99'] }), 'aa', NOW)).toBe('sans-changed');
    expect(reasonToIssue(kubelet, issued(kubelet, { dnsNames: ['old-name'] }), 'aa', NOW)).toBe('sans-changed');
    expect(reasonToIssue(kubelet, issued(kubelet, { commonName: 'system:node:old' }), 'aa', NOW)).toBe('subject-changed');
    expect(reasonToIssue(kubelet, issued(kubelet, { organizations: [] }), 'aa', NOW)).toBe('subject-changed');
    expect(reasonToIssue(kubelet, issued(kubelet, { usage: 'client' }), 'aa', NOW)).toBe('usage-changed');
    expect(reasonToIssue(kubelet, issued(kubelet, { authorityKeyId: 'zz' }), 'aa', NOW)).toBe('issuer-changed');
  });

  it('makes a new key when the key is gone, and a new cert when they no longer match', () => {
    const noKey: Existing = { cert: issued(kubelet).cert, keyPublicKey: undefined };
    expect(planIssuance([kubelet], new Map([[kubelet.name, noKey]]), cas, NOW)).toEqual([{ profile: kubelet, reason: 'key-missing', keepKey: false }]);
    const other: Existing = { cert: issued(kubelet).cert, keyPublicKey: 'k2' };
    expect(planIssuance([kubelet], new Map([[kubelet.name, other]]), cas, NOW)).toEqual([{ profile: kubelet, reason: 'key-mismatch', keepKey: true }]);
  });
});
