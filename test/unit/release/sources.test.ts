import { describe, expect, it } from 'vitest';
import { InvalidInputError } from '../../../core/errors.ts';
import { clusterImages, releaseCatalog } from '../../../release/catalog.ts';
import { digestFor } from '../../../release/download.ts';
import { consumersOf, resolveRelease } from '../../../release/sources.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';

const spec = (flags: Record<string, unknown> = {}) => parseClusterSpec({ flags: { name: 'demo', ...flags } });
const hex = (c: string) => c.repeat(64);

describe('releaseCatalog', () => {
  it('puts Kubernetes under dl.k8s.io/release/ and every other project under its GitHub release', () => {
    for (const a of releaseCatalog(spec().versions).filter((x) => x.upstream)) {
      if (a.project === 'kubernetes') expect(a.upstream!.url).toBe(`https://dl.k8s.io/release/v1.36.5/bin/linux/amd64/${a.name}`);
      else expect(a.upstream!.url).toMatch(new RegExp(`^https://github\\.com/[^/]+/[^/]+/releases/download/${a.version}/${a.fileName.replace(/\./g, '\\.')}$`));
    }
  });

  it('names each upstream checksum as the project publishes it, and says which project publishes none', () => {
    const byName = Object.fromEntries(releaseCatalog(spec().versions).map((a) => [a.name, a.upstream?.checksum]));
    expect(byName.kubelet).toEqual({ kind: 'digest-file', url: 'https://dl.k8s.io/release/v1.36.5/bin/linux/amd64/kubelet.sha256' });
    expect(byName.etcd).toEqual({ kind: 'sums-file', url: 'https://github.com/etcd-io/etcd/releases/download/v3.6.17/SHA256SUMS' });
    expect(byName.containerd).toEqual({ kind: 'digest-file', url: 'https://github.com/containerd/containerd/releases/download/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz.sha256sum' });
    expect(byName.runc).toEqual({ kind: 'sums-file', url: 'https://github.com/opencontainers/runc/releases/download/v1.4.4/runc.sha256sum' });
    expect(byName['cni-plugins']).toEqual({ kind: 'digest-file', url: 'https://github.com/containernetworking/plugins/releases/download/v1.10.0/cni-plugins-linux-amd64-v1.10.0.tgz.sha256' });
    expect(byName.coredns).toEqual({ kind: 'digest-file', url: 'https://github.com/coredns/coredns/releases/download/v1.15.0/coredns_1.15.0_linux_amd64.tgz.sha256' });
    expect(byName.flannel).toMatchObject({ kind: 'none', why: expect.stringMatching(/publishes no checksums/) });
    expect(byName.pause).toBeUndefined();
  });

  it('keeps every artifact under <project>/<tag>/ in a mirror, Kubernetes as dl.k8s.io lays it out', () => {
    const paths = releaseCatalog(spec().versions).map((a) => a.mirrorPath);
    expect(paths).toEqual([
      ...['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'kubelet', 'kube-proxy'].map((b) => `release/v1.36.5/bin/linux/amd64/${b}`),
      'etcd/v3.6.17/etcd-v3.6.17-linux-amd64.tar.gz',
      'flannel/v0.28.10/flannel-v0.28.10-linux-amd64.tar.gz',
      'containerd/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz',
      'runc/v1.4.4/runc.amd64',
      'cni-plugins/v1.10.0/cni-plugins-linux-amd64-v1.10.0.tgz',
      'coredns/v1.15.0/coredns_1.15.0_linux_amd64.tgz',
      'pause/3.10.2/pause-linux-amd64',
    ]);
  });

  it('names the cluster\'s images as registry.k8s.io does', () => {
    expect(clusterImages(spec().versions)).toEqual({ pause: 'registry.k8s.io/pause:3.10.2', coredns: 'registry.k8s.io/coredns/coredns:v1.15.0' });
  });
});

describe('resolveRelease', () => {
  it('checks upstream downloads against upstream checksums, unless a digest is pinned', () => {
    const flannelPath = 'flannel/v0.28.10/flannel-v0.28.10-linux-amd64.tar.gz';
    const byName = (s: ReturnType<typeof spec>) => Object.fromEntries(resolveRelease(s).map((r) => [r.artifact.name, r.verify]));
    expect(byName(spec()).flannel).toMatchObject({ kind: 'none' });
    expect(byName(spec({ 'release-digests': { [flannelPath]: hex('a') } })).flannel).toEqual({ kind: 'pinned', sha256: hex('a') });
    expect(byName(spec()).etcd).toMatchObject({ kind: 'sums-file' });
  });

  it('treats the former default https://dl.k8s.io as the upstream homes', () => {
    expect(resolveRelease(spec({ 'release-base-url': 'https://dl.k8s.io' })).map((r) => r.url)).toEqual(resolveRelease(spec()).map((r) => r.url));
  });

  it('downloads everything from a mirror, each checked against its pinned digest', () => {
    const digests = Object.fromEntries(releaseCatalog(spec().versions).map((a) => [a.mirrorPath, hex('b')]));
    const resolved = resolveRelease(spec({ 'release-base-url': 'https://mirror.example/ck', 'release-digests': digests }));
    expect(resolved.length).toBeGreaterThan(0);
    for (const r of resolved) {
      expect(r.url).toBe(`https://mirror.example/ck/${r.artifact.mirrorPath}`);
      expect(r.verify).toEqual({ kind: 'pinned', sha256: hex('b') });
    }
  });

  it('refuses a mirror that lacks digests, naming every artifact missing and the command that makes them', () => {
    const digests = { 'runc/v1.4.4/runc.amd64': hex('c') };
    let err: unknown;
    try {
      resolveRelease(spec({ 'release-base-url': 'https://mirror.example/ck', 'release-digests': digests }), 'minion');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidInputError);
    const problems = (err as InvalidInputError).problems;
    expect(problems.map((p) => p.value)).toEqual([
      'release/v1.36.5/bin/linux/amd64/kubelet',
      'release/v1.36.5/bin/linux/amd64/kube-proxy',
      'flannel/v0.28.10/flannel-v0.28.10-linux-amd64.tar.gz',
      'containerd/v2.3.7/containerd-2.3.7-linux-amd64.tar.gz',
      'cni-plugins/v1.10.0/cni-plugins-linux-amd64-v1.10.0.tgz',
    ]);
    expect(problems.every((p) => p.field === 'releaseDigests' && /corekube mirror build/.test(p.fix))).toBe(true);
  });
});

describe('consumersOf', () => {
  it("adds the node-local API proxy's artifacts to a minion's only with apiLoadBalancer node-local", () => {
    expect(consumersOf(spec({ masters: '3', 'api-load-balancer': 'node-local' }), 'minion')).toEqual(['minion', 'api-proxy']);
    expect(consumersOf(spec({ masters: '3', 'api-load-balancer': 'node-local' }), 'master')).toEqual(['master']);
    expect(consumersOf(spec({ masters: '3', 'api-load-balancer': 'node-local' }), 'discovery')).toEqual(['discovery']);
    expect(consumersOf(spec({ masters: '3' }), 'minion')).toEqual(['minion']);
    expect(consumersOf(spec(), 'minion')).toEqual(['minion']);
  });

  it("makes a node-local minion's mirror need etcd's digest too, naming it", () => {
    const digests = Object.fromEntries(releaseCatalog(spec().versions).filter((a) => a.project !== 'etcd').map((a) => [a.mirrorPath, hex('d')]));
    const mirror = { 'release-base-url': 'https://mirror.example/ck', 'release-digests': digests };
    expect(resolveRelease(spec({ ...mirror, masters: '3', 'api-load-balancer': 'octavia' }), 'minion').map((r) => r.artifact.name)).not.toContain('etcd');
    let err: unknown;
    try {
      resolveRelease(spec({ ...mirror, masters: '3', 'api-load-balancer': 'node-local' }), 'minion');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidInputError);
    expect((err as InvalidInputError).problems.map((p) => p.value)).toEqual(['etcd/v3.6.17/etcd-v3.6.17-linux-amd64.tar.gz']);
  });
});

describe('digestFor', () => {
  it('reads a bare digest, and the line naming the file in a sha256sum list', () => {
    expect(digestFor(`${hex('A')}\n`, 'kubelet')).toBe(hex('a'));
    const list = `${hex('1')}  runc.arm64\n${hex('2')} *runc.amd64\n${hex('3')}  ./other\n`;
    expect(digestFor(list, 'runc.amd64')).toBe(hex('2'));
    expect(digestFor(list, 'other')).toBe(hex('3'));
    expect(digestFor(list, 'runc.s390x')).toBeUndefined();
    expect(digestFor('not a digest\n', 'x')).toBeUndefined();
  });
});
