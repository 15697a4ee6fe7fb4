import { describe, expect, it } from 'vitest';
import { releaseCatalog } from '../../../release/catalog.ts';
import { artifactsFor, releaseManifest } from '../../../units/index.ts';
import { spec } from './fixtures.ts';

const MIRROR = 'http://127.0.0.1:8080/mirror';

describe('artifactsFor', () => {
  it('gives each role only the binaries its units run', () => {
    const names = (role: 'master' | 'minion') => artifactsFor(spec(), role).map((a) => a.name);
    expect(names('master')).toEqual(['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'etcd', 'flannel']);
    expect(names('minion')).toEqual(['kubelet', 'kube-proxy', 'flannel', 'containerd', 'runc', 'cni-plugins']);
  });

  it("gives a minion etcd (its gateway is the node-local API proxy) only when the spec asks for node-local, and changes no master's", () => {
    const names = (lb: string, role: 'master' | 'minion') => artifactsFor(spec({ 'api-load-balancer': lb }), role).map((a) => a.name);
    expect(names('node-local', 'minion')).toEqual(['kubelet', 'kube-proxy', 'etcd', 'flannel', 'containerd', 'runc', 'cni-plugins']);
    expect(names('octavia', 'minion')).not.toContain('etcd');
    expect(names('none', 'minion')).not.toContain('etcd');
    for (const lb of ['node-local', 'octavia', 'none']) expect(names(lb, 'master')).toEqual(names('octavia', 'master'));
    const etcd = artifactsFor(spec({ 'api-load-balancer': 'node-local' }), 'minion').find((a) => a.name === 'etcd')!;
    expect(etcd.archive!.map((m) => m.installPath)).toContain('/opt/corekube/bin/etcd');
    expect(releaseManifest([etcd])).toContain('\tetcd-v3.6.17-linux-amd64/etcd=/opt/corekube/bin/etcd');
  });

  it('installs the CNI plugins the minion\'s config uses into their own directory, everything else into /opt/corekube/bin', () => {
    const paths = artifactsFor(spec(), 'minion').flatMap((a) => (a.archive ? a.archive.map((m) => m.installPath) : [a.installPath]));
    expect(paths.filter((p) => p.startsWith('/opt/corekube/cni/bin/')).sort()).toEqual(
      ['bridge', 'host-local', 'loopback', 'portmap'].map((n) => `/opt/corekube/cni/bin/${n}`),
    );
    expect(paths.every((p) => p.startsWith('/opt/corekube/bin/') || p.startsWith('/opt/corekube/cni/bin/'))).toBe(true);
    expect(paths).toContain('/opt/corekube/bin/runc');
  });
});

describe('releaseManifest', () => {
  it('writes one tab-separated line an artifact: kind, name, upstream url, the checksum upstream publishes, install paths', () => {
    const lines = releaseManifest(artifactsFor(spec(), 'master')).trimEnd().split('\n');
    expect(lines[0]).toMatch(/^# /);
    expect(lines[1]!.split('\t')).toEqual([
      'file',
      'kube-apiserver',
      'https://dl.k8s.io/release/v1.36.5/bin/linux/amd64/kube-apiserver',
      'https://dl.k8s.io/release/v1.36.5/bin/linux/amd64/kube-apiserver.sha256',
      '/opt/corekube/bin/kube-apiserver',
    ]);
    expect(lines.find((l) => l.startsWith('tar\tetcd\t'))!.split('\t').slice(2)).toEqual([
      'https://github.com/etcd-io/etcd/releases/download/v3.6.17/etcd-v3.6.17-linux-amd64.tar.gz',
      'https://github.com/etcd-io/etcd/releases/download/v3.6.17/SHA256SUMS',
      'etcd-v3.6.17-linux-amd64/etcd=/opt/corekube/bin/etcd',
      'etcd-v3.6.17-linux-amd64/etcdctl=/opt/corekube/bin/etcdctl',
      'etcd-v3.6.17-linux-amd64/etcdutl=/opt/corekube/bin/etcdutl',
    ]);
    expect(lines.find((l) => l.startsWith('tar\tflannel\t'))!.split('\t')[3]).toBe('none');
  });

  it('pins the mirror manifest\'s digests in every line when machines download from a mirror', () => {
    const digests = Object.fromEntries(releaseCatalog(spec().versions).map((a) => [a.mirrorPath, 'c'.repeat(64)]));
    const lines = releaseManifest(artifactsFor(spec({ 'release-base-url': MIRROR, 'release-digests': digests }), 'minion')).trimEnd().split('\n').slice(1);
    for (const line of lines) {
      const [, , url, check] = line.split('\t');
      expect(url!.startsWith(`${MIRROR}/`)).toBe(true);
      expect(check).toBe(`sha256:${'c'.repeat(64)}`);
    }
  });
});
