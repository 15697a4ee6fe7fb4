/**
 * The overlord's boot sequence for real: `corekube overlord -c overlord.yaml` (the CLI process, as
 * overlord.service runs it) against a discovery machine booted by cloud-init from its real user_data
 * (systemd-nspawn, real systemd, sshd and sudo; test/harness/machines.ts). The test plays Heat: it records
 * the wait-condition signals on a local HTTP server, and — like the template's str_split on overlord_ready's
 * data — gives discovery and a minion the overlord's public key and the discovery CA from that signal.
 * Then it checks what happened: the overlord installed discovery's certificate over SSH (key 0600), discovery's
 * path unit started etcd, the overlord set up auth, the minion announced itself with the join token, and no
 * secret reached a log. A restarted overlord reuses its key and CA, signals nothing again, pushes nothing
 * and changes no auth.
 *
 * Net: 10.200.<k>.0/24 with k = 52 (+ $COREKUBE_TEST_NET_OFFSET); discovery's address-plan IP (.10) is added
 * to the discovery machine, as its Neutron port would have it. Heat and the release mirror listen on the
 * bridge's host address .1.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fillPlaceholders, renderUserData } from '../../cloud-config/index.ts';
import { renderOverlordConfig } from '../../cloud-config/overlord-config.ts';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import { findSecrets } from '../../core/secrets.ts';
import { MACHINE_SECRET_NAME, ROOT_PASSWORD_NAME } from '../../overlord/trust/discovery-auth.ts';
import { machinePassword } from '../../overlord/trust/machine-credentials.ts';
import { DISCOVERY_CLIENT_PATHS } from '../../units/pki-paths.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import { parseMachineRecord } from '../../contracts/machine-record.ts';
import { addressPlan } from '../../clusterspec/address-plan.ts';
import { parseClusterSpec, type ClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { onExit } from '../harness/cleanup.ts';
import { bootMachines, machinesMissing, netFromEnv, type Fleet, type Machine } from '../harness/machines.ts';
import { buildToolsMissing } from '../../release/build.ts';
import { etcdReleaseMirror } from '../harness/etcd-release.ts';
import { startMirror, type MirrorServer } from '../harness/mirror.ts';
import { missingParts } from '../harness/requirements.ts';
import { until } from '../../localcloud/until.ts';

// discovery's etcd comes from the release build (Go, cached by version)
const skip = missingParts(machinesMissing(), await buildToolsMissing(false));

const NET = netFromEnv(52);
const repo = path.resolve(import.meta.dirname, '../..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


interface Signal {
  readonly path: string;
  readonly token: string | undefined;
  readonly body: string;
}

/** The overlord CLI as overlord.service runs it; its JSON log lines. */
class OverlordProcess {
  out = '';
  err = '';
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [path.join(repo, 'bin/corekube.js'), 'overlord', ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (c: Buffer) => (this.out += c.toString()));
    this.child.stderr!.on('data', (c: Buffer) => (this.err += c.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', (code) => resolve(code)));
  }

  events(): Record<string, unknown>[] {
    return this.out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  event(name: string): Record<string, unknown> | undefined {
    return this.events().find((e) => e.event === name);
  }

  waitFor(name: string, timeoutMs: number): Promise<Record<string, unknown>> {
    return until(`the overlord's ${name} event`, timeoutMs, () => {
      if (this.child.exitCode !== null) throw new Error(`the overlord exited with ${this.child.exitCode}:\n${this.out}\n${this.err}`);
      return this.event(name);
    }, () => `${this.out}\n${this.err}`);
  }

  async stop(): Promise<number | null> {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

describe.skipIf(skip)('the overlord boots a cluster\'s trust: a real discovery machine, Heat played by the test', () => {
  let dir = '';
  let fleet: Fleet | undefined;
  let mirror: MirrorServer | undefined;
  let heat: http.Server | undefined;
  let spec: ClusterSpec;
  let discovery: Machine;
  let minion: Machine;
  let discoveryIp = '';
  let first: OverlordProcess | undefined;
  let second: OverlordProcess | undefined;
  const signals: Signal[] = [];
  const joinToken = randomBytes(24).toString('hex');
  const tokens = { overlordReady: randomBytes(16).toString('hex'), discoveryReady: randomBytes(16).toString('hex'), clusterReady: randomBytes(16).toString('hex') };
  const f = (n: string) => path.join(dir, n);
  const state = (n: string) => path.join(dir, 'state', n);
  let overlordArgs: string[] = [];
  let unregister = () => {};

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-trust-boot-'));
    unregister = onExit('trust boot test', () => {
      first?.kill();
      second?.kill();
      spawnSync('rm', ['-rf', dir]);
    });
    fleet = await bootMachines([], { net: NET });
    const gateway = fleet.gateway;

    // the release mirror discovery downloads etcd from: the pinned etcd's release tarball, built from its Go
    // module, its digest pinned in the spec as a mirror's manifest pins it
    const { digests } = await etcdReleaseMirror(f('mirror'), parseClusterSpec({}).versions);
    mirror = await startMirror({ root: f('mirror'), listenOn: [gateway] });

    spec = parseClusterSpec({
      flags: { name: 'trust', os: 'ubuntu', masters: '1', minions: '1', 'private-cidr': `10.200.${NET}.0/24`, 'release-base-url': mirror.urlOn(gateway), 'release-digests': digests },
    });
    discoveryIp = addressPlan(spec).discovery;

    // Heat's wait-condition handles: each signal recorded
    heat = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        signals.push({ path: req.url ?? '', token: req.headers['x-auth-token'] as string | undefined, body });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => heat!.listen(0, gateway, resolve));
    const heatUrl = (handle: string) => `http://${gateway}:${(heat!.address() as { port: number }).port}/v1/signal/${handle}`;

    // the overlord server's files, as its cloud-config writes them
    const config = f('etc-corekube');
    await mkdir(path.join(config, 'secrets'), { recursive: true });
    await mkdir(path.join(config, 'heat'), { recursive: true });
    await writeFile(path.join(config, CONFIG_FILES.overlordConfig), fillPlaceholders(renderOverlordConfig(spec), { masterCount: '1', minionCount: '1' }));
    await writeFile(path.join(config, CONFIG_FILES.joinToken), `${joinToken}\n`, { mode: 0o600 });
    await writeFile(path.join(config, CONFIG_FILES.readyUrl), `${heatUrl('overlord_ready_handle')}\n`);
    await writeFile(path.join(config, CONFIG_FILES.readyHeader), `X-Auth-Token: ${tokens.overlordReady}\n`, { mode: 0o600 });
    await writeFile(path.join(config, CONFIG_FILES.clusterReadyUrl), `${heatUrl('cluster_ready_handle')}\n`);
    await writeFile(path.join(config, CONFIG_FILES.clusterReadyHeader), `X-Auth-Token: ${tokens.clusterReady}\n`, { mode: 0o600 });
    overlordArgs = ['-c', path.join(config, CONFIG_FILES.overlordConfig), '--state-dir', f('state'), '--config-dir', config, '--log-format', 'json'];

    // 1. the overlord boots first and signals overlord_ready
    first = new OverlordProcess(overlordArgs);
    const ready = await until('overlord_ready', 60_000, () => signals.find((s) => s.path.endsWith('/overlord_ready_handle')), () => `${first!.out}\n${first!.err}`);

    // 2. Heat: overlord_ready's data attribute is {"<id>": "<data>"}; the template str_splits it on '"'
    //    (index 3) and then ':' (0 = SSH key, 1 = CA), both still base64, into the machines' user_data
    const dataAttribute = JSON.stringify({ [(JSON.parse(ready.body) as { id: string }).id]: (JSON.parse(ready.body) as { data: string }).data });
    const blob = dataAttribute.split('"')[3]!;
    const [sshKeyB64, caB64] = blob.split(':') as [string, string];
    const seed = (hostname: string, userData: string) => ({ hostname, cloudInit: { userData, metaData: `instance-id: iid-${hostname}\nlocal-hostname: ${hostname}\n` } });
    [discovery] = (await fleet.add([
      seed('trust-discovery', fillPlaceholders(renderUserData('discovery', spec), { overlordSshKey: sshKeyB64, readyUrl: heatUrl('discovery_ready_handle'), readyToken: tokens.discoveryReady })),
    ])) as [Machine];
    // discovery's Neutron port has the address plan's IP
    expect((await discovery.exec(['ip', 'addr', 'add', `${discoveryIp}/24`, 'dev', 'host0'])).code).toBe(0);

    // 3. the overlord installs discovery's certificate, sets up auth; discovery signals discovery_ready
    await first.waitFor('boot.done', 150_000).catch(async (err: Error) => {
      const journal = await discovery.exec(['journalctl', '--no-pager', '-o', 'cat', '-n', '60', '-u', 'discovery-etcd.service', '-u', 'discovery-etcd.path', '-u', 'cloud-final']);
      throw new Error(`${err.message}\n--- discovery journal ---\n${journal.stdout}${journal.stderr}`);
    });
    await until('discovery_ready', 60_000, () => signals.find((s) => s.path.endsWith('/discovery_ready_handle')));

    // 4. Heat creates the nodes (after discovery_ready): a minion with the join token and the discovery CA
    [minion] = (await fleet.add([
      seed('trust-minion', fillPlaceholders(renderUserData('minion', spec), { joinToken, overlordSshKey: sshKeyB64, discoveryCa: caB64 })),
    ])) as [Machine];
  });

  afterAll(async () => {
    first?.kill();
    second?.kill();
    await new Promise((r) => (heat ? heat.close(r) : r(undefined)));
    await mirror?.close();
    await fleet?.teardown();
    if (dir) await rm(dir, { recursive: true, force: true });
    unregister();
  });

  const out = async (m: Machine, argv: string[]) => (await m.exec(argv)).stdout.trim();
  const rootClient = async () =>
    new Etcd3({
      hosts: `https://${discoveryIp}:2379`,
      credentials: { rootCertificate: await readFile(state('pki/ca/discovery.crt')) },
      auth: { username: 'root', password: (await readFile(state(`pki/${ROOT_PASSWORD_NAME}`), 'utf8')).trim() },
    });

  it('signals overlord_ready once, with "<base64 SSH public key line>:<base64 discovery CA PEM>" and the handle token', async () => {
    const ready = signals.filter((s) => s.path.endsWith('/overlord_ready_handle'));
    expect(ready).toHaveLength(1);
    expect(ready[0]!.token).toBe(tokens.overlordReady);
    const body = JSON.parse(ready[0]!.body) as { status: string; reason: string; id: string; data: string };
    expect(body).toMatchObject({ status: 'SUCCESS', id: 'overlord' });
    const [key, ca] = body.data.split(':').map((b) => Buffer.from(b, 'base64').toString('utf8'));
    expect(key).toBe((await readFile(state('ssh/id_ed25519.pub'), 'utf8')).trim());
    expect(key).toMatch(/^ssh-ed25519 AAAA[A-Za-z0-9+/]+=* corekube-overlord@trust$/);
    expect(ca).toBe(await readFile(state('pki/ca/discovery.crt'), 'utf8'));
  });

  it('keeps its SSH key, CA keys and passwords in its state directory, readable by it only', async () => {
    for (const file of ['ssh/id_ed25519', 'ssh/id_ed25519.pub', 'ssh/discovery.host-key', 'pki/ca/discovery.key', 'pki/ca/cluster.key', 'pki/ca/etcd.key', `pki/${ROOT_PASSWORD_NAME}`, `pki/${MACHINE_SECRET_NAME}`]) {
      expect(((await stat(state(file))).mode & 0o777).toString(8), file).toBe('600');
    }
    // the host key it trusted on first use is discovery's
    expect((await readFile(state('ssh/discovery.host-key'), 'utf8')).trim()).toBe(discovery.hostKey);
  });

  it("installs discovery's certificate over SSH (key 0600, root's), which starts discovery's etcd through its path unit", async () => {
    expect(await out(discovery, ['stat', '-c', '%U %a', '/etc/corekube/pki/discovery/server.key'])).toBe('root 600');
    expect(await out(discovery, ['stat', '-c', '%U %a', '/etc/corekube/pki/discovery/server.crt'])).toBe('root 644');
    expect(await out(discovery, ['cat', '/etc/corekube/pki/discovery/ca.crt'])).toBe((await readFile(state('pki/ca/discovery.crt'), 'utf8')).trim());
    expect(await out(discovery, ['systemctl', 'is-active', 'discovery-etcd.service'])).toBe('active');
    expect(first!.event('boot.discovery-tls')).toBeUndefined(); // it was not serving before: pushed, not skipped
    expect(first!.event('discovery.tls-installed')).toMatchObject({ ip: discoveryIp });
    const ready = signals.filter((s) => s.path.endsWith('/discovery_ready_handle'));
    expect(ready).toHaveLength(1);
    expect(ready[0]!.token).toBe(tokens.discoveryReady);
  });

  it('turns discovery auth on: anonymous clients are refused, root reads the published overlord key', async () => {
    const auth = first!.event('boot.discovery-auth')!;
    expect(auth.wasEnabled).toBe(false);
    expect(auth.changes).toEqual(expect.arrayContaining(['created user root', 'created user joiner', 'enabled auth']));
    const anonymous = new Etcd3({ hosts: `https://${discoveryIp}:2379`, credentials: { rootCertificate: await readFile(state('pki/ca/discovery.crt')) } });
    const root = await rootClient();
    try {
      await expect(anonymous.get(clusterKeys('trust').overlordSshKey).string()).rejects.toThrow(/user name is empty/);
      expect(await root.get(clusterKeys('trust').overlordSshKey).string()).toBe((await readFile(state('ssh/id_ed25519.pub'), 'utf8')).trim());
    } finally {
      anonymous.close();
      root.close();
    }
  });

  it('admits a minion that asks to join with the join token: over SSH it gets its own discovery user, then announces its record with it', async () => {
    const keys = clusterKeys('trust');
    const root = await rootClient();
    try {
      const kv = await until('the minion record', 60_000, async () => (await root.get(keys.machine(minion.id)).exec()).kvs[0]);
      expect(parseMachineRecord(minion.id, kv.value.toString())).toMatchObject({ ok: true, record: { role: 'minion', ip: minion.ip, hostname: 'trust-minion' } });
      expect(first!.events().find((e) => e.event === 'join.discovered')).toMatchObject({ machine: minion.id, ip: minion.ip });
      expect(first!.events().find((e) => e.event === 'machine.admitted')).toMatchObject({ machine: minion.id, hostname: 'trust-minion' });
      // the request is gone, the host key it proved is pinned, and the credentials are the minion's alone
      expect((await root.get(keys.joinOf(minion.id)).exec()).kvs).toHaveLength(0);
      expect(await root.get(keys.hostkeyOf(minion.id)).string()).toBe(minion.hostKey);
      // the identity it proved over SSH (its machine id and join nonce): the only address and key it is deployed at
      expect(JSON.parse((await root.get(keys.admittedOf(minion.id)).string())!)).toMatchObject({ id: minion.id, ip: minion.ip, hostKey: minion.hostKey });
      expect(await out(minion, ['stat', '-c', '%U %a', DISCOVERY_CLIENT_PATHS.credentials])).toBe('root 600');
      expect(await out(minion, ['grep', '-c', `^FLANNELD_ETCD_USERNAME=machine-${minion.id}$`, DISCOVERY_CLIENT_PATHS.credentials])).toBe('1');
      expect(await out(minion, ['journalctl', '-u', 'corekube-announce.service', '-o', 'cat', '--no-pager'])).toContain(`as machine-${minion.id} under lease`);
    } finally {
      root.close();
    }
    await until('the overlord to see the minion', 30_000, () => first!.events().find((e) => e.event === 'machine.waiting' && e.hostname === 'trust-minion'));
  });

  it('never logs a secret: no key, token or password in its output', async () => {
    const secrets = [
      joinToken,
      ...Object.values(tokens),
      (await readFile(state(`pki/${ROOT_PASSWORD_NAME}`), 'utf8')).trim(),
      (await readFile(state(`pki/${MACHINE_SECRET_NAME}`), 'utf8')).trim(),
      machinePassword((await readFile(state(`pki/${MACHINE_SECRET_NAME}`), 'utf8')).trim(), minion.id),
      ...(await readFile(state('ssh/id_ed25519'), 'utf8')).split('\n').filter((l) => l.length > 20),
    ];
    expect(findSecrets(`${first!.out}\n${first!.err}`, { values: secrets })).toEqual([]);
  });

  it('restarted, it reuses its key and CA, signals nothing again, pushes nothing and changes no auth; the minion stays announced', async () => {
    const before = first!.event('boot.ssh-key')!;
    expect(before.created).toBe(true);
    expect(await first!.stop()).toBe(0);
    const signalsBefore = signals.length;
    const caBefore = await readFile(state('pki/ca/discovery.crt'), 'utf8');

    second = new OverlordProcess(overlordArgs);
    await second.waitFor('boot.done', 60_000);
    expect(second.event('boot.ssh-key')).toMatchObject({ created: false, fingerprint: before.fingerprint });
    expect(second.event('heat.already-signalled')).toBeDefined();
    expect(second.event('boot.discovery-tls')).toMatchObject({ installed: false });
    expect(second.event('discovery.tls-installed')).toBeUndefined();
    expect(second.event('boot.discovery-auth')).toMatchObject({ changes: [], wasEnabled: true });
    expect(await readFile(state('pki/ca/discovery.crt'), 'utf8')).toBe(caBefore);
    await until('the overlord to see the minion', 30_000, () => second!.events().find((e) => e.event === 'machine.waiting' && e.hostname === 'trust-minion'));
    expect(signals.length).toBe(signalsBefore);
    expect(await second.stop()).toBe(0);
    expect(findSecrets(`${second.out}\n${second.err}`, { values: [joinToken, ...Object.values(tokens)] })).toEqual([]);
  });
});
