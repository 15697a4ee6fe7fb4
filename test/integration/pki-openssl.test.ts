import { execFile, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorekubeError } from '../../core/errors.ts';
import { CertificateAuthority, type DiscoveryPki, type MachinePki } from '../../overlord/trust/pki/authority.ts';
import { CA_NAMES, type CertEntry } from '../../overlord/trust/pki/catalog.ts';
import { DirectoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { onExit } from '../harness/cleanup.ts';
import { missingParts } from '../harness/requirements.ts';
import { manualClock, master1, minion1, spec } from '../unit/pki/fixtures.ts';

/**
 * The issued PKI as OpenSSL sees it: every leaf verifies against its own CA (strict X.509 checks and the
 * TLS purpose its usage allows) and against no other; SANs, usages and constraints read as Kubernetes and
 * etcd expect; the store's files are 0600 in 0700 directories, and a restarted authority reuses them.
 */
const run = promisify(execFile);
const skip = missingParts(spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0 ? undefined : 'openssl is not installed (Debian package openssl)');

async function openssl(...args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const { stdout, stderr } = await run('openssl', args);
    return { ok: true, out: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

describe.skipIf(skip)('the PKI checked with openssl', () => {
  let dir: string;
  let unregister: () => void;
  const clock = manualClock(Date.now());
  let master: MachinePki;
  let minion: MachinePki;
  let discovery: DiscoveryPki;
  const file = (name: string) => path.join(dir, 'pki', name);
  /** writes a PEM into the scratch dir (outside the store) and returns its path */
  const pemFile = async (name: string, pem: string) => {
    const p = path.join(dir, 'scratch', name);
    await writeFile(p, pem, { mode: 0o600 });
    return p;
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-pki-'));
    unregister = onExit(`pki dir ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
    await mkdir(path.join(dir, 'scratch'));
    const ca = new CertificateAuthority({ store: new DirectoryPkiStore(path.join(dir, 'pki')), clock, cluster: 'demo' });
    master = await ca.issueFor(spec, master1, { apiEndpoints: ['203.0.113.7', 'api.example.org'] });
    minion = await ca.issueFor(spec, minion1);
    discovery = await ca.ensureDiscovery(spec);
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
    unregister();
  });

  it('verifies every leaf against its own CA (strict, for its TLS purpose) and refuses it under the others', async () => {
    const cas = {
      cluster: await pemFile('cluster-ca.crt', master.clusterCa),
      etcd: await pemFile('etcd-ca.crt', master.etcdCa),
      'front-proxy': await pemFile('front-proxy-ca.crt', master.frontProxyCa),
      discovery: await pemFile('discovery-ca.crt', discovery.ca),
    };
    const caOf = (entry: CertEntry): keyof typeof cas =>
      (['apiServerEtcdClient', 'etcdServer', 'etcdPeer'] as CertEntry[]).includes(entry) ? 'etcd' : entry === 'frontProxyClient' ? 'front-proxy' : entry === 'discoveryClient' ? 'discovery' : 'cluster';
    const leaves: { name: string; pem: string; ca: keyof typeof cas; purposes: string[] }[] = [];
    const purposes = (usage: string) => (usage === 'server' ? ['sslserver'] : usage === 'client' ? ['sslclient'] : ['sslserver', 'sslclient']);
    const usageOf: Record<CertEntry, string> = {
      apiServer: 'server', apiServerKubeletClient: 'client', apiServerEtcdClient: 'client', controllerManager: 'client', scheduler: 'client',
      kubelet: 'peer', kubeProxy: 'client', etcdServer: 'peer', etcdPeer: 'peer', frontProxyClient: 'client', discoveryClient: 'client',
    };
    for (const pki of [master, minion]) {
      for (const [entry, pair] of Object.entries(pki.pairs) as [CertEntry, { cert: string }][]) {
        leaves.push({ name: `${pki.role}/${entry}`, pem: pair.cert, ca: caOf(entry), purposes: purposes(usageOf[entry]) });
      }
    }
    leaves.push({ name: 'discovery/server', pem: discovery.server.cert, ca: 'discovery', purposes: ['sslserver', 'sslclient'] });
    leaves.push({ name: 'overlord/discovery-client', pem: discovery.overlordClient.cert, ca: 'discovery', purposes: ['sslclient'] });
    expect(leaves.length).toBe(14);

    for (const leaf of leaves) {
      const f = await pemFile(`${leaf.name.replace('/', '-')}.crt`, leaf.pem);
      for (const purpose of leaf.purposes) {
        const good = await openssl('verify', '-x509_strict', '-purpose', purpose, '-CAfile', cas[leaf.ca], f);
        expect({ leaf: leaf.name, purpose, ...good }).toMatchObject({ ok: true, out: expect.stringContaining(': OK') });
      }
      for (const other of (Object.keys(cas) as (keyof typeof cas)[]).filter((k) => k !== leaf.ca)) {
        const bad = await openssl('verify', '-CAfile', cas[other], f);
        expect({ leaf: leaf.name, other, ok: bad.ok }).toEqual({ leaf: leaf.name, other, ok: false });
      }
    }
    // a client-only cert must not pass as a server
    const client = await pemFile('controller-manager.crt', master.pairs.controllerManager!.cert);
    expect((await openssl('verify', '-purpose', 'sslserver', '-CAfile', cas.cluster, client)).ok).toBe(false);
  });

  it("shows the API server's SANs and usages as Kubernetes expects", async () => {
    const { out } = await openssl('x509', '-noout', '-text', '-in', await pemFile('apiserver.crt', master.pairs.apiServer!.cert));
    const san = /X509v3 Subject Alternative Name:\s*\n\s*(.*)/.exec(out)?.[1]?.split(', ').sort();
    expect(san).toEqual([
      'DNS:api.example.org', 'DNS:kubernetes', 'DNS:kubernetes.default', 'DNS:kubernetes.default.svc', 'DNS:kubernetes.default.svc.cluster.local', 'DNS:localhost',
      'IP Address:10.240.0.12', `IP Address:${master1.ip}`, 'IP Address:10.96.0.1', 'IP Address:127.0.0.1', 'IP Address:203.0.113.7',
    ]);
    expect(out).toMatch(/X509v3 Basic Constraints: critical\s*\n\s*CA:FALSE/);
    expect(out).toMatch(/X509v3 Key Usage: critical\s*\n\s*Digital Signature\n/);
    expect(out).toMatch(/X509v3 Extended Key Usage:\s*\n\s*TLS Web Server Authentication\n/);
    expect(out).toMatch(/X509v3 Subject Key Identifier/);
    expect(out).toMatch(/X509v3 Authority Key Identifier/);
    expect(out).toMatch(/Public Key Algorithm: id-ecPublicKey[\s\S]*NIST CURVE: P-256/);
    expect(out).toMatch(/Signature Algorithm: ecdsa-with-SHA256/);
    expect(out).toMatch(/Subject: CN\s*=\s*kube-apiserver/);
  });

  it('shows the kubelet as a node identity serving its IP and hostname, for server and client auth', async () => {
    const { out } = await openssl('x509', '-noout', '-text', '-in', await pemFile('kubelet.crt', minion.pairs.kubelet!.cert));
    expect(out).toMatch(/Subject: O\s*=\s*system:nodes, CN\s*=\s*system:node:demo-minion-11/);
    expect(out).toMatch(/DNS:demo-minion-11, IP Address:10.240.0.40/);
    expect(out).toMatch(/TLS Web Server Authentication, TLS Web Client Authentication/);
    const admin = await openssl('x509', '-noout', '-subject', '-in', await pemFile('kcm.crt', master.pairs.apiServerKubeletClient!.cert));
    expect(admin.out).toMatch(/O\s*=\s*system:masters, CN\s*=\s*kube-apiserver-kubelet-client/);
  });

  it('makes CAs that are CAs for ten years, and leaves for one', async () => {
    const ca = await openssl('x509', '-noout', '-text', '-in', await pemFile('ca.crt', master.clusterCa));
    expect(ca.out).toMatch(/X509v3 Basic Constraints: critical\s*\n\s*CA:TRUE, pathlen:0/);
    expect(ca.out).toMatch(/X509v3 Key Usage: critical\s*\n\s*Digital Signature, Certificate Sign, CRL Sign/);
    expect(ca.out).toMatch(/Subject: CN\s*=\s*corekube-demo-ca/);
    const days = async (pem: string) => {
      const f = await pemFile('d.crt', pem);
      const end = (await openssl('x509', '-noout', '-enddate', '-in', f)).out.replace('notAfter=', '').trim();
      return Math.round((Date.parse(end) - clock.now()) / 86_400_000);
    };
    expect(await days(master.clusterCa)).toBe(3650);
    expect(await days(minion.pairs.kubeProxy!.cert)).toBe(365);
    // the checkend check a monitoring probe would run: valid for the next 300 days
    expect((await openssl('x509', '-noout', '-checkend', String(300 * 86400), '-in', await pemFile('e.crt', master.pairs.etcdPeer!.cert))).ok).toBe(true);
  });

  it('stores keys that openssl reads and that match their certificates, the service-account public key too', async () => {
    for (const pair of [master.pairs.apiServer!, minion.pairs.kubelet!, discovery.server]) {
      const fromKey = await openssl('pkey', '-pubout', '-in', await pemFile('k.key', pair.key));
      const fromCert = await openssl('x509', '-noout', '-pubkey', '-in', await pemFile('c.crt', pair.cert));
      expect(fromKey.ok).toBe(true);
      expect(fromKey.out).toBe(fromCert.out);
    }
    const sa = await openssl('pkey', '-pubout', '-in', await pemFile('sa.key', master.serviceAccount!.privateKey));
    expect(sa.out).toBe(master.serviceAccount!.publicKey);
    expect((await openssl('pkey', '-noout', '-text', '-in', await pemFile('sa2.key', master.serviceAccount!.privateKey))).out).toMatch(/NIST CURVE: P-256/);
  });

  it('writes every stored file 0600 in 0700 directories', async () => {
    const entries = (await readdir(path.join(dir, 'pki'), { recursive: true })).map((e) => path.join(dir, 'pki', e));
    expect(entries).toContain(file(`${CA_NAMES.cluster}.key`));
    expect(entries.some((e) => e.endsWith('.tmp'))).toBe(false);
    for (const e of [path.join(dir, 'pki'), ...entries]) {
      const st = await stat(e);
      expect([e, (st.mode & 0o777).toString(8)]).toEqual([e, st.isDirectory() ? '700' : '600']);
    }
  });

  it('reuses the stored CAs and leaves after a restart, and refuses a key file others can read', async () => {
    const restarted = new CertificateAuthority({ store: new DirectoryPkiStore(path.join(dir, 'pki')), clock, cluster: 'demo' });
    const again = await restarted.issueFor(spec, minion1);
    expect(again.issued).toEqual([]);
    expect(again.clusterCa).toBe(master.clusterCa);
    expect(again.pairs).toEqual(minion.pairs);

    await chmod(file(`${CA_NAMES.etcd}.key`), 0o644);
    const err = (await new CertificateAuthority({ store: new DirectoryPkiStore(path.join(dir, 'pki')), clock, cluster: 'demo' }).ensureCa('etcd').catch((e: unknown) => e)) as CorekubeError;
    await chmod(file(`${CA_NAMES.etcd}.key`), 0o600);
    expect(err).toBeInstanceOf(CorekubeError);
    expect(err.describe()).toMatch(/readable by group or others .*chmod -R go=/);
  });
});
