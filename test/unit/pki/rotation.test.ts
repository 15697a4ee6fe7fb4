import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { CertificateAuthority, type MachinePki } from '../../../overlord/trust/pki/authority.ts';
import { CA_NAMES, machineCertName } from '../../../overlord/trust/pki/catalog.ts';
import { nextCaName, retiredCaName, ROTATION_STATE } from '../../../overlord/trust/pki/rotation.ts';
import { MemoryPkiStore, type PkiStore } from '../../../overlord/trust/pki/store.ts';
import { isSignedBy, readCertificate } from '../../../overlord/trust/pki/x509.ts';
import { DAY, manualClock, master1, minion1, spec } from './fixtures.ts';

/** The PEM certificates of a CA file (one CA, or a bundle of two). */
function pems(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
}

/** True when some CA of the bundle signed `cert` — what a TLS peer trusting that file accepts. */
async function trustedBy(cert: string, bundle: string): Promise<boolean> {
  for (const ca of pems(bundle)) if (await isSignedBy(cert, ca)) return true;
  return false;
}

/** A store whose writes of one name fail, `times` times (a crash at that point). */
function failingAt(inner: MemoryPkiStore, name: string, times = 1): PkiStore & { failures: number } {
  const s = {
    failures: 0,
    read: (n: string) => inner.read(n),
    write: async (n: string, content: string) => {
      if (n === name && s.failures < times) {
        s.failures++;
        throw new Error(`disk full writing ${n}`);
      }
      await inner.write(n, content);
    },
  };
  return s;
}

async function cluster(store: PkiStore = new MemoryPkiStore(), clock = manualClock()) {
  const ca = new CertificateAuthority({ store, clock, cluster: 'demo' });
  const master = await ca.issueFor(spec, master1);
  const minion = await ca.issueFor(spec, minion1);
  return { ca, clock, master, minion, old: (await ca.ensureCa('cluster')).cert };
}

const clusterLeaves = (m: MachinePki) => Object.entries(m.pairs).filter(([e]) => !/etcd|frontProxy|discovery/i.test(e));

describe('rotating a CA through the authority', () => {
  it('trust: every machine gets the current and the next CA in its CA file; its certificates stay as they were', async () => {
    const { ca, master, minion, old } = await cluster();
    const result = await ca.rotate('cluster', 'trust');
    expect(result).toMatchObject({ changed: true, state: { ca: 'cluster', phase: 'trust', finished: false } });

    const [m, n] = [await ca.issueFor(spec, master1), await ca.issueFor(spec, minion1)];
    expect(pems(m.clusterCa)).toHaveLength(2);
    expect(pems(m.clusterCa)[0]).toBe(old);
    expect(readCertificate(pems(m.clusterCa)[1]!, 'next').subjectKeyId).not.toBe(readCertificate(old, 'old').subjectKeyId);
    expect(n.clusterCa).toBe(m.clusterCa);
    expect(m.issued).toEqual([]);
    expect(n.issued).toEqual([]);
    expect(m.pairs).toEqual(master.pairs);
    expect(n.pairs).toEqual(minion.pairs);
    // the other CAs are not touched
    expect(pems(m.etcdCa)).toHaveLength(1);
    expect(m.etcdCa).toBe(master.etcdCa);
    // the admin kubeconfig trusts both
    expect((await ca.ensureAdmin()).ca).toBe(m.clusterCa);
  });

  it('trust asked again does nothing: the same next CA', async () => {
    const { ca } = await cluster();
    await ca.rotate('cluster', 'trust');
    const bundle = (await ca.issueFor(spec, master1)).clusterCa;
    expect((await ca.rotate('cluster', 'trust')).changed).toBe(false);
    expect((await ca.issueFor(spec, master1)).clusterCa).toBe(bundle);
  });

  it("sign: every certificate of that CA is issued again by the next CA (same keys); the bundle still verifies the old ones", async () => {
    const { ca, master, minion } = await cluster();
    await ca.rotate('cluster', 'trust');
    const trusting = await ca.issueFor(spec, master1);
    const next = pems(trusting.clusterCa)[1]!;
    await ca.rotate('cluster', 'sign');

    const [m, n] = [await ca.issueFor(spec, master1), await ca.issueFor(spec, minion1)];
    expect(m.clusterCa).toBe(trusting.clusterCa);
    expect(n.clusterCa).toBe(trusting.clusterCa);
    const reissued = new Set(m.issued.map((i) => i.reason));
    expect([...reissued]).toEqual(['issuer-changed']);
    for (const [entry, pair] of [...clusterLeaves(m), ...clusterLeaves(n)]) {
      expect(await isSignedBy(pair!.cert, next), entry).toBe(true);
      expect(await trustedBy(pair!.cert, m.clusterCa), entry).toBe(true);
    }
    expect(m.pairs.apiServer!.key).toBe(master.pairs.apiServer!.key);
    // a machine not rolled out yet still presents its old certificates: every machine's bundle accepts them
    for (const [entry, pair] of [...clusterLeaves(master), ...clusterLeaves(minion)]) expect(await trustedBy(pair!.cert, n.clusterCa), entry).toBe(true);
    // etcd's certificates are another CA's: not re-issued
    expect(m.pairs.etcdServer).toEqual(master.pairs.etcdServer);
    // the admin certificate is the next CA's too
    const admin = await ca.ensureAdmin();
    expect(await isSignedBy(admin.client.cert, next)).toBe(true);
    expect(admin.ca).toBe(m.clusterCa);
    expect(ca.currentAdmin()).toMatchObject({ ca: admin.ca, client: admin.client });
  });

  it('finish: the next CA becomes the current one, the bundles hold it alone, the old one is kept as retired; nothing is re-issued', async () => {
    const store = new MemoryPkiStore();
    const { ca, clock, old } = await cluster(store);
    await ca.rotate('cluster', 'trust');
    await ca.rotate('cluster', 'sign');
    const signed = await ca.issueFor(spec, master1);
    const next = pems(signed.clusterCa)[1]!;
    clock.advance(DAY);
    const result = await ca.rotate('cluster', 'finish');
    expect(result.state).toMatchObject({ phase: 'finish', finished: true });

    const m = await ca.issueFor(spec, master1);
    expect(m.clusterCa).toBe(next);
    expect(m.issued).toEqual([]);
    expect(m.pairs).toEqual(signed.pairs);
    expect((await ca.ensureCa('cluster')).cert).toBe(next);
    expect(await store.read(`${CA_NAMES.cluster}.crt`)).toBe(next);
    expect(await store.read(`${result.state.retired}.crt`)).toBe(old);
    expect(result.state.retired).toMatch(/^ca\/cluster\.retired-\d{8}t\d{6}z$/);
    expect((await ca.ensureAdmin()).ca).toBe(next);
    // a new rotation may start (of any CA)
    expect((await ca.rotate('etcd', 'trust')).changed).toBe(true);
  });

  it('refuses phases out of order, naming the flags and the fix', async () => {
    const { ca } = await cluster();
    const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as CorekubeError);
    const noTrust = await refusal(ca.rotate('cluster', 'finish'));
    expect(noTrust).toBeInstanceOf(CorekubeError);
    expect(noTrust!.message).toContain('--ca cluster --phase finish: no CA rotation was ever started');
    expect(noTrust!.hint).toContain('--phase trust');
    expect((await refusal(ca.rotate('cluster', 'sign')))!.message).toContain('no CA rotation was ever started');
    await ca.rotate('cluster', 'trust');
    const skipped = await refusal(ca.rotate('cluster', 'finish'));
    expect(skipped!.message).toContain('phase finish cannot follow phase trust');
    expect(skipped!.hint).toContain('--phase sign');
    const other = await refusal(ca.rotate('etcd', 'trust'));
    expect(other!.message).toContain('the cluster CA is being rotated');
    expect((await ca.rotation())?.phase).toBe('trust');
  });

  it('resumes a finish that crashed between the current key and certificate: same CA, old one retired, state finished', async () => {
    const inner = new MemoryPkiStore();
    const { ca, old } = await cluster(inner);
    await ca.rotate('cluster', 'trust');
    await ca.rotate('cluster', 'sign');
    const next = pems((await ca.issueFor(spec, master1)).clusterCa)[1]!;
    const nextKey = await inner.read(`${nextCaName('cluster')}.key`);

    const crashing = failingAt(inner, `${CA_NAMES.cluster}.crt`);
    await expect(new CertificateAuthority({ store: crashing, clock: manualClock(), cluster: 'demo' }).rotate('cluster', 'finish')).rejects.toThrow(/disk full/);
    expect(crashing.failures).toBe(1);
    // the crash left the current key replaced and its certificate not
    expect(await inner.read(`${CA_NAMES.cluster}.key`)).toBe(nextKey);
    expect(await inner.read(`${CA_NAMES.cluster}.crt`)).toBe(old);

    // a restarted overlord: any use of the authority completes the finish from the next files
    const restarted = new CertificateAuthority({ store: inner, clock: manualClock(), cluster: 'demo' });
    const state = await restarted.rotation();
    expect(state).toMatchObject({ ca: 'cluster', phase: 'finish', finished: true });
    expect((await restarted.ensureCa('cluster')).cert).toBe(next);
    expect(await inner.read(`${state!.retired}.crt`)).toBe(old);
    const m = await restarted.issueFor(spec, master1);
    expect(m.clusterCa).toBe(next);
    expect(m.issued).toEqual([]);
  });

  it('resumes a finish that crashed before the old CA was kept: the old CA is retired, not the new one', async () => {
    const inner = new MemoryPkiStore();
    const { ca, old } = await cluster(inner);
    await ca.rotate('cluster', 'trust');
    await ca.rotate('cluster', 'sign');
    const clock = manualClock();
    const retired = retiredCaName('cluster', clock.now());
    const crashing = failingAt(inner, `${retired}.crt`);
    await expect(new CertificateAuthority({ store: crashing, clock, cluster: 'demo' }).rotate('cluster', 'finish')).rejects.toThrow(/disk full/);
    expect(JSON.parse((await inner.read(ROTATION_STATE))!)).toMatchObject({ phase: 'finish', finished: false, retired });
    expect(await inner.read(`${CA_NAMES.cluster}.crt`)).toBe(old);

    const restarted = new CertificateAuthority({ store: inner, clock, cluster: 'demo' });
    expect(await restarted.rotate('cluster', 'finish')).toMatchObject({ changed: false, state: { finished: true, retired } });
    expect(await inner.read(`${retired}.crt`)).toBe(old);
    expect(await inner.read(`${CA_NAMES.cluster}.crt`)).toBe(await inner.read(`${nextCaName('cluster')}.crt`));
  });

  it('a standby that takes the leader\'s files over uses the new CA, not the one it loaded before', async () => {
    const leaderStore = new MemoryPkiStore();
    const { ca: leader } = await cluster(leaderStore);
    // the standby took the state over once, and loaded its CAs
    const standbyStore = new MemoryPkiStore();
    const copy = async () => {
      for (const name of leaderStore.names()) await standbyStore.write(name, (await leaderStore.read(name))!);
    };
    await copy();
    const standby = new CertificateAuthority({ store: standbyStore, clock: manualClock(), cluster: 'demo' });
    const before = await standby.issueFor(spec, master1);
    expect(pems(before.clusterCa)).toHaveLength(1);

    await leader.rotate('cluster', 'trust');
    await leader.rotate('cluster', 'sign');
    const signed = await leader.issueFor(spec, master1);
    await leader.rotate('cluster', 'finish');
    await copy();
    const after = await standby.issueFor(spec, master1);
    expect(after.issued).toEqual([]);
    expect(after.clusterCa).toBe(pems(signed.clusterCa)[1]);
    expect(after.pairs).toEqual(signed.pairs);
  });
});

describe('the certificates a rotation re-issues', () => {
  it('are only those of the rotated CA: an etcd rotation re-issues the etcd certificates and leaves the cluster ones', async () => {
    const { ca, master } = await cluster();
    await ca.rotate('etcd', 'trust');
    await ca.rotate('etcd', 'sign');
    const m = await ca.issueFor(spec, master1);
    expect(m.issued.map((i) => i.name).sort()).toEqual(
      [machineCertName(master1.id, 'apiServerEtcdClient'), machineCertName(master1.id, 'etcdPeer'), machineCertName(master1.id, 'etcdServer')].sort(),
    );
    expect(m.pairs.apiServer).toEqual(master.pairs.apiServer);
    expect(pems(m.etcdCa)).toHaveLength(2);
    expect(m.clusterCa).toBe(master.clusterCa);
  });
});

describe('a CA close to its end', () => {
  it('is reported with the command that rotates it (the discovery CA: by hand)', async () => {
    const store = new MemoryPkiStore();
    const clock = manualClock();
    await cluster(store, clock);
    await new CertificateAuthority({ store, clock, cluster: 'demo' }).ensureDiscovery(spec);
    clock.advance(3640 * DAY);
    const warnings: { obj: Record<string, unknown>; msg: string }[] = [];
    const log = { info: () => undefined, warn: (obj: object, msg: string) => void warnings.push({ obj: obj as Record<string, unknown>, msg }) };
    const later = new CertificateAuthority({ store, clock, cluster: 'demo', log });
    await later.ensureCa('etcd');
    await later.ensureCa('discovery');
    expect(warnings.map((w) => [w.obj.event, w.obj.ca])).toEqual([['pki.ca.expiring', 'etcd'], ['pki.ca.expiring', 'discovery']]);
    expect(warnings[0]!.msg).toContain('corekube pki rotate-ca --ca etcd --phase trust');
    expect(warnings[1]!.msg).toContain('corekube does not rotate the discovery CA');
  });
});
