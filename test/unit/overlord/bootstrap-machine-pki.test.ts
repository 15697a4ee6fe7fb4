/**
 * Each machine's PKI rides in its write-units step (overlord/trust/machine-pki.ts + runOverlord's machinePki +
 * unitsForSpec's machineFiles): issued before the reconciler sees the machine, part of the units hash, so a
 * re-issued certificate redeploys the machine. Real units/ and real certificate issuance (in memory); the
 * machines and etcd are the in-memory fakes.
 */
import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { DISCOVERY_CLIENT_PATHS, PKI_PATHS } from '../../../units/pki-paths.ts';
import { clusterKeys } from '../../../contracts/keys.ts';
import { parseLedgerEntry } from '../../../contracts/ledger-entry.ts';
import { silentLogger } from '../../../overlord/edges/log.ts';
import { credentialsFile, machinePassword } from '../../../overlord/trust/machine-credentials.ts';
import { MachinePkiFiles } from '../../../overlord/trust/machine-pki.ts';
import type { MachineRecord } from '../../../contracts/machine-record.ts';
import { runOverlord, type Overlord } from '../../../overlord/term.ts';
import { CertificateAuthority } from '../../../overlord/trust/pki/authority.ts';
import { CA_NAMES } from '../../../overlord/trust/pki/catalog.ts';
import { MemoryPkiStore, type PkiStore } from '../../../overlord/trust/pki/store.ts';
import { readCertificate } from '../../../overlord/trust/pki/x509.ts';
import { PreparedDiscovery } from '../../../overlord/deploy/prepared-discovery.ts';
import { unitsForSpec } from '../../../overlord/deploy/machine-units.ts';
import { FakeClock, FakeMachines, flush, makeRecord, MemoryStore } from './fakes.ts';
import { CaRotations } from '../../../overlord/trust/ca-rotation.ts';
import { parseRotationRecord } from '../../../contracts/ca-rotation.ts';

const spec = parseClusterSpec({ flags: { name: 't', masters: '1', minions: '1' } });
const keys = clusterKeys('t');
const SECRET = 'ab'.repeat(32);
const credentials = { fileFor: (id: string) => credentialsFile(id, machinePassword(SECRET, id)) };
const DISCOVERY_CA = '-----BEGIN CERTIFICATE-----\nZGlzY292ZXJ5IENB\n-----END CERTIFICATE-----\n';

/** A cluster under test: fake etcd and machines, a real CA in memory, and a way to wait for the overlord. */
function world(pkiStore: PkiStore = new MemoryPkiStore(), etcd = new MemoryStore()) {
  const clock = new FakeClock();
  const hosts = new FakeMachines({ clock, ms: 10 });
  const authority = new CertificateAuthority({ store: pkiStore, clock, cluster: 't' });
  const files = new MachinePkiFiles({ authority, spec, discoveryCa: DISCOVERY_CA, credentials, log: silentLogger(), clock });
  // issuing runs on real crypto, outside the fake clock: the tests wait for it explicitly
  const inflight = new Set<Promise<void>>();
  const prepareMachines = (records: readonly MachineRecord[]) => {
    const p = files.prepare(records);
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
    return p;
  };
  // rotation: the leader's CA rotation loop too (it looks every 10 s: not in the tests that jump months ahead)
  const start = (options: { rotation?: boolean } = {}) =>
    runOverlord(
      { store: etcd, hosts, clock, log: silentLogger() },
      {
        cluster: 't',
        sshUser: 'corekube',
        unitsFor: unitsForSpec(spec, { machineFiles: (r, v) => files.filesFor(r, v), certificatesExpire: (r) => files.expiresOf(r.id) }),
        expected: { masters: 1, minions: 1 },
        machinePki: { prepare: prepareMachines, versionOf: (id) => files.versionOf(id) },
        ...(options.rotation ? { caRotation: new CaRotations({ authority }) } : {}),
        retry: { retries: 1, initialMs: 1_000, factor: 2, maxMs: 1_000 },
      },
    );
  /** runs the fake clock and the issuing until nothing is deploying, waiting or being issued */
  const settle = async (o: Overlord) => {
    for (let i = 0; i < 10_000; i++) {
      await flush();
      if (inflight.size > 0) {
        await Promise.all([...inflight]);
        continue;
      }
      const s = o.summary();
      if (s.total > 0 && s.deploying === 0 && s.waiting === 0 && s.deployed + s.failed.length === s.total) {
        await o.idle();
        if (inflight.size === 0) return;
        continue;
      }
      if (!(await clock.next())) {
        await flush();
        if (inflight.size === 0 && clock.pending === 0) throw new Error(`nothing left to run: ${o.summary().text}`);
      }
    }
    throw new Error('settle: too many rounds');
  };
  const announce = (r: MachineRecord) => etcd.put(keys.machine(r.id), JSON.stringify(r));
  const ledger = (id: string) => parseLedgerEntry(etcd.data.get(keys.ledgerOf(id))!.value)!;
  return { clock, hosts, etcd, pkiStore, authority, files, start, settle, announce, ledger };
}

const DAY = 24 * 3600 * 1000;
const master1 = makeRecord(1, 'master');
const master2 = makeRecord(2, 'master');
const minion = makeRecord(10, 'minion');

describe('machine PKI in the write-units step', () => {
  it('delivers each machine its own pairs (keys 0600), the CA certificates and the discovery credentials, and never a CA key', async () => {
    const w = world();
    await w.announce(master1);
    await w.announce(minion);
    const o = await w.start();
    await w.settle(o);
    expect(o.summary().text).toBe('2/2 machines deployed');

    const m = w.hosts.machine(master1.id).files;
    const n = w.hosts.machine(minion.id).files;
    for (const [path, role] of [[PKI_PATHS.apiServer.key, m], [PKI_PATHS.etcdServer.key, m], [PKI_PATHS.frontProxyClient.key, m], [PKI_PATHS.serviceAccount.privateKey, m], [PKI_PATHS.discoveryClient.key, m], [PKI_PATHS.kubelet.key, n], [PKI_PATHS.kubeProxy.key, n], [PKI_PATHS.discoveryClient.key, n]] as const) {
      expect(role.get(path)?.mode, path).toBe('0600');
      expect(role.get(path)?.content).toMatch(/^-----BEGIN PRIVATE KEY-----/);
    }
    expect(m.get(PKI_PATHS.ca)).toMatchObject({ mode: '0644' });
    expect(readCertificate(m.get(PKI_PATHS.apiServer.cert)!.content, 'api').ipAddresses).toContain(master1.ip);
    expect(readCertificate(n.get(PKI_PATHS.kubelet.cert)!.content, 'kubelet').commonName).toBe(`system:node:${minion.hostname}`);
    expect(readCertificate(m.get(PKI_PATHS.frontProxyClient.cert)!.content, 'front-proxy-client').commonName).toBe('front-proxy-client');
    expect(m.get(PKI_PATHS.frontProxyCa)).toMatchObject({ mode: '0644' });
    // the ledger records when the earliest of the delivered certificates expires (`corekube status` certificatesExpire)
    const kubeletExpires = readCertificate(n.get(PKI_PATHS.kubelet.cert)!.content, 'kubelet').notAfter;
    const recorded = Date.parse(w.ledger(minion.id).certificatesExpire!);
    expect(recorded).toBeLessThanOrEqual(kubeletExpires);
    expect(recorded).toBeGreaterThan(kubeletExpires - 60_000);
    expect(w.ledger(master1.id).certificatesExpire).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$/);
    // each machine's own client certificate for discovery's etcd (flanneld presents it)
    for (const [files, record] of [[m, master1], [n, minion]] as const) {
      expect(readCertificate(files.get(PKI_PATHS.discoveryClient.cert)!.content, 'discovery-client').commonName).toBe(`machine-${record.id}`);
    }
    // a minion holds no master material
    expect(n.has(PKI_PATHS.apiServer.key)).toBe(false);
    expect(n.has(PKI_PATHS.serviceAccount.privateKey)).toBe(false);
    expect(n.has(PKI_PATHS.frontProxyClient.key)).toBe(false);
    for (const files of [m, n]) {
      expect(files.get(DISCOVERY_CLIENT_PATHS.ca)).toEqual({ content: DISCOVERY_CA, mode: '0644' });
    }
    for (const [files, record] of [[m, master1], [n, minion]] as const) {
      // the machine's own discovery user, and no other machine's
      expect(files.get(DISCOVERY_CLIENT_PATHS.credentials)).toEqual({
        content: `FLANNELD_ETCD_USERNAME=machine-${record.id}\nFLANNELD_ETCD_PASSWORD=${machinePassword(SECRET, record.id)}\n`,
        mode: '0600',
      });
      // every file holding a private key is 0600
      for (const [path, f] of files) if (/PRIVATE KEY|PASSWORD=/.test(f.content)) expect(f.mode, path).toBe('0600');
    }
    // no CA key on any machine
    const caKeys = (await Promise.all(Object.values(CA_NAMES).map((ca) => w.pkiStore.read(`${ca}.key`)))).filter((k) => k !== undefined);
    expect(caKeys).toHaveLength(4); // cluster, etcd, front-proxy and discovery (which signs each machine's discovery client certificate)
    for (const caKey of caKeys) {
      const body = caKey.split('\n')[1]!;
      for (const files of [m, n]) for (const f of files.values()) expect(f.content).not.toContain(body);
    }
    await o.stop();
  });

  it('redeploys a master whose etcd initial cluster a new master changed, without re-issuing its certificates; a restarted overlord issues and redeploys nothing', async () => {
    const pkiStore = new MemoryPkiStore();
    const w = world(pkiStore);
    await w.announce(master1);
    await w.announce(minion);
    const o = await w.start();
    await w.settle(o);
    const firstHash = w.ledger(master1.id).unitsHash;
    const kubeletCert = w.hosts.machine(minion.id).files.get(PKI_PATHS.kubelet.cert)!.content;

    await w.announce(master2);
    await w.settle(o);
    expect(o.summary().text).toBe('3/3 machines deployed');
    // master 1 was deployed again for its etcd's new initial cluster; its API server cert names itself alone
    const api = readCertificate(w.hosts.machine(master1.id).files.get(PKI_PATHS.apiServer.cert)!.content, 'api');
    expect(api.ipAddresses).toContain(master1.ip);
    expect(api.ipAddresses).not.toContain(master2.ip);
    expect(w.ledger(master1.id).unitsHash).not.toBe(firstHash);
    // the minion's own certificate did not change
    expect(w.hosts.machine(minion.id).files.get(PKI_PATHS.kubelet.cert)!.content).toBe(kubeletCert);
    await o.stop();

    // a new overlord (same PKI store, same etcd): same certificates, same hashes, nothing to deploy
    const hashes = [master1, master2, minion].map((r) => w.ledger(r.id).unitsHash);
    const reloads = [master1, master2, minion].map((r) => w.hosts.machine(r.id).reloads);
    const again = world(pkiStore, w.etcd);
    const o2 = await again.start();
    await again.settle(o2);
    expect([master1, master2, minion].map((r) => again.ledger(r.id).unitsHash)).toEqual(hashes);
    expect([master1, master2, minion].map((r) => again.hosts.machine(r.id).reloads)).toEqual([0, 0, 0]);
    expect(reloads.every((n) => n > 0)).toBe(true);
    await o2.stop();
  });

  it('renews a machine\'s certificates before they expire and rolls them out: the units that read them restart, nothing else', async () => {
    const w = world();
    await w.announce(master1);
    await w.announce(minion);
    const o = await w.start();
    await w.settle(o);
    const m = w.hosts.machine(minion.id);
    const before = { hash: w.ledger(minion.id).unitsHash, kubelet: readCertificate(m.files.get(PKI_PATHS.kubelet.cert)!.content, 'kubelet'), expires: w.ledger(minion.id).certificatesExpire! };
    const starts = () => Object.fromEntries(['flanneld.service', 'kubelet.service', 'kube-proxy.service', 'corekube-containerd.service'].map((u) => [u, m.unit(u).starts]));
    const startsBefore = starts();

    // 300 days on: not due yet (certificates live 365 days, renewed 30 days before); the hourly check changes nothing
    await w.clock.advance(300 * DAY);
    await w.settle(o);
    expect(w.ledger(minion.id).unitsHash).toBe(before.hash);

    // 340 days on: due — new pairs, a redeploy, and the units that read them restart (containerd reads none)
    await w.clock.advance(40 * DAY);
    for (let i = 0; i < 20 && w.ledger(minion.id).unitsHash === before.hash; i++) {
      await w.settle(o);
      await w.clock.next();
    }
    await w.settle(o);
    const after = readCertificate(m.files.get(PKI_PATHS.kubelet.cert)!.content, 'kubelet');
    expect(after.serialNumber).not.toBe(before.kubelet.serialNumber);
    expect(after.notAfter).toBeGreaterThan(before.kubelet.notAfter);
    expect(w.ledger(minion.id).unitsHash).not.toBe(before.hash);
    expect(Date.parse(w.ledger(minion.id).certificatesExpire!)).toBeGreaterThan(Date.parse(before.expires));
    expect(starts()).toEqual({ ...startsBefore, 'flanneld.service': startsBefore['flanneld.service']! + 1, 'kubelet.service': startsBefore['kubelet.service']! + 1, 'kube-proxy.service': startsBefore['kube-proxy.service']! + 1 });
    await o.stop();
  });

  it('rotates the cluster CA through the leader, phase by phase, each rolled out before the next is taken', async () => {
    const w = world();
    await w.announce(master1);
    await w.announce(minion);
    const o = await w.start({ rotation: true });
    await w.settle(o);
    const m = w.hosts.machine(master1.id);
    const n = w.hosts.machine(minion.id);
    const old = (await w.authority.ensureCa('cluster')).cert;
    const kubeletStarts = () => n.unit('kubelet.service').starts;
    const record = () => parseRotationRecord(w.etcd.data.get(keys.caRotation)?.value ?? '{}');
    /** asks for a phase as `corekube pki rotate-ca` does, and runs the overlord until it is rolled out */
    const rotate = async (phase: 'trust' | 'sign' | 'finish') => {
      await w.etcd.put(keys.caRotation, JSON.stringify({ ...(record() ?? { schema: 1 }), request: { ca: 'cluster', phase, requestedAt: new Date(w.clock.now()).toISOString() } }));
      for (let i = 0; i < 200 && !(record()?.progress?.phase === phase && record()?.progress?.rolledOut); i++) {
        await w.settle(o);
        await w.clock.next();
        await new Promise((r) => setTimeout(r, 5));
      }
      expect(record()?.progress).toMatchObject({ ca: 'cluster', phase, waiting: [] });
      expect(record()?.refused).toBeNull();
    };
    const certs = (pem: string) => pem.match(/-----BEGIN CERTIFICATE-----/g)?.length;

    const before = { kubelet: n.files.get(PKI_PATHS.kubelet.cert)!.content, starts: kubeletStarts() };
    await rotate('trust');
    expect(certs(m.files.get(PKI_PATHS.ca)!.content)).toBe(2);
    expect(n.files.get(PKI_PATHS.ca)!.content).toBe(m.files.get(PKI_PATHS.ca)!.content);
    expect(n.files.get(PKI_PATHS.kubelet.cert)!.content).toBe(before.kubelet);
    expect(certs(m.files.get(PKI_PATHS.etcdCa)!.content)).toBe(1);
    expect(kubeletStarts()).toBe(before.starts + 1);

    await rotate('sign');
    const next = m.files.get(PKI_PATHS.ca)!.content.split(/(?<=-----END CERTIFICATE-----\n)/)[1]!;
    expect(readCertificate(n.files.get(PKI_PATHS.kubelet.cert)!.content, 'kubelet').authorityKeyId).toBe(readCertificate(next, 'next').subjectKeyId);
    expect(kubeletStarts()).toBe(before.starts + 2);

    await rotate('finish');
    expect(m.files.get(PKI_PATHS.ca)!.content).toBe(next);
    expect(n.files.get(PKI_PATHS.ca)!.content).toBe(next);
    expect(next).not.toBe(old);
    expect(w.ledger(minion.id).state).toBe('deployed');
    await o.stop();
  });

  it('fails only the machine whose certificates cannot be issued, with the reason', async () => {
    const inner = new MemoryPkiStore();
    const broken: PkiStore = {
      read: (name) => inner.read(name),
      write: async (name, content) => {
        if (name.startsWith(`machines/${minion.id}/`)) throw new CorekubeError('E_IO', `cannot write ${name} (ENOSPC)`, { hint: 'free some space' });
        await inner.write(name, content);
      },
    };
    const w = world(broken);
    await w.announce(master1);
    await w.announce(minion);
    const o = await w.start();
    await w.settle(o);
    expect(w.ledger(master1.id).state).toBe('deployed');
    expect(w.ledger(minion.id)).toMatchObject({ state: 'failed' });
    expect(w.ledger(minion.id).error).toContain('ENOSPC');
    expect(w.hosts.machine(minion.id).files.size).toBe(0);
    await o.stop();
  });

  it('refuses to hand out files that were not prepared for the machine as it is now', async () => {
    const w = world();
    await w.files.prepare([master1]);
    expect(() => w.files.filesFor(minion, { masters: [master1], masterIps: [master1.ip], deployedMasters: [] })).toThrow(/not prepared/);
    // master 1 with a new address must be prepared again; a second master changes nothing of master 1's
    expect(() => w.files.filesFor({ ...master1, ip: '10.240.0.99' }, { masters: [master1], masterIps: [master1.ip], deployedMasters: [] })).toThrow(/not prepared/);
    expect(w.files.filesFor(master1, { masters: [master1, master2], masterIps: [master1.ip, master2.ip], deployedMasters: [] }).length).toBeGreaterThan(10);
  });
});

describe('prepared discovery', () => {
  it('shows the reconciler a change of the machines only once it is prepared, coalescing changes that arrive meanwhile', async () => {
    let records: MachineRecord[] = [master1];
    const prepared: string[][] = [];
    let release!: () => void;
    let gate = new Promise<void>((r) => (release = r));
    let changes = 0;
    const view = new PreparedDiscovery({
      source: { snapshot: () => ({ records: new Map(records.map((r) => [r.id, r])), invalid: new Map(), overflow: 0 }) },
      prepare: async (rs) => {
        prepared.push(rs.map((r) => r.hostname));
        await gate;
      },
      onChange: () => void changes++,
      clock: new FakeClock(),
      log: silentLogger(),
    });
    const first = view.refresh();
    await flush();
    expect(view.snapshot().records.size).toBe(0); // not prepared yet: nothing shown
    records = [master1, minion];
    void view.refresh();
    records = [master1, minion, master2];
    void view.refresh();
    release();
    gate = Promise.resolve();
    await first;
    expect(prepared).toEqual([['master-1'], ['master-1', 'minion-10', 'master-2']]);
    expect([...view.snapshot().records.values()].map((r) => r.hostname)).toEqual(['master-1', 'minion-10', 'master-2']);
    expect(changes).toBe(2);
  });
});
