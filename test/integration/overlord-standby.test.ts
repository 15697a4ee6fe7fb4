/**
 * Standby overlords against a real etcd run with discovery's TLS flags (those of the rendered
 * discovery-etcd.service, like test/integration/discovery-trust.test.ts): the bootstrap overlord's boot
 * (overlord/trust/bootstrap.ts, no SSH needed — discovery already serves the certificate of its PKI) sets up auth
 * with the `overlord` user and publishes its sealed state; that user can read the state key and nothing else;
 * a standby started before it waits, fetches the state and ends with byte-identical ssh/ and pki/ files, and
 * its own boot changes nothing; a second publish changes nothing; certificates the leader issues for a machine
 * are published again and followed by the standby; a standby with another secret writes nothing.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CONFIG_FILES } from '../../cloud-config/machine-paths.ts';
import { findSecrets } from '../../core/secrets.ts';
import { bootOverlord, handleDeps, type Booted } from '../../overlord/trust/bootstrap.ts';
import { signalClusterReady } from '../../overlord/trust/heat-handles.ts';
import { DiscoveryMachineCredentials } from '../../overlord/trust/machine-credentials.ts';
import { MachinePkiFiles, SharedMachinePki } from '../../overlord/trust/machine-pki.ts';
import { followSharedState, StateRepublisher } from '../../overlord/trust/shared-state.ts';
import { flannelGrants } from '../../overlord/pod-network/flannel.ts';
import { systemClock } from '../../core/clock.ts';
import { discoveryClientOptions, ROOT_PASSWORD_NAME } from '../../overlord/trust/discovery-auth.ts';
import { clusterKeys } from '../../contracts/keys.ts';
import { CertificateAuthority } from '../../overlord/trust/pki/authority.ts';
import { DirectoryPkiStore } from '../../overlord/trust/pki/store.ts';
import { createEtcdStore } from '../../overlord/edges/etcd-store.ts';
import { parseMachineRecord } from '../../contracts/machine-record.ts';
import { overlordDiscoveryPassword, readStateFiles } from '../../overlord/trust/sealed-state.ts';
import { parseClusterSpec } from '../../clusterspec/cluster-spec.ts';
import { onExit } from '../harness/cleanup.ts';
import { etcdMissing } from '../../localcloud/etcd/etcd.ts';
import { missingParts } from '../harness/requirements.ts';
import { captureLog } from '../harness/log-capture.ts';
import { startDiscoveryEtcd } from '../../localcloud/etcd/discovery-etcd.ts';

const skip = missingParts(etcdMissing());
const CLUSTER = 'standby-it';
const spec = parseClusterSpec({ flags: { name: CLUSTER, overlords: '3' } });
const keys = clusterKeys(CLUSTER);
const JOIN_TOKEN = randomBytes(24).toString('hex');
const SECRET = randomBytes(48).toString('base64').replace(/[^A-Za-z0-9]/g, '').slice(0, 64).padEnd(64, 'q');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));



describe.skipIf(skip)('standby overlords fetch the bootstrap overlord\'s sealed state from a real discovery etcd', () => {
  let dir = '';
  let etcd: ChildProcess | undefined;
  let endpoint = '';
  let ca = '';
  const clients: Etcd3[] = [];
  let unregister = () => {};
  const bootstrapLog = captureLog();
  const standbyLog = captureLog();
  let bootstrap: Booted;
  let standby: Booted;
  const d = (...p: string[]) => path.join(dir, ...p);

  async function configDir(name: string, files: Record<string, string>): Promise<string> {
    const c = d(name);
    for (const [rel, content] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(c, rel)), { recursive: true });
      await writeFile(path.join(c, rel), content, { mode: 0o600 });
    }
    return c;
  }

  const boot = (stateDir: string, config: string, log: ReturnType<typeof captureLog>, standby = false, signal?: AbortSignal) =>
    bootOverlord(
      { spec, cluster: CLUSTER, stateDir, configDir: config, discoveryEndpoint: endpoint, standby },
      { log: log.log, clock: systemClock, backoff: { initialMs: 100, maxMs: 400 }, ...(signal ? { signal } : {}) },
    );

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'corekube-standby-'));
    unregister = onExit('overlord standby test', () => {
      if (etcd?.pid !== undefined && etcd.exitCode === null) etcd.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    });
    // the bootstrap overlord's discovery PKI exists (as after its steps 1-3) and discovery serves it (step 4)
    const authority = new CertificateAuthority({ store: new DirectoryPkiStore(d('bootstrap', 'pki')), clock: { now: () => Date.now() }, cluster: CLUSTER });
    const pki = await authority.ensureDiscovery(spec);
    ca = pki.ca;
    const started = await startDiscoveryEtcd({ spec, dir, pki });
    endpoint = started.endpoint;
    etcd = started.proc;
  });

  afterAll(() => {
    for (const c of clients) c.close();
    if (etcd?.pid !== undefined && etcd.exitCode === null) etcd.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    unregister();
  });

  const client = (auth?: { username: string; password: string }) => {
    const c = new Etcd3(discoveryClientOptions({ endpoints: [endpoint], ca, callTimeoutMs: 3_000 }, auth));
    clients.push(c);
    return c;
  };

  it('boots a standby started first: it waits until the bootstrap overlord published its state, then holds the same ssh/ and pki/ files', async () => {
    const bootstrapConfig = await configDir('bootstrap-config', {
      [CONFIG_FILES.joinToken]: `${JOIN_TOKEN}\n`,
      [CONFIG_FILES.overlordSecret]: `${SECRET}\n`,
      [CONFIG_FILES.readyUrl]: '\n',
      [CONFIG_FILES.readyHeader]: '\n',
      [CONFIG_FILES.clusterReadyUrl]: '\n',
      [CONFIG_FILES.clusterReadyHeader]: '\n',
    });
    // a standby server's files: the join token, the secret and the discovery CA, no Heat handle at all
    const standbyConfig = await configDir('standby-config', {
      [CONFIG_FILES.joinToken]: `${JOIN_TOKEN}\n`,
      [CONFIG_FILES.overlordSecret]: `${SECRET}\n`,
      [CONFIG_FILES.discoveryCa]: ca,
    });
    const standbyBoot = boot(d('standby'), standbyConfig, standbyLog, true);
    await sleep(1_500);
    expect(standbyLog.event('overlord-state.waiting')).toBeDefined();
    bootstrap = await boot(d('bootstrap'), bootstrapConfig, bootstrapLog);
    standby = await standbyBoot;

    expect(bootstrapLog.event('boot.discovery-auth')).toMatchObject({ wasEnabled: false, changes: expect.arrayContaining(['created user overlord', 'created role overlord', 'granted role overlord read on /corekube/standby-it/overlord/state']) });
    expect(bootstrapLog.event('overlord-state.published')).toMatchObject({ key: keys.overlordState });
    expect(standbyLog.event('overlord-state.fetched')).toMatchObject({ key: keys.overlordState, fingerprint: bootstrapLog.event('overlord-state.published')!.fingerprint });

    const mine = await readStateFiles(d('bootstrap'));
    const theirs = await readStateFiles(d('standby'));
    expect(mine.map((f) => f.path)).toContain('ssh/id_ed25519');
    expect(mine.map((f) => f.path)).toContain(`pki/${ROOT_PASSWORD_NAME}`);
    expect(mine.some((f) => f.path.startsWith('heat/'))).toBe(false);
    expect(theirs).toEqual(mine);
    for (const f of theirs) expect((await stat(d('standby', f.path))).mode & 0o777, f.path).toBe(0o600);
    expect((await stat(d('standby', 'pki'))).mode & 0o777).toBe(0o700);
    expect((await stat(d('standby', 'ssh'))).mode & 0o777).toBe(0o700);
    expect(standby.identity.fingerprint).toBe(bootstrap.identity.fingerprint);
    expect(standby.etcd.auth).toEqual(bootstrap.etcd.auth);
  });

  it('lets the standby\'s own boot change nothing: no new key, no TLS push, no auth change, nothing published, nothing signalled', async () => {
    expect(standbyLog.event('boot.ssh-key')).toMatchObject({ created: false });
    expect(standbyLog.event('boot.discovery-tls')).toMatchObject({ installed: false });
    expect(standbyLog.event('boot.discovery-auth')).toMatchObject({ changes: [], wasEnabled: true });
    expect(standbyLog.event('overlord-state.published')).toBeUndefined();
    expect(standbyLog.event('heat.signalled')).toBeUndefined();
    expect(standbyLog.event('boot.done')).toBeDefined();
    await signalClusterReady('test', standby.standby, handleDeps(standby, { log: standbyLog.log, clock: systemClock }));
    expect(standbyLog.event('heat.signalled')).toBeUndefined();
  });

  it('lets user overlord read the state key and nothing else', async () => {
    const overlord = client({ username: 'overlord', password: overlordDiscoveryPassword(SECRET) });
    expect(await overlord.get(keys.overlordState).string()).toMatch(/"cipher":"aes-256-gcm"/);
    const root = client({ username: 'root', password: bootstrap.etcd.auth!.password });
    for (const key of [keys.machine('a'.repeat(32)), keys.ledgerOf('a'.repeat(32)), `${keys.network}config`, keys.hostkeyOf('a'.repeat(32))]) await root.put(key).value('v');
    const refused = [
      () => overlord.get(keys.machine('a'.repeat(32))).string(),
      () => overlord.getAll().prefix(keys.machines).keys(),
      () => overlord.get(keys.ledgerOf('a'.repeat(32))).string(),
      () => overlord.getAll().prefix(keys.ledger).keys(),
      () => overlord.get(`${keys.network}config`).string(),
      () => overlord.get(keys.overlordSshKey).string(),
      () => overlord.get(keys.hostkeyOf('a'.repeat(32))).string(),
      () => overlord.getAll().prefix(keys.prefix).keys(),
      () => overlord.put(keys.overlordState).value('x'),
      () => overlord.put(keys.machine('b'.repeat(32))).value('x'),
    ];
    for (const call of refused) await expect(call()).rejects.toThrow(/permission denied/);
    // the raw secret is no password of any user
    await expect(client({ username: 'overlord', password: SECRET }).get(keys.overlordState).string()).rejects.toThrow(/authentication failed/);
  });

  it('publishes nothing new when the bootstrap overlord boots again', async () => {
    const before = await client({ username: 'root', password: bootstrap.etcd.auth!.password }).get(keys.overlordState).exec();
    const again = captureLog();
    const config = d('bootstrap-config');
    await boot(d('bootstrap'), config, again);
    expect(again.event('overlord-state.current')).toBeDefined();
    expect(again.event('overlord-state.published')).toBeUndefined();
    expect(again.event('boot.discovery-auth')).toMatchObject({ changes: [] });
    const after = await client({ username: 'root', password: bootstrap.etcd.auth!.password }).get(keys.overlordState).exec();
    expect(after.kvs[0]!.mod_revision).toBe(before.kvs[0]!.mod_revision);
  });

  it('publishes again when the leader issues a machine\'s certificates, and the standby follows: it holds them too', async () => {
    const root = createEtcdStore(bootstrap.etcd);
    const follower = followSharedState({ store: root, keys, stateDir: standby.stateDir, secret: standby.overlordSecret!, log: standbyLog.log, clock: systemClock, applies: () => true });
    // what the composition root gives a booted overlord's terms (overlord/overlord.ts)
    const { conn, rootPassword, secret } = bootstrap.machineUsers;
    const credentials = new DiscoveryMachineCredentials(conn, rootPassword, keys, secret, flannelGrants);
    const files = new MachinePkiFiles({ authority: bootstrap.authority, spec, discoveryCa: bootstrap.discovery.ca, credentials, log: bootstrapLog.log });
    const machinePki = new SharedMachinePki(files, bootstrap.pkiWrites, new StateRepublisher({ etcd: bootstrap.etcd, keys, stateDir: bootstrap.stateDir, secret: bootstrap.overlordSecret!, log: bootstrapLog.log }));
    try {
      const id = 'e'.repeat(32);
      const parsed = parseMachineRecord(id, JSON.stringify({ schema: 1, id, role: 'minion', ip: '10.240.0.40', hostname: 'minion-1', bootId: 'b'.repeat(32), announcedAt: '2026-01-01T00:00:00Z' }));
      if (!parsed.ok) throw new Error(parsed.reason);
      const before = (await root.get(keys.overlordState))!.modRevision;
      const filesBefore = (await readStateFiles(d('standby'))).length;
      await machinePki.prepare([parsed.record]);
      const after = (await root.get(keys.overlordState))!.modRevision;
      expect(after).not.toBe(before);
      const deadline = Date.now() + 10_000;
      while (JSON.stringify(await readStateFiles(d('standby'))) !== JSON.stringify(await readStateFiles(d('bootstrap')))) {
        if (Date.now() > deadline) throw new Error('the standby did not follow the published state');
        await sleep(100);
      }
      expect((await readStateFiles(d('standby'))).length).toBeGreaterThan(filesBefore);
      // nothing new to issue: nothing published
      await machinePki.prepare([parsed.record]);
      expect((await root.get(keys.overlordState))!.modRevision).toBe(after);
    } finally {
      credentials.close();
      await follower.stop();
      await root.close();
    }
  });

  it('keeps a standby with another secret waiting, writing nothing to its state directory', async () => {
    const config = await configDir('stranger-config', {
      [CONFIG_FILES.joinToken]: `${JOIN_TOKEN}\n`,
      [CONFIG_FILES.overlordSecret]: `${'Z'.repeat(64)}\n`,
      [CONFIG_FILES.discoveryCa]: ca,
    });
    const log = captureLog();
    const stop = new AbortController();
    const booting = boot(d('stranger'), config, log, true, stop.signal).catch((e: unknown) => e);
    await sleep(1_500);
    stop.abort(new Error('test over'));
    await booting;
    expect(log.events().find((e) => e.event === 'overlord-state.waiting' && /refuses the overlord user/.test(String(e.reason)))).toBeDefined();
    await expect(stat(d('stranger'))).rejects.toThrow(/ENOENT/);
  });

  it('logs no secret: not the overlord secret, its discovery password, the root password or the join token', async () => {
    const rootPassword = (await readFile(d('bootstrap', 'pki', ROOT_PASSWORD_NAME), 'utf8')).trim();
    const values = [SECRET, overlordDiscoveryPassword(SECRET), rootPassword, JOIN_TOKEN];
    expect(findSecrets(bootstrapLog.text(), { values })).toEqual([]);
    expect(findSecrets(standbyLog.text(), { values })).toEqual([]);
  });
});
