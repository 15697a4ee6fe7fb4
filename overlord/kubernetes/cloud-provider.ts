/**
 * The OpenStack cloud provider as add-ons (spec.cloudProvider `openstack`): PURE, from the spec and the cloud's
 * credentials. Two add-ons, applied after CoreDNS by the same applier (addon-applier.ts):
 *
 * - `openstack-cloud-controller-manager`: initialises every Node (kubelets run with `--cloud-provider=external`:
 *   a Node carries `node.cloudprovider.kubernetes.io/uninitialized` until the controller has read its addresses
 *   and provider ID from Nova), and serves `type: LoadBalancer` Services with Octavia. corekube's masters run no
 *   kubelet, so it runs as a Deployment on minions (host network, tolerating the uninitialised taint), not as
 *   the upstream DaemonSet on control-plane Nodes.
 * - `cinder-csi`: the Cinder CSI driver (its CSIDriver, the controller plugin with the attacher, provisioner and
 *   resizer sidecars, the node plugin on every Node) and the default StorageClass `csi-cinder`.
 *
 * Both read `cloud.conf` from the Secret `kube-system/cloud-config`, made here from an application credential
 * (heat/cloud-provider.ts: hidden stack parameters; overlord/trust/cloud-credentials.ts fetches them from Heat).
 * The pods carry the digest of cloud.conf, so a new credential rolls them. The objects follow
 * cloud-provider-openstack's manifests of the pinned release (RBAC rules, args, mounts, probes); the VolumeSnapshot
 * sidecar is left out (a corekube cluster has no snapshot CRDs).
 */
import { createHash } from 'node:crypto';
import type { KubernetesObject } from '@kubernetes/client-node';
import type { ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { InvalidInputError } from '../../core/errors.ts';
import type { OpenStackCloud } from '../../contracts/openstack-cloud.ts';
import { cloudProviderImages, type CloudProviderImages } from '../../release/catalog.ts';
import { hashObjects, MANAGED_BY, type Addon } from './addons.ts';

export const CLOUD_CONFIG_SECRET = Object.freeze({ namespace: 'kube-system', name: 'cloud-config', key: 'cloud.conf' });
export const CCM = Object.freeze({ namespace: 'kube-system', name: 'openstack-cloud-controller-manager', serviceAccount: 'cloud-controller-manager' });
export const CINDER_CSI = Object.freeze({
  driver: 'cinder.csi.openstack.org',
  controller: 'csi-cinder-controllerplugin',
  node: 'csi-cinder-nodeplugin',
  controllerAccount: 'csi-cinder-controller-sa',
  nodeAccount: 'csi-cinder-node-sa',
  storageClass: 'csi-cinder',
});
/** The taint a kubelet with `--cloud-provider=external` registers its Node with, until the controller initialises it. */
export const UNINITIALIZED_TAINT = 'node.cloudprovider.kubernetes.io/uninitialized';

/**
 * cloud.conf (gcfg, as cloud-provider-openstack reads it): every value quoted, `\` and `"` escaped — the
 * values are validated printable, so nothing can start a new key or section.
 */
export function cloudConf(cloud: OpenStackCloud): string {
  const q = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  const section = (name: string, entries: readonly (readonly [string, string | undefined])[]) =>
    [`[${name}]`, ...entries.filter((e): e is readonly [string, string] => e[1] !== undefined).map(([k, v]) => `${k}=${q(v)}`)].join('\n');
  return `${[
    section('Global', [
      ['auth-url', cloud.authUrl],
      ['region', cloud.region],
      ['application-credential-id', cloud.applicationCredentialId],
      ['application-credential-secret', cloud.applicationCredentialSecret],
    ]),
    section('LoadBalancer', [
      ['subnet-id', cloud.subnetId],
      ['floating-network-id', cloud.floatingNetworkId],
      ['create-monitor', 'true'],
    ]),
    section('BlockStorage', [['ignore-volume-az', 'true']]),
  ].join('\n\n')}\n`;
}

/** The cloud provider's add-ons, in apply order: the controller manager (with the Secret), then Cinder CSI. */
export function cloudProviderAddons(spec: ClusterSpec, cloud: OpenStackCloud): Addon[] {
  const images = cloudProviderImages(spec.versions);
  if (images === undefined) throw new InvalidInputError('the OpenStack cloud provider has no release for this Kubernetes version', [{ field: 'versions.kubernetes', value: spec.versions.kubernetes, message: 'has no matching cloud-provider-openstack release', fix: 'use Kubernetes 1.34, 1.35 or 1.36, or --cloud-provider none' }]);
  const conf = cloudConf(cloud);
  const confDigest = createHash('sha256').update(conf).digest('hex');
  return [controllerManager(spec, images.controllerManager, conf, confDigest), cinderCsi(spec, images, confDigest)];
}

const rbac = 'rbac.authorization.k8s.io';
const meta = (name: string, namespace?: string, labels: Record<string, string> = {}) => ({ name, ...(namespace ? { namespace } : {}), labels: { ...labels, ...MANAGED_BY } });
const clusterRole = (name: string, rules: readonly Record<string, unknown>[]) => ({ apiVersion: `${rbac}/v1`, kind: 'ClusterRole', metadata: meta(name), rules }) as KubernetesObject;
const binding = (name: string, role: string, account: string) =>
  ({ apiVersion: `${rbac}/v1`, kind: 'ClusterRoleBinding', metadata: meta(name), roleRef: { apiGroup: rbac, kind: 'ClusterRole', name: role }, subjects: [{ kind: 'ServiceAccount', name: account, namespace: 'kube-system' }] }) as KubernetesObject;
const rule = (apiGroups: string[], resources: string[], verbs: string[]) => ({ apiGroups, resources, verbs });
const LEASES = rule(['coordination.k8s.io'], ['leases'], ['get', 'watch', 'list', 'delete', 'update', 'create']);
const EVENTS = rule([''], ['events'], ['list', 'watch', 'create', 'update', 'patch']);
const CONF_DIGEST = 'corekube.io/cloud-config-sha256';
const CONF_MOUNT = '/etc/config';

function addon(name: string, objects: KubernetesObject[], deployment: string): Addon {
  return Object.freeze({ name, objects: Object.freeze(objects), hash: hashObjects(objects), deployment: { namespace: 'kube-system', name: deployment } });
}

function controllerManager(spec: ClusterSpec, image: string, conf: string, confDigest: string): Addon {
  const { namespace, name, serviceAccount } = CCM;
  return addon(
    name,
    [
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(serviceAccount, namespace) },
      {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: meta(CLOUD_CONFIG_SECRET.name, namespace),
        type: 'Opaque',
        stringData: { [CLOUD_CONFIG_SECRET.key]: conf },
      } as KubernetesObject,
      clusterRole('system:cloud-controller-manager', [
        rule(['coordination.k8s.io'], ['leases'], ['get', 'create', 'update']),
        rule([''], ['events'], ['create', 'patch', 'update']),
        rule([''], ['nodes'], ['*']),
        rule([''], ['nodes/status'], ['patch']),
        rule([''], ['services'], ['list', 'patch', 'update', 'watch']),
        rule([''], ['services/status'], ['patch']),
        rule([''], ['serviceaccounts'], ['create', 'get']),
        rule([''], ['serviceaccounts/token'], ['create']),
        rule([''], ['persistentvolumes'], ['*']),
        rule([''], ['endpoints'], ['create', 'get', 'list', 'watch', 'update']),
        rule([''], ['configmaps'], ['get', 'list', 'watch']),
        rule([''], ['secrets'], ['list', 'get', 'watch']),
      ]),
      binding('system:cloud-controller-manager', 'system:cloud-controller-manager', serviceAccount),
      controllerDeployment(spec, image, confDigest),
    ],
    name,
  );
}

/** The controller manager itself: on minions (masters run no kubelet), two for a leader and a stand-in, one with one minion. */
function controllerDeployment(spec: ClusterSpec, image: string, confDigest: string): KubernetesObject {
  const { namespace, name, serviceAccount } = CCM;
  const labels = { 'k8s-app': name };
  const replicas = spec.minions >= 2 ? 2 : 1;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(name, namespace, labels),
    spec: {
      replicas,
      selector: { matchLabels: labels },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } },
      template: {
        metadata: { labels, annotations: { [CONF_DIGEST]: confDigest } },
        spec: {
          priorityClassName: 'system-cluster-critical',
          serviceAccountName: serviceAccount,
          hostNetwork: true,
          dnsPolicy: 'ClusterFirstWithHostNet',
          securityContext: { runAsUser: 1001, runAsNonRoot: true },
          nodeSelector: { 'kubernetes.io/os': 'linux' },
          tolerations: [
            { key: UNINITIALIZED_TAINT, value: 'true', effect: 'NoSchedule' },
            { key: 'CriticalAddonsOnly', operator: 'Exists' },
            { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoSchedule' },
          ],
          affinity: { podAntiAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [{ labelSelector: { matchLabels: labels }, topologyKey: 'kubernetes.io/hostname' }] } },
          containers: [
            {
              name,
              image,
              imagePullPolicy: 'IfNotPresent',
              args: [
                '/bin/openstack-cloud-controller-manager',
                '--v=1',
                `--cluster-name=${spec.name}`,
                `--cloud-config=${CONF_MOUNT}/${CLOUD_CONFIG_SECRET.key}`,
                '--cloud-provider=openstack',
                '--use-service-account-credentials=false',
                '--bind-address=127.0.0.1',
                '--leader-elect=true',
              ],
              resources: { requests: { cpu: '200m', memory: '64Mi' } },
              securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, readOnlyRootFilesystem: true },
              volumeMounts: [
                { name: 'cloud-config', mountPath: CONF_MOUNT, readOnly: true },
                { name: 'ca-certs', mountPath: '/etc/ssl/certs', readOnly: true },
              ],
            },
          ],
          volumes: [
            { name: 'cloud-config', secret: { secretName: CLOUD_CONFIG_SECRET.name } },
            { name: 'ca-certs', hostPath: { path: '/etc/ssl/certs', type: 'DirectoryOrCreate' } },
          ],
        },
      },
    },
  } as KubernetesObject;
}

function cinderCsi(spec: ClusterSpec, images: CloudProviderImages, confDigest: string): Addon {
  const c = CINDER_CSI;
  return addon(
    'cinder-csi',
    [
      { apiVersion: 'storage.k8s.io/v1', kind: 'CSIDriver', metadata: meta(c.driver), spec: { attachRequired: true, podInfoOnMount: true, volumeLifecycleModes: ['Persistent', 'Ephemeral'] } } as KubernetesObject,
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(c.controllerAccount, 'kube-system') },
      clusterRole('corekube:csi-cinder-attacher', [
        rule([''], ['persistentvolumes'], ['get', 'list', 'watch', 'patch']),
        rule(['storage.k8s.io'], ['csinodes'], ['get', 'list', 'watch']),
        rule(['storage.k8s.io'], ['volumeattachments'], ['get', 'list', 'watch', 'patch']),
        rule(['storage.k8s.io'], ['volumeattachments/status'], ['patch']),
        LEASES,
      ]),
      clusterRole('corekube:csi-cinder-provisioner', [
        rule([''], ['persistentvolumes'], ['get', 'list', 'watch', 'create', 'delete', 'patch']),
        rule([''], ['persistentvolumeclaims'], ['get', 'list', 'watch', 'update']),
        rule(['storage.k8s.io'], ['storageclasses'], ['get', 'list', 'watch']),
        rule([''], ['nodes'], ['get', 'list', 'watch']),
        rule(['storage.k8s.io'], ['csinodes'], ['get', 'list', 'watch']),
        EVENTS,
        rule(['storage.k8s.io'], ['volumeattachments'], ['get', 'list', 'watch']),
        LEASES,
      ]),
      clusterRole('corekube:csi-cinder-resizer', [
        rule([''], ['persistentvolumes'], ['get', 'list', 'watch', 'patch']),
        rule([''], ['persistentvolumeclaims'], ['get', 'list', 'watch']),
        rule([''], ['pods'], ['get', 'list', 'watch']),
        rule([''], ['persistentvolumeclaims/status'], ['patch']),
        EVENTS,
        LEASES,
      ]),
      binding('corekube:csi-cinder-attacher', 'corekube:csi-cinder-attacher', c.controllerAccount),
      binding('corekube:csi-cinder-provisioner', 'corekube:csi-cinder-provisioner', c.controllerAccount),
      binding('corekube:csi-cinder-resizer', 'corekube:csi-cinder-resizer', c.controllerAccount),
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(c.nodeAccount, 'kube-system') },
      clusterRole('corekube:csi-cinder-nodeplugin', [rule([''], ['events'], ['get', 'list', 'watch', 'create', 'update', 'patch'])]),
      binding('corekube:csi-cinder-nodeplugin', 'corekube:csi-cinder-nodeplugin', c.nodeAccount),
      csiControllerPlugin(spec, images, confDigest),
      csiNodePlugin(images, confDigest),
      {
        apiVersion: 'storage.k8s.io/v1',
        kind: 'StorageClass',
        metadata: { ...meta(c.storageClass), annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } },
        provisioner: c.driver,
        reclaimPolicy: 'Delete',
        allowVolumeExpansion: true,
        volumeBindingMode: 'WaitForFirstConsumer',
      } as KubernetesObject,
    ],
    c.controller,
  );
}

/** The CSI controller plugin: the Cinder plugin with the attacher, provisioner and resizer sidecars. */
function csiControllerPlugin(spec: ClusterSpec, images: CloudProviderImages, confDigest: string): KubernetesObject {
  const c = CINDER_CSI;
  const controllerLabels = { app: c.controller };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(c.controller, 'kube-system', controllerLabels),
    spec: {
      replicas: 1,
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      selector: { matchLabels: controllerLabels },
      template: {
        metadata: { labels: controllerLabels, annotations: { [CONF_DIGEST]: confDigest } },
        spec: {
          priorityClassName: 'system-cluster-critical',
          serviceAccountName: c.controllerAccount,
          containers: [
            sidecar('csi-attacher', images.attacher, ['--leader-election=true', '--default-fstype=ext4']),
            sidecar('csi-provisioner', images.provisioner, ['--default-fstype=ext4', '--feature-gates=Topology=true', '--extra-create-metadata', '--leader-election=true']),
            sidecar('csi-resizer', images.resizer, ['--handle-volume-inuse-error=false', '--leader-election=true']),
            { name: 'liveness-probe', image: images.livenessProbe, imagePullPolicy: 'IfNotPresent', args: ['--csi-address=$(ADDRESS)'], env: [{ name: 'ADDRESS', value: `${PROXY_SOCKET}csi.sock` }], volumeMounts: [{ name: 'socket-dir', mountPath: PROXY_SOCKET }] },
            plugin(images, [`--cluster=${spec.name}`, '--pvc-annotations'], [], false),
          ],
          volumes: [{ name: 'socket-dir', emptyDir: {} }, cloudConfigVolume],
        },
      },
    },
  } as KubernetesObject;
}

/** The CSI node plugin on every Node: it mounts volumes for the kubelet (privileged, the kubelet's directory shared both ways). */
function csiNodePlugin(images: CloudProviderImages, confDigest: string): KubernetesObject {
  const c = CINDER_CSI;
  const nodeLabels = { app: c.node };
  const pluginDir = `/var/lib/kubelet/plugins/${c.driver}`;
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: meta(c.node, 'kube-system', nodeLabels),
    spec: {
      selector: { matchLabels: nodeLabels },
      template: {
        metadata: { labels: nodeLabels, annotations: { [CONF_DIGEST]: confDigest } },
        spec: {
          priorityClassName: 'system-node-critical',
          serviceAccountName: c.nodeAccount,
          hostNetwork: true,
          tolerations: [{ operator: 'Exists' }],
          containers: [
            {
              name: 'node-driver-registrar',
              image: images.nodeDriverRegistrar,
              imagePullPolicy: 'IfNotPresent',
              args: ['--csi-address=$(ADDRESS)', '--kubelet-registration-path=$(DRIVER_REG_SOCK_PATH)'],
              env: [
                { name: 'ADDRESS', value: '/csi/csi.sock' },
                { name: 'DRIVER_REG_SOCK_PATH', value: `${pluginDir}/csi.sock` },
                { name: 'KUBE_NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
              ],
              volumeMounts: [{ name: 'socket-dir', mountPath: '/csi' }, { name: 'registration-dir', mountPath: '/registration' }],
            },
            { name: 'liveness-probe', image: images.livenessProbe, imagePullPolicy: 'IfNotPresent', args: ['--csi-address=/csi/csi.sock'], volumeMounts: [{ name: 'socket-dir', mountPath: '/csi' }] },
            plugin(
              images,
              ['--provide-controller-service=false'],
              [
                { name: 'kubelet-dir', mountPath: '/var/lib/kubelet', mountPropagation: 'Bidirectional' },
                { name: 'pods-probe-dir', mountPath: '/dev', mountPropagation: 'HostToContainer' },
              ],
              true,
            ),
          ],
          volumes: [
            { name: 'socket-dir', hostPath: { path: pluginDir, type: 'DirectoryOrCreate' } },
            { name: 'registration-dir', hostPath: { path: '/var/lib/kubelet/plugins_registry/', type: 'Directory' } },
            { name: 'kubelet-dir', hostPath: { path: '/var/lib/kubelet', type: 'Directory' } },
            { name: 'pods-probe-dir', hostPath: { path: '/dev', type: 'Directory' } },
            cloudConfigVolume,
          ],
        },
      },
    },
  } as KubernetesObject;
}

const PROXY_SOCKET = '/var/lib/csi/sockets/pluginproxy/';
const cloudConfigVolume = { name: 'cloud-config', secret: { secretName: CLOUD_CONFIG_SECRET.name } };

/** A CSI sidecar of the controller plugin, on the plugin's socket. */
function sidecar(name: string, image: string, args: string[]) {
  return {
    name,
    image,
    imagePullPolicy: 'IfNotPresent',
    args: ['--csi-address=$(ADDRESS)', '--timeout=3m', ...args],
    env: [{ name: 'ADDRESS', value: `${PROXY_SOCKET}csi.sock` }],
    volumeMounts: [{ name: 'socket-dir', mountPath: PROXY_SOCKET }],
  };
}

/** The Cinder CSI plugin's container, as the controller or a node runs it. */
function plugin(images: CloudProviderImages, extraArgs: string[], mounts: Record<string, unknown>[], privileged: boolean) {
  return {
    name: 'cinder-csi-plugin',
    image: images.cinderCsi,
    imagePullPolicy: 'IfNotPresent',
    args: ['--endpoint=$(CSI_ENDPOINT)', `--cloud-config=${CONF_MOUNT}/${CLOUD_CONFIG_SECRET.key}`, ...extraArgs, '--v=1'],
    env: [{ name: 'CSI_ENDPOINT', value: 'unix://csi/csi.sock' }],
    ports: [{ containerPort: 9808, name: 'healthz', protocol: 'TCP' }],
    livenessProbe: { httpGet: { path: '/healthz', port: 'healthz' }, failureThreshold: 5, initialDelaySeconds: 10, timeoutSeconds: 10, periodSeconds: 60 },
    ...(privileged ? { securityContext: { privileged: true, capabilities: { add: ['SYS_ADMIN'] }, allowPrivilegeEscalation: true } } : {}),
    volumeMounts: [{ name: 'socket-dir', mountPath: '/csi' }, ...mounts, { name: 'cloud-config', mountPath: CONF_MOUNT, readOnly: true }],
  };
}
