import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { parseYaml } from '../../../core/yaml.ts';
import { hashFiles, renderUnits, type UnitContext } from '../../../units/index.ts';
import { context, spec } from './fixtures.ts';

const unitFiles = (role: 'master' | 'minion') => renderUnits(context(role)).files.filter((f) => f.path.startsWith('/etc/systemd/system/'));
const fileOf = (role: 'master' | 'minion', path: string) => {
  const f = renderUnits(context(role)).files.find((x) => x.path === path);
  if (!f) throw new Error(`${role} has no ${path}`);
  return f.content;
};

describe('renderUnits', () => {
  it('gives a master download, etcd, the control plane and flanneld, started in dependency order', () => {
    const r = renderUnits(context('master'));
    expect(r.start).toEqual([
      { unit: 'corekube-download.service', until: 'exited' },
      { unit: 'corekube-etcd.service', until: 'active' },
      { unit: 'kube-apiserver.service', until: 'active' },
      { unit: 'kube-controller-manager.service', until: 'active' },
      { unit: 'kube-scheduler.service', until: 'active' },
      { unit: 'flanneld.service', until: 'active' },
    ]);
    expect(unitFiles('master').map((f) => f.path.split('/').pop()).sort()).toEqual(r.start.map((s) => s.unit).sort());
  });

  it('gives a minion download, flanneld, containerd, kubelet and kube-proxy with their config files', () => {
    const r = renderUnits(context('minion'));
    expect(r.start.map((s) => s.unit)).toEqual(['corekube-download.service', 'flanneld.service', 'corekube-containerd.service', 'kubelet.service', 'kube-proxy.service']);
    expect(r.files.map((f) => f.path)).toEqual(expect.arrayContaining([
      '/etc/corekube/kubelet/config.yaml',
      '/etc/corekube/kube-proxy/config.yaml',
      '/etc/corekube/containerd/config.toml',
      '/etc/corekube/cni/net.d/10-flannel.conflist',
      '/etc/corekube/kubeconfigs/kubelet.kubeconfig',
      '/etc/corekube/kubeconfigs/kube-proxy.kubeconfig',
      '/etc/corekube/release.manifest',
      '/opt/corekube/libexec/corekube-download',
    ]));
  });

  it('makes scripts executable and every other file 0644 (no secrets are rendered)', () => {
    for (const role of ['master', 'minion'] as const) {
      for (const f of renderUnits(context(role)).files) {
        expect(f.mode, f.path).toBe(f.path.startsWith('/opt/corekube/libexec/') ? '0755' : '0644');
        expect(f.content, f.path).not.toMatch(/BEGIN [A-Z ]*PRIVATE KEY|BEGIN CERTIFICATE/);
      }
    }
  });

  it('gives every unit restart, start timeout and download ordering, and never $private_ipv4', () => {
    for (const role of ['master', 'minion'] as const) {
      for (const f of unitFiles(role)) {
        expect(f.content, f.path).toMatch(/^Restart=on-failure$/m);
        expect(f.content, f.path).toMatch(/^RestartSec=\d+$/m);
        expect(f.content, f.path).toMatch(/^TimeoutStartSec=\d+$/m);
        expect(f.content, f.path).not.toContain('private_ipv4');
        expect(f.content, f.path).not.toMatch(/\{\{|\}\}/);
        if (!f.path.endsWith('/corekube-download.service')) {
          expect(f.content, f.path).toMatch(/^After=.*\bcorekube-download\.service\b/m);
          expect(f.content, f.path).toMatch(/^Requires=.*\bcorekube-download\.service\b/m);
        }
      }
    }
  });

  it('passes only secure flags: no insecure port, no anonymous auth, no AlwaysAllow, no plain http', () => {
    for (const role of ['master', 'minion'] as const) {
      for (const f of renderUnits(context(role)).files.filter((x) => !x.path.startsWith('/opt/corekube/libexec/'))) {
        expect(f.content, f.path).not.toMatch(/--insecure-port|--insecure-bind-address|--anonymous-auth=true|AlwaysAllow|http:\/\/|--port=/);
      }
    }
    const api = fileOf('master', '/etc/systemd/system/kube-apiserver.service');
    expect(api).toContain('--authorization-mode=Node,RBAC');
    expect(api).toContain('--anonymous-auth=false');
    expect(api).toContain('--enable-admission-plugins=NodeRestriction');
    expect(api).toContain('--etcd-servers=https://10.240.0.32:2379,https://10.240.0.33:2379,https://10.240.0.34:2379');
    const etcd = fileOf('master', '/etc/systemd/system/corekube-etcd.service');
    expect(etcd).toContain('--client-cert-auth=true');
    expect(etcd).toContain('--peer-client-cert-auth=true');
  });

  it('builds the etcd initial cluster from every deployed master, named by IP', () => {
    const etcd = fileOf('master', '/etc/systemd/system/corekube-etcd.service');
    expect(etcd).toContain('--name=etcd-10-240-0-32 ');
    expect(etcd).toContain(
      '--initial-cluster=etcd-10-240-0-32=https://10.240.0.32:2380,etcd-10-240-0-33=https://10.240.0.33:2380,etcd-10-240-0-34=https://10.240.0.34:2380 ',
    );
  });

  it('sets the TLS floor with --tls-min-version only for etcd v3.6 and later (v3.4 has no such flag, and 1.2 is its fixed minimum)', () => {
    const etcdUnit = (version: string) =>
      renderUnits(context('master', spec({ 'etcd-version': version }))).files.find((f) => f.path.endsWith('/corekube-etcd.service'))!.content;
    expect(etcdUnit('v3.6.6')).toMatch(/--peer-key-file=\S+ \\\n {2}--tls-min-version=TLS1\.2\n/);
    expect(etcdUnit('v3.7.0')).toContain('--tls-min-version=TLS1.2');
    const old = etcdUnit('v3.4.23');
    expect(old).not.toContain('tls-min-version');
    expect(old).toMatch(/--peer-key-file=\S+\nRestart=on-failure/);
  });

  it("points flanneld at discovery's etcd over TLS as the machine's own etcd user, with the cluster's prefix and the machine's IP", () => {
    for (const role of ['master', 'minion'] as const) {
      const f = fileOf(role, '/etc/systemd/system/flanneld.service');
      expect(f).toContain('--etcd-endpoints=https://10.240.0.10:2379 ');
      expect(f).toContain('--etcd-prefix=/corekube/demo/network ');
      expect(f).toContain('--etcd-cafile=/etc/corekube/pki/discovery-ca.crt ');
      expect(f).toContain('EnvironmentFile=/etc/corekube/pki/discovery-credentials.env\n');
      expect(f).not.toMatch(/--etcd-(certfile|keyfile|password)/);
      expect(f).toContain(`--iface=${context(role).machine.ip} `);
      expect(f).toContain('--ip-masq ');
      expect(f).toMatch(/--healthz-port=\d+/);
    }
  });

  it('makes containerd and kubelet require flanneld and wait for its subnet file', () => {
    for (const unit of ['corekube-containerd.service', 'kubelet.service']) {
      const f = fileOf('minion', `/etc/systemd/system/${unit}`);
      expect(f, unit).toMatch(/^Requires=.*\bflanneld\.service\b/m);
      expect(f, unit).toMatch(/^After=.*\bflanneld\.service\b/m);
      expect(f, unit).toMatch(/^ExecStartPre=\/opt\/corekube\/libexec\/corekube-wait-file \/run\/flannel\/subnet\.env \d+$/m);
    }
  });

  it('writes a KubeletConfiguration with webhook authn/authz, no anonymous auth and the systemd cgroup driver', () => {
    const cfg = parseYaml(fileOf('minion', '/etc/corekube/kubelet/config.yaml')) as Record<string, any>;
    expect(cfg.kind).toBe('KubeletConfiguration');
    expect(cfg.authentication).toEqual({ anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: '/etc/corekube/pki/ca.crt' } });
    expect(cfg.authorization).toEqual({ mode: 'Webhook' });
    expect(cfg.cgroupDriver).toBe('systemd');
    expect(cfg.readOnlyPort).toBe(0);
    expect(cfg.clusterDNS).toEqual(['10.96.0.10']);
    expect(cfg.containerRuntimeEndpoint).toBe('unix:///run/corekube/containerd/containerd.sock');
  });

  it('writes a KubeProxyConfiguration in iptables mode with the pod CIDR', () => {
    const cfg = parseYaml(fileOf('minion', '/etc/corekube/kube-proxy/config.yaml')) as Record<string, any>;
    expect(cfg).toMatchObject({ kind: 'KubeProxyConfiguration', mode: 'iptables', clusterCIDR: '10.244.0.0/14' });
  });

  it('writes kubeconfigs that name certificate files: minions reach the first master, masters loopback', () => {
    const kubelet = parseYaml(fileOf('minion', '/etc/corekube/kubeconfigs/kubelet.kubeconfig')) as Record<string, any>;
    expect(kubelet.clusters[0].cluster.server).toBe('https://10.240.0.32:6443');
    expect(kubelet.users[0]).toEqual({ name: 'system:node:demo-minion-0', user: { 'client-certificate': '/etc/corekube/pki/kubelet.crt', 'client-key': '/etc/corekube/pki/kubelet.key' } });
    const cm = parseYaml(fileOf('master', '/etc/corekube/kubeconfigs/kube-controller-manager.kubeconfig')) as Record<string, any>;
    expect(cm.clusters[0].cluster.server).toBe('https://127.0.0.1:6443');
  });

  it('writes a CNI conflist where flannel delegates to bridge, then portmap', () => {
    const cni = JSON.parse(fileOf('minion', '/etc/corekube/cni/net.d/10-flannel.conflist'));
    expect(cni.plugins.map((p: { type: string }) => p.type)).toEqual(['flannel', 'portmap']);
    expect(cni.plugins[0].delegate.type).toBe('bridge');
  });

  it('throws E_TEMPLATE naming the template when the context lacks a value (strict rendering)', () => {
    const broken = { ...context('master'), etcd: undefined } as unknown as UnitContext;
    let caught: unknown;
    try {
      renderUnits(broken);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(CorekubeError);
    expect((caught as CorekubeError).code).toBe('E_TEMPLATE');
    expect((caught as CorekubeError).message).toMatch(/corekube-etcd\.service\.hbs/);
  });
});

describe('units hash', () => {
  it('is the same for the same inputs and independent of file order', () => {
    const a = renderUnits(context('minion'));
    const b = renderUnits(context('minion'));
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(b.hash).toBe(a.hash);
    expect(hashFiles([...a.files].reverse())).toBe(a.hash);
  });

  it('changes when a version, a file mode or the masters change', () => {
    const base = renderUnits(context('minion')).hash;
    expect(renderUnits(context('minion', spec({ 'kubernetes-version': 'v1.36.3' }))).hash).not.toBe(base);
    expect(renderUnits(context('minion', spec({ 'flannel-version': 'v0.27.5' }))).hash).not.toBe(base);
    expect(renderUnits(context('minion', spec(), ['10.240.0.33'])).hash).not.toBe(base);
    const files = renderUnits(context('minion')).files;
    expect(hashFiles(files.map((f, i) => (i === 0 ? { ...f, mode: '0600' } : f)))).not.toBe(base);
  });

  it('differs between masters and minions', () => {
    expect(renderUnits(context('master')).hash).not.toBe(renderUnits(context('minion')).hash);
  });
});
