import { describe, expect, it } from 'vitest';
import { CorekubeError } from '../../../core/errors.ts';
import { parseYaml } from '../../../core/yaml.ts';
import { clusterImages } from '../../../release/catalog.ts';
import { unitInputs } from '../../../overlord/deploy/unit-inputs.ts';
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
    // a master runs no kubelet: it has no Node to wait for
    expect(r.node).toBeUndefined();
  });

  it('gives a minion download, flanneld, containerd, kubelet and kube-proxy with their config files', () => {
    const r = renderUnits(context('minion'));
    expect(r.start.map((s) => s.unit)).toEqual(['corekube-download.service', 'flanneld.service', 'corekube-containerd.service', 'kubelet.service', 'kube-proxy.service']);
    expect(r.files.map((f) => f.path)).toEqual(expect.arrayContaining([
      '/etc/corekube/kubelet/config.yaml',
      '/etc/corekube/kube-proxy/config.yaml',
      '/etc/corekube/containerd/config.toml',
      '/etc/corekube/kubeconfigs/kubelet.kubeconfig',
      '/etc/corekube/kubeconfigs/kube-proxy.kubeconfig',
      '/etc/corekube/release.manifest',
      '/opt/corekube/libexec/corekube-download',
      '/opt/corekube/libexec/corekube-cni-config',
      '/opt/corekube/libexec/corekube-metadata-guard',
      '/opt/corekube/libexec/corekube-resolv-conf',
      '/opt/corekube/libexec/corekube-wait-healthz',
      '/opt/corekube/libexec/corekube-redact',
    ]));
    // the CNI config is written on the machine from flanneld's subnet file (corekube-cni-config), never rendered
    expect(r.files.filter((f) => f.path.startsWith('/etc/corekube/cni/'))).toEqual([]);
    // deployed once its kubelet's Node (the machine's hostname) is Ready
    expect(r.node).toBe('demo-minion-0');
  });

  it("installs each role's helper scripts and no other role's", () => {
    const scripts = (role: 'master' | 'minion') => renderUnits(context(role)).files.filter((f) => f.path.startsWith('/opt/corekube/libexec/')).map((f) => f.path.split('/').pop()).sort();
    expect(scripts('master')).toEqual(['corekube-download', 'corekube-redact', 'corekube-wait-api']);
    expect(scripts('minion')).toEqual(['corekube-cni-config', 'corekube-download', 'corekube-kernel-setup', 'corekube-metadata-guard', 'corekube-redact', 'corekube-resolv-conf', 'corekube-wait-file', 'corekube-wait-healthz']);
  });

  it('tells systemd a service is ready only when its program says so (Type=notify), where the program can', () => {
    const type = (role: 'master' | 'minion', unit: string) => /^Type=(\w+)$/m.exec(fileOf(role, `/etc/systemd/system/${unit}`))?.[1];
    for (const unit of ['corekube-etcd.service', 'kube-apiserver.service', 'flanneld.service']) expect(type('master', unit), unit).toBe('notify');
    for (const unit of ['flanneld.service', 'corekube-containerd.service', 'kubelet.service']) expect(type('minion', unit), unit).toBe('notify');
    // the others cannot notify: they wait for the API (controller manager, scheduler) or become active once healthy (kube-proxy)
    for (const unit of ['kube-controller-manager.service', 'kube-scheduler.service']) expect(type('master', unit), unit).toBe('simple');
    expect(type('minion', 'kube-proxy.service')).toBe('simple');
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
          // wanted, not required: a new release's download runs while the unit keeps running (a rolling upgrade)
          expect(f.content, f.path).toMatch(/^Wants=.*\bcorekube-download\.service\b/m);
          expect(f.content, f.path).not.toMatch(/^(Requires|BindsTo)=.*\bcorekube-download\.service\b/m);
        }
      }
    }
  });

  it('passes only secure flags: no insecure port, no anonymous auth, no AlwaysAllow, no plain http', () => {
    // the one plain-http URL: kube-proxy's own health endpoint on its node, probed by the node itself
    const healthProbe = /^ExecStartPost=\/opt\/corekube\/libexec\/corekube-wait-healthz http:\/\/10\.240\.0\.40:10256\/healthz \d+$/m;
    expect(fileOf('minion', '/etc/systemd/system/kube-proxy.service')).toMatch(healthProbe);
    for (const role of ['master', 'minion'] as const) {
      for (const f of renderUnits(context(role)).files.filter((x) => !x.path.startsWith('/opt/corekube/libexec/'))) {
        expect(f.content.replace(healthProbe, ''), f.path).not.toMatch(/--insecure-port|--insecure-bind-address|--anonymous-auth=true|AlwaysAllow|http:\/\/|--port=/);
      }
    }
    const api = fileOf('master', '/etc/systemd/system/kube-apiserver.service');
    expect(api).toContain('--authorization-mode=Node,RBAC');
    // anonymous requests only to the health endpoints (a load balancer's monitor), refused everywhere else
    expect(api).toContain('--authentication-config=/etc/corekube/kube-apiserver/authentication.yaml ');
    expect(api).not.toContain('--anonymous-auth');
    expect(parseYaml(fileOf('master', '/etc/corekube/kube-apiserver/authentication.yaml'))).toEqual({
      apiVersion: 'apiserver.config.k8s.io/v1',
      kind: 'AuthenticationConfiguration',
      anonymous: { enabled: true, conditions: [{ path: '/healthz' }, { path: '/livez' }, { path: '/readyz' }] },
    });
    expect(api).toContain('--enable-admission-plugins=NodeRestriction');
    expect(api).toContain('--etcd-servers=https://10.240.0.32:2379,https://10.240.0.33:2379,https://10.240.0.34:2379');
    const etcd = fileOf('master', '/etc/systemd/system/corekube-etcd.service');
    expect(etcd).toContain('--client-cert-auth=true');
    expect(etcd).toContain('--peer-client-cert-auth=true');
  });

  it('lets the API server accept request headers only from its front-proxy client, by the front-proxy CA, as kubeadm sets it up', () => {
    const api = fileOf('master', '/etc/systemd/system/kube-apiserver.service');
    expect(api).toContain('--requestheader-client-ca-file=/etc/corekube/pki/front-proxy-ca.crt ');
    expect(api).toContain('--requestheader-allowed-names=front-proxy-client ');
    expect(api).toContain('--proxy-client-cert-file=/etc/corekube/pki/front-proxy-client.crt ');
    expect(api).toContain('--proxy-client-key-file=/etc/corekube/pki/front-proxy-client.key ');
    for (const h of ['--requestheader-username-headers=X-Remote-User', '--requestheader-group-headers=X-Remote-Group', '--requestheader-extra-headers-prefix=X-Remote-Extra-']) expect(api).toContain(`${h} `);
  });

  it('starts the controller manager and the scheduler only once the local API server is ready, asked with their own certificate', () => {
    for (const [unit, pair] of [['kube-controller-manager', 'kube-controller-manager'], ['kube-scheduler', 'kube-scheduler']]) {
      expect(fileOf('master', `/etc/systemd/system/${unit}.service`), unit).toMatch(
        new RegExp(`^ExecStartPre=/opt/corekube/libexec/corekube-wait-api https://127\\.0\\.0\\.1:6443 /etc/corekube/pki/ca\\.crt /etc/corekube/pki/${pair}\\.crt /etc/corekube/pki/${pair}\\.key \\d+$`, 'm'),
      );
    }
  });

  it('builds the etcd initial cluster from every deployed master, named by IP, outside the unit: masters that come and go change no running member', () => {
    const etcd = fileOf('master', '/etc/systemd/system/corekube-etcd.service');
    expect(etcd).toContain('--name=etcd-10-240-0-32 ');
    expect(etcd).toContain('EnvironmentFile=-/etc/corekube/etcd/bootstrap.env\n');
    expect(etcd).not.toContain('--initial-cluster=');
    expect(etcd).not.toContain('--initial-cluster-state');
    const rendered = renderUnits(context('master'));
    expect(rendered.etcdMember).toEqual({
      unit: 'corekube-etcd.service', name: 'etcd-10-240-0-32', peerUrl: 'https://10.240.0.32:2380', bootstrapEnv: '/etc/corekube/etcd/bootstrap.env', dataDir: '/var/lib/corekube/etcd',
      initialCluster: 'etcd-10-240-0-32=https://10.240.0.32:2380,etcd-10-240-0-33=https://10.240.0.33:2380,etcd-10-240-0-34=https://10.240.0.34:2380',
    });
    // a fourth master: the same etcd unit on this one (its API server's etcd list grows)
    const more = renderUnits(context('master', spec(), ['10.240.0.32', '10.240.0.33', '10.240.0.34', '10.240.0.35']));
    const unit = (u: typeof rendered, p: string) => u.files.find((f) => f.path === p)!.content;
    expect(unit(more, '/etc/systemd/system/corekube-etcd.service')).toBe(etcd);
    expect(unit(more, '/etc/systemd/system/kube-apiserver.service')).toContain('https://10.240.0.35:2379');
    expect(renderUnits(context('minion')).etcdMember).toBeUndefined();
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
      // flanneld speaks TLS to etcd only with a client certificate: the machine's own, by discovery's CA
      expect(f).toContain('--etcd-certfile=/etc/corekube/pki/discovery-client.crt ');
      expect(f).toContain('--etcd-keyfile=/etc/corekube/pki/discovery-client.key ');
      // its etcd user and password come from the environment file, never the command line
      expect(f).toContain('EnvironmentFile=/etc/corekube/pki/discovery-credentials.env\n');
      expect(f).not.toMatch(/--etcd-(username|password)/);
      // …and flanneld prints its options (the password among them) at start: its output passes corekube-redact
      expect(f).toMatch(/^ExecStart=\/opt\/corekube\/libexec\/corekube-redact \/opt\/corekube\/bin\/flanneld \\$/m);
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

  it("writes the CNI config from flanneld's subnet file and shuts pods out of the metadata service, before containerd starts", () => {
    const pre = [...fileOf('minion', '/etc/systemd/system/corekube-containerd.service').matchAll(/^ExecStartPre=(.*)$/gm)].map((m) => m[1]);
    expect(pre).toEqual([
      '/opt/corekube/libexec/corekube-kernel-setup',
      // the whole pod network, not only this node's subnet: no pod anywhere reads another node's user_data
      '/opt/corekube/libexec/corekube-metadata-guard 10.244.0.0/14',
      expect.stringMatching(/^\/opt\/corekube\/libexec\/corekube-wait-file \/run\/flannel\/subnet\.env \d+$/),
      '/opt/corekube/libexec/corekube-cni-config /run/flannel/subnet.env /etc/corekube/cni/net.d/10-corekube.conflist',
    ]);
    // a master runs no pods: it has no guard
    expect(renderUnits(context('master')).files.map((f) => f.path)).not.toContain('/opt/corekube/libexec/corekube-metadata-guard');
  });

  it('gives the kubelet a drop-in directory and a resolv.conf of upstream servers written at each start', () => {
    const kubelet = fileOf('minion', '/etc/systemd/system/kubelet.service');
    expect(kubelet).toContain('ExecStartPre=/bin/mkdir -p /etc/corekube/kubelet/config.d\n');
    expect(kubelet).toContain('ExecStartPre=/opt/corekube/libexec/corekube-resolv-conf /run/corekube/resolv.conf\n');
    expect(kubelet).toContain('--config-dir=/etc/corekube/kubelet/config.d ');
    const cfg = parseYaml(fileOf('minion', '/etc/corekube/kubelet/config.yaml')) as Record<string, any>;
    expect(cfg.resolvConf).toBe('/run/corekube/resolv.conf');
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

  it('writes a KubeProxyConfiguration in iptables mode with the pod CIDR, NodePorts on the node address only', () => {
    const cfg = parseYaml(fileOf('minion', '/etc/corekube/kube-proxy/config.yaml')) as Record<string, any>;
    expect(cfg).toMatchObject({ kind: 'KubeProxyConfiguration', mode: 'iptables', clusterCIDR: '10.244.0.0/14', healthzBindAddress: '10.240.0.40:10256', nodePortAddresses: ['primary'] });
  });

  it("pins containerd's sandbox image to the spec's pause version, imports a site's drop-ins, and reads registry hosts from certs.d", () => {
    const toml = fileOf('minion', '/etc/corekube/containerd/config.toml');
    expect(toml).toContain("imports = ['/etc/corekube/containerd/conf.d/*.toml']\n");
    expect(toml).toContain(`sandbox = '${clusterImages(spec().versions).pause}'\n`);
    expect(toml).toContain(`sandbox = 'registry.k8s.io/pause:${spec().versions.pause}'\n`);
    expect(toml).toContain("config_path = '/etc/corekube/containerd/certs.d'\n");
  });

  it('pulls registry.k8s.io through a registry mirror when the spec names one, and writes no hosts.toml without one', () => {
    const hosts = (s: ReturnType<typeof spec>) => renderUnits(context('minion', s)).files.filter((f) => f.path.startsWith('/etc/corekube/containerd/certs.d/'));
    expect(hosts(spec())).toEqual([]);
    const mirrored = hosts(spec({ 'registry-mirror': 'http://10.200.60.1:5000' }));
    expect(mirrored.map((f) => f.path)).toEqual(['/etc/corekube/containerd/certs.d/registry.k8s.io/hosts.toml', '/etc/corekube/containerd/certs.d/10.200.60.1:5000/hosts.toml']);
    expect(mirrored[0]!.content).toContain("server = 'https://registry.k8s.io'\n");
    expect(mirrored[0]!.content).toContain("[host.'http://10.200.60.1:5000']\n  capabilities = ['pull', 'resolve']\n");
    expect(mirrored[1]!.content).toContain("server = 'http://10.200.60.1:5000'\n");
  });

  it('writes kubeconfigs that name certificate files: minions reach the load balancer (or the first master without one), masters loopback', () => {
    const kubelet = parseYaml(fileOf('minion', '/etc/corekube/kubeconfigs/kubelet.kubeconfig')) as Record<string, any>;
    expect(kubelet.clusters[0].cluster.server).toBe('https://10.240.0.12:6443');
    for (const f of renderUnits(context('minion', spec({ 'api-load-balancer': 'none' }))).files.filter((x) => x.path.endsWith('.kubeconfig'))) {
      expect((parseYaml(f.content) as Record<string, any>).clusters[0].cluster.server, f.path).toBe('https://10.240.0.32:6443');
    }
    expect(kubelet.users[0]).toEqual({ name: 'system:node:demo-minion-0', user: { 'client-certificate': '/etc/corekube/pki/kubelet.crt', 'client-key': '/etc/corekube/pki/kubelet.key' } });
    const cm = parseYaml(fileOf('master', '/etc/corekube/kubeconfigs/kube-controller-manager.kubeconfig')) as Record<string, any>;
    expect(cm.clusters[0].cluster.server).toBe('https://127.0.0.1:6443');
  });

  it('gives a node-local minion its API proxy (etcd gateway on 127.0.0.1:6443 in front of every master), started before kubelet and kube-proxy, whose kubeconfigs name it', () => {
    const r = renderUnits(context('minion', spec({ 'api-load-balancer': 'node-local' }), ['10.240.0.34', '10.240.0.32', '10.240.0.33']));
    expect(r.start.map((s) => s.unit)).toEqual(['corekube-download.service', 'flanneld.service', 'corekube-api-proxy.service', 'corekube-containerd.service', 'kubelet.service', 'kube-proxy.service']);
    expect(r.start.find((s) => s.unit === 'corekube-api-proxy.service')!.until).toBe('active');
    const file = (path: string) => r.files.find((f) => f.path === path)!.content;
    const proxy = file('/etc/systemd/system/corekube-api-proxy.service');
    const execStart = proxy.replace(/\\\n\s*/g, '').split('\n').find((l) => l.startsWith('ExecStart='));
    // every master, sorted, so the unit changes exactly when the masters do
    expect(execStart).toBe('ExecStart=/opt/corekube/bin/etcd gateway start --listen-addr=127.0.0.1:6443 --endpoints=10.240.0.32:6443,10.240.0.33:6443,10.240.0.34:6443 --retry-delay=10s');
    expect(proxy).toMatch(/^Type=notify$/m);
    expect(proxy).toMatch(/^DynamicUser=yes$/m);
    for (const f of r.files.filter((x) => x.path.endsWith('.kubeconfig'))) {
      expect((parseYaml(f.content) as Record<string, any>).clusters[0].cluster.server, f.path).toBe('https://127.0.0.1:6443');
    }
    for (const unit of ['kubelet.service', 'kube-proxy.service']) {
      const text = file(`/etc/systemd/system/${unit}`);
      expect(text, unit).toMatch(/^Wants=corekube-api-proxy\.service$/m);
      expect(text, unit).toMatch(/^After=corekube-api-proxy\.service$/m);
      // a proxy restarted for a changed master must not restart them
      expect(text, unit).not.toMatch(/^(Requires|BindsTo|PartOf)=.*corekube-api-proxy/m);
    }
    // the gateway is etcd's: the minion downloads it
    expect(file('/etc/corekube/release.manifest')).toMatch(/^tar\tetcd\t.*etcd-v3\.6\.17-linux-amd64\/etcd=\/opt\/corekube\/bin\/etcd\t/m);
  });

  it('gives no API proxy to minions with octavia or none, nor to any master: their units are as before', () => {
    for (const lb of ['octavia', 'none']) {
      const r = renderUnits(context('minion', spec({ 'api-load-balancer': lb })));
      expect(r.start.map((s) => s.unit), lb).not.toContain('corekube-api-proxy.service');
      expect(r.files.map((f) => f.path).filter((p) => /api-proxy/.test(p)), lb).toEqual([]);
      expect(r.files.filter((f) => f.path.startsWith('/etc/systemd/system/')).every((f) => !f.content.includes('corekube-api-proxy')), lb).toBe(true);
      expect(r.files.find((f) => f.path === '/etc/corekube/release.manifest')!.content, lb).not.toMatch(/\tetcd\t/);
    }
    // a master's units do not depend on how minions reach the API
    const master = (lb: string) => renderUnits(context('master', spec({ 'api-load-balancer': lb })));
    expect(master('node-local').hash).toBe(master('octavia').hash);
    expect(master('node-local').files.find((f) => f.path.endsWith('kube-controller-manager.kubeconfig'))!.content).toContain('server: https://127.0.0.1:6443');
  });

  it("restarts only the node-local minion's proxy when the masters' addresses change: kubelet and kube-proxy keep their inputs", () => {
    const nodeLocal = spec({ 'api-load-balancer': 'node-local' });
    const before = unitInputs(renderUnits(context('minion', nodeLocal, ['10.240.0.32', '10.240.0.33', '10.240.0.34'])));
    const after = unitInputs(renderUnits(context('minion', nodeLocal, ['10.240.0.32', '10.240.0.34', '10.240.0.35'])));
    const changed = [...before.keys()].filter((unit) => before.get(unit) !== after.get(unit));
    expect(changed).toEqual(['corekube-api-proxy.service']);
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
    const direct = spec({ 'api-load-balancer': 'none' });
    expect(renderUnits(context('minion', direct, ['10.240.0.33'])).hash).not.toBe(renderUnits(context('minion', direct)).hash);
    // behind the load balancer a minion's units do not name a master: a master replaced or added changes nothing
    expect(renderUnits(context('minion', spec(), ['10.240.0.33'])).hash).toBe(base);
    const files = renderUnits(context('minion')).files;
    expect(hashFiles(files.map((f, i) => (i === 0 ? { ...f, mode: '0600' } : f)))).not.toBe(base);
  });

  it('differs between masters and minions', () => {
    expect(renderUnits(context('master')).hash).not.toBe(renderUnits(context('minion')).hash);
  });
});
