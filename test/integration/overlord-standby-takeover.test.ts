/**
 * A bootstrap overlord and a standby overlord, each the CLI process overlord.service runs (`corekube overlord
 * -c overlord.yaml`, the standby with `--standby`), boot against one discovery etcd run with discovery's TLS
 * flags at the address plan's discovery IP; the bootstrap overlord is killed (kill -9) and the standby takes
 * over within the lease TTL, holding the bootstrap overlord's SSH key and CAs.
 *
 * Net: 10.200.<k>.0/24 with k = 70 (+ $COREKUBE_TEST_NET_OFFSET) on a bridge this test makes (root):
 * discovery's IP (.10) must be the address plan's, since the booting overlord dials it. No machine is booted:
 * the cluster has no master or minion yet, so the leader deploys nothing — what is tested is the trust
 * hand-over and the election.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fillPlaceholders } from '../../cloud-config/index.ts';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import { renderOverlordConfig } from '../../cloud-config/overlord-config.ts';
import { HANDLE_FILES } from '../../overlord/trust/heat-handles.ts';
import { findSecrets } from '../../core/secrets.ts';
import { CertificateAuthority } from '../../overlord/trust/pki/authority.ts';
import { DirectoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { overlordDiscoveryPassword, readStateFiles } from '../../overlord/trust/sealed-state.ts';
import { addressPlan, ETCD_CLIENT_PORT } from '../../clusterspec/address-plan.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { startDiscoveryEtcd } from '../../localcloud/etcd/discovery-etcd.ts';
import { onExit } from '../harness/cleanup.ts';
import { etcdMissing } from '../../localcloud/etcd/etcd.ts';
import { netFromEnv } from '../harness/machines.ts';
import { missingParts } from '../harness/requirements.ts';

const NET = netFromEnv(70);
const LINK = `ck${NET}standby`;
const skip = missingParts(etcdMissing(), process.getuid?.() === 0 ? undefined : 'a bridge for the discovery IP needs root', spawnSync('ip', ['-V']).error ? 'ip is not installed (iproute2)' : undefined);
const REPO = path.resolve(import.meta.dirname, '../..');
const TTL = 3;
const spec = parseClusterSpec({ flags: { name: 'takeover', masters: '1', minions: '0', overlords: '2', 'private-cidr': `10.200.${NET}.0/24`, 'cloud-provider': 'none' } }); // booted without Heat: no cloud credentials to read
const JOIN_TOKEN = randomBytes(24).toString('hex');
const SECRET = randomBytes(32).toString('hex');
const HANDLE_TOKEN = randomBytes(16).toString('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class OverlordProcess {
  out = '';
  err = '';
  readonly child: ChildProcess;
  readonly exited: Promise<void>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [path.join(REPO, 'bin/corekube.js'), 'overlord', ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (c: Buffer) => (this.out += c.toString()));
    this.child.stderr!.on('data', (c: Buffer) => (this.err += c.toString()));
    this.exited = new Promise((resolve) => this.child.once('exit', () => resolve()));
  }

  events(): Record<string, unknown>[] {
    return this.out.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  event(name: string): Record<string, unknown> | undefined {
    return this.events().find((e) => e.event === name);
  }

  async waitFor(name: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = this.event(name);
      if (e) return e;
      if (this.child.exitCode !== null) throw new Error(`the overlord exited (${this.child.exitCode}) before ${name}:\n${this.out}\n${this.err}`);
      if (Date.now() > deadline) throw new Error(`no ${name} within ${timeoutMs} ms:\n${this.out}\n${this.err}`);
      await sleep(100);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

describe.skipIf(skip)('a standby overlord takes over from a killed bootstrap overlord (CLI processes, one discovery etcd)', () => {
  let dir = '';
  let etcd: ChildProcess | undefined;
  let bootstrap: OverlordProcess | undefined;
  let standby: OverlordProcess | undefined;
  let ca = '';
  let unregister = () => {};
  const d = (...p: string[]) => path.join(dir, ...p);

  const teardown = () => {
    bootstrap?.kill();
    standby?.kill();
    if (etcd?.pid !== undefined && etcd.exitCode === null) etcd.kill('SIGKILL');
    spawnSync('ip', ['link', 'del', LINK], { stdio: 'ignore' });
    if (dir) rmSync(dir, { recursive: true, force: true });
  };

  async function configDir(name: string, files: Record<string, string>): Promise<string> {
    const c = d(name);
    const overlordYaml = fillPlaceholders(renderOverlordConfig(spec), { masterCount: String(spec.masters), minionCount: String(spec.minions) });
    for (const [rel, content] of Object.entries({ [CONFIG_FILES.overlordConfig]: overlordYaml, ...files })) {
      await mkdir(path.dirname(path.join(c, rel)), { recursive: true });
      await writeFile(path.join(c, rel), content, { mode: 0o600 });
    }
    return c;
  }

  const args = (id: string, state: string, config: string, extra: string[] = []) => [
    '-c', path.join(config, CONFIG_FILES.overlordConfig), '--state-dir', state, '--config-dir', config,
    '--id', id, '--lease-ttl', String(TTL), '--log-format', 'json', ...extra,
  ];

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-takeover-'));
    unregister = onExit('overlord takeover test', teardown);
    const discoveryIp = addressPlan(spec).discovery;
    spawnSync('ip', ['link', 'del', LINK], { stdio: 'ignore' });
    for (const argv of [['link', 'add', LINK, 'type', 'bridge'], ['addr', 'add', `${discoveryIp}/32`, 'dev', LINK], ['link', 'set', LINK, 'up']]) {
      const r = spawnSync('ip', argv, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`ip ${argv.join(' ')}: ${r.stderr}`);
    }
    // discovery serves the bootstrap overlord's certificate (its steps 2 and 4 done), at the address plan's IP
    const authority = new CertificateAuthority({ store: new DirectoryPkiStore(d('bootstrap', 'pki')), clock: { now: () => Date.now() }, cluster: spec.name });
    const pki = await authority.ensureDiscovery(spec);
    ca = pki.ca;
    etcd = (await startDiscoveryEtcd({ spec, dir, pki, host: discoveryIp, port: ETCD_CLIENT_PORT })).proc;
  });

  afterAll(() => {
    teardown();
    unregister();
  });

  it('boots both, the standby from the published state; kill -9 of the leader makes the standby lead within the TTL', async () => {
    const bootstrapConfig = await configDir('bootstrap-config', {
      [CONFIG_FILES.joinToken]: `${JOIN_TOKEN}\n`,
      [CONFIG_FILES.overlordSecret]: `${SECRET}\n`,
      [CONFIG_FILES.readyUrl]: '\n',
      [CONFIG_FILES.readyHeader]: '\n',
      // the cluster_ready handle travels with the state: whichever overlord leads at the end signals it
      [CONFIG_FILES.clusterReadyUrl]: 'http://127.0.0.1:9/v1/stack/cluster_ready_handle/signal\n',
      [CONFIG_FILES.clusterReadyHeader]: `X-Auth-Token: ${HANDLE_TOKEN}\n`,
    });
    const standbyConfig = await configDir('standby-config', {
      [CONFIG_FILES.joinToken]: `${JOIN_TOKEN}\n`,
      [CONFIG_FILES.overlordSecret]: `${SECRET}\n`,
      [CONFIG_FILES.discoveryCa]: ca,
    });
    // the standby server may well boot first (Heat only orders it after discovery_ready)
    standby = new OverlordProcess(args('standby-1', d('standby'), standbyConfig, ['--standby']));
    await standby.waitFor('overlord-state.waiting', 30_000);
    bootstrap = new OverlordProcess(args('bootstrap', d('bootstrap'), bootstrapConfig));
    await bootstrap.waitFor('leader.elected', 60_000);
    await standby.waitFor('leader.campaign', 60_000);
    expect(standby.event('overlord-state.fetched')).toMatchObject({ fingerprint: bootstrap.event('overlord-state.published')!.fingerprint });
    expect(standby.event('boot.discovery-auth')).toMatchObject({ changes: [] });
    expect(standby.event('leader.elected')).toBeUndefined();
    expect(await readStateFiles(d('standby'))).toEqual(await readStateFiles(d('bootstrap')));
    expect((await readStateFiles(d('standby'))).find((f) => f.path === HANDLE_FILES.header)?.content).toBe(`X-Auth-Token: ${HANDLE_TOKEN}\n`);

    bootstrap.kill('SIGKILL');
    const killedAt = Date.now();
    await bootstrap.exited;
    const elected = await standby.waitFor('leader.elected', (TTL + 10) * 1000);
    const tookMs = Date.parse(String(elected.time)) - killedAt;
    expect(tookMs).toBeLessThan((TTL + 2) * 1000);
    expect(elected).toMatchObject({ id: 'standby-1' });
    await sleep(1_000);
    expect(standby.child.exitCode).toBeNull();
    expect(standby.events().filter((e) => e.level === 50 || e.level === 60)).toEqual([]);

    const values = [SECRET, overlordDiscoveryPassword(SECRET), JOIN_TOKEN, HANDLE_TOKEN];
    expect(findSecrets(`${bootstrap.out}${bootstrap.err}`, { values })).toEqual([]);
    expect(findSecrets(`${standby.out}${standby.err}`, { values })).toEqual([]);
    standby.kill('SIGTERM');
    await standby.exited;
  });
});
