import { describe, expect, it } from 'vitest';
import { clusterAddons, COREDNS, MANAGED_BY } from '../../../overlord/kubernetes/addons.ts';
import { clusterImages } from '../../../release/catalog.ts';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: any };

const spec = parseClusterSpec({ flags: { name: 'demo', masters: '1', minions: '2' } });
const coredns = () => clusterAddons(spec)[0]!;
const objectOf = (kind: string, objects = coredns().objects as Obj[]) => {
  const o = objects.find((x) => x.kind === kind);
  if (!o) throw new Error(`no ${kind}`);
  return o;
};

describe('the cluster add-ons', () => {
  it('are CoreDNS: its account and RBAC first, then its Corefile, the kube-dns Service and the Deployment whose availability says it works', () => {
    const addons = clusterAddons(spec);
    expect(addons.map((a) => a.name)).toEqual(['coredns']);
    expect(coredns().objects.map((o) => `${o.kind} ${o.metadata?.namespace ?? '-'}/${o.metadata?.name}`)).toEqual([
      'ServiceAccount kube-system/coredns',
      'ClusterRole -/system:coredns',
      'ClusterRoleBinding -/system:coredns',
      'ConfigMap kube-system/coredns',
      'Service kube-system/kube-dns',
      'Deployment kube-system/coredns',
    ]);
    expect(coredns().deployment).toEqual({ namespace: 'kube-system', name: 'coredns' });
    for (const o of coredns().objects) expect(o.metadata?.labels, `${o.kind} ${o.metadata?.name}`).toMatchObject(MANAGED_BY);
  });

  it('put the kube-dns Service at the cluster DNS address every kubelet hands its pods (the 10th of the service CIDR)', () => {
    expect(objectOf('Service').spec).toMatchObject({ clusterIP: '10.96.0.10', selector: { 'k8s-app': 'kube-dns' } });
    expect(objectOf('Service').spec.ports.map((p: { name: string; port: number; protocol: string }) => `${p.name} ${p.port}/${p.protocol}`)).toEqual(['dns 53/UDP', 'dns-tcp 53/TCP', 'metrics 9153/TCP']);
    const other = clusterAddons(parseClusterSpec({ flags: { name: 'demo', 'service-cidr': '10.100.0.0/16' } }))[0]!;
    expect(objectOf('Service', other.objects as Obj[]).spec.clusterIP).toBe('10.100.0.10');
  });

  it("run the spec's CoreDNS image (registry.k8s.io, which a registry mirror serves), selected by the Service's labels", () => {
    const d = objectOf('Deployment');
    expect(d.spec.template.spec.containers.map((c: { image: string }) => c.image)).toEqual([clusterImages(spec.versions).coredns]);
    expect(clusterImages(spec.versions).coredns).toBe(`registry.k8s.io/coredns/coredns:${spec.versions.coredns}`);
    expect(d.spec.replicas).toBe(COREDNS.replicas);
    expect(d.spec.selector.matchLabels).toEqual(objectOf('Service').spec.selector);
    expect(d.spec.template.metadata.labels).toMatchObject(d.spec.selector.matchLabels);
    expect(d.spec.template.spec.serviceAccountName).toBe('coredns');
    // forwards to the node's upstream servers (corekube-resolv-conf), not to itself
    expect(d.spec.template.spec.dnsPolicy).toBe('Default');
    expect(d.spec.template.spec.containers[0].securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'], add: ['NET_BIND_SERVICE'] } });
  });

  it('grant CoreDNS only list and watch of what its kubernetes plugin reads, bound to its own account', () => {
    expect(objectOf('ClusterRole').rules).toEqual([
      { apiGroups: [''], resources: ['endpoints', 'services', 'pods', 'namespaces'], verbs: ['list', 'watch'] },
      { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
    ]);
    expect(objectOf('ClusterRoleBinding')).toMatchObject({
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:coredns' },
      subjects: [{ kind: 'ServiceAccount', name: 'coredns', namespace: 'kube-system' }],
    });
  });

  it('serve the cluster domain and forward everything else to the upstream servers', () => {
    const corefile: string = objectOf('ConfigMap').data.Corefile;
    expect(corefile).toContain('    kubernetes cluster.local in-addr.arpa ip6.arpa {\n');
    expect(corefile).toContain('    forward . /etc/resolv.conf {\n');
    expect(corefile).toMatch(/^\.:53 \{\n/);
    expect(corefile).toContain('    ready\n');
    expect(corefile).toContain('    loop\n');
  });

  it('hash what they apply: the same spec the same hash, a new CoreDNS version or service CIDR another', () => {
    expect(coredns().hash).toMatch(/^[0-9a-f]{64}$/);
    expect(clusterAddons(spec)[0]!.hash).toBe(coredns().hash);
    expect(clusterAddons(parseClusterSpec({ flags: { name: 'demo', 'coredns-version': 'v1.12.4' } }))[0]!.hash).not.toBe(coredns().hash);
    expect(clusterAddons(parseClusterSpec({ flags: { name: 'demo', 'service-cidr': '10.100.0.0/16' } }))[0]!.hash).not.toBe(coredns().hash);
  });
});
