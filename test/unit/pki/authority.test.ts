import { beforeAll, describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { findSecrets } from '../../../core/secrets.ts';
import { CertificateAuthority, type MachinePki } from '../../../overlord/trust/pki/authority.ts';
import { CA_NAMES, certEntriesOf, machineCertName } from '../../../overlord/trust/pki/catalog.ts';
import { MemoryPkiStore } from '../../../overlord/trust/pki/store.ts';
import { isSignedBy, readCertificate, type CertificateInfo } from '../../../overlord/trust/pki/x509.ts';
import { DAY, manualClock, master1, master2, minion1, spec } from './fixtures.ts';

/** Collects log lines as JSON, as pino would write them. */
function captureLog() {
  const lines: string[] = [];
  const write = (level: string) => (obj: object, msg: string) => void lines.push(JSON.stringify({ level, ...obj, msg }));
  return { lines, log: { info: write('info'), warn: write('warn') } };
}

function info(pem: string): CertificateInfo {
  return readCertificate(pem, 'test');
}

// Keys are made once for the file: one cluster (2 masters, 1 minion) issued in beforeAll, read by most tests.
const store = new MemoryPkiStore();
const clock = manualClock();
const logs = captureLog();
const ca = new CertificateAuthority({ store, clock, cluster: 'demo', log: logs.log });
const machines = [master1, minion1];
let m1: MachinePki;
let n1: MachinePki;

beforeAll(async () => {
  m1 = await ca.issueFor(spec, master1);
  n1 = await ca.issueFor(spec, minion1);
});

describe('the certificate authority', () => {
  it('makes each CA once: a second ensure, and a restarted authority on the same store, return the same CA', async () => {
    const first = await ca.ensureCa('cluster');
    expect(await ca.ensureCa('cluster')).toEqual(first);
    const restarted = new CertificateAuthority({ store, clock, cluster: 'demo' });
    expect((await restarted.ensureCa('cluster')).cert).toBe(first.cert);
    expect(await store.read(`${CA_NAMES.cluster}.key`)).toBeDefined();
  });

  it('makes concurrent first calls share one CA', async () => {
    const fresh = new MemoryPkiStore();
    const a = new CertificateAuthority({ store: fresh, clock, cluster: 'demo' });
    const [x, y] = await Promise.all([a.ensureCa('etcd'), a.ensureCa('etcd')]);
    expect(x.cert).toBe(y.cert);
  });

  it('makes separate, self-signed, 10-year CAs for the cluster, etcd and discovery', async () => {
    const certs = await Promise.all((['cluster', 'etcd', 'discovery'] as const).map((k) => ca.ensureCa(k)));
    expect(new Set(certs.map((c) => c.keyId)).size).toBe(3);
    for (const c of certs) {
      const i = info(c.cert);
      expect(i.isCa).toBe(true);
      expect(i.keyUsages).toEqual(expect.arrayContaining(['keyCertSign', 'cRLSign']));
      expect(i.subjectKeyId).toBe(c.keyId);
      expect(Math.round((i.notAfter - clock.now()) / DAY)).toBe(3650);
      expect(await isSignedBy(c.cert, c.cert)).toBe(true);
    }
    expect(info(certs[0]!.cert).commonName).toBe('corekube-demo-ca');
    expect(info(certs[1]!.cert).commonName).toBe('corekube-demo-etcd-ca');
  });

  it('issues 1-year leaves, CA:FALSE, digitalSignature only, each with its own key and a random serial, signed by its CA', async () => {
    const pairs = [...Object.values(m1.pairs), ...Object.values(n1.pairs)];
    expect(pairs.length).toBe(certEntriesOf('master').length + certEntriesOf('minion').length);
    const serials = new Set<string>();
    const keys = new Set<string>();
    for (const pair of pairs) {
      const i = info(pair.cert);
      expect(i.isCa).toBe(false);
      expect(i.keyUsages).toEqual(['digitalSignature']);
      expect(Math.round((i.notAfter - clock.now()) / DAY)).toBe(365);
      expect(i.notBefore).toBeLessThan(clock.now());
      expect(i.serialNumber).toMatch(/^[4-7][0-9a-f]{31}$/);
      serials.add(i.serialNumber);
      keys.add(pair.key);
    }
    expect(serials.size).toBe(pairs.length);
    expect(keys.size).toBe(pairs.length);
    expect(await isSignedBy(m1.pairs.apiServer!.cert, m1.clusterCa)).toBe(true);
    expect(await isSignedBy(m1.pairs.apiServerEtcdClient!.cert, m1.etcdCa)).toBe(true);
    expect(await isSignedBy(m1.pairs.apiServerEtcdClient!.cert, m1.clusterCa)).toBe(false);
    expect(info(m1.pairs.apiServerEtcdClient!.cert).authorityKeyId).toBe(info(m1.etcdCa).subjectKeyId);
  });

  it('writes the subject, SANs and usage of the profile into the certificate', () => {
    const kubelet = info(n1.pairs.kubelet!.cert);
    expect(kubelet).toMatchObject({ commonName: 'system:node:demo-minion-11', organizations: ['system:nodes'], usage: 'peer', dnsNames: ['demo-minion-11'], ipAddresses: ['10.240.0.40'] });
    const api = info(m1.pairs.apiServer!.cert);
    expect(api.usage).toBe('server');
    expect(api.ipAddresses).toEqual(['10.96.0.1', '10.240.0.12', '10.240.0.32', '127.0.0.1']);
    expect(api.dnsNames).toContain('kubernetes.default.svc.cluster.local');
    expect(info(m1.pairs.controllerManager!.cert)).toMatchObject({ commonName: 'system:kube-controller-manager', usage: 'client', dnsNames: [], ipAddresses: [] });
  });

  it('gives masters the shared service-account key pair and minions none', async () => {
    expect(m1.serviceAccount?.privateKey).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    expect(m1.serviceAccount?.publicKey).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    expect(n1.serviceAccount).toBeUndefined();
    expect((await ca.issueFor(spec, master1)).serviceAccount).toEqual(m1.serviceAccount);
  });

  it('issues nothing the second time: same certificates, same keys', async () => {
    const again = await ca.issueFor(spec, master1);
    expect(again.issued).toEqual([]);
    expect(again.pairs).toEqual(m1.pairs);
  });

  it("re-issues a master's API server cert, keeping its key, when its names change (a public endpoint added) — and nothing else", async () => {
    const s = new MemoryPkiStore();
    const a = new CertificateAuthority({ store: s, clock, cluster: 'demo' });
    const before = await a.issueFor(spec, master1);
    expect((await a.issueFor(spec, master1)).issued).toEqual([]);
    const after = await a.issueFor(spec, master1, { apiEndpoints: ['203.0.113.7'] });
    expect(after.issued.map((i) => [i.name, i.reason])).toEqual([[machineCertName(master1.id, 'apiServer'), 'sans-changed']]);
    expect(after.pairs.apiServer!.key).toBe(before.pairs.apiServer!.key);
    expect(info(after.pairs.apiServer!.cert).ipAddresses).toContain('203.0.113.7');
    expect(after.pairs.etcdServer).toEqual(before.pairs.etcdServer);
  });

  it('renews every leaf once it expires within 30 days, but never a CA', async () => {
    const s = new MemoryPkiStore();
    const c = manualClock();
    const a = new CertificateAuthority({ store: s, clock: c, cluster: 'demo' });
    const first = await a.issueFor(spec, minion1);
    c.advance(334 * DAY);
    expect((await a.issueFor(spec, minion1)).issued).toEqual([]);
    c.advance(2 * DAY);
    const renewed = await a.issueFor(spec, minion1);
    expect(renewed.issued.map((i) => i.reason)).toEqual(certEntriesOf('minion').map(() => 'expiring'));
    expect(renewed.clusterCa).toBe(first.clusterCa);
    expect(info(renewed.pairs.kubelet!.cert).notAfter).toBe(c.now() + 365 * DAY);
  });

  it('re-makes a lost CA certificate from its stored key, so existing leaves stay valid', async () => {
    const s = new MemoryPkiStore();
    const first = await new CertificateAuthority({ store: s, clock, cluster: 'demo' }).issueFor(spec, minion1);
    await s.write(`${CA_NAMES.cluster}.crt`, 'garbage');
    const again = await new CertificateAuthority({ store: s, clock, cluster: 'demo' }).issueFor(spec, minion1);
    expect(again.clusterCa).not.toBe(first.clusterCa);
    expect(again.issued).toEqual([]);
    expect(await isSignedBy(first.pairs.kubelet!.cert, again.clusterCa)).toBe(true);
  });

  it('refuses to replace a CA whose key is gone, without printing any key', async () => {
    const s = new MemoryPkiStore();
    await new CertificateAuthority({ store: s, clock, cluster: 'demo' }).ensureCa('cluster');
    const copy = new MemoryPkiStore();
    await copy.write(`${CA_NAMES.cluster}.crt`, (await s.read(`${CA_NAMES.cluster}.crt`))!);
    const err = await new CertificateAuthority({ store: copy, clock, cluster: 'demo' }).ensureCa('cluster').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorekubeError);
    expect((err as CorekubeError).code).toBe('E_PKI');
    expect((err as CorekubeError).describe()).toMatch(/restore ca\/cluster.key/);
  });

  it('reports an unreadable CA key by name only', async () => {
    const s = new MemoryPkiStore();
    const secretLooking = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n';
    await s.write(`${CA_NAMES.etcd}.key`, secretLooking);
    const err = (await new CertificateAuthority({ store: s, clock, cluster: 'demo' }).ensureCa('etcd').catch((e: unknown) => e)) as CorekubeError;
    expect(err.code).toBe('E_PKI');
    expect(findSecrets(`${err.describe()}\n${String((err.cause as Error | undefined)?.message)}`)).toEqual([]);
  });

  it('never makes a CA when told not to (tools that must use the existing one)', async () => {
    const err = (await new CertificateAuthority({ store: new MemoryPkiStore(), clock, cluster: 'demo', createCas: false }).ensureAdmin().catch((e: unknown) => e)) as CorekubeError;
    expect(err.code).toBe('E_PKI');
    expect(err.message).toMatch(/no cluster CA/);
  });

  it('issues the admin and discovery credentials from their own CAs', async () => {
    const admin = await ca.ensureAdmin();
    expect(info(admin.client.cert)).toMatchObject({ commonName: 'admin', organizations: ['system:masters'], usage: 'client' });
    const d = await ca.ensureDiscovery(spec);
    expect(await isSignedBy(d.server.cert, d.ca)).toBe(true);
    expect(await isSignedBy(d.server.cert, admin.ca)).toBe(false);
    expect(info(d.overlordClient.cert).commonName).toBe('root');
  });

  it('logs names, reasons and serials, never a key', () => {
    expect(logs.lines.some((l) => l.includes('"event":"pki.cert.issued"'))).toBe(true);
    expect(logs.lines.some((l) => l.includes('"event":"pki.ca.created"'))).toBe(true);
    expect(findSecrets(logs.lines.join('\n'))).toEqual([]);
    expect(logs.lines.join('\n')).not.toMatch(/BEGIN CERTIFICATE/);
  });
});
