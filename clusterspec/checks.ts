import type { FieldProblem } from '../core/errors.ts';
import { cidrSize, cidrsOverlap, isCidr, parseCidr, type Cidr } from './cidr.ts';
import { API_LOAD_BALANCERS, CLOUD_PROVIDERS, MAX_UNAVAILABLE, RENEW_BEFORE_DAYS, KUBERNETES_MINORS, MASTER_COUNTS, MAX_MINIONS, MAX_OVERLORDS, MIN_OVERLORDS, OS_PROFILES, RESERVED_HOSTS, SPEC_FIELDS } from './fields.ts';
import type { Gathered } from './sources.ts';

/**
 * The rules a cluster spec's values must keep, one function a concern; each problem names its field, what is
 * wrong and the fix, and every problem is reported (never only the first).
 */
const DNS_LABEL = /^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$/;
const VERSION = /^v(\d+)\.(\d+)\.(\d+)$/;
const PAUSE_TAG = /^\d+\.\d+(\.\d+)?$/;
const SHA256 = /^[0-9a-f]{64}$/;
const FLAVOR_OR_NAME = /^[^\s'"]{1,255}$/;
const IMAGE_REF = /^[a-z0-9]+([._/:@-][a-zA-Z0-9_.-]+)*$/;

/** The values as the rules read them, and how a rule reports a problem. */
export class SpecValues {
  constructor(
    private readonly gathered: Gathered,
    private readonly problems: FieldProblem[],
  ) {}

  get<T>(path: string): T {
    return this.gathered.values.get(path) as T;
  }

  bad(path: string, message: string, fix: string): void {
    this.problems.push({ field: this.gathered.where.get(path)!, value: this.gathered.raw.get(path), message, fix });
  }
}

/** Every rule, in the order their problems are listed. */
export function checkSpec(spec: SpecValues): void {
  checkCounts(spec);
  checkVersions(spec);
  checkNetworks(spec);
  checkNames(spec);
}

/** The name, and how many masters, minions and overlords; the OS profile and the API load balancer. */
function checkCounts(spec: SpecValues): void {
  const name = spec.get<string | undefined>('name');
  if (name !== undefined && !DNS_LABEL.test(name)) {
    spec.bad('name', 'must be a DNS label: lowercase letters, digits and dashes, starting with a letter, at most 32 characters', 'for example --name prod-k8s');
  }
  const masters = spec.get<number | undefined>('masters');
  if (masters !== undefined && !(MASTER_COUNTS as readonly number[]).includes(masters)) {
    spec.bad('masters', 'must be 1, 3 or 5 (etcd needs an odd number of members to keep a quorum)', `use --masters ${masters > 5 ? 5 : masters % 2 === 0 ? masters + 1 : 1}`);
  }
  const minions = spec.get<number | undefined>('minions');
  if (minions !== undefined && (minions < 0 || minions > MAX_MINIONS)) {
    spec.bad('minions', `must be between 0 and ${MAX_MINIONS}`, `use a count from 0 to ${MAX_MINIONS}; scale further with more clusters`);
  }
  const overlords = spec.get<number | undefined>('overlords');
  if (overlords !== undefined && (overlords < MIN_OVERLORDS || overlords > MAX_OVERLORDS)) {
    spec.bad('overlords', `must be between ${MIN_OVERLORDS} and ${MAX_OVERLORDS} (one bootstrap overlord plus standbys)`, `use --overlords ${overlords < MIN_OVERLORDS ? MIN_OVERLORDS : MAX_OVERLORDS}; 3 survives the loss of any one overlord server`);
  }
  const os = spec.get<string | undefined>('os');
  if (os !== undefined && !(OS_PROFILES as readonly string[]).includes(os)) {
    spec.bad('os', `must be one of ${OS_PROFILES.join(', ')}`, 'use --os flatcar (Flatcar Container Linux) or --os ubuntu');
  }
  const lb = spec.get<string | undefined>('apiLoadBalancer');
  if (lb !== undefined && !(API_LOAD_BALANCERS as readonly string[]).includes(lb)) {
    spec.bad('apiLoadBalancer', `must be one of ${API_LOAD_BALANCERS.join(', ')}`, 'use octavia (an OpenStack load balancer in front of the masters), node-local (a proxy on every minion in front of every master, for clouds without Octavia) or none (nodes use the first master)');
  }
  const renew = spec.get<number | undefined>('certificates.renewBeforeDays');
  if (renew !== undefined && (renew < RENEW_BEFORE_DAYS.min || renew > RENEW_BEFORE_DAYS.max)) {
    spec.bad('certificates.renewBeforeDays', `must be between ${RENEW_BEFORE_DAYS.min} and ${RENEW_BEFORE_DAYS.max} days (certificates are valid 365 days)`, 'use --cert-renew-before-days 30 (the default)');
  }
  const unavailable = spec.get<number | undefined>('rollout.maxUnavailable');
  if (unavailable !== undefined && (unavailable < MAX_UNAVAILABLE.min || unavailable > MAX_UNAVAILABLE.max)) {
    spec.bad('rollout.maxUnavailable', `must be between ${MAX_UNAVAILABLE.min} and ${MAX_UNAVAILABLE.max} minions`, 'use --max-unavailable 1 (the default: one minion drained at a time)');
  }
  const cloud = spec.get<string | undefined>('cloudProvider');
  if (cloud !== undefined && !(CLOUD_PROVIDERS as readonly string[]).includes(cloud)) {
    spec.bad('cloudProvider', `must be one of ${CLOUD_PROVIDERS.join(', ')}`, 'use openstack (LoadBalancer Services and Cinder volumes; the default) or none');
  }

}

/** Every release tag: its form, the Kubernetes minors supported, etcd v3, containerd v2. */
function checkVersions(spec: SpecValues): void {
  for (const [path, label] of [
    ['versions.kubernetes', 'Kubernetes'],
    ['versions.etcd', 'etcd'],
    ['versions.flannel', 'flannel'],
    ['versions.containerd', 'containerd'],
    ['versions.runc', 'runc'],
    ['versions.cniPlugins', 'CNI plugins'],
    ['versions.coredns', 'CoreDNS'],
  ] as const) {
    const v = spec.get<string | undefined>(path);
    if (v === undefined) continue;
    const m = VERSION.exec(v);
    if (!m) {
      spec.bad(path, `must be a release tag vMAJOR.MINOR.PATCH`, `for example ${SPEC_FIELDS.find((f) => f.path === path)!.default}`);
      continue;
    }
    if (path === 'versions.kubernetes' && !(KUBERNETES_MINORS as readonly string[]).includes(`${m[1]}.${m[2]}`)) {
      spec.bad(path, `${label} ${m[1]}.${m[2]} is not supported; supported minors are ${KUBERNETES_MINORS.join(', ')}`, `use a v${KUBERNETES_MINORS.at(-1)}.x release`);
    }
    if (path === 'versions.etcd' && m[1] !== '3') spec.bad(path, 'etcd must be a v3 release', 'use for example v3.6.17');
    if (path === 'versions.containerd' && m[1] !== '2') spec.bad(path, 'containerd must be a v2 release (its config is version 3)', 'use for example v2.3.7');
  }
  const pause = spec.get<string | undefined>('versions.pause');
  if (pause !== undefined && !PAUSE_TAG.test(pause)) spec.bad('versions.pause', 'must be the pause image tag MAJOR.MINOR[.PATCH], without a v', 'for example 3.10.2');

}

/** The networks: valid, disjoint, large enough for the machines and their pod subnets. */
function checkNetworks(spec: SpecValues): void {
  const masters = spec.get<number | undefined>('masters');
  const minions = spec.get<number | undefined>('minions');
  const overlords = spec.get<number | undefined>('overlords');
  const cidrs = new Map<string, Cidr>();
  for (const path of ['network.privateCidr', 'network.podCidr', 'network.serviceCidr', 'network.adminCidr', 'network.nodePortCidr']) {
    const v = spec.get<string | undefined>(path);
    if (v === undefined) continue;
    const c = parseCidr(v);
    if (isCidr(c)) cidrs.set(path, c);
    else spec.bad(path, c.error, 'give an IPv4 network such as 10.240.0.0/16');
  }
  const internal = ['network.privateCidr', 'network.podCidr', 'network.serviceCidr'] as const;
  for (let i = 0; i < internal.length; i++) {
    for (let j = i + 1; j < internal.length; j++) {
      const a = cidrs.get(internal[i]!);
      const b = cidrs.get(internal[j]!);
      if (a && b && cidrsOverlap(a, b)) {
        spec.bad(internal[j]!, `overlaps ${internal[i]} ${a.text}; machine, pod and service networks must be disjoint`, `pick a block outside ${a.text}`);
      }
    }
  }
  const priv = cidrs.get('network.privateCidr');
  const machines = (masters ?? 1) + (minions ?? 0);
  if (priv) {
    // Addresses .1–.31 are reserved (gateway, discovery, overlord); machines and standby overlords get the rest from DHCP.
    const room = cidrSize(priv) - RESERVED_HOSTS - 1;
    const standbys = Math.max((overlords ?? 1) - 1, 0);
    if (priv.prefix > 26) {
      spec.bad('network.privateCidr', 'is too small for a cluster', 'use a /24 or larger');
    } else if (room < machines + standbys + 2) {
      spec.bad('network.privateCidr', `holds ${Math.max(room, 0)} machine addresses, fewer than the ${machines} machines plus ${standbys > 0 ? `${standbys} standby overlords, ` : ''}overlord and discovery`, 'use a larger block, e.g. a /22 for 500 machines');
    }
  }
  const pod = cidrs.get('network.podCidr');
  const subnetLength = spec.get<number | undefined>('network.podSubnetLength');
  if (subnetLength !== undefined && (subnetLength < 16 || subnetLength > 28)) {
    spec.bad('network.podSubnetLength', 'must be between 16 and 28', 'use 24 (254 pods a machine)');
  } else if (pod && subnetLength !== undefined) {
    if (subnetLength <= pod.prefix) {
      spec.bad('network.podCidr', `must be larger than one machine's /${subnetLength} pod subnet`, 'use a /16 or larger');
    } else {
      const subnets = 2 ** (subnetLength - pod.prefix);
      if (subnets < machines) {
        spec.bad('network.podCidr', `holds ${subnets} /${subnetLength} pod subnets, fewer than the ${machines} machines`, `use a /${Math.max(8, subnetLength - Math.ceil(Math.log2(machines)))} or larger`);
      }
    }
  }
  const svc = cidrs.get('network.serviceCidr');
  if (svc && (svc.prefix < 12 || svc.prefix > 24)) {
    spec.bad('network.serviceCidr', 'must be between a /12 and a /24 (kube-apiserver refuses more than 2^20 service IPs)', 'use 10.96.0.0/12');
  }
  const admin = cidrs.get('network.adminCidr');
  if (admin && admin.prefix === 0) {
    spec.bad('network.adminCidr', 'opens SSH and the Kubernetes API to the whole Internet', 'give the network you administer from, e.g. 203.0.113.0/24');
  }
  const vxlan = spec.get<number | undefined>('network.vxlanId');
  if (vxlan !== undefined && (vxlan < 1 || vxlan > 16777215)) spec.bad('network.vxlanId', 'must be between 1 and 16777215', 'use 1');
  for (const ns of spec.get<string[] | undefined>('network.dnsNameservers') ?? []) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(ns) || !isCidr(parseCidr(`${ns}/32`))) {
      spec.bad('network.dnsNameservers', `${JSON.stringify(ns)} is not an IPv4 address`, 'give a comma-separated list such as 1.1.1.1,9.9.9.9');
    }
  }
}

/** OpenStack names, the overlord image, the release mirror and its digests, the registry mirror. */
function checkNames(spec: SpecValues): void {
  for (const path of ['network.externalNetwork', 'openstack.image', 'openstack.keyName', 'openstack.flavors.discovery', 'openstack.flavors.overlord', 'openstack.flavors.master', 'openstack.flavors.minion']) {
    const v = spec.get<string | undefined>(path);
    if (v !== undefined && !FLAVOR_OR_NAME.test(v)) spec.bad(path, 'must be a name or ID without spaces or quotes', 'use the name or ID shown by the openstack CLI');
  }
  const image = spec.get<string | undefined>('overlord.image');
  if (image !== undefined && !IMAGE_REF.test(image)) spec.bad('overlord.image', 'is not a container image reference', 'use for example corekube/overlord:0.1.0');
  const base = spec.get<string | undefined>('releaseBaseUrl');
  if (base !== undefined && !isHttpUrl(base, { path: true })) {
    spec.bad('releaseBaseUrl', 'must be an http(s) URL without a trailing slash', 'give your mirror\'s base URL (corekube mirror build), or leave it out for the upstream releases');
  }
  const digests = spec.get<Record<string, string> | undefined>('releaseDigests');
  for (const [key, digest] of Object.entries(digests ?? {})) {
    if (!SHA256.test(digest)) spec.bad('releaseDigests', `${JSON.stringify(key)} has ${JSON.stringify(digest)}, not a sha256 hex digest`, 'pass the corekube-mirror.json that corekube mirror build wrote, unchanged');
    else if (key.startsWith('/') || key.split('/').includes('..') || /\s/.test(key)) spec.bad('releaseDigests', `${JSON.stringify(key)} is not a relative mirror path`, 'pass the corekube-mirror.json that corekube mirror build wrote, unchanged');
  }
  const registry = spec.get<string | undefined>('registryMirror');
  if (registry !== undefined && !isHttpUrl(registry, { path: false })) {
    spec.bad('registryMirror', 'must be an http(s) URL of a registry host, without a path', 'for example https://registry.example.com:5000');
  }

}

function isHttpUrl(text: string, options: { path: boolean }): boolean {
  try {
    const u = new URL(text);
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return false;
    if (text.endsWith('/') || u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') return false;
    return options.path || u.pathname === '/';
  } catch {
    return false;
  }
}

