import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseClusterSpec } from '../../../clusterspec/cluster-spec.ts';
import { CONFIG_FILES } from '../../../cloud-config/machine-paths.ts';
import { openStackCloudFields, parseOpenStackCloud, type OpenStackCloud } from '../../../contracts/openstack-cloud.ts';
import type { Clock } from '../../../core/clock.ts';
import { CorekubeError, InvalidInputError } from '../../../core/errors.ts';
import type { HttpRequest, Transport } from '../../../cloud/http.ts';
import { createLogger } from '../../../overlord/edges/log.ts';
import { CCM, CINDER_CSI, CLOUD_CONFIG_SECRET, cloudConf, cloudProviderAddons, UNINITIALIZED_TAINT } from '../../../overlord/kubernetes/cloud-provider.ts';
import { CLOUD_STATE_FILE, cloudCredentials } from '../../../overlord/trust/cloud-credentials.ts';
import { CHANNEL_AGENT_FILE } from '../../../overlord/edges/stack-channel.ts';

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; annotations?: Record<string, string> }; [k: string]: any };

const SECRET = 'Xq9-secret_value~with.punctuation';
const cloud: OpenStackCloud = parseOpenStackCloud(
  { auth_url: 'https://keystone.example:5000/v3', region: 'RegionOne', application_credential_id: '0c4f1d2e3a', application_credential_secret: SECRET, subnet_id: 'a1b2-c3', floating_network_id: 'ext-net-1' },
  'test',
);
const spec = parseClusterSpec({ flags: { name: 'demo', minions: '3' } });
const objectsOf = (name: string, s = spec, c = cloud) => cloudProviderAddons(s, c).find((a) => a.name === name)!.objects as Obj[];
const kindOf = (objects: Obj[], kind: string, name?: string) => objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name))!;

describe('the OpenStack cloud credentials (what Heat hands over)', () => {
  it('names every bad field with its fix, and never shows the secret', () => {
    let err: unknown;
    try {
      parseOpenStackCloud({ auth_url: 'keystone:5000', application_credential_id: 'bad id', application_credential_secret: 'has space', subnet_id: '' }, 'metadata');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidInputError);
    const problems = (err as InvalidInputError).problems;
    expect(problems.map((p) => p.field)).toEqual(['metadata.auth_url', 'metadata.region', 'metadata.application_credential_id', 'metadata.application_credential_secret', 'metadata.subnet_id']);
    expect((err as Error).message).not.toContain('has space');
    expect(problems.find((p) => p.field.endsWith('secret'))!.value).toBe('[redacted]');
  });
});

describe('cloud.conf', () => {
  it('holds the application credential, the load balancers\' subnet and floating network, every value quoted', () => {
    expect(cloudConf(cloud)).toBe(
      [
        '[Global]',
        'auth-url="https://keystone.example:5000/v3"',
        'region="RegionOne"',
        'application-credential-id="0c4f1d2e3a"',
        `application-credential-secret="${SECRET}"`,
        '',
        '[LoadBalancer]',
        'subnet-id="a1b2-c3"',
        'floating-network-id="ext-net-1"',
        'create-monitor="true"',
        '',
        '[BlockStorage]',
        'ignore-volume-az="true"',
        '',
      ].join('\n'),
    );
  });

  it('escapes quotes and backslashes, so no value can open a key or a section', () => {
    const odd = parseOpenStackCloud({ ...openStackCloudFields(cloud), application_credential_secret: 'a"b\\c]\n[x' .replace('\n', '') }, 'test');
    expect(cloudConf(odd)).toContain('application-credential-secret="a\\"b\\\\c][x"');
    const { floatingNetworkId: _f, ...noFloating } = cloud;
    expect(cloudConf(noFloating)).not.toContain('floating-network-id');
  });
});

describe('the cloud provider add-ons', () => {
  it('are the controller manager (with the cloud-config Secret) and Cinder CSI, in apply order', () => {
    const addons = cloudProviderAddons(spec, cloud);
    expect(addons.map((a) => [a.name, a.deployment.name])).toEqual([
      ['openstack-cloud-controller-manager', 'openstack-cloud-controller-manager'],
      ['cinder-csi', 'csi-cinder-controllerplugin'],
    ]);
    expect(objectsOf('openstack-cloud-controller-manager').map((o) => o.kind)).toEqual(['ServiceAccount', 'Secret', 'ClusterRole', 'ClusterRoleBinding', 'Deployment']);
    expect(objectsOf('cinder-csi').map((o) => o.kind)).toEqual([
      'CSIDriver', 'ServiceAccount', 'ClusterRole', 'ClusterRole', 'ClusterRole', 'ClusterRoleBinding', 'ClusterRoleBinding', 'ClusterRoleBinding',
      'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Deployment', 'DaemonSet', 'StorageClass',
    ]);
    const secret = kindOf(objectsOf('openstack-cloud-controller-manager'), 'Secret');
    expect(secret.metadata).toMatchObject({ namespace: 'kube-system', name: CLOUD_CONFIG_SECRET.name });
    expect(secret.stringData).toEqual({ 'cloud.conf': cloudConf(cloud) });
  });

  it('runs the controller on minions (masters run no kubelet): host network, tolerating the uninitialised taint, one per minion up to two, named after the cluster', () => {
    const d = kindOf(objectsOf('openstack-cloud-controller-manager'), 'Deployment');
    expect(d.spec.replicas).toBe(2);
    expect(kindOf(objectsOf('openstack-cloud-controller-manager', parseClusterSpec({ flags: { name: 'demo', minions: '1' } })), 'Deployment').spec.replicas).toBe(1);
    const pod = d.spec.template.spec;
    expect(pod.hostNetwork).toBe(true);
    expect(pod.tolerations).toContainEqual({ key: UNINITIALIZED_TAINT, value: 'true', effect: 'NoSchedule' });
    expect(pod.containers[0].image).toBe('registry.k8s.io/provider-os/openstack-cloud-controller-manager:v1.36.0');
    expect(pod.containers[0].args).toContain('--cluster-name=demo');
    expect(pod.containers[0].args).toContain('--cloud-config=/etc/config/cloud.conf');
    expect(pod.serviceAccountName).toBe(CCM.serviceAccount);
  });

  it('pins the cloud provider release of the Kubernetes minor and its CSI sidecars; Cinder\'s StorageClass is the default', () => {
    const older = parseClusterSpec({ flags: { name: 'demo', 'kubernetes-version': 'v1.34.4' } });
    expect(kindOf(objectsOf('cinder-csi', older), 'Deployment').spec.template.spec.containers.map((c: { image: string }) => c.image)).toEqual([
      'registry.k8s.io/sig-storage/csi-attacher:v4.10.0',
      'registry.k8s.io/sig-storage/csi-provisioner:v5.3.0',
      'registry.k8s.io/sig-storage/csi-resizer:v1.14.0',
      'registry.k8s.io/sig-storage/livenessprobe:v2.17.0',
      'registry.k8s.io/provider-os/cinder-csi-plugin:v1.34.1',
    ]);
    const sc = kindOf(objectsOf('cinder-csi'), 'StorageClass');
    expect(sc).toMatchObject({ provisioner: CINDER_CSI.driver, allowVolumeExpansion: true, volumeBindingMode: 'WaitForFirstConsumer' });
    expect(sc.metadata.annotations).toEqual({ 'storageclass.kubernetes.io/is-default-class': 'true' });
    const node = kindOf(objectsOf('cinder-csi'), 'DaemonSet').spec.template.spec;
    expect(node.containers.find((c: { name: string }) => c.name === 'cinder-csi-plugin').volumeMounts).toContainEqual({ name: 'kubelet-dir', mountPath: '/var/lib/kubelet', mountPropagation: 'Bidirectional' });
  });

  it('rolls the pods when the credential changes (cloud.conf\'s digest in their template), and only then', () => {
    const digest = (c: OpenStackCloud) => kindOf(objectsOf('cinder-csi', spec, c), 'DaemonSet').spec.template.metadata.annotations['corekube.io/cloud-config-sha256'];
    expect(digest(cloud)).toBe(digest({ ...cloud }));
    expect(digest({ ...cloud, applicationCredentialSecret: 'rotated' })).not.toBe(digest(cloud));
    expect(JSON.stringify(kindOf(objectsOf('cinder-csi'), 'DaemonSet'))).not.toContain(SECRET);
  });
});

describe('the overlord reads the credentials from Heat', () => {
  let dir: string;
  let configDir: string;
  let stateDir: string;
  const lines: string[] = [];
  const log = createLogger({ format: 'json', destination: new Writable({ write: (c, _e, done) => (lines.push(String(c)), done()) }) });
  const clock: Clock = { now: () => Date.now(), sleep: async () => {} };
  const PASSWORD = 'qx#t@V3TQe%ZPX^DY1JD!n7z&jDlc6*x';
  const metadata = { corekube_cloud: openStackCloudFields(cloud), 'os-collect-config': { heat: { password: PASSWORD } } };
  const calls: HttpRequest[] = [];
  let heatUp = true;
  const transport = (service: string): Transport => async (req) => {
    calls.push(req);
    if (!heatUp) throw new CorekubeError('E_HEAT', `${service} ${req.method} ${req.url} failed: ECONNREFUSED`, { retryable: true });
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) => ({ status, headers: new Headers(headers), body });
    if (req.url === 'https://keystone.example:5000/v3/auth/tokens') {
      const catalog = [{ type: 'orchestration', endpoints: [{ interface: 'internal', region_id: 'RegionOne', url: 'http://internal:8004/v1/p' }, { interface: 'public', region_id: 'RegionOne', url: 'https://heat.example:8004/v1/p' }] }];
      return json(201, { token: { project: { id: 'p1' }, catalog } }, { 'X-Subject-Token': 'tok123' });
    }
    if (req.url === 'https://heat.example:8004/v1/p/stacks/demo/5678/resources/overlord_channel/metadata') {
      return req.headers?.['X-Auth-Token'] === 'tok123' ? json(200, { metadata }) : json(403, { error: { message: 'no' } });
    }
    return json(404, null);
  };
  const deps = () => ({ configDir, stateDir, clock, log, transport, backoff: { initialMs: 1, maxMs: 1 }, attempts: 2 });

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-cloud-'));
    configDir = path.join(dir, 'etc');
    stateDir = path.join(dir, 'state');
    await mkdir(path.join(configDir, 'heat/cloud'), { recursive: true });
    await mkdir(stateDir, { mode: 0o700 });
    const files: Record<string, string> = {
      [CONFIG_FILES.cloudAuthUrl]: 'https://keystone.example:5000/v3/',
      [CONFIG_FILES.cloudUserId]: 'u1',
      [CONFIG_FILES.cloudPassword]: PASSWORD,
      [CONFIG_FILES.cloudProjectId]: 'p1',
      [CONFIG_FILES.cloudStackId]: 'demo/5678',
    };
    for (const [f, v] of Object.entries(files)) await writeFile(path.join(configDir, f), `${v}\n`);
    calls.length = 0;
    lines.length = 0;
    heatUp = true;
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('asks Keystone for a token as the stack user, reads overlord_channel\' metadata from Heat\'s public endpoint, and keeps it 0600', async () => {
    expect(await cloudCredentials(deps())).toEqual(cloud);
    expect(calls.map((c) => c.url)).toEqual(['https://keystone.example:5000/v3/auth/tokens', 'https://heat.example:8004/v1/p/stacks/demo/5678/resources/overlord_channel/metadata']);
    expect(calls[0]!.body).toEqual({ auth: { identity: { methods: ['password'], password: { user: { id: 'u1', password: PASSWORD } } }, scope: { project: { id: 'p1' } } } });
    const kept = path.join(stateDir, CLOUD_STATE_FILE);
    expect((await stat(kept)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(kept, 'utf8'))).toEqual(openStackCloudFields(cloud));
    const logged = lines.join('');
    expect(logged).toContain('0c4f1d2e3a');
    for (const secret of [SECRET, PASSWORD, 'tok123']) expect(logged).not.toContain(secret);
  });

  it('uses the kept copy when Heat does not answer, and a standby (no stack user) the copy it was handed', async () => {
    await cloudCredentials(deps());
    heatUp = false;
    expect(await cloudCredentials(deps())).toEqual(cloud);
    expect(lines.join('')).toContain('cloud.credentials-kept');
    await rm(path.join(configDir, 'heat'), { recursive: true });
    expect(await cloudCredentials(deps())).toEqual(cloud);
  });

  it('fails with E_HEAT and what to do when it has neither', async () => {
    heatUp = false;
    await expect(cloudCredentials(deps())).rejects.toMatchObject({ code: 'E_HEAT' });
    await rm(path.join(configDir, 'heat'), { recursive: true });
    await rm(path.join(stateDir, CHANNEL_AGENT_FILE));
    await expect(cloudCredentials(deps())).rejects.toMatchObject({ code: 'E_HEAT', hint: expect.stringContaining('--cloud-provider none') });
  });
});
