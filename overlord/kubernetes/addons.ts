/**
 * The add-ons a corekube cluster runs, as Kubernetes objects: PURE, from the spec alone. What kubeadm leaves a
 * cluster with beyond the control plane is cluster DNS: CoreDNS (service account, RBAC, its Corefile, the
 * Deployment, and the `kube-dns` Service at the cluster DNS address every kubelet hands its pods). The
 * overlord applies them with server-side apply once the API server is ready (addon-applier.ts), again whenever
 * their hash changes; kube-proxy, flannel and the kubelets run as systemd units, not as add-ons.
 *
 * The objects follow kubeadm's CoreDNS manifests (cmd/kubeadm/app/phases/addons/dns): the same RBAC, Corefile,
 * probes and security context. The image comes from registry.k8s.io, or through the spec's registry mirror.
 */
import { createHash } from 'node:crypto';
import type { KubernetesObject } from '@kubernetes/client-node';
import { clusterImages } from '../../release/catalog.ts';
import { addressPlan } from '../../clusterspec/address-plan.ts';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { CLUSTER_DOMAIN } from '../../units/layout.ts';

export interface Addon {
  readonly name: string;
  /** in apply order (what others reference first) */
  readonly objects: readonly KubernetesObject[];
  /** sha256 over the objects: a new hash is applied again */
  readonly hash: string;
  /** the Deployment whose availability says the add-on works */
  readonly deployment: { readonly namespace: string; readonly name: string };
}

export const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'corekube' } as const;
export const COREDNS = Object.freeze({ namespace: 'kube-system', name: 'coredns', service: 'kube-dns', replicas: 2 });

export function clusterAddons(spec: ClusterSpec): Addon[] {
  return [coreDns(spec)];
}

function coreDns(spec: ClusterSpec): Addon {
  const { namespace, name } = COREDNS;
  const labels = { 'k8s-app': 'kube-dns', ...MANAGED_BY };
  const corefile = [
    '.:53 {',
    '    errors',
    '    health {',
    '       lameduck 5s',
    '    }',
    '    ready',
    `    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {`,
    '       pods insecure',
    '       fallthrough in-addr.arpa ip6.arpa',
    '       ttl 30',
    '    }',
    '    prometheus :9153',
    '    forward . /etc/resolv.conf {',
    '       max_concurrent 1000',
    '    }',
    '    cache 30 {',
    `       disable success ${CLUSTER_DOMAIN}`,
    `       disable denial ${CLUSTER_DOMAIN}`,
    '    }',
    '    loop',
    '    reload',
    '    loadbalance',
    '}',
    '',
  ].join('\n');
  const objects: KubernetesObject[] = [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace, labels: { ...MANAGED_BY } } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: 'system:coredns', labels: { ...MANAGED_BY } },
      rules: [
        { apiGroups: [''], resources: ['endpoints', 'services', 'pods', 'namespaces'], verbs: ['list', 'watch'] },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['list', 'watch'] },
      ],
    } as KubernetesObject,
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: 'system:coredns', labels: { ...MANAGED_BY } },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:coredns' },
      subjects: [{ kind: 'ServiceAccount', name, namespace }],
    } as KubernetesObject,
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace, labels: { ...MANAGED_BY } }, data: { Corefile: corefile } } as KubernetesObject,
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: COREDNS.service, namespace, labels: { ...labels, 'kubernetes.io/name': 'CoreDNS' }, annotations: { 'prometheus.io/port': '9153', 'prometheus.io/scrape': 'true' } },
      spec: {
        selector: { 'k8s-app': 'kube-dns' },
        clusterIP: addressPlan(spec).clusterDnsIp,
        ports: [
          { name: 'dns', port: 53, protocol: 'UDP', targetPort: 53 },
          { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53 },
          { name: 'metrics', port: 9153, protocol: 'TCP', targetPort: 9153 },
        ],
      },
    } as KubernetesObject,
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name, namespace, labels },
      spec: {
        replicas: COREDNS.replicas,
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
        selector: { matchLabels: { 'k8s-app': 'kube-dns' } },
        template: {
          metadata: { labels: { 'k8s-app': 'kube-dns' } },
          spec: {
            priorityClassName: 'system-cluster-critical',
            serviceAccountName: name,
            tolerations: [{ key: 'CriticalAddonsOnly', operator: 'Exists' }],
            nodeSelector: { 'kubernetes.io/os': 'linux' },
            affinity: {
              podAntiAffinity: {
                preferredDuringSchedulingIgnoredDuringExecution: [
                  { weight: 100, podAffinityTerm: { labelSelector: { matchExpressions: [{ key: 'k8s-app', operator: 'In', values: ['kube-dns'] }] }, topologyKey: 'kubernetes.io/hostname' } },
                ],
              },
            },
            containers: [
              {
                name: 'coredns',
                image: clusterImages(spec.versions).coredns,
                imagePullPolicy: 'IfNotPresent',
                resources: { limits: { memory: '170Mi' }, requests: { cpu: '100m', memory: '70Mi' } },
                args: ['-conf', '/etc/coredns/Corefile'],
                volumeMounts: [{ name: 'config-volume', mountPath: '/etc/coredns', readOnly: true }],
                ports: [
                  { containerPort: 53, name: 'dns', protocol: 'UDP' },
                  { containerPort: 53, name: 'dns-tcp', protocol: 'TCP' },
                  { containerPort: 9153, name: 'metrics', protocol: 'TCP' },
                  { containerPort: 8080, name: 'liveness-probe', protocol: 'TCP' },
                  { containerPort: 8181, name: 'readiness-probe', protocol: 'TCP' },
                ],
                securityContext: { allowPrivilegeEscalation: false, capabilities: { add: ['NET_BIND_SERVICE'], drop: ['ALL'] }, readOnlyRootFilesystem: true },
                livenessProbe: { httpGet: { path: '/health', port: 'liveness-probe', scheme: 'HTTP' }, initialDelaySeconds: 60, timeoutSeconds: 5, successThreshold: 1, failureThreshold: 5 },
                readinessProbe: { httpGet: { path: '/ready', port: 'readiness-probe', scheme: 'HTTP' } },
              },
            ],
            dnsPolicy: 'Default',
            volumes: [{ name: 'config-volume', configMap: { name, items: [{ key: 'Corefile', path: 'Corefile' }] } }],
          },
        },
      },
    } as KubernetesObject,
  ];
  return Object.freeze({ name: 'coredns', objects: Object.freeze(objects), hash: hashObjects(objects), deployment: { namespace, name } });
}

export function hashObjects(objects: readonly KubernetesObject[]): string {
  return createHash('sha256').update(JSON.stringify(objects)).digest('hex');
}
