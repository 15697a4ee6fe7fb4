import { beforeAll, describe, expect, it } from 'vitest';
import { findSecrets } from '../../../core/secrets.ts';
import { CertificateAuthority, type DiscoveryPki, type MachinePki } from '../../../overlord/trust/pki/authority.ts';
import { CA_NAMES } from '../../../overlord/trust/pki/catalog.ts';
import { discoveryPkiFiles, machinePkiFiles } from '../../../overlord/trust/pki/delivery.ts';
import { MemoryPkiStore } from '../../../overlord/trust/pki/store.ts';
import { PKI_PATHS } from '../../../units/pki-paths.ts';
import { manualClock, master1, minion1, spec } from './fixtures.ts';

const store = new MemoryPkiStore();
const ca = new CertificateAuthority({ store, clock: manualClock(), cluster: 'demo' });
let master: MachinePki;
let minion: MachinePki;
let discovery: DiscoveryPki;

beforeAll(async () => {
  master = await ca.issueFor(spec, master1);
  minion = await ca.issueFor(spec, minion1);
  discovery = await ca.ensureDiscovery(spec);
});

describe('PKI delivery', () => {
  it("puts a minion's files at the paths its units read", () => {
    expect(machinePkiFiles(minion).map((f) => [f.path, f.mode])).toEqual([
      [PKI_PATHS.ca, '0644'],
      [PKI_PATHS.kubelet.cert, '0644'],
      [PKI_PATHS.kubelet.key, '0600'],
      [PKI_PATHS.kubeProxy.cert, '0644'],
      [PKI_PATHS.kubeProxy.key, '0600'],
      [PKI_PATHS.discoveryClient.cert, '0644'],
      [PKI_PATHS.discoveryClient.key, '0600'],
    ]);
    expect(machinePkiFiles(minion).find((f) => f.path === PKI_PATHS.discoveryClient.cert)?.content).toBe(minion.pairs.discoveryClient!.cert);
  });

  it('gives a master the front-proxy CA and its front-proxy client pair, and a minion neither', () => {
    const files = machinePkiFiles(master);
    expect(files.find((f) => f.path === PKI_PATHS.frontProxyCa)).toMatchObject({ mode: '0644', content: master.frontProxyCa });
    expect(files.find((f) => f.path === PKI_PATHS.frontProxyClient.key)).toMatchObject({ mode: '0600', content: master.pairs.frontProxyClient!.key });
    expect(master.frontProxyCa).not.toBe(master.clusterCa);
    const minionPaths = machinePkiFiles(minion).map((f) => f.path);
    expect(minionPaths).not.toContain(PKI_PATHS.frontProxyCa);
    expect(minionPaths).not.toContain(PKI_PATHS.frontProxyClient.cert);
  });

  it("gives a master the service-account key pair and its control-plane pairs, each key mode 0600", () => {
    const files = machinePkiFiles(master);
    const paths = files.map((f) => f.path);
    expect(paths).toContain(PKI_PATHS.serviceAccount.privateKey);
    expect(paths).toContain(PKI_PATHS.apiServer.key);
    expect(paths).toContain(PKI_PATHS.etcdPeer.key);
    expect(new Set(paths).size).toBe(paths.length);
    for (const f of files) {
      const secret = findSecrets(f.content).length > 0;
      expect([f.path, f.mode]).toEqual([f.path, secret ? '0600' : '0644']);
    }
    expect(files.find((f) => f.path === PKI_PATHS.apiServer.cert)?.content).toBe(master.pairs.apiServer!.cert);
  });

  it('never delivers a CA key, nor another machine\'s key', async () => {
    const caKeys = await Promise.all(Object.values(CA_NAMES).map((n) => store.read(`${n}.key`)));
    const delivered = [...machinePkiFiles(master), ...machinePkiFiles(minion), ...discoveryPkiFiles(discovery)].map((f) => f.content);
    for (const k of caKeys) expect(delivered).not.toContain(k);
    const minionContents = machinePkiFiles(minion).map((f) => f.content);
    for (const f of machinePkiFiles(master).filter((x) => x.mode === '0600')) expect(minionContents).not.toContain(f.content);
  });

  it('installs discovery\'s CA and server pair where its etcd unit waits for them', () => {
    expect(discoveryPkiFiles(discovery).map((f) => [f.path, f.mode])).toEqual([
      ['/etc/corekube/pki/discovery/ca.crt', '0644'],
      ['/etc/corekube/pki/discovery/server.crt', '0644'],
      ['/etc/corekube/pki/discovery/server.key', '0600'],
    ]);
  });

  it('lists, per role, the files and modes a reviewer diffs', async () => {
    const listing = (files: { path: string; mode: string }[]) => `${files.map((f) => `${f.mode} ${f.path}`).join('\n')}\n`;
    await expect(listing(machinePkiFiles(master))).toMatchFileSnapshot('__snapshots__/master.files.txt');
    await expect(listing(machinePkiFiles(minion))).toMatchFileSnapshot('__snapshots__/minion.files.txt');
    await expect(listing(discoveryPkiFiles(discovery))).toMatchFileSnapshot('__snapshots__/discovery.files.txt');
  });
});
