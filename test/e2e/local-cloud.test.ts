/**
 * The local cloud end to end — what `corekube demo --scale` runs (localcloud/local-cloud.ts): a real Heat
 * (Keystone + heat-all) creates corekube's generated template; every server is a systemd-nspawn machine booted
 * by a real cloud-init from the user_data Heat resolved; the overlord (the image built from overlord/Dockerfile,
 * on the host's private Docker engine) makes the cluster's trust, deploys 1 master and 2 minions with the real
 * Kubernetes, etcd, flannel, containerd, runc and CNI plugins (built from their Go modules at the pinned
 * versions), applies CoreDNS, and signals cluster_ready once every Node is Ready; then a Heat PATCH raises
 * minion_count and one more machine becomes a Ready Node. Asserted from the machines (cloud-init, units, the
 * programs' versions, systemd's invocation ids), from discovery's etcd (records, ledger, flannel's config and
 * leases), from the cluster with the real kubectl (Nodes, podCIDRs, a workload on every minion, pod traffic
 * across minions, a Service, CoreDNS, the metadata service refused to pods), from Heat (status, events,
 * outputs), from `docker logs overlord`, and for secrets (also in every node's journal); then the teardown
 * leaves nothing behind.
 *
 * Net 10.200.<k>.0/24 with k = 61 (+ $COREKUBE_TEST_NET_OFFSET); Heat's fixed ports 5000/8004/8000.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HeatClient, Stack, StackEvent } from '../../cloud/heat-client.ts';
import { configPath, MACHINE_PATHS, OVERLORD_IMAGE_USER } from '../../cloud-config/machine-paths.ts';
import { findSecrets } from '../../core/secrets.ts';
import { MACHINE_SECRET_NAME, ROOT_PASSWORD_NAME } from '../../overlord/trust/discovery-auth.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import { parseMachineRecord } from '../../contracts/machine-record.ts';
import type { Role } from '../../contracts/roles.ts';
import { UNITS } from '../../units/index.ts';
import { DISCOVERY_CLIENT_PATHS, PKI_PATHS } from '../../units/pki-paths.ts';
import { DOCKER_STANDIN_PACKAGE } from '../../localcloud/mirrors/apt-repo.ts';
import { deployWorkload, Kubectl, nodeRows, runClusterChecks, workloadPods, type WorkloadPod } from '../../localcloud/cluster-checks.ts';
import { dockerMissing } from '../../localcloud/docker.ts';
import { localCloudMissing, openLocalCloud } from '../../localcloud/local-cloud.ts';
import type { LocalCloud, LocalCloudEvent } from '../../localcloud/cloud.ts';
import type { Machine } from '../../localcloud/machines/machines.ts';
import { netFromEnv } from '../harness/machines.ts';
import { missingParts } from '../harness/requirements.ts';
import { until } from '../../localcloud/until.ts';
import { scaleDownOne } from '../../localcloud/scale-down.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { cloudProviderAddons } from '../../overlord/kubernetes/cloud-provider.ts';
import { parseOpenStackCloud } from '../../contracts/openstack-cloud.ts';

const skip = missingParts(localCloudMissing(), process.env.CI ? dockerMissing() : undefined);
const NET = netFromEnv(61);
const NAME = 'lc';
const MODE = dockerMissing() === undefined ? 'docker' : 'process';

const unitsOf = (role: Role) => UNITS.filter((u) => u.roles.includes(role)).map((u) => u.unit);
/** what each role's programs say of their versions, from the spec's pins */
const VERSIONS: Record<Role, readonly [string[], string][]> = {
  master: [[['/opt/corekube/bin/kube-apiserver', '--version'], 'Kubernetes v1.36.5'], [['/opt/corekube/bin/etcd', '--version'], 'etcd Version: 3.6.17'], [['/opt/corekube/bin/flanneld', '--version'], 'v0.28.10']],
  minion: [[['/opt/corekube/bin/kubelet', '--version'], 'Kubernetes v1.36.5'], [['/opt/corekube/bin/containerd', '--version'], 'v2.3.7'], [['/opt/corekube/bin/runc', '--version'], 'runc version 1.4.4'], [['/opt/corekube/bin/flanneld', '--version'], 'v0.28.10']],
};

describe.skipIf(skip)('the local cloud: a real Heat creates the generated template, the overlord deploys every machine (e2e)', () => {
  let cloud: LocalCloud | undefined;
  let heat: HeatClient;
  let created: Stack;
  let createEvents: StackEvent[] = [];
  const events: LocalCloudEvent[] = [];
  const overlordLines: string[] = [];
  const standbyLines: string[] = [];
  const standbyJson = () => standbyLines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  let tornDown = false;

  const boots = () => [...cloud!.nova.boots.values()];
  const machinesOf = (role: string): Machine[] => boots().filter((b) => b.role === role).map((b) => b.machine!).sort((a, b) => a.ip.localeCompare(b.ip, 'en', { numeric: true }));
  const one = (role: string): Machine => machinesOf(role)[0]!;
  const nodes = (): { m: Machine; role: Role }[] => [...machinesOf('master').map((m) => ({ m, role: 'master' as Role })), ...machinesOf('minion').map((m) => ({ m, role: 'minion' as Role }))];
  const run = async (m: Machine, argv: string[]) => {
    const r = await m.exec(argv, { timeoutMs: 30_000 });
    return { ...r, out: r.stdout.trim() };
  };
  /** one systemd property of each unit (`systemctl show` separates units by an empty line) */
  const unitProperty = async (m: Machine, role: Role, property: string): Promise<Record<string, string>> => {
    const units = unitsOf(role);
    const values = (await run(m, ['systemctl', 'show', '--property', property, ...units])).stdout.trim().split(/\n\s*\n/);
    return Object.fromEntries(units.map((u, i) => [u, (values[i] ?? '').trim().replace(`${property}=`, '')]));
  };
  /** each unit's systemd invocation id: a unit started again gets a new one */
  const invocations = (m: Machine, role: Role) => unitProperty(m, role, 'InvocationID');
  let kubectl: Kubectl;
  let pods: WorkloadPod[] = [];
  const jsonLines = () => overlordLines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);

  beforeAll(async () => {
    cloud = await openLocalCloud({
      masters: 1, minions: 2, overlords: 2, net: NET, name: NAME, overlord: MODE,
      onEvent: (e) => events.push(e),
      onOverlordLine: (l) => overlordLines.push(l),
      onStandbyLine: (_name, l) => standbyLines.push(l),
    });
    heat = await cloud.heat();
    created = await cloud.create();
    createEvents = await heat.events(cloud.stack!);
    kubectl = new Kubectl(cloud.kubectl, await cloud.kubeconfig());
  }, 900_000);

  afterAll(async () => {
    if (!tornDown) await cloud?.teardown();
  }, 120_000);

  it('creates the stack through Heat: CREATE_COMPLETE only after the overlord signalled cluster_ready', () => {
    expect(created.status).toBe('CREATE_COMPLETE');
    const at = (resource: string, status: string) => createEvents.findIndex((e) => e.resourceName === resource && e.status === status);
    const signalled = createEvents.find((e) => e.resourceName === 'cluster_ready_handle' && e.status === 'SIGNAL_COMPLETE');
    expect(signalled?.statusReason).toContain('1 masters and 2 minions deployed, every Node Ready, the add-ons available');
    expect(at('cluster_ready', 'CREATE_COMPLETE')).toBeGreaterThan(at('cluster_ready_handle', 'SIGNAL_COMPLETE'));
    expect(at(NAME, 'CREATE_COMPLETE')).toBeGreaterThan(at('cluster_ready', 'CREATE_COMPLETE'));
    // the boot order of the trust bootstrap: discovery only once overlord_ready has its data
    expect(at('discovery', 'CREATE_IN_PROGRESS')).toBeGreaterThan(at('overlord_ready', 'CREATE_COMPLETE'));
    expect(at('masters', 'CREATE_IN_PROGRESS')).toBeGreaterThan(at('discovery_ready', 'CREATE_COMPLETE'));
  });

  it('reads the outputs back from Heat: the addresses are the machines\'', () => {
    const outputs = Object.fromEntries(created.outputs.map((o) => [o.key, o.value]));
    const base = `10.200.${NET}`;
    expect(one('discovery').ip).toBe(`${base}.10`);
    expect(one('overlord').ip).toBe(`${base}.11`);
    expect(outputs).toMatchObject({
      discovery_ip: one('discovery').ip,
      discovery_endpoint: `https://${one('discovery').ip}:2379`,
      overlord_ip: one('overlord').ip,
      overlord_public_ip: one('overlord').ip,
      master_ips: machinesOf('master').map((m) => m.ip),
      api_endpoint: `https://${one('master').ip}:6443`,
      follow_progress: `ssh ubuntu@${one('overlord').ip} sudo docker logs -f overlord`,
      overlord_standby_ips: machinesOf('overlord-standby').map((m) => m.ip),
    });
    expect([...(outputs.minion_ips as string[])].sort()).toEqual(machinesOf('minion').map((m) => m.ip).sort());
    // the masters at the address plan's fixed addresses (.20 on), the minions by DHCP from the allocation pool (.32 on)
    expect(machinesOf('master').map((m) => m.ip)).toEqual([`${base}.20`]);
    for (const m of machinesOf('minion')) expect(Number(m.ip.split('.')[3])).toBeGreaterThanOrEqual(32);
  });

  it('booted every machine through cloud-init from the user_data Heat resolved, which finished cleanly', async () => {
    expect(boots().map((b) => b.role).sort()).toEqual(['discovery', 'master', 'minion', 'minion', 'overlord', 'overlord-standby']);
    for (const b of boots()) {
      expect(b.server.userData.startsWith('#cloud-config\n'), b.server.name).toBe(true);
      expect(b.server.userData, b.server.name).not.toMatch(/%%COREKUBE_[A-Z_]+%%/);
      const status = await run(b.machine!, ['cloud-init', 'status', '--long']);
      expect(status.code, `${b.server.name}: ${status.stdout}`).toBe(0);
      expect(status.out).toContain('status: done');
      expect((await run(b.machine!, ['systemctl', 'is-system-running'])).out, b.server.name).toBe('running');
    }
  });

  it('runs the overlord server\'s unit for real: docker.io installed from the local apt repository, state and secrets given to the image\'s user', async () => {
    const overlord = one('overlord');
    expect((await run(overlord, ['dpkg-query', '-W', '-f', '${Version}', 'docker.io'])).out).toBe(DOCKER_STANDIN_PACKAGE.version);
    expect((await run(overlord, ['systemctl', 'is-active', 'overlord.service'])).out).toBe('active');
    const owner = `${OVERLORD_IMAGE_USER.uid} ${OVERLORD_IMAGE_USER.gid}`;
    expect((await run(overlord, ['stat', '-c', '%u %g %a', MACHINE_PATHS.overlordState])).out).toBe(`${owner} 700`);
    for (const f of [configPath('joinToken'), configPath('readyHeader'), configPath('clusterReadyHeader')]) {
      expect((await run(overlord, ['stat', '-c', '%u %g %a', f])).out, f).toBe(`${owner} 600`);
    }
    // the container wrote its state there, as the image's user
    expect((await run(overlord, ['stat', '-c', '%u %a', `${MACHINE_PATHS.overlordState}/pki/ca/discovery.key`])).out).toBe(`${OVERLORD_IMAGE_USER.uid} 600`);
  });

  it('deploys every master and minion with the real programs at the pinned versions: every unit active, none restarted', async () => {
    for (const { m, role } of nodes()) {
      const units = unitsOf(role);
      const states = (await run(m, ['systemctl', 'is-active', ...units])).stdout.trim().split('\n');
      expect(Object.fromEntries(units.map((u, i) => [u, states[i]])), m.hostname).toEqual(Object.fromEntries(units.map((u) => [u, 'active'])));
      expect(await unitProperty(m, role, 'NRestarts'), `${m.hostname}: no unit restarted`).toEqual(Object.fromEntries(units.map((u) => [u, '0'])));
      expect(Object.values(await invocations(m, role)).every((id) => /^[0-9a-f]{32}$/.test(id)), m.hostname).toBe(true);
      for (const [argv, says] of VERSIONS[role]) {
        const r = await run(m, argv);
        expect(`${r.stdout}${r.stderr}`, `${m.hostname}: ${argv.join(' ')}`).toContain(says);
      }
    }
    const master = one('master');
    const health = await run(master, [
      '/opt/corekube/bin/etcdctl', '--endpoints', `https://${master.ip}:2379`, '--cacert', PKI_PATHS.etcdCa,
      '--cert', PKI_PATHS.apiServerEtcdClient.cert, '--key', PKI_PATHS.apiServerEtcdClient.key, 'endpoint', 'health',
    ]);
    expect(health.stdout + health.stderr).toContain('is healthy');
    expect((await run(one('discovery'), ['systemctl', 'is-active', 'discovery-etcd.service'])).out).toBe('active');
    expect((await run(one('discovery'), ['/opt/corekube/bin/etcd', '--version'])).out).toContain('etcd Version: 3.6.17');
  });

  it('makes every minion a Ready Node whose podCIDR is its flannel subnet, and runs CoreDNS', async () => {
    const store = await cloud!.store();
    const keys = clusterKeys(NAME);
    const rows = await nodeRows(kubectl);
    expect(rows.map((n) => n.name).sort()).toEqual(machinesOf('minion').map((m) => m.hostname).sort());
    for (const m of machinesOf('minion')) {
      const node = rows.find((n) => n.name === m.hostname)!;
      expect(node.ready, m.hostname).toBe(true);
      const subnet = (await store.get(keys.subnetOf(m.id)))!.value;
      expect(node.podCIDR, m.hostname).toBe(subnet.replace('-', '/'));
    }
    const dns = await kubectl.json<{ status: { availableReplicas?: number; replicas?: number } }>(['-n', 'kube-system', 'get', 'deployment', 'coredns']);
    expect(dns.status.availableReplicas).toBe(dns.status.replicas);
    const service = await kubectl.json<{ spec: { clusterIP: string } }>(['-n', 'kube-system', 'get', 'service', 'kube-dns']);
    expect(service.spec.clusterIP).toBe('10.96.0.10');
    // the status corekube shows has each machine's Node
    const status = await cloud!.status();
    for (const m of machinesOf('minion')) expect(status.machines.find((r) => r.id === m.id)?.node, m.hostname).toMatchObject({ name: m.hostname, ready: true });
  });

  it('has the OpenStack cloud provider\'s add-ons accepted by the real API server (server-side dry run: the local cloud has no Nova or Cinder to run them against)', async () => {
    const cloudSpec = parseClusterSpec({ flags: { name: NAME, minions: '2' } });
    const addons = cloudProviderAddons(cloudSpec, parseOpenStackCloud({ auth_url: 'https://keystone.example:5000/v3', region: 'RegionOne', application_credential_id: '0c4f1d2e3a', application_credential_secret: 'dry-run-only', subnet_id: 'a1b2', floating_network_id: 'ext' }, 'e2e'));
    const objects = addons.flatMap((a) => a.objects);
    const r = await kubectl.run(['apply', '--server-side', '--dry-run=server', '--field-manager=corekube', '-f', '-'], { stdin: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }) });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(objects.length);
    expect(r.stdout).toContain('deployment.apps/openstack-cloud-controller-manager serverside-applied (server dry run)');
    expect(r.stdout).toContain('storageclass.storage.k8s.io/csi-cinder serverside-applied (server dry run)');
    // nothing was made
    expect((await kubectl.run(['get', 'storageclass', 'csi-cinder'])).code).not.toBe(0);
  });

  it('runs a workload on every minion: pods reach each other across minions, a Service answers, CoreDNS resolves, the metadata service refuses pods', async () => {
    pods = await deployWorkload(kubectl, cloud!.workloadImage, machinesOf('minion').map((m) => m.hostname));
    expect(new Set(pods.map((p) => p.node)).size).toBe(2);
    const checks = await runClusterChecks(kubectl, pods, async (url) => {
      const r = await run(machinesOf('minion')[0]!, ['curl', '--silent', '--fail', '--max-time', '5', url]);
      return { ok: r.code === 0, out: r.out };
    });
    for (const [name, r] of Object.entries(checks)) expect(r.ok, `${name}: ${r.detail}`).toBe(true);
  }, 300_000);

  it('keeps the records (each written by the machine\'s own etcd user), the ledger, flannel\'s config and one reservation per machine in discovery\'s etcd', async () => {
    const store = await cloud!.store();
    const keys = clusterKeys(NAME);
    const ledger = await cloud!.ledger();
    const network = await store.get(`${keys.network}config`);
    expect(JSON.parse(network!.value)).toMatchObject({ Network: cloud!.spec.network.podCidr, Backend: { Type: 'vxlan' } });
    const leases = (await store.list(`${keys.network}subnets/`)).kvs.map((kv) => ({ subnet: kv.key.slice(`${keys.network}subnets/`.length), value: JSON.parse(kv.value) as { PublicIP: string; BackendData?: { VtepMAC: string } } }))
      .map((l) => ({ ...l, publicIp: l.value.PublicIP }));
    // every join request was admitted: none is left
    expect((await store.list(keys.join)).kvs).toEqual([]);
    expect(leases.map((l) => l.publicIp).sort()).toEqual(nodes().map(({ m }) => m.ip).sort());
    for (const { m, role } of nodes()) {
      const record = await store.get(keys.machine(m.id));
      expect(parseMachineRecord(m.id, record!.value)).toMatchObject({ ok: true, record: { role, ip: m.ip, hostname: m.hostname } });
      const entry = ledger.get(m.id)!;
      expect(entry, m.hostname).toMatchObject({ state: 'deployed', role, ip: m.ip, error: null });
      expect(Object.values(entry.steps).every((s) => s.state === 'done'), m.hostname).toBe(true);
      // flanneld took the subnet the overlord reserved for this machine's IP
      const lease = leases.find((l) => l.publicIp === m.ip)!;
      const subnetEnv = (await run(m, ['cat', '/run/flannel/subnet.env'])).out;
      const [net, len] = lease.subnet.split('-') as [string, string];
      const first = net.split('.').map(Number);
      expect(subnetEnv, m.hostname).toContain(`FLANNEL_SUBNET=${first.slice(0, 3).join('.')}.${first[3]! + 1}/${len}`);
      // ... and wrote its backend data into its own lease, as the machine's own etcd user
      expect(lease.value.BackendData?.VtepMAC, m.hostname).toBeDefined();
      expect((await run(m, ['journalctl', '-u', 'corekube-announce.service', '-o', 'cat', '--no-pager'])).out, m.hostname).toContain(`as machine-${m.id} under lease`);
    }
  });

  it("tells the story in the overlord's log (docker logs overlord): machines discovered, steps, 3/3 deployed, cluster ready", async () => {
    const logs = await cloud!.overlord!.logs();
    if (MODE === 'docker') expect(cloud!.overlord!.command.slice(0, 6)).toEqual(['docker', 'run', '--detach', '--name', 'overlord', '--rm']);
    const lines = logs.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const named = (event: string) => lines.filter((l) => l.event === event);
    expect(named('boot.done')).toHaveLength(1);
    expect(named('join.discovered').map((l) => l.hostname).sort()).toEqual(nodes().map(({ m }) => m.hostname).sort());
    expect(named('machine.admitted').map((l) => l.hostname).sort()).toEqual(nodes().map(({ m }) => m.hostname).sort());
    expect(named('machine.discovered').map((l) => l.hostname).sort()).toEqual(nodes().map(({ m }) => m.hostname).sort());
    expect(named('step.done').length).toBeGreaterThanOrEqual(3 * 8);
    expect(named('machine.deployed')).toHaveLength(3);
    expect(named('reconcile.summary').map((l) => l.msg)).toContain('3/3 machines deployed');
    expect(named('cluster.ready')).toHaveLength(1);
    expect(named('addons.applied').map((l) => l.addon)).toEqual(['coredns']);
    expect(named('cluster.gate').map((l) => l.addons)).toEqual(['available']);
    expect(lines.filter((l) => (l.level as number) >= 50), 'no error lines').toEqual([]);
    // what the demo streamed is the same log
    expect(jsonLines().filter((l) => l.event === 'machine.deployed')).toHaveLength(3);
  });

  it('puts no key material or secret in the overlord\'s logs, the Heat outputs or any user_data', async () => {
    const overlord = one('overlord');
    const state = (f: string) => readFileSync(path.join(overlord.root, MACHINE_PATHS.overlordState, f), 'utf8');
    const header = (m: Machine, f: string) => readFileSync(path.join(m.root, f), 'utf8').replace('X-Auth-Token:', '').trim();
    const secrets = [
      readFileSync(path.join(overlord.root, configPath('joinToken')), 'utf8').trim(),
      header(overlord, configPath('readyHeader')), header(overlord, configPath('clusterReadyHeader')), header(one('discovery'), configPath('readyHeader')),
      state(`pki/${ROOT_PASSWORD_NAME}`).trim(), state(`pki/${MACHINE_SECRET_NAME}`).trim(),
      ...state('ssh/id_ed25519').split('\n').filter((l) => l.length > 20 && !l.startsWith('-----')),
      // each node's own discovery password, delivered when it was admitted
      ...[...machinesOf('master'), ...machinesOf('minion')].map((m) => /FLANNELD_ETCD_PASSWORD=(\S+)/.exec(readFileSync(path.join(m.root, DISCOVERY_CLIENT_PATHS.credentials), 'utf8'))![1]!),
    ];
    expect(findSecrets(await cloud!.overlord!.logs(), { values: secrets })).toEqual([]);
    // nor in any node's journal: flanneld prints its options, the etcd password among them (corekube-redact)
    for (const { m } of nodes()) {
      const journal = (await m.exec(['journalctl', '--no-pager', '-o', 'cat'], { timeoutMs: 60_000 })).stdout;
      expect(journal, m.hostname).toContain('etcdPassword:[redacted]');
      expect(findSecrets(journal, { values: secrets }), m.hostname).toEqual([]);
    }
    expect(findSecrets(JSON.stringify(created.outputs), { values: secrets })).toEqual([]);
    // user_data carries the join token and its own wait-condition token by design, never key material
    for (const b of boots()) expect(findSecrets(b.server.userData), b.server.name).toEqual([]);
    for (const b of boots()) expect(findSecrets(b.server.userData, { values: secrets.slice(4) }), b.server.name).toEqual([]);
  });

  it('boots a standby overlord server from its user_data: its container fetches the sealed state from discovery and stands by', async () => {
    await cloud!.standbysStarted();
    const standby = one('overlord-standby');
    expect((await run(standby, ['systemctl', 'is-active', 'overlord.service'])).out).toBe('active');
    expect(cloud!.standbys.get('overlord-standby-1')!.command).toContain('--standby');
    const first = (event: string) => standbyJson().find((l) => l.event === event);
    await until('the standby to campaign', 60_000, () => first('leader.campaign'));
    expect(first('overlord-state.fetched')).toMatchObject({ fingerprint: expect.any(String) });
    // its boot changed nothing: the bootstrap overlord's discovery TLS, auth and key are in place
    expect(first('boot.discovery-auth')).toMatchObject({ changes: [] });
    expect(first('leader.elected')).toBeUndefined();
    // the same SSH key, CAs and secrets as the bootstrap overlord (and so the same machine credentials)
    const state = (m: Machine, f: string) => readFileSync(path.join(m.root, MACHINE_PATHS.overlordState, f), 'utf8');
    for (const f of ['ssh/id_ed25519', 'pki/ca/cluster.key', 'pki/ca/etcd.key', 'pki/ca/discovery.key', `pki/${ROOT_PASSWORD_NAME}`, `pki/${MACHINE_SECRET_NAME}`]) {
      expect(state(standby, f), f).toBe(state(one('overlord'), f));
    }
    // the overlord secret is on overlord servers only, and no secret is in the standby's log
    const secret = readFileSync(path.join(standby.root, configPath('overlordSecret')), 'utf8').trim();
    expect(secret).toBe(readFileSync(path.join(one('overlord').root, configPath('overlordSecret')), 'utf8').trim());
    for (const { m } of nodes()) expect(existsSync(path.join(m.root, configPath('overlordSecret'))), m.hostname).toBe(false);
    expect(findSecrets(standbyLines.join('\n'), { values: [secret, state(standby, `pki/${ROOT_PASSWORD_NAME}`).trim(), state(standby, `pki/${MACHINE_SECRET_NAME}`).trim()] })).toEqual([]);
  }, 120_000);

  it('takes over when the bootstrap overlord dies (docker kill): the standby leads within the lease TTL', async () => {
    await cloud!.overlord!.kill();
    const killedAt = Date.now();
    const elected = await until('the standby to lead', 60_000, () => standbyJson().find((l) => l.event === 'leader.elected'));
    expect(Date.parse(String(elected.time)) - killedAt).toBeLessThan(17_000); // default lease TTL 15 s
    await until('the standby to resume from the ledger', 30_000, () => standbyJson().find((l) => l.event === 'reconcile.summary' && l.msg === '3/3 machines deployed'));
  }, 90_000);

  it('scales up with a Heat stack update, deployed by the standby now leading: one more minion becomes a Ready Node and runs the workload, the others are left alone', async () => {
    const before = await cloud!.ledger();
    const invocationsBefore = new Map(await Promise.all(nodes().map(async ({ m, role }) => [m.id, await invocations(m, role)] as const)));
    const updated = await cloud!.scaleMinions(3);
    expect(updated.status).toBe('UPDATE_COMPLETE');
    const report = await cloud!.waitDeployed(4, { timeoutMs: 240_000 });
    expect(report.machines.map((m) => m.state)).toEqual(['deployed', 'deployed', 'deployed', 'deployed']);
    const after = await cloud!.ledger();
    for (const [id, entry] of before) expect(after.get(id), `ledger of ${entry.hostname}`).toEqual(entry);
    for (const { m, role } of nodes()) if (invocationsBefore.has(m.id)) expect(await invocations(m, role), `${m.hostname}: no unit started again`).toEqual(invocationsBefore.get(m.id));
    const added = machinesOf('minion').find((m) => !before.has(m.id))!;
    expect(after.get(added.id)).toMatchObject({ state: 'deployed', role: 'minion', ip: added.ip });
    expect((await nodeRows(kubectl)).find((n) => n.name === added.hostname)).toMatchObject({ ready: true });
    await deployWorkload(kubectl, cloud!.workloadImage, machinesOf('minion').map((m) => m.hostname));
    expect((await workloadPods(kubectl)).filter((p) => p.node === added.hostname && p.ready)).toHaveLength(1);
    const outputs = Object.fromEntries(updated.outputs.map((o) => [o.key, o.value]));
    expect([...(outputs.minion_ips as string[])].sort()).toEqual(machinesOf('minion').map((m) => m.ip).sort());
    // admitted and deployed by the standby (the bootstrap overlord is gone)
    expect(standbyJson().filter((l) => l.event === 'machine.admitted').map((l) => l.hostname)).toEqual([added.hostname]);
    expect(standbyJson().filter((l) => l.event === 'reconcile.summary').map((l) => l.msg)).toContain('4/4 machines deployed');
  }, 360_000);

  it('scales down with a Heat stack update, removed by the standby now leading (the stack channel\'s user came in the sealed state): the minion Heat deletes loses its Node, subnet and discovery user, the others are left alone', async () => {
    const before = await cloud!.ledger();
    const out = await scaleDownOne(cloud!, kubectl, { timeoutMs: 180_000 });
    expect(out).toMatchObject({ nodeGone: true, subnetReleased: true, discoveryUserGone: true, othersReady: true });
    expect(out.removedMs).toBeLessThan(60_000);
    const after = await cloud!.ledger();
    expect(after.size).toBe(before.size - 1);
    for (const [id, entry] of after) expect(entry, `ledger of ${entry.hostname}`).toEqual(before.get(id));
    expect(standbyJson().filter((l) => l.event === 'machine.removed').map((l) => l.hostname)).toEqual([out.removed]);
    expect((await cloud!.status()).machines.map((m) => m.state)).toEqual(['deployed', 'deployed', 'deployed']);
  }, 240_000);

  it('tears everything down: no machine, mount, namespace, bridge, cgroup, container, Heat or engine process left', async () => {
    const heatDir = cloud!.heatService.stateDir;
    const engineDir = cloud!.overlordHost.engine?.stateDir;
    const roots = cloud!.fleet.machines.map((m) => m.root);
    await cloud!.teardown();
    tornDown = true;
    expect(readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => roots.some((r) => l.includes(r)) || l.includes(`/ck${NET}/`))).toEqual([]);
    expect((existsSync('/run/netns') ? readdirSync('/run/netns') : []).filter((n) => n.startsWith(`ck${NET}-`))).toEqual([]);
    expect(existsSync(`/sys/class/net/ckbr${NET}`)).toBe(false);
    // a machine had a cgroup in every hierarchy (below this process's own there)
    const ownCgroups = readFileSync('/proc/self/cgroup', 'utf8').trim().split('\n').map((l) => l.split(':'));
    for (const dir of readdirSync('/sys/fs/cgroup')) {
      const own = ownCgroups.find(([, c]) => (c === '' ? dir === 'unified' : c!.split(',').includes(dir) || c === `name=${dir}`));
      const parent = path.join('/sys/fs/cgroup', dir, own?.[2] ?? '/');
      if (existsSync(parent)) expect(readdirSync(parent).filter((d) => d.startsWith(`ck${NET}-`)), parent).toEqual([]);
    }
    const procs = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      } catch {
        return '';
      }
    });
    expect(procs.filter((c) => c.includes(heatDir) || (engineDir && c.includes(engineDir)) || c.includes(`/ck${NET}/`))).toEqual([]);
    expect(existsSync(heatDir)).toBe(false);
    if (engineDir) expect(existsSync(engineDir)).toBe(false);
    expect(roots.filter((r) => existsSync(r))).toEqual([]);
  });
});
