import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderUserData } from '../../cloud-config/index.ts';
import { parseAuthConfig } from '../../cloud/auth-config.ts';
import { OpenStackError } from '../../cloud/errors.ts';
import { HeatClient, signalWaitConditionHandle, type StackEvent } from '../../cloud/heat-client.ts';
import { fetchTransport } from '../../cloud/http.ts';
import { KeystoneSession } from '../../cloud/keystone.ts';
import { downCommand, stackStatusCommand, upCommand, upgradeCommand, type CloudIo } from '../../cli/cloud.ts';
import { clusterTemplate } from '../../heat/cluster-template.ts';
import { failPendingServers, listServers, pendingServers, reportBooted, type LocalServer } from '../../localcloud/heat/servers.ts';
import { startLocalHeat } from '../../localcloud/heat/local-heat.ts';
import { localCloudEnvironment, withoutCloudLookups } from '../../localcloud/heat/providers/environment.ts';
import { loadBalancersOf, stackOctavia } from '../../localcloud/load-balancer.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { localHeatMissing, startTestHeat, type TestHeat } from '../harness/local-heat.ts';
import { onExit } from '../harness/cleanup.ts';
import { netFromEnv } from '../harness/machines.ts';
import { missingParts } from '../harness/requirements.ts';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import { systemClock } from '../../core/clock.ts';
import { cloudProviderParameters } from '../../heat/cloud-provider.ts';
import { channelAgentValues, overlordChannelResources } from '../../heat/overlord-channel.ts';
import { parseStackMembers, parseStackVersions } from '../../contracts/overlord-channel.ts';
import { readChannelAgent, StackChannel } from '../../overlord/edges/stack-channel.ts';
import { createLogger } from '../../overlord/edges/log.ts';
import { cloudCredentials } from '../../overlord/trust/cloud-credentials.ts';

/** A project-scoped token for a user id and password (what the overlord's cloud-credentials.ts asks Keystone for). */
async function keystoneToken(authUrl: string, userId: string, password: string, projectId: string): Promise<string> {
  const res = await fetch(`${authUrl.replace(/\/+$/, '')}/auth/tokens`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ auth: { identity: { methods: ['password'], password: { user: { id: userId, password } } }, scope: { project: { id: projectId } } } }),
  });
  return res.headers.get('x-subject-token') ?? '';
}

/**
 * corekube's Keystone + Heat client against a real Keystone and a real Heat (Debian's Zed packages) run by
 * localcloud/heat, started once for this file. Nova and Neutron are the local cloud's stand-ins
 * (localcloud/heat/providers), mapped in through the environment; Heat resolves every function itself.
 * Prints the service's start time and each call's latency.
 */
const skip = missingParts(localHeatMissing());
const latency: Record<string, number[]> = {};

async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return await fn();
  } finally {
    (latency[name] ??= []).push(performance.now() - t);
  }
}

/** A small stack: a random secret, a wait condition, and a server on a port through the stand-ins. */
function smallTemplate() {
  const NET = '10.200.90';
  return {
    heat_template_version: '2021-04-16',
    parameters: { label: { type: 'string', default: 'hello' } },
    resources: {
      secret: { type: 'OS::Heat::RandomString', properties: { length: 16, character_classes: [{ class: 'lettersdigits' }] } },
      value: { type: 'OS::Heat::Value', properties: { value: { list_join: ['-', [{ get_param: 'label' }, { get_attr: ['secret', 'value'] }]] } } },
      net: { type: 'OS::Neutron::Net', properties: { name: 'test-net' } },
      subnet: {
        type: 'OS::Neutron::Subnet',
        properties: { network: { get_resource: 'net' }, cidr: `${NET}.0/24`, gateway_ip: `${NET}.1`, allocation_pools: [{ start: `${NET}.32`, end: `${NET}.254` }] },
      },
      port: {
        type: 'OS::Neutron::Port',
        properties: { network: { get_resource: 'net' }, fixed_ips: [{ subnet: { get_resource: 'subnet' }, ip_address: `${NET}.10` }] },
      },
      ready_handle: { type: 'OS::Heat::WaitConditionHandle' },
      ready: { type: 'OS::Heat::WaitCondition', properties: { handle: { get_resource: 'ready_handle' }, count: 1, timeout: 300 } },
      machine_handle: { type: 'OS::Heat::WaitConditionHandle' },
      machine: { type: 'OS::Heat::WaitCondition', properties: { handle: { get_resource: 'machine_handle' }, count: 1, timeout: 300 } },
      server: {
        type: 'OS::Nova::Server',
        properties: {
          name: 'test-server',
          image: 'any',
          flavor: 'm1.small',
          networks: [{ port: { get_resource: 'port' } }],
          metadata: { role: 'probe' },
          user_data_format: 'RAW',
          user_data: {
            str_replace: {
              template: '#cloud-config\n# label=LABEL secret=SECRET ip=IP\n',
              params: { LABEL: { get_param: 'label' }, SECRET: { get_attr: ['secret', 'value'] }, IP: { get_attr: ['port', 'fixed_ips', 0, 'ip_address'] } },
            },
          },
        },
      },
    },
    outputs: {
      joined: { value: { get_attr: ['value', 'value'] } },
      secret: { value: { get_attr: ['secret', 'value'] } },
      server_ip: { value: { get_attr: ['server', 'first_address'] } },
      server_networks: { value: { get_attr: ['server', 'networks'] } },
      server_user_data: { value: { get_attr: ['server', 'user_data'] } },
      port_ip: { value: { get_attr: ['port', 'fixed_ips', 0, 'ip_address'] } },
      net_id: { value: { get_resource: 'net' } },
      ready_data: { value: { get_attr: ['ready', 'data'] } },
      machine_data: { value: { get_attr: ['machine', 'data'] } },
      machine_endpoint: { value: { get_attr: ['machine_handle', 'endpoint'] } },
      machine_token: { value: { get_attr: ['machine_handle', 'token'] } },
    },
  };
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

describe.skipIf(skip)('Keystone + Heat client against a real local Heat', () => {
  let service: TestHeat;
  let heat: HeatClient;

  beforeAll(async () => {
    service = await startTestHeat();
    process.stderr.write(`local Heat started in ${(service.timings.total! / 1000).toFixed(1)} s: ${JSON.stringify(service.timings)}\n`);
    heat = await timed('auth (password)', async () => new HeatClient(await KeystoneSession.open(service.authConfig)));
  });

  afterAll(async () => {
    await service?.teardown();
    const rows = Object.entries(latency).map(([k, v]) => `  ${k.padEnd(28)} n=${v.length} median ${median(v).toFixed(0)} ms  max ${Math.max(...v).toFixed(0)} ms`);
    process.stderr.write(`heat client latency:\n${rows.join('\n')}\n`);
  });

  it('authenticates with a password and takes the orchestration endpoint and project from the catalog', async () => {
    const s = await timed('auth (password)', () => KeystoneSession.open(service.authConfig));
    expect(s.facts.projectName).toBe('admin');
    expect(s.endpoint('orchestration')).toBe(`${service.heatBaseUrl}/${s.facts.projectId}`);
    expect(s.facts.expiresAt.getTime()).toBeGreaterThan(Date.now());
  });

  it('authenticates with an application credential created through Keystone\'s API', async () => {
    const admin = await KeystoneSession.open(service.authConfig);
    const created = await admin.identity<{ application_credential: { id: string; secret: string } }>(
      'POST', `/users/${admin.facts.userId}/application_credentials`,
      { application_credential: { name: `corekube-test-${Date.now()}`, description: 'heat-client integration test' } },
    );
    const config = parseAuthConfig({
      OS_AUTH_URL: service.authUrl,
      OS_APPLICATION_CREDENTIAL_ID: created.application_credential.id,
      OS_APPLICATION_CREDENTIAL_SECRET: created.application_credential.secret,
      OS_REGION_NAME: service.region,
    });
    expect(JSON.stringify(config)).not.toContain(created.application_credential.secret);
    const s = await timed('auth (app credential)', () => KeystoneSession.open(config));
    expect(s.facts.projectId).toBe(admin.facts.projectId);
    const appHeat = new HeatClient(s);
    await expect(appHeat.validate({ template: { heat_template_version: '2021-04-16', resources: {} } })).resolves.toBeDefined();
    expect(await appHeat.call<{ stacks: unknown[] }>('GET', '/stacks')).toHaveProperty('stacks');
  });

  it('refuses a wrong password with E_HEAT 401, a credentials hint, and no password in the message', async () => {
    const wrong = parseAuthConfig({ ...service.env, OS_PASSWORD: 'not-the-password-x1' });
    const err = await KeystoneSession.open(wrong).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenStackError);
    const e = err as OpenStackError;
    expect(e.code).toBe('E_HEAT');
    expect(e.status).toBe(401);
    expect(e.hint).toMatch(/OS_USERNAME\/OS_PASSWORD/);
    expect(`${e.message} ${e.hint}`).not.toContain('not-the-password-x1');
  });

  it('re-authenticates once when Keystone says the token is no longer valid', async () => {
    const s = await KeystoneSession.open(service.authConfig);
    const transport = fetchTransport('Keystone');
    // Revoke the session's own token: Keystone answers 401 to it from now on.
    const revoked = await s.authorized((h) => transport({ method: 'DELETE', url: `${service.authUrl}/auth/tokens`, headers: { ...h, 'X-Subject-Token': h['X-Auth-Token']! } }));
    expect(revoked.status).toBe(204);
    const projects = await s.identity<{ projects: { name: string }[] }>('GET', '/auth/projects');
    expect(projects.projects.map((p) => p.name)).toContain('admin');
  });

  it('validates a good template and rejects a bad one with Heat\'s reason', async () => {
    const ok = await timed('validate', () => heat.validate({ template: smallTemplate(), ...localCloudEnvironment() }));
    expect(Object.keys(ok.parameters)).toEqual(['label']);
    const err = await timed('validate (bad)', () =>
      heat.validate({ template: { heat_template_version: '2021-04-16', resources: { x: { type: 'OS::No::Such' } } } }).catch((e: unknown) => e),
    );
    expect(err).toBeInstanceOf(OpenStackError);
    expect((err as OpenStackError).status).toBe(400);
    expect((err as OpenStackError).explanation).toContain('OS::No::Such');
    // Without the stand-ins Heat looks for a Nova endpoint and refuses the template.
    const noNova = await heat.validate({ template: smallTemplate() }).catch((e: unknown) => e);
    expect((noNova as OpenStackError).explanation).toMatch(/not available|catalog/);
  });

  it('creates a stack, boots its server, takes signals, streams events, reads outputs, updates and deletes it', async () => {
    const events: StackEvent[] = [];
    const name = `probe-${Date.now()}`;
    const env = localCloudEnvironment({ bootTimeoutSeconds: 120 });
    const ref = await timed('create stack', () => heat.createStack({ name, template: smallTemplate(), ...env, timeoutMins: 10 }));
    expect(await timed('resolve name (302)', () => heat.resolve(name))).toEqual(ref);

    // Play Nova: the server stand-in waits for its machine, with the user_data Heat resolved.
    const server = await timed('wait: server stand-in up', () => until<LocalServer>('the server stand-in', async () => (await timed('pending servers', () => pendingServers(heat, ref)))[0]));
    expect(server.name).toBe('test-server');
    expect(server.requestedAddress).toBe('10.200.90.10');
    expect(server.metadata).toEqual({ role: 'probe' });
    expect(server.userData).toMatch(/^#cloud-config\n# label=hello secret=[A-Za-z0-9]{16} ip=10\.200\.90\.10\n$/);
    const netId = (await heat.output(ref, 'net_id')).value as string;
    expect(server.network).toBe(netId);
    await timed('signal (boot)', () => reportBooted(heat, server, server.requestedAddress));

    // A wait condition signalled through the client, another as a machine does: its handle's URL + token.
    await timed('signal (resource)', () => heat.signal(ref, 'ready_handle', { status: 'SUCCESS', reason: 'test', id: '1', data: 'payload-1' }));
    const handle = await until('the machine handle', async () => {
      const endpoint = (await heat.output(ref, 'machine_endpoint')).value;
      const token = (await heat.output(ref, 'machine_token')).value;
      return typeof endpoint === 'string' && typeof token === 'string' ? { endpoint, token } : undefined;
    });
    expect(handle.endpoint.startsWith(service.heatBaseUrl)).toBe(true);
    await timed('signal (handle url)', () => signalWaitConditionHandle(handle, { status: 'SUCCESS', reason: 'machine', id: 'm1', data: 'from-machine' }));

    const created = await timed('wait: CREATE', () => heat.waitForStack(ref, 'CREATE', { onEvent: (e) => events.push(e), timeoutMs: 60_000 }));
    expect(created.status).toBe('CREATE_COMPLETE');
    expect(events.find((e) => e.resourceName === 'ready_handle' && e.status === 'SIGNAL_COMPLETE')).toBeDefined();
    expect(events.at(-1)).toMatchObject({ resourceName: name, status: 'CREATE_COMPLETE' });
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);

    const outputs = await timed('outputs', () => heat.outputs(ref));
    const secret = outputs.secret as string;
    expect(outputs).toMatchObject({
      joined: `hello-${secret}`,
      server_ip: '10.200.90.10',
      server_networks: { [netId]: ['10.200.90.10'] },
      port_ip: '10.200.90.10',
      server_user_data: `#cloud-config\n# label=hello secret=${secret} ip=10.200.90.10\n`,
    });
    expect(JSON.parse(outputs.ready_data as string)).toEqual({ 1: 'payload-1' });
    expect(JSON.parse(outputs.machine_data as string)).toEqual({ m1: 'from-machine' });

    const resources = await timed('resources (nested_depth 2)', () => heat.resources(ref, { nestedDepth: 2 }));
    expect(resources.find((r) => r.name === 'server')).toMatchObject({ type: 'OS::Nova::Server', status: 'CREATE_COMPLETE' });
    expect(resources.find((r) => r.name === 'boot')).toMatchObject({ parentResource: 'server', status: 'CREATE_COMPLETE' });
    expect((await listServers(heat, ref))[0]!.booted).toBe(true);

    // PATCH: only the label changes; the random secret stays; the server is updated in place.
    const { sinceEventId } = await timed('update (PATCH)', () => heat.updateStack(ref, { parameters: { label: 'changed' } }));
    const updated = await timed('wait: UPDATE', () => heat.waitForStack(ref, 'UPDATE', { sinceEventId, onEvent: (e) => events.push(e), timeoutMs: 60_000 }));
    expect(updated.status).toBe('UPDATE_COMPLETE');
    expect(updated.parameters.label).toBe('changed');
    const after = await heat.outputs(ref);
    expect(after.joined).toBe(`changed-${secret}`);
    expect(after.server_user_data).toBe(`#cloud-config\n# label=changed secret=${secret} ip=10.200.90.10\n`);

    const deleted = await timed('delete', () => heat.deleteStack(ref));
    expect(deleted.existed).toBe(true);
    const gone = await timed('wait: DELETE', () => heat.waitForStack(ref, 'DELETE', { sinceEventId: deleted.sinceEventId, timeoutMs: 60_000 }));
    expect(gone.status).toBe('DELETE_COMPLETE');
    // By id Heat still shows a deleted stack (without outputs); deleting it again finds nothing; its name is free.
    expect((await heat.showStack(ref, { outputs: false })).status).toBe('DELETE_COMPLETE');
    expect((await heat.deleteStack(ref)).existed).toBe(false);
    await until('the name to be free', () => heat.resolve(name).then(() => undefined, (e: unknown) => ((e as OpenStackError).status === 404 ? true : undefined)));
  });

  it('creates corekube\'s own cluster template through the stand-ins up to the overlord\'s boot, its load balancer described for the host', async () => {
    const spec = parseClusterSpec({ flags: { os: 'ubuntu', masters: '3', minions: '2', 'private-cidr': '10.200.91.0/24', 'cloud-provider': 'none' } });
    const template = withoutCloudLookups(clusterTemplate(spec, renderUserData));
    const input = { template, ...localCloudEnvironment({ bootTimeoutSeconds: 120 }), parameters: { key_name: 'k', image: 'img', external_network: 'public' } };
    await timed('validate (cluster template)', () => heat.validate(input));
    const ref = await timed('create stack (cluster)', () => heat.createStack({ name: `cluster-${Date.now()}`, ...input, timeoutMins: 10 }));
    try {
      const overlord = await timed('wait: overlord stand-in up', () => until<LocalServer>('the overlord stand-in', async () => (await pendingServers(heat, ref)).find((s) => s.resourceName === 'overlord')));
      expect(overlord.requestedAddress).toBe('10.200.91.11');
      expect(overlord.metadata).toEqual({ corekube_cluster: 'corekube', corekube_role: 'overlord' });
      expect(overlord.userData.startsWith('#cloud-config\n')).toBe(true);
      expect(overlord.userData).not.toMatch(/%%COREKUBE_[A-Z_]+%%/);
      expect(overlord.userData).toContain(`${service.heatBaseUrl}/`); // the handle URLs Heat put in
      const stack = await heat.showStack(ref);
      const outputs = Object.fromEntries(stack.outputs.map((o) => [o.key, o.value]));
      expect(outputs).toMatchObject({
        discovery_ip: '10.200.91.10',
        overlord_ip: '10.200.91.11',
        overlord_public_ip: '10.200.91.11',
        discovery_endpoint: 'https://10.200.91.10:2379',
        api_endpoint: 'https://10.200.91.12:6443',
      });
      // what the host's haproxy is configured from: the VIP, the listener, the three masters' fixed addresses, the probe
      const [lb] = loadBalancersOf(await until('the load balancer resources', async () => {
        const found = await stackOctavia(heat, ref)();
        return found.filter((r) => r.type === 'OS::Octavia::PoolMember').length === 3 ? found : undefined;
      }));
      expect(lb).toMatchObject({ vip: '10.200.91.12', listeners: [{ port: 6443, protocol: 'TCP', allowedCidrs: ['10.200.91.0/24', '10.200.91.0/24'] }] });
      expect(lb!.listeners[0]!.members.map((m) => `${m.address}:${m.port}`)).toEqual(['10.200.91.20:6443', '10.200.91.21:6443', '10.200.91.22:6443']);
      expect(lb!.listeners[0]!.monitor).toMatchObject({ type: 'HTTPS', urlPath: '/readyz' });
    } finally {
      await failPendingServers(heat, ref);
      const { sinceEventId } = await heat.deleteStack(ref);
      expect((await timed('wait: DELETE (cluster mid-create)', () => heat.waitForStack(ref, 'DELETE', { sinceEventId, timeoutMs: 60_000 }))).status).toBe('DELETE_COMPLETE');
    }
  });

  it('hands the overlord the stack\'s counts and the OpenStack cloud credentials only through overlord_channel\'s stack user (a Keystone token, then the resource\'s metadata), and the new count and version after a stack update with the same user', async () => {
    const spec = parseClusterSpec({ flags: { name: 'cred' } });
    const channel = overlordChannelResources(spec).overlord_channel!;
    const template = {
      heat_template_version: '2021-04-16',
      parameters: { ...cloudProviderParameters(spec), subnet: { type: 'string', default: 'subnet-1' }, master_count: { type: 'number', default: 1 }, minion_count: { type: 'number', default: 2 }, kubernetes_version: { type: 'string', default: 'v1.36.3' } },
      resources: { overlord_channel: { ...channel, metadata: { ...channel.metadata, corekube_cloud: { ...(channel.metadata!.corekube_cloud as Record<string, unknown>), subnet_id: { get_param: 'subnet' }, floating_network_id: 'ext-1' } } } },
      outputs: Object.fromEntries(Object.entries(channelAgentValues(spec)).map(([k, v]) => [k, { value: v }])),
    };
    const secret = `appcred-${Date.now()}-Secret_value`;
    const ref = await heat.createStack({
      name: `cred-${Date.now()}`,
      template,
      parameters: { openstack_auth_url: 'https://keystone.example:5000/v3', application_credential_id: 'c0ffee12', application_credential_secret: secret },
      timeoutMins: 5,
    });
    try {
      expect((await heat.waitForStack(ref, 'CREATE', { timeoutMs: 60_000 })).status).toBe('CREATE_COMPLETE');
      const agent = await heat.outputs(ref);
      // what the bootstrap overlord's user_data would carry: the stack user, never the credential
      expect(JSON.stringify(agent)).not.toContain(secret);
      const dir = mkdtempSync(join(tmpdir(), 'corekube-cloud-'));
      try {
        const files: Record<string, unknown> = {
          [CONFIG_FILES.cloudAuthUrl]: agent.cloudAuthUrl,
          [CONFIG_FILES.cloudUserId]: agent.cloudUserId,
          [CONFIG_FILES.cloudPassword]: decodeURIComponent(String(agent.cloudPassword)),
          [CONFIG_FILES.cloudProjectId]: agent.cloudProjectId,
          [CONFIG_FILES.cloudStackId]: agent.cloudStackId,
          [CONFIG_FILES.cloudRegion]: agent.cloudRegion,
        };
        for (const [f, v] of Object.entries(files)) {
          mkdirSync(join(dir, 'etc', f, '..'), { recursive: true });
          writeFileSync(join(dir, 'etc', f), `${String(v)}\n`);
        }
        mkdirSync(join(dir, 'state'), { mode: 0o700 });
        const lines: string[] = [];
        const log = createLogger({ format: 'json', destination: new Writable({ write: (c, _e, done) => (lines.push(String(c)), done()) }) });
        const cloud = await cloudCredentials({ configDir: join(dir, 'etc'), stateDir: join(dir, 'state'), clock: systemClock, log, attempts: 1 });
        expect(cloud).toEqual({ authUrl: 'https://keystone.example:5000/v3', region: 'RegionOne', applicationCredentialId: 'c0ffee12', applicationCredentialSecret: secret, subnetId: 'subnet-1', floatingNetworkId: 'ext-1' });
        expect(lines.join('')).not.toContain(secret);
        // the stack user reads that one resource, nothing else of the stack
        const token = await keystoneToken(String(agent.cloudAuthUrl), String(agent.cloudUserId), decodeURIComponent(String(agent.cloudPassword)), String(agent.cloudProjectId));
        const other = await fetch(`${service.heatBaseUrl}/stacks/${String(agent.cloudStackId)}`, { headers: { 'X-Auth-Token': token } });
        expect([401, 403, 404]).toContain(other.status); // refused (Heat answers 404 for a stack the token's project cannot see)
        // the counts: kept stack user (as a standby gets it), read, stack update, read again with the same user
        const kept = await readChannelAgent(join(dir, 'state'));
        expect(kept?.userId).toBe(String(agent.cloudUserId));
        const reader = new StackChannel(kept!);
        expect(parseStackMembers((await reader.metadata()).corekube_members, 'metadata')).toEqual({ masterCount: 1, minionCount: 2 });
        expect(parseStackVersions((await reader.metadata()).corekube_versions, 'metadata')).toEqual({ kubernetes: 'v1.36.3' });
        const { sinceEventId } = await heat.updateStack(ref, { parameters: { minion_count: 1, kubernetes_version: 'v1.36.5' } });
        expect((await heat.waitForStack(ref, 'UPDATE', { sinceEventId, timeoutMs: 60_000 })).status).toBe('UPDATE_COMPLETE');
        expect(parseStackMembers((await reader.metadata()).corekube_members, 'metadata')).toEqual({ masterCount: 1, minionCount: 1 });
        expect(parseStackVersions((await reader.metadata()).corekube_versions, 'metadata')).toEqual({ kubernetes: 'v1.36.5' });
        expect((await new StackChannel(kept!).metadata()).corekube_cloud).toMatchObject({ application_credential_id: 'c0ffee12' });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    } finally {
      const { sinceEventId } = await heat.deleteStack(ref);
      await heat.waitForStack(ref, 'DELETE', { sinceEventId, timeoutMs: 60_000 });
    }
  }, 120_000);

  it('corekube up, stack status and down drive a stack through the same client', async () => {
    const out: string[] = [];
    const io: CloudIo = {
      connect: () => service.adminClient(),
      template: () => ({
        template: {
          heat_template_version: '2021-04-16',
          parameters: { label: { type: 'string' } },
          resources: {
            secret: { type: 'OS::Heat::RandomString', properties: { length: 8 } },
            net: { type: 'OS::Neutron::Net', properties: { name: { get_param: 'label' } } },
          },
          outputs: { label: { value: { get_param: 'label' } }, net: { value: { get_attr: ['net', 'name'] } } },
        },
        ...localCloudEnvironment(),
      }),
      out: (t) => void out.push(t),
      err: (t) => void out.push(t),
    };
    const name = `cli-${Date.now()}`;
    const missing = await upCommand(io).run(['--stack', name]).catch((e: unknown) => e);
    expect((missing as Error).message).toMatch(/label: has no default and is not given/);

    expect(await timed('corekube up', () => upCommand(io).run(['--stack', name, '-P', 'label=from-cli']))).toBe(0);
    const upText = out.join('');
    expect(upText).toMatch(new RegExp(`${name}\\s+CREATE_COMPLETE\\s+Stack CREATE completed successfully`));
    expect(upText).toMatch(/outputs\n\s+label\s+from-cli\n\s+net\s+from-cli\n/);

    out.length = 0;
    expect(await stackStatusCommand(io).run(['--stack', name, '--json'])).toBe(0);
    expect(JSON.parse(out.join(''))).toMatchObject({ name, status: 'CREATE_COMPLETE', outputs: { label: 'from-cli', net: 'from-cli' } });

    out.length = 0;
    expect(await timed('corekube down', () => downCommand(io).run(['--stack', name]))).toBe(0);
    expect(out.join('')).toContain(`stack ${name}: DELETE_COMPLETE`);
    out.length = 0;
    expect(await downCommand(io).run(['--stack', name])).toBe(0);
    expect(out.join('')).toMatch(/nothing to delete/);
  });

  it('corekube upgrade changes kubernetes_version through a stack update, refuses a skipped minor, and rolls back to the release it replaced', async () => {
    const out: string[] = [];
    const release = { type: 'string', default: '' };
    const io: CloudIo = {
      connect: () => service.adminClient(),
      template: () => ({
        template: {
          heat_template_version: '2021-04-16',
          parameters: { kubernetes_version: { type: 'string', default: 'v1.36.3' }, previous_kubernetes_version: release },
          resources: { channel: { type: 'OS::Heat::None', properties: {} } },
          outputs: { version: { value: { get_param: 'kubernetes_version' } } },
        },
      }),
      out: (t) => void out.push(t),
      err: (t) => void out.push(t),
    };
    const name = `upgrade-${Date.now()}`;
    expect(await upCommand(io).run(['--stack', name])).toBe(0);
    try {
      const params = async () => (await (await service.adminClient()).showStack(name, { outputs: false })).parameters;
      expect(await timed('corekube upgrade', () => upgradeCommand(io).run(['--stack', name, '--to', 'v1.36.5']))).toBe(0);
      expect(await params()).toMatchObject({ kubernetes_version: 'v1.36.5', previous_kubernetes_version: 'v1.36.3' });
      const skipped = await upgradeCommand(io).run(['--stack', name, '--to', 'v1.34.2']).catch((e: unknown) => e);
      expect(skipped).toMatchObject({ code: 'E_USAGE', problems: [{ field: '--to', value: 'v1.34.2', message: expect.stringContaining('goes back a minor') }] });
      expect(await upgradeCommand(io).run(['--stack', name, '--rollback'])).toBe(0);
      expect(await params()).toMatchObject({ kubernetes_version: 'v1.36.3', previous_kubernetes_version: 'v1.36.5' });
      expect(out.join('')).toContain('kubernetes_version v1.36.5 -> v1.36.3');
    } finally {
      await downCommand(io).run(['--stack', name]);
    }
  }, 120_000);

  it('refuses a second local Heat on the same ports, naming the running one', async () => {
    const err = await startLocalHeat({ stateDir: `${service.stateDir}-second` }).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/127\.0\.0\.1:5000 is in use/);
    expect((err as { hint?: string }).hint).toContain(service.stateDir);
  });

  it('stops exactly its own processes and frees the ports', async () => {
    const ours = () => execFileSync('ps', ['-eo', 'stat=,args='], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(service.stateDir) && !l.startsWith('Z'));
    expect(ours().length).toBeGreaterThan(0);
    const t = performance.now();
    await service.stop();
    (latency['service stop'] ??= []).push(performance.now() - t);
    expect(ours()).toEqual([]);
    await service.stop(); // idempotent
  });
});

/**
 * Machines sit on a test bridge and cannot reach the host's 127.0.0.1: with `bindAddress`, Heat serves on
 * the bridge address and puts it into the catalog and into every wait condition handle's URL. A network
 * namespace on the bridge plays the machine and signals with curl, as cloud-config's signal script does.
 */
const NET = netFromEnv(48);
const BRIDGE = `ckhb${NET}`;
const NETNS = `ckhn${NET}`;
const HOST_IP = `10.200.${NET}.1`;
const ipMissing = (() => {
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    execFileSync('curl', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'ip (iproute2) and curl are needed for the bridge test';
  }
})();
const skipBridge = missingParts(localHeatMissing(), ipMissing);

function ip(...args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function removeBridge(): void {
  for (const args of [['netns', 'del', NETNS], ['link', 'del', `${BRIDGE}v`], ['link', 'del', BRIDGE]]) {
    try {
      ip(...args);
    } catch {
      /* not there */
    }
  }
}

describe.skipIf(skipBridge)('a local Heat bound to a test bridge', () => {
  let service: TestHeat;
  let unregister: () => void;
  const dir = mkdtempSync(join(tmpdir(), 'corekube-heat-bridge-'));

  beforeAll(async () => {
    removeBridge();
    unregister = onExit(`bridge ${BRIDGE}`, removeBridge);
    ip('link', 'add', BRIDGE, 'type', 'bridge');
    ip('addr', 'add', `${HOST_IP}/24`, 'dev', BRIDGE);
    ip('link', 'set', BRIDGE, 'up');
    ip('netns', 'add', NETNS);
    ip('link', 'add', `${BRIDGE}v`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', NETNS);
    ip('link', 'set', `${BRIDGE}v`, 'master', BRIDGE, 'up');
    ip('-n', NETNS, 'addr', 'add', `10.200.${NET}.2/24`, 'dev', 'eth0');
    ip('-n', NETNS, 'link', 'set', 'eth0', 'up');
    ip('-n', NETNS, 'link', 'set', 'lo', 'up');
    service = await startTestHeat({ bindAddress: HOST_IP });
    process.stderr.write(`local Heat on ${HOST_IP} started in ${(service.timings.total! / 1000).toFixed(1)} s\n`);
  });

  afterAll(async () => {
    await service?.teardown();
    removeBridge();
    unregister?.();
    rmSync(dir, { recursive: true, force: true });
  });

  it('takes a wait condition signal from a machine on the bridge, through the handle\'s own URL and token', async () => {
    const heat = await service.adminClient();
    expect(heat.endpoint.startsWith(`http://${HOST_IP}:8004/v1/`)).toBe(true);
    const ref = await heat.createStack({
      name: `bridge-${Date.now()}`,
      template: {
        heat_template_version: '2021-04-16',
        resources: {
          handle: { type: 'OS::Heat::WaitConditionHandle' },
          ready: { type: 'OS::Heat::WaitCondition', properties: { handle: { get_resource: 'handle' }, count: 1, timeout: 120 } },
        },
        outputs: {
          endpoint: { value: { get_attr: ['handle', 'endpoint'] } },
          token: { value: { get_attr: ['handle', 'token'] } },
          data: { value: { get_attr: ['ready', 'data'] } },
        },
      },
    });
    const handle = await until('the handle', async () => {
      const endpoint = (await heat.output(ref, 'endpoint')).value;
      const token = (await heat.output(ref, 'token')).value;
      return typeof endpoint === 'string' && typeof token === 'string' ? { endpoint, token } : undefined;
    });
    expect(handle.endpoint.startsWith(`http://${HOST_IP}:8004/v1/`)).toBe(true);
    // The machine's way: the token header from a 0600 file, curl from inside the namespace.
    const header = join(dir, 'token-header');
    writeFileSync(header, `X-Auth-Token: ${handle.token}\n`, { mode: 0o600 });
    execFileSync('ip', ['netns', 'exec', NETNS, 'curl', '-sf', '-X', 'POST', '-H', `@${header}`, '-H', 'Content-Type: application/json',
      '--data', JSON.stringify({ status: 'SUCCESS', reason: 'booted', id: 'm1', data: 'from-the-bridge' }), handle.endpoint], { timeout: 30_000 });
    const done = await heat.waitForStack(ref, 'CREATE', { timeoutMs: 60_000 });
    expect(done.status).toBe('CREATE_COMPLETE');
    expect(JSON.parse(done.outputs.find((o) => o.key === 'data')!.value as string)).toEqual({ m1: 'from-the-bridge' });
    const { sinceEventId } = await heat.deleteStack(ref);
    await heat.waitForStack(ref, 'DELETE', { sinceEventId, timeoutMs: 60_000 });
  });
});

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
