import { describe, expect, it } from 'vitest';
import { artifactsFor, releaseArtifacts, releaseManifest } from '../../../units/index.ts';
import { spec } from './fixtures.ts';

describe('releaseArtifacts', () => {
  it('uses the dl.k8s.io layout for Kubernetes binaries, with .sha256 next to each', () => {
    const apiserver = releaseArtifacts(spec()).find((a) => a.name === 'kube-apiserver')!;
    expect(apiserver).toMatchObject({
      url: 'https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kube-apiserver',
      sha256Url: 'https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kube-apiserver.sha256',
      installPath: '/opt/corekube/bin/kube-apiserver',
    });
  });

  it('puts every other project under <base>/<project>/<tag>/ with its upstream asset name', () => {
    const s = spec({ 'release-base-url': 'http://127.0.0.1:8080/mirror' });
    const urls = Object.fromEntries(releaseArtifacts(s).map((a) => [a.name, a.url]));
    expect(urls).toMatchObject({
      etcd: 'http://127.0.0.1:8080/mirror/etcd/v3.6.6/etcd-v3.6.6-linux-amd64.tar.gz',
      flannel: 'http://127.0.0.1:8080/mirror/flannel/v0.27.4/flannel-v0.27.4-linux-amd64.tar.gz',
      containerd: 'http://127.0.0.1:8080/mirror/containerd/v2.1.5/containerd-2.1.5-linux-amd64.tar.gz',
      'cni-plugins': 'http://127.0.0.1:8080/mirror/cni-plugins/v1.8.0/cni-plugins-linux-amd64-v1.8.0.tgz',
    });
    for (const a of releaseArtifacts(s)) expect(a.url).toBe(`http://127.0.0.1:8080/mirror/${a.mirrorPath}`);
  });

  it('gives each role only the binaries its units run', () => {
    const names = (role: 'master' | 'minion') => artifactsFor(spec(), role).map((a) => a.name);
    expect(names('master')).toEqual(['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'etcd', 'flannel']);
    expect(names('minion')).toEqual(['kubelet', 'kube-proxy', 'flannel', 'containerd', 'runc', 'cni-plugins', 'flannel-cni-plugin']);
  });

  it('installs CNI plugins into their own directory and everything else into /opt/corekube/bin', () => {
    const paths = releaseArtifacts(spec()).flatMap((a) => (a.archive ? a.archive.map((m) => m.installPath) : [a.installPath]));
    expect(paths.filter((p) => p.startsWith('/opt/corekube/cni/bin/')).sort()).toEqual(
      ['bridge', 'flannel', 'host-local', 'loopback', 'portmap'].map((n) => `/opt/corekube/cni/bin/${n}`),
    );
    expect(paths.every((p) => p.startsWith('/opt/corekube/bin/') || p.startsWith('/opt/corekube/cni/bin/'))).toBe(true);
  });
});

describe('releaseManifest', () => {
  it('writes one tab-separated line an artifact: kind, name, url, sha256 url, install paths', () => {
    const lines = releaseManifest(artifactsFor(spec(), 'master')).trimEnd().split('\n');
    expect(lines[0]).toMatch(/^# /);
    expect(lines[1]!.split('\t')).toEqual([
      'file',
      'kube-apiserver',
      'https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kube-apiserver',
      'https://dl.k8s.io/release/v1.36.2/bin/linux/amd64/kube-apiserver.sha256',
      '/opt/corekube/bin/kube-apiserver',
    ]);
    expect(lines.find((l) => l.startsWith('tar\tetcd\t'))!.split('\t').slice(4)).toEqual([
      'etcd-v3.6.6-linux-amd64/etcd=/opt/corekube/bin/etcd',
      'etcd-v3.6.6-linux-amd64/etcdctl=/opt/corekube/bin/etcdctl',
      'etcd-v3.6.6-linux-amd64/etcdutl=/opt/corekube/bin/etcdutl',
    ]);
  });
});
