import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { renderTemplate } from '../core/template.ts';
import { toYaml } from '../core/yaml.ts';
import type { Role } from '../contracts/roles.ts';
import type { RemoteFile, RenderedUnits, Until } from '../contracts/step.ts';
import type { UnitContext } from './context.ts';
import { LAYOUT } from './layout.ts';
import { FLANNEL_UNITS, type PodNetworkUnits } from './pod-network.ts';
import { releaseManifest } from './release.ts';

/**
 * Renders every file one machine gets — unit files, their config files and helper scripts — from its
 * UnitContext. Pure: same context, same files, same hash. The overlord writes `files`, reloads systemd and
 * starts `start` in order; `hash` changing is the only reason to touch a deployed machine again.
 */

interface UnitDef {
  readonly unit: string;
  readonly roles: readonly Role[];
  readonly until: Until;
}

/** The masters' etcd member (its first start waits for the overlord's `etcd-member` step). */
export const ETCD_UNIT = 'corekube-etcd.service';

/** Every unit, in start order (dependency order within each role): the pod network's between the two. */
const CONTROL_PLANE: readonly UnitDef[] = [
  { unit: 'corekube-download.service', roles: ['master', 'minion'], until: 'exited' },
  { unit: ETCD_UNIT, roles: ['master'], until: 'active' },
  { unit: 'kube-apiserver.service', roles: ['master'], until: 'active' },
  { unit: 'kube-controller-manager.service', roles: ['master'], until: 'active' },
  { unit: 'kube-scheduler.service', roles: ['master'], until: 'active' },
];
/** A minion's node-local API proxy (spec.apiLoadBalancer `node-local`), first of the node's units: kubelet and kube-proxy dial it. */
export const API_PROXY_UNIT: UnitDef = { unit: 'corekube-api-proxy.service', roles: ['minion'], until: 'active' };
const NODE: readonly UnitDef[] = [
  { unit: 'corekube-containerd.service', roles: ['minion'], until: 'active' },
  { unit: 'kubelet.service', roles: ['minion'], until: 'active' },
  { unit: 'kube-proxy.service', roles: ['minion'], until: 'active' },
];

/** Every unit of a cluster whose pod network is `podNetwork`, in start order; with the node-local API proxy when `apiProxy`. */
export function unitsOf(podNetwork: PodNetworkUnits, apiProxy = false): readonly UnitDef[] {
  return [...CONTROL_PLANE, ...podNetwork.units, ...(apiProxy ? [API_PROXY_UNIT] : []), ...NODE];
}

/** Every unit of a cluster whose pod network is flannel (every cluster today) and whose minions run no API proxy, in start order. */
export const UNITS: readonly UnitDef[] = unitsOf(FLANNEL_UNITS);

/** Helper scripts installed into LAYOUT.libexecDir, per role (the pod network's come with it). */
const SCRIPTS: readonly { readonly name: string; readonly roles: readonly Role[] }[] = [
  { name: 'corekube-download', roles: ['master', 'minion'] },
  { name: 'corekube-wait-api', roles: ['master'] },
  { name: 'corekube-wait-healthz', roles: ['minion'] },
  { name: 'corekube-wait-file', roles: ['minion'] },
  { name: 'corekube-kernel-setup', roles: ['minion'] },
  { name: 'corekube-metadata-guard', roles: ['minion'] },
  { name: 'corekube-resolv-conf', roles: ['minion'] },
];

/** Kernel settings Kubernetes networking needs on minions (applied by corekube-kernel-setup, and at boot). */
export const KERNEL_MODULES = ['overlay', 'br_netfilter'] as const;
export const KERNEL_SYSCTLS: Readonly<Record<string, string>> = {
  'net.ipv4.ip_forward': '1',
  'net.bridge.bridge-nf-call-iptables': '1',
  'net.bridge.bridge-nf-call-ip6tables': '1',
};

const templateDir = new URL('./templates/', import.meta.url);
const scriptDir = new URL('./scripts/', import.meta.url);
const sources = new Map<string, string>();
function source(dir: URL, name: string): string {
  const key = `${dir.href}${name}`;
  let s = sources.get(key);
  if (s === undefined) {
    s = readFileSync(new URL(name, dir), 'utf8');
    sources.set(key, s);
  }
  return s;
}

const HEADER = (ctx: UnitContext) => `Rendered by corekube for ${ctx.machine.hostname} (${ctx.role}). The overlord rewrites this file: do not edit.`;

export function renderUnits(ctx: UnitContext): RenderedUnits {
  const files: RemoteFile[] = [];
  const add = (path: string, content: string, mode = '0644') => files.push(Object.freeze({ path, content, mode }));
  const template = (name: string) => renderTemplate(source(templateDir, `${name}.hbs`), ctx, `units/templates/${name}.hbs`);

  const units = unitsOf(ctx.podNetworkUnits, ctx.apiProxy !== undefined).filter((u) => u.roles.includes(ctx.role));
  for (const u of units) add(`${LAYOUT.unitDir}/${u.unit}`, template(u.unit));
  for (const s of [...SCRIPTS, ...ctx.podNetworkUnits.scripts].filter((x) => x.roles.includes(ctx.role))) add(`${LAYOUT.libexecDir}/${s.name}`, source(scriptDir, s.name), '0755');
  add(LAYOUT.releaseManifest, releaseManifest(ctx.artifacts));

  const yamlHeader = `# ${HEADER(ctx)}`;
  const kubeconfig = (component: string, user: string, pair: { cert: string; key: string }) =>
    add(`${LAYOUT.kubeconfigDir}/${component}.kubeconfig`, toYaml(kubeconfigObject(ctx, user, pair), { header: yamlHeader }));

  if (ctx.role === 'master') {
    add(ctx.apiServer.authenticationConfig, toYaml(apiServerAuthentication(), { header: yamlHeader }));
    kubeconfig('kube-controller-manager', 'system:kube-controller-manager', ctx.pki.controllerManager);
    kubeconfig('kube-scheduler', 'system:kube-scheduler', ctx.pki.scheduler);
  } else {
    kubeconfig('kubelet', `system:node:${ctx.machine.hostname}`, ctx.pki.kubelet);
    kubeconfig('kube-proxy', 'system:kube-proxy', ctx.pki.kubeProxy);
    add(`${LAYOUT.configDir}/kubelet/config.yaml`, toYaml(kubeletConfig(ctx), { header: yamlHeader }));
    add(`${LAYOUT.configDir}/kube-proxy/config.yaml`, toYaml(kubeProxyConfig(ctx), { header: yamlHeader }));
    add(`${LAYOUT.configDir}/containerd/config.toml`, template('containerd-config.toml'));
    for (const h of registryHosts(ctx)) {
      add(`${LAYOUT.containerdCertsDir}/${h.dir}/hosts.toml`, renderTemplate(source(templateDir, 'containerd-hosts.toml.hbs'), { machine: ctx.machine, ...h }, 'units/templates/containerd-hosts.toml.hbs'));
    }
    add('/etc/modules-load.d/corekube.conf', `# ${HEADER(ctx)}\n${KERNEL_MODULES.join('\n')}\n`);
    add('/etc/sysctl.d/90-corekube.conf', `# ${HEADER(ctx)}\n${Object.entries(KERNEL_SYSCTLS).map(([k, v]) => `${k} = ${v}`).join('\n')}\n`);
  }

  return Object.freeze({
    files: Object.freeze(files),
    start: Object.freeze(units.map((u) => Object.freeze({ unit: u.unit, until: u.until }))),
    ...(ctx.role === 'minion' ? { node: ctx.machine.hostname } : {}),
    ...(ctx.isMaster ? { etcdMember: Object.freeze({ unit: ETCD_UNIT, name: ctx.etcd.name, peerUrl: ctx.etcd.peerUrl, initialCluster: ctx.etcd.initialCluster, bootstrapEnv: ctx.etcd.bootstrapEnv, dataDir: ctx.etcd.dataDir }) } : {}),
    hash: hashFiles(files),
  });
}

/** sha256 over (path, mode, length, content) of every file in path order: independent of render order. */
export function hashFiles(files: readonly RemoteFile[]): string {
  const h = createHash('sha256');
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    h.update(`${f.path}\0${f.mode}\0${Buffer.byteLength(f.content)}\0`);
    h.update(f.content);
  }
  return h.digest('hex');
}

/**
 * The API server's authentication: client certificates and service account tokens as before, and anonymous
 * requests only to the health endpoints (KEP-4633, stable since 1.34) — what a load balancer's health monitor
 * asks without credentials; RBAC's system:public-info-viewer lets them through. Every other anonymous request
 * is refused (401), as `--anonymous-auth=false` did.
 */
export const ANONYMOUS_PATHS = ['/healthz', '/livez', '/readyz'] as const;
function apiServerAuthentication() {
  return {
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'AuthenticationConfiguration',
    anonymous: { enabled: true, conditions: ANONYMOUS_PATHS.map((path) => ({ path })) },
  };
}

/** A kubeconfig that names certificate files (never embeds key material): the PKI room delivers the files. */
function kubeconfigObject(ctx: UnitContext, user: string, pair: { cert: string; key: string }) {
  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: ctx.cluster, cluster: { server: ctx.apiServer.url, 'certificate-authority': ctx.pki.ca } }],
    users: [{ name: user, user: { 'client-certificate': pair.cert, 'client-key': pair.key } }],
    contexts: [{ name: 'default', context: { cluster: ctx.cluster, user } }],
    'current-context': 'default',
    preferences: {},
  };
}

function kubeletConfig(ctx: UnitContext) {
  return {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    authentication: {
      anonymous: { enabled: false },
      webhook: { enabled: true },
      x509: { clientCAFile: ctx.pki.ca },
    },
    authorization: { mode: 'Webhook' },
    cgroupDriver: 'systemd',
    containerRuntimeEndpoint: `unix://${ctx.paths.containerdSocket}`,
    clusterDomain: ctx.network.clusterDomain,
    clusterDNS: [ctx.network.clusterDnsIp],
    readOnlyPort: 0,
    tlsCertFile: ctx.pki.kubelet.cert,
    tlsPrivateKeyFile: ctx.pki.kubelet.key,
    tlsMinVersion: 'VersionTLS12',
    rotateCertificates: false,
    serverTLSBootstrap: false,
    // the upstream servers, never a loopback stub (it would loop inside pods): corekube-resolv-conf writes it
    resolvConf: ctx.paths.kubeletResolvConf,
    failSwapOn: true,
    protectKernelDefaults: false,
  };
}

function kubeProxyConfig(ctx: UnitContext) {
  return {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig: `${ctx.paths.kubeconfigDir}/kube-proxy.kubeconfig` },
    mode: ctx.kubeProxy.mode,
    clusterCIDR: ctx.network.podCidr,
    hostnameOverride: ctx.machine.hostname,
    healthzBindAddress: `${ctx.machine.ip}:${ctx.kubeProxy.healthzPort}`,
    // NodePorts on the node's own address only, not on every local address (cni0, flannel.1, …)
    nodePortAddresses: ['primary'],
    metricsBindAddress: '127.0.0.1:10249',
  };
}

/**
 * containerd's hosts.toml files for a registry mirror: registry.k8s.io (the cluster's own images) is pulled
 * through the mirror, falling back to registry.k8s.io itself; and the mirror is reachable by its own name (an
 * http:// mirror over plain HTTP). No mirror, no files: containerd pulls from each registry directly.
 */
function registryHosts(ctx: UnitContext): { dir: string; registry: string; server: string; mirror: string; capabilities: string }[] {
  const m = ctx.registryMirror;
  if (!m) return [];
  const upstream = ctx.images.pause.split('/')[0]!;
  return [
    { dir: upstream, registry: upstream, server: `https://${upstream}`, mirror: m.url, capabilities: "'pull', 'resolve'" },
    { dir: m.host, registry: m.host, server: m.url, mirror: m.url, capabilities: "'pull', 'resolve'" },
  ];
}
